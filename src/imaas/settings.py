"""Settings: the one place that reads the environment.

Every knob has an ``IMAAS_`` variable; nested groups use ``__`` (``IMAAS_RUNTIME__MAX_BATCH=8``).
Build one ``Settings`` at an edge (``create_app``, the CLI) and pass it down.

Example::

    settings = Settings(home=Path("/tmp/imaas"))
    settings.database_url  # 'sqlite:////tmp/imaas/registry.db'
"""

from __future__ import annotations

import ipaddress
import os
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imaas.errors import UnsafeSettings


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _default_home() -> Path:
    return Path.home() / ".imaas"


class ServerSettings(BaseModel):
    """Where the HTTP server listens and how much it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    grpc_port: int | None = Field(8001, ge=0, le=65535, description="OIP gRPC port; unset to disable")
    max_body_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest predict request body")
    max_upload_bytes: int = Field(512 * 1024 * 1024, gt=0, description="largest model push body")
    max_images_per_request: int = Field(64, gt=0, description="images in one request, in every body format")
    max_json_values: int = Field(
        1_000_000,
        gt=0,
        description="values an OIP JSON body may hold (a tenth of it arrays and objects); larger tensors go binary",
    )
    max_tensor_elements: int = Field(
        8 * 1024 * 1024, gt=0, description="elements all OIP input tensors of one request may declare together"
    )


class ImageSettings(BaseModel):
    """Limits applied to every image before it is decoded."""

    max_pixels: int = Field(50_000_000, gt=0, description="width*height above this is refused")
    max_side: int = Field(20_000, gt=0)
    min_side: int = Field(8, gt=0, description="images narrower or shorter than this are refused")
    max_request_pixels: int = Field(
        100_000_000,
        gt=0,
        description="what one request's images may cost to decode together, in pixels of full decoding "
        "(a JPEG decoded reduced counts an eighth of its pixels, a progressive one all)",
    )
    max_downscale: float = Field(
        400.0,
        gt=1,
        description="a PNG/WebP/BMP/GIF/TIFF over 4 megapixels with more than this many times the pixels "
        "the model reads is refused (they cannot be decoded reduced; JPEG can)",
    )


class RuntimeSettings(BaseModel):
    """ONNX Runtime and the dynamic batcher.

    Defaults come from measurement on a 2-core machine: batch 1 is fastest for a small CNN,
    so the batcher only groups requests that are already waiting, and two single-threaded
    streams keep both cores busy better than one two-threaded one. A request that finds the
    server idle runs on a solo session with every core instead (lower latency at low load).
    """

    intra_op_threads: int = Field(1, ge=0, description="0 lets ONNX Runtime choose")
    inter_op_threads: int = Field(1, ge=0)
    allow_spinning: bool = False
    workers: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1), ge=1, description="batches run in parallel per model"
    )
    max_batch: int = Field(8, ge=1)
    max_wait_ms: float = Field(0.0, ge=0, description="extra wait for a fuller batch under load")
    max_queue: int = Field(256, ge=1, description="queued requests per model before 429")
    max_queue_mib: int = Field(256, ge=1, description="MiB of request bodies queued per model before 429")
    request_timeout_s: float = Field(30.0, gt=0, description="per-request deadline -> 504")
    solo_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="intra-op threads for a request that arrives at an idle server; 1 turns solo sessions off",
    )
    solo_models: int = Field(
        1,
        ge=0,
        description="models that may hold a solo session at once (each is a second copy of the weights); "
        "the ones called alone most recently get them",
    )
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    load_on_startup: bool = True


class RegistrySettings(BaseModel):
    """How this process keeps up with the shared registry."""

    poll_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="how often the change feed is read: pushes, alias moves, canaries and shadows made by "
        "other processes take effect here within this delay",
    )
    migrate_on_start: bool = Field(
        True,
        description="run the database migrations when the server starts (serialised across replicas); "
        "false: refuse to start unless `imaas db upgrade` brought the schema to head",
    )


class S3Settings(BaseModel):
    """The S3-compatible endpoint of an ``s3://`` artifacts URL (credentials: the usual AWS variables)."""

    endpoint_url: str | None = Field(None, description="e.g. http://minio:9000; unset for AWS S3")
    region: str | None = None


