"""Key management use cases: create, list, revoke, rotate, and the first start's admin key.

Creating a key draws a random id and secret (``security/keys.py``), stores the id and the
hash (``registry/keys.py``) and applies the new key to this process's ``Authenticator`` at
once; the text is returned once and never stored. A rotation creates a copy of a key (same
name, scopes, models and limits) and revokes the old one after a grace period, so callers
can switch without an outage.

On a registry with no key at all, ``ensure_admin_key`` creates one with every scope and
writes it to a file only its owner may read (mode 0600, created exclusively: an existing
file is never overwritten), so a new server is secure from its first start and the CLI on
the same machine finds the key by itself.

Example::

    svc = KeyService(SqlKeys(registry), authenticator)
    created = svc.create("ci", ["infer"], models=("team-a-*",), actor="admin (k1)")
    print(created.text)       # shown once
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from imaas.domain import ALL_SCOPES, ApiKey, KeyLimits, Principal, Scope
from imaas.errors import Conflict, Forbidden, InvalidField
from imaas.registry.keys import SqlKeys
from imaas.schemas.keys import KEY_NAME_PATTERN, MODEL_PATTERN_PATTERN
from imaas.security.keys import new_key
from imaas.services.auth import Authenticator

MAX_NAME = 128
MAX_PATTERNS = 64
KEY_NAME_RE = re.compile(KEY_NAME_PATTERN)
MODEL_PATTERN_RE = re.compile(MODEL_PATTERN_PATTERN)
FIRST_START_WAIT_S = 10.0  # how long a second first start waits for the first one's admin key


@dataclass(frozen=True)
class CreatedKey:
    """A key just made: its record and its text (the only time the text exists)."""

    key: ApiKey
    text: str = field(repr=False)


class KeyService:
    """Create, list, revoke and rotate API keys; keeps the process's ``Authenticator`` current."""

    def __init__(self, keys: SqlKeys, authenticator: Authenticator) -> None:
        self.keys = keys
        self.authenticator = authenticator

    def create(
        self,
        name: str,
        scopes: Iterable[str],
        *,
        models: tuple[str, ...] | None = None,
        limits: KeyLimits | None = None,
        expires_at: datetime | None = None,
        actor: str | None = None,
        creator: Principal | None = None,
    ) -> CreatedKey:
        """A new key; ``InvalidField`` naming the field for a bad name, scope, pattern or limit.

        A ``creator`` (the caller, when a key makes the key) can give no more than it holds:
        ``Forbidden`` for a scope it lacks, or for models outside its own list."""
        scopes = check_key_fields(name, scopes, models, limits, expires_at)
        if creator is not None:
            check_within(creator, scopes, models, limits or KeyLimits(), expires_at)
        for _attempt in range(3):
            issued = new_key()
            try:
                key = self.keys.create(
                    issued.id,
                    issued.secret_hash,
                    name,
                    scopes,
                    models=models,
                    limits=limits,
                    expires_at=expires_at,
                    created_by=actor,
                )
            except Conflict:  # 60 random bits collided: draw another id
                continue
            self.authenticator.apply(key)
            return CreatedKey(key, issued.text)
        raise Conflict("could not draw an unused API key id; retry")

    def list_keys(self) -> list[ApiKey]:
        """Every key, without secrets (only their hashes exist)."""
        return self.keys.list_keys()

    def get(self, key_id: str) -> ApiKey:
        """One key; ``KeyNotFound`` when no key has that id."""
        return self.keys.get(key_id)

    def revoke(self, key_id: str, at: datetime | None = None, *, replaced_by: str | None = None) -> ApiKey:
        """Revoke ``key_id`` from ``at`` (default now); ``KeyNotFound`` when no key has that id,
        ``Conflict`` when it is the last usable key with ``keys:admin`` (nobody could make keys again)."""
        if replaced_by is None and Scope.KEYS_ADMIN in self.keys.get(key_id).scopes:
            now = datetime.now(UTC)
            admins = [
                k
                for k in self.keys.list_keys()
                if Scope.KEYS_ADMIN in k.scopes and k.models is None and _usable(k, now)
            ]
            if [k.id for k in admins] == [key_id]:
                raise Conflict(
                    f"{key_id} is the last usable key with keys:admin; create another admin key before revoking it"
                )
        key = self.keys.revoke(key_id, at, replaced_by=replaced_by)
        self.authenticator.apply(key)
        return key

    def rotate(
        self,
        key_id: str,
        grace: timedelta = timedelta(0),
        actor: str | None = None,
        creator: Principal | None = None,
    ) -> CreatedKey:
        """A new key with the old one's name, scopes, models, limits and expiry; the old one
        is revoked after ``grace`` (0: at once) and names the new one as ``replaced_by``.
        ``Conflict`` for a key that is revoked or expired already (create a new one instead);
        ``Forbidden`` when ``creator`` could not have made the old key (a rotation hands out
        a working secret of it)."""
        old = self.keys.get(key_id)
        if not _usable(old, datetime.now(UTC)) or old.replaced_by is not None:
            raise Conflict(f"API key {key_id} is revoked, expired or already rotated: create a new key instead")
        created = self.create(
            old.name,
            old.scopes,
            models=old.models,
            limits=old.limits,
            expires_at=old.expires_at,
            actor=actor,
            creator=creator,
        )
        self.revoke(key_id, datetime.now(UTC) + grace, replaced_by=created.key.id)
        return created

    def ensure_admin_key(self, path: Path) -> Path | None:
        """On a registry without keys, create an admin key (every scope) and write it to
        ``path`` (mode 0600); returns the path when it did, None when keys already existed."""
        if self.keys.list_keys():
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        # the file first (exclusively: it is also the lock between two first starts), so no
        # key is ever made whose text could not be written down
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # another first start may hold the file and be making its key right now
            deadline = time.monotonic() + FIRST_START_WAIT_S
            while True:
                if self.keys.list_keys():
                    return None  # another first start won the race
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            raise Conflict(
                f"{path} exists but the registry has no API key: it holds no valid key; "
                "remove it and start again to get a new admin key"
            ) from None
        try:
            with os.fdopen(fd, "w") as f:
                created = self.create("admin", ALL_SCOPES, actor="imaas (first start)")
                f.write(created.text + "\n")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path


