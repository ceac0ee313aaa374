"""Plain domain types shared across layers: model references, versions, datasets, training
jobs, API keys and the caller (``Principal``), the clock."""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from imaas.errors import InvalidRequest
from imaas.schemas.jobs import FINAL_STATES
from imaas.schemas.manifest import Manifest

# Matched with ``fullmatch``: ``$`` alone would let a trailing newline through. The patterns
# are also published in the OpenAPI description, so they stay ECMA-262 compatible.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
PRODUCTION = "production"
_DECIMAL = re.compile(r"[0-9]{1,18}")
MAX_VERSION = 2**53 - 1  # versions stay exact in a JSON number (a double), whatever parses them


def parse_decimal(text: str) -> int | None:
    """The value of ``text`` when it is a plain ASCII decimal of at most 18 digits, else None.

    ``str.isdigit()`` accepts characters ``int()`` refuses (superscript two, other scripts'
    digits) and ``int()`` refuses strings past 4,300 digits: both used to reach a 500.

    Example::

        parse_decimal("42")  # 42
        parse_decimal("²")   # None
    """
    return int(text) if _DECIMAL.fullmatch(text) else None


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise ``InvalidRequest``."""
    if not NAME_RE.fullmatch(name):
        raise InvalidRequest(f"invalid model name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-'")
    return name


@dataclass(frozen=True)
class ModelRef:
    """What a caller asks for: ``name``, ``name@version`` or ``name:alias``.

    With neither a version nor an alias the ``production`` alias is meant, falling back to
    the latest version when the model has no ``production`` alias.

    Example::

        ModelRef.parse("mobilenet-v2@3")  # ModelRef(name='mobilenet-v2', version=3, alias=None)
    """

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str, version: int | None = None, alias: str | None = None) -> ModelRef:
        """Parse ``text`` and merge an explicit ``version``/``alias`` (from query parameters)."""
        name = text
        if "@" in text:
            name, _, v = text.partition("@")
            number = parse_decimal(v)
            if number is None:
                raise InvalidRequest(f"invalid version in {text!r}: expected name@<integer>")
            if version is not None and version != number:
                raise InvalidRequest("version given twice with different values")
            version = number
        elif ":" in text:
            name, _, a = text.partition(":")
            if alias is not None and alias != a:
                raise InvalidRequest("alias given twice with different values")
            alias = a
        check_name(name)
        if version is not None and alias is not None:
            raise InvalidRequest("give a version or an alias, not both")
        if version is not None and version < 1:
            raise InvalidRequest("versions start at 1")
        if version is not None and version > MAX_VERSION:
            raise InvalidRequest(f"version {version} is too large: versions go up to {MAX_VERSION}")
        if alias is not None and not ALIAS_RE.fullmatch(alias):
            raise InvalidRequest(f"invalid alias {alias!r}")
        return cls(name=name, version=version, alias=alias)

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}:{self.alias}"
        return self.name


@dataclass(frozen=True)
class ModelVersion:
    """An immutable registered version of a model."""

    model: str
    version: int
    sha256: str
    size_bytes: int
    manifest: Manifest
    created_at: datetime
    metrics: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    parent_version: int | None = None
    dataset: str | None = None
    job_id: str | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        """Identity of the version in the engine."""
        return (self.model, self.version)


@dataclass(frozen=True)
class ModelRecord:
    """A model and its aliases (alias name -> version)."""

    name: str
    task: str
    description: str
    created_at: datetime
    latest_version: int | None
    aliases: dict[str, int]
    routes: dict[str, AliasRoute] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    keep_latest: int = 0
    price_per_1000: Decimal | None = None  # what 1,000 predicted images cost; None: the task's price


@dataclass(frozen=True)
class AliasRoute:
    """Where an alias sends traffic: its version, optionally a canary and a shadow.

    ``canary_weight`` is the percentage (0-100) of the alias's requests answered by
    ``canary_version`` (a version of the same model); ``shadow_weight`` the percentage copied
    to the shadow, which may be a version of another model of the same task and never
    answers a caller.
    """

    alias: str
    version: int
    canary_version: int | None = None
    canary_weight: float = 0.0
    shadow_model: str | None = None
    shadow_version: int | None = None
    shadow_weight: float = 0.0


@dataclass(frozen=True)
class Route:
    """A reference resolved for serving: the version that answers, and for an alias the
    canary that answers ``canary_weight`` percent and the shadow that gets a copy of
    ``shadow_weight`` percent."""

    primary: ModelVersion
    alias: str | None = None
    canary: ModelVersion | None = None
    canary_weight: float = 0.0
    shadow: ModelVersion | None = None
    shadow_weight: float = 0.0

    @property
    def versions(self) -> list[ModelVersion]:
        """Every version this route may run."""
        return [v for v in (self.primary, self.canary, self.shadow) if v is not None]


@dataclass(frozen=True)
class ModelEvent:
    """One recorded change to a model: who did what, when, from which version to which.

    ``action`` is one of ``push``, ``alias``, ``promote``, ``rollback``, ``canary``,
    ``shadow``, ``delete``, ``edit``; ``seq`` orders every change of the registry (the
    change feed other processes poll).
    """

    seq: int
    model: str
    action: str
    alias: str | None
    from_version: int | None
    to_version: int | None
    actor: str | None
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RollbackPlan:
    """Where a rollback of ``alias`` goes: from ``current`` back to ``target``, undoing the
    change recorded as event ``undoes``."""

    alias: str
    current: int
    target: int
    undoes: int


class Clock(Protocol):
    """Monotonic time source, injected so batching and deadlines are testable without sleeping."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...