class ModelPolicySettings(BaseModel):
    """Which versions stay loaded, and the shadow traffic's queue.

    Every version an alias, canary or shadow points at stays loaded (plus a model's
    ``keep_latest`` newest versions); others are unloaded after ``idle_unload_s`` without a
    request, and when the loaded versions outgrow ``memory_budget_mib`` the least recently
    used of them go first.
    """

    idle_unload_s: float = Field(600.0, gt=0, description="unload an unpinned version after this long unused")
    memory_budget_mib: int | None = Field(
        None, gt=0, description="resident memory the loaded versions may use; least recently used unloaded first"
    )
    check_interval_s: float = Field(5.0, gt=0, description="how often idle versions and the budget are checked")
    shadow_queue: int = Field(
        64, ge=1, description="shadow requests waiting to run; more are dropped (and counted), never waited for"
    )
    shadow_queue_mib: int = Field(64, ge=1, description="MiB of images the waiting shadow requests may hold")
    shadow_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU priority (Linux nice) of the thread that runs shadow copies: when serving needs "
        "every core, a shadow at 10 gets a small share and its queue drops the rest; idle CPU it gets whole",
    )


class AuthSettings(BaseModel):
    """API keys: on by default, loopback included.

    On a registry without keys the first start creates an admin key (every scope) and writes
    it to ``key_file`` (default ``$IMAAS_HOME/admin.key``, mode 0600); the CLI on the same
    machine reads it from there.
    """

    enabled: bool = Field(
        True,
        description="require an API key on every route but health and docs; false is for local development "
        "only (the server refuses it on a non-loopback address)",
    )
    key_file: Path | None = Field(
        None, description="where the first start writes the admin key; default home/admin.key"
    )
    refusal_delay_s: float = Field(
        0.05,
        ge=0,
        le=5,
        description="pause before answering a refused request (401, 403 of the key, 429 of its limits): a client "
        "looping on refusals then cannot take the event loop from other keys",
    )
    refresh_s: float = Field(
        1.0, gt=0, le=60, description="how often keys made or revoked by other processes are read from the registry"
    )


class QuotaSettings(BaseModel):
    """Where per-key rate-limit and quota counters live."""

    redis_url: str | None = Field(
        None,
        description="redis://host:6379/0: counters shared by every server using it (cluster mode); "
        "unset: in this process's memory",
    )


class MeteringSettings(BaseModel):
    """Usage metering: units per key x model x version x task x day, written in batches."""

    flush_s: float = Field(2.0, gt=0, le=300, description="how often recorded usage is written to the registry")
    task_prices: dict[str, Annotated[Decimal, Field(ge=0, le=1_000_000_000, allow_inf_nan=False)]] = Field(
        default_factory=dict,
        description='price per 1,000 images by task (e.g. {"detection": "1.50"}), for models without a price',
    )


class DatasetSettings(BaseModel):
    """Limits on dataset uploads, checked while they stream in and while they are unpacked,
    and what the cleaning drops."""

    max_upload_mib: int = Field(2048, gt=0, description="largest dataset archive upload")
    max_members: int = Field(200_000, gt=0, description="files an archive may hold")
    max_member_mib: int = Field(32, gt=0, description="largest file inside an archive, unpacked")
    max_total_mib: int = Field(4096, gt=0, description="all files of an archive together, unpacked")
    max_ratio: float = Field(100.0, gt=1, description="unpacked/packed size above which an archive is a zip bomb")
    min_side: int = Field(8, ge=1, description="images with a shorter side are dropped as tiny")
    blank_std: float = Field(2.0, ge=0, description="images whose grey-level std is below this are dropped as blank")
    max_concurrent_uploads: int = Field(
        2, ge=1, description="uploads a server receives and cleans at once; more are answered 429 with Retry-After"
    )


