"""Authentication against the registry's keys (services/auth.py over registry/keys.py), both databases.

Two ``Authenticator`` instances on one database stand for two server processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from imaas.domain import KeyLimits, Scope
from imaas.errors import InvalidCredentials, KeyExpired, KeyRevoked, MalformedCredentials, MissingCredentials
from imaas.registry.keys import SqlKeys
from imaas.registry.sql import open_registry
from imaas.security.keys import IssuedKey, new_key
from imaas.services.auth import Authenticator

# an hour ahead of the real clock: revocations the registry stamps "now" are in this clock's past
NOW = float(int(time.time()) + 3600)


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def keys(registry_url: str) -> Iterator[SqlKeys]:
    registry = open_registry(registry_url)
    yield SqlKeys(registry)
    registry.close()


def make(keys: SqlKeys, name: str = "ci", **kw: object) -> IssuedKey:
    issued = new_key()
    keys.create(issued.id, issued.secret_hash, name, kw.pop("scopes", ["infer"]), **kw)  # type: ignore[arg-type]
    return issued


def bearer(issued: IssuedKey) -> str:
    return f"Bearer {issued.text}"


def test_a_valid_key_gives_its_principal(keys: SqlKeys) -> None:
    issued = make(keys, scopes=["infer", "models:read"], models=("team-a-*",), limits=KeyLimits(rps=3))
    auth = Authenticator(keys.changed_since, clock=Clock())
    assert auth.refresh() == 1
    p = auth.authenticate(bearer(issued))
    assert (p.key_id, p.name) == (issued.id, "ci")
    assert p.allows(Scope.INFER)
    assert not p.allows(Scope.MODELS_WRITE)
    assert p.sees("team-a-x")
    assert not p.sees("team-b-x")
    assert p.limits == KeyLimits(rps=3)


def test_each_failure_has_its_code_and_unknown_equals_wrong_secret(keys: SqlKeys) -> None:
    issued = make(keys)
    auth = Authenticator(keys.changed_since, clock=Clock())
    auth.refresh()
    with pytest.raises(MissingCredentials):
        auth.authenticate(None)
    with pytest.raises(MalformedCredentials):
        auth.authenticate("Bearer sk-not-ours")
    with pytest.raises(MalformedCredentials):
        auth.authenticate("Basic " + issued.text)
    wrong_secret = new_key(issued.id)
    unknown = new_key()
    errors = []
    for other in (wrong_secret, unknown):
        with pytest.raises(InvalidCredentials) as info:
            auth.authenticate(bearer(other))
        errors.append((info.value.code, info.value.status, info.value.detail))
    assert errors[0] == errors[1] == ("invalid_credentials", 401, "the API key is not valid")


def test_revoked_and_expired_keys_are_refused_once_their_time_comes(keys: SqlKeys) -> None:
    clock = Clock()
    soon = datetime.fromtimestamp(NOW + 60, UTC)
    expiring = make(keys, expires_at=soon)
    revoked = make(keys)
    auth = Authenticator(keys.changed_since, clock=clock)
    auth.refresh()
    auth.authenticate(bearer(expiring))
    keys.revoke(revoked.id)
    auth.authenticate(bearer(revoked))  # not refreshed yet: still the old table
    auth.refresh()
    with pytest.raises(KeyRevoked):
        auth.authenticate(bearer(revoked))
    clock.t = NOW + 60
    with pytest.raises(KeyExpired):
        auth.authenticate(bearer(expiring))


def test_a_key_made_by_one_process_works_on_another_after_a_refresh(keys: SqlKeys) -> None:
    here = Authenticator(keys.changed_since, clock=Clock())
    there = Authenticator(keys.changed_since, clock=Clock())
    here.refresh()
    there.refresh()
    issued = make(keys)
    here.apply(keys.get(issued.id))  # the creating process applies its own write at once
    assert here.authenticate(bearer(issued)).key_id == issued.id
    with pytest.raises(InvalidCredentials):
        there.authenticate(bearer(issued))
    assert there.refresh() == 1
    assert there.authenticate(bearer(issued)).key_id == issued.id
    assert there.refresh() == 0  # incremental: nothing changed since


def test_an_older_copy_does_not_undo_a_revocation(keys: SqlKeys) -> None:
    issued = make(keys)
    old = keys.get(issued.id)
    auth = Authenticator(keys.changed_since, clock=Clock())
    auth.apply(keys.revoke(issued.id))
    auth.apply(old)
    with pytest.raises(KeyRevoked):
        auth.authenticate(bearer(issued))


def test_last_use_is_handed_over_in_batches_and_written(keys: SqlKeys) -> None:
    clock = Clock()
    a, b = make(keys, "a"), make(keys, "b")
    auth = Authenticator(keys.changed_since, clock=clock)
    auth.refresh()
    auth.authenticate(bearer(a))
    clock.t += 5
    auth.authenticate(bearer(a))
    batch = auth.take_last_used()
    assert batch == {a.id: datetime.fromtimestamp(NOW + 5, UTC)}
    assert auth.take_last_used() == {}
    keys.touch(batch)
    assert keys.get(a.id).last_used_at == datetime.fromtimestamp(NOW + 5, UTC)
    assert keys.get(b.id).last_used_at is None


def test_applying_an_own_write_does_not_skip_changes_made_elsewhere(keys: SqlKeys) -> None:
    here = Authenticator(keys.changed_since, clock=Clock())
    elsewhere_made = make(keys)  # another process's key, which `here` has not read yet
    own = make(keys)
    here.apply(keys.get(own.id))  # a newer sequence number than the other key's
    assert here.refresh() >= 1
    assert here.authenticate(bearer(elsewhere_made)).key_id == elsewhere_made.id