def check_key_fields(
    name: str,
    scopes: Iterable[str],
    models: tuple[str, ...] | None,
    limits: KeyLimits | None,
    expires_at: datetime | None,
) -> list[str]:
    """The scopes as a sorted list, once every field of a new key has been checked."""
    if not KEY_NAME_RE.fullmatch(name):
        raise InvalidField(f"name: 1-{MAX_NAME} characters, no control characters")
    wanted = sorted(set(scopes))
    unknown = [s for s in wanted if s not in ALL_SCOPES]
    if unknown or not wanted:
        raise InvalidField(f"scopes: {unknown or 'none given'}; choose from {', '.join(sorted(ALL_SCOPES))}")
    if models is not None:
        if not models or len(models) > MAX_PATTERNS:
            raise InvalidField(f"models: 1-{MAX_PATTERNS} names or patterns")
        for p in models:
            if len(p) > 63 or not MODEL_PATTERN_RE.fullmatch(p):
                raise InvalidField(f"models: {p[:70]!r} is not a model name or pattern")
    if limits is not None:
        if limits.rps is not None and not 0 < limits.rps <= 1e6:
            raise InvalidField("limits.rps: must be above 0 (and at most 1,000,000)")
        for field, value in (
            ("burst", limits.burst),
            ("images_per_day", limits.images_per_day),
            ("images_per_month", limits.images_per_month),
        ):
            if value is not None and value < 1:
                raise InvalidField(f"limits.{field}: must be at least 1")
        if limits.free_images_per_month < 0:
            raise InvalidField("limits.free_images_per_month: must not be negative")
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidField("expires: give a time zone (e.g. 2027-01-01T00:00:00Z)")
    if expires_at is not None:
        try:
            expires_at.astimezone(UTC)
        except OverflowError:  # year 1 at +14:00, year 9999 at -14:00
            raise InvalidField("expires: outside the years 1-9999 once in UTC") from None
    return wanted


def _usable(key: ApiKey, now: datetime) -> bool:
    """Neither revoked nor expired at ``now``."""
    return (key.revoked_at is None or key.revoked_at > now) and (key.expires_at is None or key.expires_at > now)


def check_within(
    creator: Principal,
    scopes: Iterable[str],
    models: tuple[str, ...] | None,
    limits: KeyLimits,
    expires_at: datetime | None,
) -> None:
    """``Forbidden`` unless a key with these fields gives no more than ``creator`` holds: no
    scope it lacks, no model outside its own, no looser limit, no larger free tier, no later
    expiry."""
    extra = sorted(s for s in scopes if s not in creator.scopes)
    if extra:
        raise Forbidden(f"a key cannot give scopes it does not hold: {', '.join(extra)}")
    own = creator.limits
    for name in ("rps", "burst", "images_per_day", "images_per_month"):
        mine, theirs = getattr(own, name), getattr(limits, name)
        if mine is not None and (theirs is None or theirs > mine):
            raise Forbidden(f"limits.{name}: at most this key's own ({mine:g})")
    # a key without limits may give any free tier; a limited one no more than its own
    if own.limited and limits.free_images_per_month > own.free_images_per_month:
        raise Forbidden(f"limits.free_images_per_month: at most this key's own ({own.free_images_per_month})")
    if creator.expires_at is not None and (expires_at is None or expires_at > creator.expires_at):
        raise Forbidden(f"expires: no later than this key's own expiry ({creator.expires_at:%Y-%m-%dT%H:%M:%SZ})")
    if creator.models is None:
        return
    if models is None:
        raise Forbidden("this key is limited to some models: give the new key models within them")
    patterns = set(creator.models)
    outside = [m for m in models if m not in patterns and (any(c in m for c in "*?[") or not creator.sees(m))]
    if outside:
        raise Forbidden(f"models outside this key's own: {', '.join(outside)}")