class JobSettings(BaseModel):
    """The training job queue and its workers."""

    heartbeat_s: float = Field(2.0, gt=0, le=60, description="how often a worker renews its running job")
    stale_s: float = Field(
        30.0, gt=0, description="a running job whose heartbeat is this old lost its worker and is taken up again"
    )
    max_attempts: int = Field(3, ge=1, le=100, description="workers a job may lose before it fails")
    poll_s: float = Field(1.0, gt=0, le=60, description="how often an idle worker looks for a queued job")
    threads: int = Field(
        1, ge=1, description="torch threads of a training job (1 of 2 cores leaves serving the other)"
    )
    work_dir: Path | None = Field(None, description="checkpoints and job files; default home/jobs")
    max_streams: int = Field(
        64, ge=1, description="job event streams (SSE) a server keeps open at once; more are answered 429"
    )
    max_memory_mib: int = Field(
        8192, ge=256, description="jobs whose estimated memory (dataset decoded, weights, a batch) is more are refused"
    )

    @model_validator(mode="after")
    def _stale_after_beats(self) -> JobSettings:
        if self.stale_s < 3 * self.heartbeat_s:  # a live job must never look dead between two beats
            raise ValueError(
                f"jobs.stale_s ({self.stale_s}) must be at least 3 x jobs.heartbeat_s ({self.heartbeat_s})"
            )
        return self


class CollectionSettings(BaseModel):
    """Vector collections (similarity search over embeddings) and their limits."""

    url: str | None = Field(
        None,
        description="where the vector tables live: a folder, or s3://bucket/prefix (the s3 endpoint settings "
        "apply); default: beside the artifacts (home/collections, or <artifacts_url>/collections)",
    )
    max_k: int = Field(100, ge=1, le=10_000, description="most neighbours one search answers")
    max_items: int = Field(64, ge=1, le=10_000, description="items one add request may carry")
    max_id_length: int = Field(256, ge=1, le=4096, description="longest item id, in characters")
    max_metadata_bytes: int = Field(4096, ge=2, le=1_048_576, description="largest item metadata, as JSON")
    max_collections: int = Field(1000, ge=1, description="collections a registry may hold")
    max_collection_items: int = Field(1_000_000, ge=1, description="items one collection may hold")


class Settings(BaseSettings):
    """All configuration of one imaas process."""

    model_config = SettingsConfigDict(env_prefix="IMAAS_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="registry database and artifacts")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL (postgresql://user@host/db for a cluster); default SQLite under home"
    )
    artifacts_url: str | None = Field(
        None, description="s3://bucket/prefix for an S3-compatible bucket; default a folder under home"
    )
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    models: ModelPolicySettings = Field(default_factory=ModelPolicySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    metering: MeteringSettings = Field(default_factory=MeteringSettings)
    datasets: DatasetSettings = Field(default_factory=DatasetSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    collections: CollectionSettings = Field(default_factory=CollectionSettings)

    @property
    def db_url(self) -> str:
        """The registry database URL (SQLite file under ``home`` unless set)."""
        return self.database_url or f"sqlite:///{self.home / 'registry.db'}"

    def check_safe(self) -> None:
        """``UnsafeSettings`` when authentication is off on an address other machines reach."""
        if not self.auth.enabled and not is_loopback(self.server.host):
            raise UnsafeSettings(
                f"authentication is off (auth.enabled=false) and the server would listen on {self.server.host}: "
                "turn authentication on, or bind 127.0.0.1 for local development"
            )

    @property
    def admin_key_file(self) -> Path:
        """Where the first start's admin key is written (and where the local CLI reads it)."""
        return self.auth.key_file or self.home / "admin.key"

    @property
    def jobs_dir(self) -> Path:
        """Where workers keep the checkpoints and files of the jobs they run."""
        return self.jobs.work_dir or self.home / "jobs"

    @property
    def collections_url(self) -> str:
        """Where vector tables live: the setting, else ``collections`` beside the artifacts."""
        if self.collections.url:
            return self.collections.url
        if self.artifacts_url and self.artifacts_url.startswith("s3://"):
            return self.artifacts_url.rstrip("/") + "/collections"
        return str(self.home / "collections")

    @property
    def artifacts_dir(self) -> Path:
        """Where content-addressed model files live."""
        return self.home / "artifacts"
