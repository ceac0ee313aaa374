"""Authentication: an ``Authorization: Bearer`` value in, a ``Principal`` out, in microseconds.

Every server keeps every API key (id, hash, scopes, models, limits, expiry, revocation) in
memory and refreshes that table from the registry with ``refresh()``: keys changed since the
last refresh, found by the change sequence (``registry/keys.py``). Authenticating is then a
dictionary lookup, one SHA-256 and one constant-time comparison, whatever the outcome: an
unknown key id is compared against a dummy hash, so the time taken does not tell whether a
key with the presented id exists. The refresh runs off the request path; a key created or
revoked by this process is applied at once (``apply``), one made elsewhere within one
refresh interval.

The outcome of each failure has its own stable code: ``missing_credentials``,
``malformed_credentials``, ``invalid_credentials`` (unknown id or wrong secret, never told
apart), ``key_revoked``, ``key_expired`` (the last two only once the secret was right).
When a key is used, its id is remembered with the time; ``take_last_used()`` hands the
batch to whoever writes it (off the request path).

Example::

    auth = Authenticator(keys.changed_since, clock=time.time)
    auth.refresh()
    principal = auth.authenticate("Bearer imaas_3f5k2m7q9xab_...")
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from imaas.domain import ApiKey, Principal
from imaas.errors import InvalidCredentials, KeyExpired, KeyRevoked, MissingCredentials
from imaas.security.keys import parse_bearer, parse_key, verify

ChangedSince = Callable[[int], list[ApiKey]]


class Authenticator:
    """Turns presented credentials into a ``Principal`` against an in-memory key table."""

    def __init__(self, changed_since: ChangedSince, *, clock: Callable[[], float] = time.time) -> None:
        self._changed_since = changed_since
        self._clock = clock
        # one entry per key, replaced in one assignment: a lookup never sees half an update
        self._entries: dict[str, tuple[ApiKey, Principal]] = {}
        self._seq = 0
        self._lock = threading.Lock()  # refresh runs on a thread; lookups only read dict entries
        self._last_used: dict[str, float] = {}

    @property
    def seq(self) -> int:
        """The change sequence number the table is up to date with."""
        return self._seq

    def refresh(self) -> int:
        """Read the keys changed since the last refresh (blocking: call it on a thread);
        returns how many changed."""
        with self._lock:
            changed = self._changed_since(self._seq)
            for key in changed:
                self._apply(key)
                # only a refresh advances: a key this process applied may be newer than changes
                # made elsewhere that the next refresh still has to read
                self._seq = max(self._seq, key.seq)
            return len(changed)

    def apply(self, key: ApiKey) -> None:
        """Take a key this process just created or changed into the table at once."""
        with self._lock:
            self._apply(key)

    def _apply(self, key: ApiKey) -> None:
        current = self._entries.get(key.id)
        if current is not None and current[0].seq > key.seq:
            return  # an older copy (a refresh that read before this process's own write)
        self._entries[key.id] = (key, Principal(key.id, key.name, key.scopes, key.models, key.limits, key.expires_at))

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller an ``Authorization`` header value names; raises the ``Unauthorized`` that says why not."""
        token = parse_bearer(authorization)
        if token is None:
            raise MissingCredentials("send 'Authorization: Bearer <API key>'")
        parsed = parse_key(token)
        entry = self._entries.get(parsed.id)
        if not verify(parsed, entry[0].secret_hash if entry is not None else None) or entry is None:
            raise InvalidCredentials("the API key is not valid")
        key, principal = entry
        now = self._clock()
        refusal = _refusal(key, now)
        if refusal is not None:
            raise refusal
        self._last_used[key.id] = now
        return principal

    def still_valid(self, principal: Principal) -> bool:
        """Whether the key of a caller authenticated earlier still works (neither revoked nor
        expired since): what a long-lived response (an event stream) asks as it goes on."""
        if principal.key_id is None:
            return True  # authentication is off
        entry = self._entries.get(principal.key_id)
        return entry is not None and _refusal(entry[0], self._clock()) is None

    def take_last_used(self) -> dict[str, datetime]:
        """Keys used since the last call, with when they were last used (for a batched write)."""
        batch, self._last_used = self._last_used, {}
        return {k: datetime.fromtimestamp(t, UTC) for k, t in batch.items()}


def _refusal(key: ApiKey, now: float) -> KeyRevoked | KeyExpired | None:
    """Why ``key`` no longer works at ``now`` (revoked, expired), or None."""
    if key.revoked_at is not None and key.revoked_at.timestamp() <= now:
        return KeyRevoked(f"the API key {key.id} was revoked at {_iso(key.revoked_at)}")
    if key.expires_at is not None and key.expires_at.timestamp() <= now:
        return KeyExpired(f"the API key {key.id} expired at {_iso(key.expires_at)}")
    return None


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
