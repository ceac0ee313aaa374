"""API key format, hashing and verification (security/keys.py)."""

from __future__ import annotations

import hashlib

import pytest

from imaas.errors import MalformedCredentials
from imaas.security.keys import PREFIX, hash_key, new_key, parse_bearer, parse_key, verify


def test_a_new_key_parses_back_to_its_id_and_verifies_against_its_own_hash() -> None:
    issued = new_key()
    assert issued.text.startswith(PREFIX + issued.id + "_")
    assert issued.secret_hash == hashlib.sha256(issued.text.encode()).hexdigest()
    parsed = parse_key(issued.text)
    assert parsed.id == issued.id
    assert verify(parsed, issued.secret_hash)


def test_keys_are_distinct_and_the_stored_hash_does_not_contain_the_secret() -> None:
    keys = [new_key() for _ in range(200)]
    assert len({k.text for k in keys}) == 200
    assert len({k.id for k in keys}) == 200
    for k in keys[:20]:
        secret = k.text[len(PREFIX) + len(k.id) + 1 :]  # the secret's alphabet holds "_" too
        assert len(secret) == 43
        assert secret not in k.secret_hash


def test_a_wrong_secret_with_the_right_id_does_not_verify() -> None:
    issued = new_key()
    other = new_key(issued.id)
    assert other.id == issued.id
    assert other.text != issued.text
    assert not verify(parse_key(other.text), issued.secret_hash)


def test_an_unknown_id_never_verifies_even_against_the_dummy() -> None:
    issued = new_key()
    assert not verify(parse_key(issued.text), None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "imaas_",
        "sk-live-abcdef",
        "imaas_ABCDEFGHIJKL_" + "a" * 43,  # upper-case id
        "imaas_abcdefghijk_" + "a" * 43,  # id one short
        "imaas_abcdefghijkl_" + "a" * 42,  # secret one short
        "imaas_abcdefghijkl_" + "a" * 44,
        "imaas_abcdefghijkl_" + "a" * 42 + "=",
        "imaas_abcdefghijkl_" + "a" * 43 + "\n",
        "imaas_abcdefghijk1_" + "a" * 43,  # 1 is not base32
        "imaas_abcdefghijkl_" + "é" * 43,
    ],
)
def test_malformed_keys_are_refused_with_their_own_code(text: str) -> None:
    with pytest.raises(MalformedCredentials) as info:
        parse_key(text)
    assert info.value.code == "malformed_credentials"
    assert info.value.status == 401


def test_bearer_header_parsing() -> None:
    assert parse_bearer(None) is None
    assert parse_bearer("Bearer abc") == "abc"
    assert parse_bearer("bearer   abc  ") == "abc"
    for bad in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "abc", ""):
        with pytest.raises(MalformedCredentials):
            parse_bearer(bad)


def test_hash_is_sha256_hex() -> None:
    assert hash_key("imaas_x") == hashlib.sha256(b"imaas_x").hexdigest()
    assert len(hash_key("a")) == 64