class SystemClock:
    """The real monotonic clock."""

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


class Scope(StrEnum):
    """What an API key may do. ``keys:admin`` manages keys and reads the audit log."""

    INFER = "infer"
    MODELS_READ = "models:read"
    MODELS_WRITE = "models:write"
    KEYS_ADMIN = "keys:admin"
    USAGE_READ = "usage:read"
    JOBS = "jobs"
    DATASETS_READ = "datasets:read"
    DATASETS_WRITE = "datasets:write"
    COLLECTIONS_READ = "collections:read"
    COLLECTIONS_WRITE = "collections:write"


ALL_SCOPES: frozenset[str] = frozenset(s.value for s in Scope)


@dataclass(frozen=True)
class KeyLimits:
    """A key's rate limit and image quotas (None: unlimited), and its free tier.

    ``rps`` requests per second refill a bucket of ``burst`` requests (default: ``rps``
    rounded up); ``images_per_day`` and ``images_per_month`` count predicted images per UTC
    day and calendar month; the first ``free_images_per_month`` images of a month cost nothing.
    """

    rps: float | None = None
    burst: int | None = None
    images_per_day: int | None = None
    images_per_month: int | None = None
    free_images_per_month: int = 0

    @property
    def limited(self) -> bool:
        """Whether any limit applies (an unlimited key skips the counters)."""
        return self.rps is not None or self.images_per_day is not None or self.images_per_month is not None


@dataclass(frozen=True)
class ApiKey:
    """An API key as stored: never its secret, only the secret's hash.

    ``models`` holds model names or shell-style patterns (``team-a-*``); None means every
    model. ``replaced_by`` names the key a rotation created; the old one keeps working
    until ``revoked_at`` (the end of the rotation's grace period).
    """

    id: str
    name: str
    secret_hash: str = field(repr=False)
    scopes: frozenset[str]
    models: tuple[str, ...] | None
    limits: KeyLimits
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    created_by: str | None = None
    replaced_by: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do: handed by the edges to every service that
    authorises, meters or records.

    ``key_id`` is None only when authentication is off (local development), where the
    caller may do everything.

    Example::

        p = Principal("k1", "ci", frozenset({"infer"}), ("team-a-*",))
        p.allows(Scope.INFER), p.sees("team-a-cats"), p.sees("team-b")  # True, True, False
    """

    key_id: str | None
    name: str
    scopes: frozenset[str] = ALL_SCOPES
    models: tuple[str, ...] | None = None
    limits: KeyLimits = field(default_factory=KeyLimits)
    expires_at: datetime | None = None

    @property
    def unrestricted(self) -> bool:
        """Whether the key reaches every model (only such a key manages keys)."""
        return self.models is None

    def allows(self, scope: Scope | str) -> bool:
        """Whether the key carries ``scope``."""
        return scope in self.scopes

    def sees(self, model: str) -> bool:
        """Whether ``model`` exists for this key (a key limited to some models sees no other)."""
        if self.models is None:
            return True
        return _model_matcher(self.models)(model) is not None

    @property
    def actor(self) -> str:
        """How history and the audit log name this caller."""
        return self.name if self.key_id is None else f"{self.name} ({self.key_id})"


ANONYMOUS = Principal(key_id=None, name="anonymous")
"""The caller when authentication is off: every scope, every model."""


_MATCHERS: dict[tuple[str, ...], Callable[[str], re.Match[str] | None]] = {}


def _model_matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """One compiled regex for a key's patterns (cached: a predict checks it on the hot path)."""
    matcher = _MATCHERS.get(patterns)
    if matcher is None:
        regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)")
        matcher = regex.fullmatch
        if len(_MATCHERS) < 4096:
            _MATCHERS[patterns] = matcher
    return matcher


@dataclass(frozen=True)
class DatasetVersion:
    """An immutable version of a labelled image dataset: one canonical archive in the
    artifact store (by sha256), its split and statistics (``summary``) and the cleaning
    report of the upload it came from."""

    dataset: str
    version: int
    sha256: str
    size_bytes: int
    summary: dict[str, Any]
    report: dict[str, Any]
    created_at: datetime
    created_by: str | None = None
    description: str = ""

    @property
    def ref(self) -> str:
        """``name@version``, how jobs and lineage name it."""
        return f"{self.dataset}@{self.version}"


class JobState(StrEnum):
    """Where a job is. ``queued`` and ``running`` are live; the other three are final."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Whether the job is over (nothing changes it any more)."""
        return self.value in FINAL_STATES


@dataclass(frozen=True)
class Job:
    """A training job: what to train (``model`` from ``dataset`` with ``config``), its state,
    the worker running it and its last heartbeat, the latest progress and the outcome.

    ``attempts`` counts the workers that took it up: a worker that dies leaves it ``running``
    with a stale heartbeat, and the next worker resumes it from its last checkpoint."""

    id: str
    kind: str
    state: JobState
    model: str
    dataset: str
    config: dict[str, Any]
    created_at: datetime
    created_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    worker: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    description: str = ""


@dataclass(frozen=True)
class JobEvent:
    """One line of a job's log: ``kind`` is ``state``, ``progress``, ``log`` or ``epoch``,
    numbered per job by ``seq`` (what Server-Sent Events resume from)."""

    job_id: str
    seq: int
    at: datetime
    kind: str
    data: dict[str, Any]
