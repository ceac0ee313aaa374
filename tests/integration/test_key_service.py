"""Key management (services/keys.py) on the registry's real key table, both databases."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imaas.domain import ALL_SCOPES, KeyLimits
from imaas.errors import Conflict, InvalidCredentials, InvalidField, KeyNotFound, KeyRevoked
from imaas.registry.keys import SqlKeys
from imaas.registry.sql import open_registry
from imaas.services.auth import Authenticator
from imaas.services.keys import KeyService


@pytest.fixture
def svc(registry_url: str) -> Iterator[KeyService]:
    registry = open_registry(registry_url)
    keys = SqlKeys(registry)
    yield KeyService(keys, Authenticator(keys.changed_since))
    registry.close()


def test_a_created_key_works_here_at_once_and_is_listed_without_its_text(svc: KeyService) -> None:
    created = svc.create("ci", ["infer"], models=("cats",), actor="admin (x)")
    assert svc.authenticator.authenticate(f"Bearer {created.text}").key_id == created.key.id
    listed = svc.list_keys()
    assert [k.id for k in listed] == [created.key.id]
    assert created.text not in repr(listed)
    assert listed[0].created_by == "admin (x)"


def test_rotation_keeps_the_old_key_through_its_grace_period(svc: KeyService) -> None:
    old = svc.create("ci", ["infer", "models:read"], limits=KeyLimits(rps=2))
    new = svc.rotate(old.key.id, grace=timedelta(hours=1))
    assert new.key.scopes == old.key.scopes
    assert new.key.limits == old.key.limits
    assert new.key.name == "ci"
    auth = svc.authenticator
    assert auth.authenticate(f"Bearer {new.text}").key_id == new.key.id
    assert auth.authenticate(f"Bearer {old.text}").key_id == old.key.id  # still in its grace period
    newest = svc.rotate(new.key.id)  # no grace: the previous one stops at once
    with pytest.raises(KeyRevoked):
        auth.authenticate(f"Bearer {new.text}")
    assert auth.authenticate(f"Bearer {newest.text}").key_id == newest.key.id


def test_revoking_an_unknown_key_is_not_found(svc: KeyService) -> None:
    with pytest.raises(KeyNotFound):
        svc.revoke("aaaaaaaaaaaa")


def test_first_start_writes_an_admin_key_only_its_owner_reads(svc: KeyService, tmp_path: Path) -> None:
    path = tmp_path / "home" / "admin.key"
    assert svc.ensure_admin_key(path) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text().strip()
    p = svc.authenticator.authenticate(f"Bearer {text}")
    assert p.scopes == ALL_SCOPES
    assert p.models is None
    # later starts find keys and leave the file alone
    assert svc.ensure_admin_key(path) is None
    assert path.read_text().strip() == text
    assert len(svc.list_keys()) == 1


def test_another_process_sees_nothing_until_it_refreshes(svc: KeyService) -> None:
    other = Authenticator(svc.keys.changed_since)
    created = svc.create("ci", ["infer"])
    with pytest.raises(InvalidCredentials):
        other.authenticate(f"Bearer {created.text}")
    other.refresh()
    assert other.authenticate(f"Bearer {created.text}").key_id == created.key.id


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["infer", "root"]}, "scopes"),
        ({"models": ()}, "models"),
        ({"models": (" cats",)}, "models"),
        ({"limits": KeyLimits(rps=0)}, "limits.rps"),
        ({"limits": KeyLimits(images_per_day=0)}, "limits.images_per_day"),
        ({"limits": KeyLimits(free_images_per_month=-1)}, "limits.free_images_per_month"),
        ({"expires_at": datetime(2030, 1, 1)}, "expires"),
    ],
)
def test_bad_fields_are_named(svc: KeyService, kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"name": "ci", "scopes": ["infer"], **kwargs}
    name = args.pop("name")
    scopes = args.pop("scopes")
    with pytest.raises(InvalidField) as info:
        svc.create(name, scopes, **args)  # type: ignore[arg-type]
    assert info.value.detail.startswith(field + ":")
    assert svc.list_keys() == []


def test_an_aware_expiry_is_kept(svc: KeyService) -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert svc.create("ci", ["infer"], expires_at=at).key.expires_at == at


def test_a_key_file_already_there_is_never_overwritten_nor_a_key_made_without_it(
    svc: KeyService, tmp_path: Path
) -> None:
    path = tmp_path / "admin.key"
    path.write_text("someone else's\n")
    with pytest.raises(Conflict):
        svc.ensure_admin_key(path)
    assert path.read_text() == "someone else's\n"
    assert svc.list_keys() == []


def test_revoking_a_key_in_its_rotation_grace_period_ends_it_now(svc: KeyService) -> None:
    old = svc.create("ci", ["infer"])
    svc.rotate(old.key.id, grace=timedelta(days=7))
    svc.revoke(old.key.id)
    with pytest.raises(KeyRevoked):
        svc.authenticator.authenticate(f"Bearer {old.text}")


def test_secrets_stay_out_of_reprs(svc: KeyService) -> None:
    created = svc.create("ci", ["infer"])
    secret = created.text.rsplit("_", 1)[1]
    for thing in (created, created.key):
        assert secret not in repr(thing)
        assert created.key.secret_hash not in repr(thing)
