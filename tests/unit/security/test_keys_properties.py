"""Any Authorization value, however hostile, ends in a principal or a 401 of ours (hypothesis).

Strings near the key format are generated too (right prefix, near-right lengths, foreign
alphabets), so the parser's edges are exercised, not only random noise.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imaas.domain import ApiKey, KeyLimits
from imaas.errors import Unauthorized
from imaas.security.keys import new_key, parse_bearer, parse_key
from imaas.services.auth import Authenticator
from tests.hostile import PROFILE

ISSUED = new_key()
AUTH = Authenticator(lambda seq: [], clock=lambda: 0.0)
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
AUTH.apply(ApiKey(ISSUED.id, "k", ISSUED.secret_hash, frozenset({"infer"}), None, KeyLimits(), CREATED))
B32 = set("abcdefghijklmnopqrstuvwxyz234567")
URLSAFE = set(string.ascii_letters + string.digits + "-_")


def well_formed(text: str) -> bool:
    """The key format, written out with plain string operations (not the module's regex)."""
    if len(text) != 62 or not text.startswith("imaas_") or text[18] != "_":
        return False
    return set(text[6:18]) <= B32 and set(text[19:]) <= URLSAFE


near_keys = st.builds(
    lambda kid, secret, sep: f"imaas{sep}{kid}{sep}{secret}",
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567Aé_", min_size=10, max_size=14),
    st.text(alphabet="ABCxyz019_-=+/é\x00\n ", min_size=40, max_size=46),
    st.sampled_from(["_", "-", "", "__"]),
)
headers = st.one_of(
    st.text(max_size=300),
    near_keys,
    st.builds(
        lambda scheme, token: f"{scheme} {token}",
        st.sampled_from(["Bearer", "bearer", "Basic", "Token", ""]),
        st.one_of(near_keys, st.text(max_size=100), st.just(ISSUED.text)),
    ),
)


@PROFILE
@given(headers)
def test_parse_key_accepts_exactly_the_format_and_refuses_the_rest_with_a_401(text: str) -> None:
    if well_formed(text):
        assert parse_key(text).id == text[6:18]
    else:
        with pytest.raises(Unauthorized):
            parse_key(text)


@PROFILE
@given(headers)
def test_authenticate_gives_the_one_real_key_and_a_401_for_everything_else(header: str) -> None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip() == ISSUED.text:
        assert AUTH.authenticate(header).key_id == ISSUED.id
    else:
        with pytest.raises(Unauthorized):
            AUTH.authenticate(header)


@PROFILE
@given(st.text(max_size=200))
def test_parse_bearer_returns_the_token_or_refuses(header: str) -> None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        assert parse_bearer(header) == token.strip()
    else:
        with pytest.raises(Unauthorized):
            parse_bearer(header)
