"""API key format, generation and verification: only a hash of a key is ever stored.

A key reads ``imaas_<id>_<secret>``: the recognisable prefix lets secret scanners and
people spot a leaked key; ``id`` (12 lowercase base32 characters) is public and names the
key in listings, logs and the audit log; ``secret`` is 32 random bytes in URL-safe base64.
The registry keeps the SHA-256 of the whole key: a key is 256 bits of randomness, so a
fast hash is as safe as a slow one here and costs a microsecond on the request path.

``verify`` takes the same time whether or not a key with the presented id exists: an
unknown id is compared against a fixed dummy hash, always with ``hmac.compare_digest``.

Example::

    issued = new_key()
    issued.text                          # 'imaas_3f5k2m7q9xab_Qm9...' (shown once)
    parsed = parse_key(issued.text)      # ParsedKey(id='3f5k2m7q9xab', ...)
    verify(parsed, issued.secret_hash)   # True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from imaas.errors import MalformedCredentials

PREFIX = "imaas_"
ID_LENGTH = 12
SECRET_BYTES = 32
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
KEY_ID_PATTERN = "^[a-z2-7]{12}$"  # a key's public id (documentation of path parameters)
KEY_RE = re.compile(r"imaas_([a-z2-7]{12})_([A-Za-z0-9_-]{43})")
"""A whole key (matched with ``fullmatch``)."""

_DUMMY_HASH = hashlib.sha256(b"imaas: no key has this hash").hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    """A new key: ``text`` is shown to its owner once and never stored."""

    id: str
    text: str = field(repr=False)
    secret_hash: str = field(repr=False)


@dataclass(frozen=True)
class ParsedKey:
    """A presented key split into its public id and the whole text (which is hashed)."""

    id: str
    text: str = field(repr=False)


def hash_key(text: str) -> str:
    """The SHA-256 (hex) the registry stores for the key ``text``."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def new_key_id() -> str:
    """A fresh random key id (60 bits; collisions are retried by the store's primary key)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))


def new_key(key_id: str | None = None) -> IssuedKey:
    """A new random key, with ``key_id`` or a fresh id."""
    kid = key_id or new_key_id()
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode("ascii")
    text = f"{PREFIX}{kid}_{secret}"
    return IssuedKey(kid, text, hash_key(text))


def parse_key(text: str) -> ParsedKey:
    """Split a presented key; ``MalformedCredentials`` when it is not an imaas key at all."""
    match = KEY_RE.fullmatch(text)
    if match is None:
        raise MalformedCredentials(
            "the credentials are not an imaas API key (expected 'Authorization: Bearer imaas_<id>_<secret>')"
        )
    return ParsedKey(match.group(1), text)


def parse_bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value; None when the header is absent.

    ``MalformedCredentials`` for another scheme or an empty token (the scheme is
    case-insensitive, as RFC 7235 says).
    """
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MalformedCredentials("use 'Authorization: Bearer <API key>'")
    return token


def verify(parsed: ParsedKey, stored_hash: str | None) -> bool:
    """Whether ``parsed`` is the key whose hash is ``stored_hash`` (None: no key has that id).

    The same work either way, so the answer's timing does not tell whether the id exists.
    """
    presented = hash_key(parsed.text)
    expected = stored_hash if stored_hash is not None else _DUMMY_HASH
    same = hmac.compare_digest(presented, expected)
    return same and stored_hash is not None
