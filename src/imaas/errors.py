"""The error tree every layer raises and every edge renders.

Each class carries an HTTP ``status``, a stable machine-readable ``code`` and a short
``title``. The API renders them as RFC 9457 problem details; the SDK maps a problem's
``code`` back to the same class, so callers catch ``ModelNotFound`` on both sides of the
wire. This module imports nothing from the web stack.

Example::

    raise ModelNotFound("no model named 'resnet'")
"""

from __future__ import annotations

from typing import Any, ClassVar


class ImaasError(Exception):
    """Base of every error imaas raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"
    default_retry_after: ClassVar[float | None] = None  # errors worth retrying say when, by default

    def __init__(self, detail: str | None = None, *, retry_after: float | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra: dict[str, Any] = extra
        # seconds; the edges send it as Retry-After (gRPC: trailing metadata) when set
        self.retry_after = retry_after if retry_after is not None else self.default_retry_after
        self.headers: dict[str, str] = {}  # response headers the edges add (e.g. RateLimit on a 429)
        super().__init__(self.detail)


class InvalidRequest(ImaasError):
    """The request is malformed (bad parameter, missing field, wrong JSON)."""

    status = 400
    code = "invalid_request"
    title = "Invalid request"


class Unauthorized(ImaasError):
    """Credentials are missing or wrong: the request is refused before anything else is read.

    The subclasses tell why, each with its own code; none of them tells whether a key with
    the presented id exists (a wrong secret and an unknown key are both ``invalid_credentials``).
    """

    status = 401
    code = "unauthorized"
    title = "Missing or invalid credentials"


class MissingCredentials(Unauthorized):
    """No ``Authorization: Bearer`` header (gRPC: ``authorization`` metadata) was sent."""

    code = "missing_credentials"
    title = "Authentication required"


class MalformedCredentials(Unauthorized):
    """The credentials are not an imaas API key (wrong scheme, prefix or length)."""

    code = "malformed_credentials"
    title = "Malformed credentials"


class InvalidCredentials(Unauthorized):
    """The key is well formed but no key with that secret exists."""

    code = "invalid_credentials"
    title = "Invalid API key"


class KeyRevoked(Unauthorized):
    """The key was revoked (or replaced by a rotation whose grace period ended)."""

    code = "key_revoked"
    title = "API key revoked"


class KeyExpired(Unauthorized):
    """The key's expiry time has passed."""

    code = "key_expired"
    title = "API key expired"


class Forbidden(ImaasError):
    """The caller is authenticated but may not do this."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class InsufficientScope(Forbidden):
    """The key lacks the scope this operation needs (the detail names it)."""

    code = "insufficient_scope"
    title = "The API key lacks a scope this operation needs"


class ModelForbidden(Forbidden):
    """The key is limited to other models (a push or a write naming a model outside its list)."""

    code = "model_forbidden"
    title = "The API key may not use this model"


class TooManyImages(InvalidRequest):
    """The request carries more images than ``server.max_images_per_request``."""

    code = "too_many_images"
    title = "Too many images in one request"


class NotFound(ImaasError):
    """A named thing does not exist."""

    status = 404
    code = "not_found"
    title = "Not found"


class ModelNotFound(NotFound):
    """No model has the requested name."""

    code = "model_not_found"
    title = "Model not found"


class VersionNotFound(NotFound):
    """The model exists but not in the requested version."""

    code = "version_not_found"
    title = "Model version not found"


class AliasNotFound(NotFound):
    """The model has no alias with the requested name."""

    code = "alias_not_found"
    title = "Model alias not found"


class KeyNotFound(NotFound):
    """No API key has the requested id."""

    code = "key_not_found"
    title = "API key not found"


class DatasetNotFound(NotFound):
    """No dataset (or dataset version) has the requested name."""

    code = "dataset_not_found"
    title = "Dataset not found"


class JobNotFound(NotFound):
    """No training job has the requested id."""

    code = "job_not_found"
    title = "Job not found"


class CollectionNotFound(NotFound):
    """No vector collection has the requested name (or the caller's key does not see it)."""

    code = "collection_not_found"
    title = "Collection not found"


class ItemNotFound(NotFound):
    """The collection holds no item with the requested id."""

    code = "item_not_found"
    title = "Item not found"


class Conflict(ImaasError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"
    title = "Conflict"


class VersionInUse(Conflict):
    """A version cannot be deleted while an alias, canary or shadow points at it."""

    code = "version_in_use"
    title = "Version in use"


class ConcurrentChange(Conflict):
    """Another writer moved the alias between this change's read and its write."""

    code = "concurrent_change"
    title = "The alias changed meanwhile"


class NothingToRollBack(Conflict):
    """The alias has no earlier target to go back to (or that version was deleted)."""

    code = "nothing_to_roll_back"
    title = "Nothing to roll back to"


class VersionNotLoadable(Conflict):
    """A promote or canary target failed to load or to answer its warm-up inference."""

    code = "version_not_loadable"
    title = "The version could not be loaded"


class ArtifactCorrupt(Conflict):
    """A stored artifact's bytes no longer match the sha256 it was registered with."""

    code = "artifact_corrupt"
    title = "Artifact failed its checksum"


class InvalidField(ImaasError):
    """A well-formed request names a value that is not allowed (the detail names the field)."""

    status = 422
    code = "invalid_field"
    title = "Invalid field value"


class CollectionExists(Conflict):
    """A collection of that name exists already."""

    code = "collection_exists"
    title = "Collection exists"


class DimensionMismatch(InvalidField):
    """A vector's length is not the collection's dimension (or a model answers vectors of another)."""

    code = "dimension_mismatch"
    title = "Vector dimension mismatch"


class VectorStoreUnavailable(ImaasError):
    """The vector store (its folder or its S3-compatible bucket) did not answer."""

    status = 503
    code = "vector_store_unavailable"
    title = "Vector store unavailable"
    default_retry_after = 5.0


class PayloadTooLarge(ImaasError):
    """The request body is larger than the configured limit."""

    status = 413
    code = "payload_too_large"
    title = "Request body too large"


class UnsupportedMediaType(ImaasError):
    """The Content-Type is not one this endpoint accepts."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class InvalidImage(ImaasError):
    """The bytes are not a decodable image (empty, truncated, corrupt, unknown format)."""

    status = 422
    code = "invalid_image"
    title = "Invalid image"


class ImageTooLarge(InvalidImage):
    """The image's pixel count or side exceeds the limit (decompression-bomb guard)."""

    code = "image_too_large"
    title = "Image too large"


class ImageTooSmall(InvalidImage):
    """The image is smaller than the minimum side the server accepts."""

    code = "image_too_small"
    title = "Image too small"


class InvalidArchive(ImaasError):
    """An uploaded dataset archive is not a zip or tar, is corrupt, or holds an entry that
    could escape its folder (``../`` or absolute paths, links, devices)."""

    status = 422
    code = "invalid_archive"
    title = "Invalid archive"


class ArchiveTooLarge(PayloadTooLarge):
    """An archive unpacks past the limits (members, bytes per member or in all, or a
    compression ratio no real image archive has: a zip bomb); checked while extracting."""

    code = "archive_too_large"
    title = "Archive too large"


class InvalidDataset(ImaasError):
    """The archive's images cannot make a dataset to train on (fewer than two classes, a
    class too small for the split, labels naming files that are not there)."""

    status = 422
    code = "invalid_dataset"
    title = "Invalid dataset"


class InvalidModel(ImaasError):
    """The uploaded file is not a valid ONNX model."""

    status = 422
    code = "invalid_model"
    title = "Invalid ONNX model"


class InvalidManifest(ImaasError):
    """The manifest is malformed or contradicts the ONNX graph."""

    status = 422
    code = "invalid_manifest"
    title = "Invalid model manifest"


class InvalidInput(ImaasError):
    """An input tensor or image does not fit what the model takes."""

    status = 422
    code = "invalid_input"
    title = "Invalid model input"


class Overloaded(ImaasError):
    """The model's queue is full: back off and retry after ``retry_after`` seconds."""

    status = 429
    code = "overloaded"
    title = "Too many requests queued for this model"
    default_retry_after = 1.0


class LimitExceeded(ImaasError):
    """The API key went over one of its own limits (not the server's load): back off until ``Retry-After``."""

    status = 429
    code = "limit_exceeded"
    title = "API key limit exceeded"
    default_retry_after = 1.0


class RateLimited(LimitExceeded):
    """The key sent more requests per second than its rate limit allows (burst included)."""

    code = "rate_limited"
    title = "Rate limit exceeded for this API key"


class QuotaExceeded(LimitExceeded):
    """The key used up its images for the day or the month; ``Retry-After`` says when it refills."""

    code = "quota_exceeded"
    title = "Image quota exhausted for this API key"


class ModelNotReady(ImaasError):
    """The model is registered but could not be loaded (yet)."""

    status = 503
    code = "model_not_ready"
    title = "Model not ready"
    default_retry_after = 1.0


class RegistryBusy(ImaasError):
    """The registry database stayed locked by other writers through every retry."""

    status = 503
    code = "registry_busy"
    title = "Registry busy"
    default_retry_after = 1.0


class CountersUnavailable(ImaasError):
    """The shared quota counters (Redis, in cluster mode) cannot be reached: a limited key's
    request is refused rather than let through uncounted; retry later."""

    status = 503
    code = "counters_unavailable"
    title = "Quota counters unavailable"
    default_retry_after = 1.0


class RegistryUnavailable(ImaasError):
    """The registry database cannot be reached (down, restarting, network cut): retry later.

    The detail never names the database's URL, host or credentials.
    """

    status = 503
    code = "registry_unavailable"
    title = "Registry database unavailable"
    default_retry_after = 1.0


class DeadlineExceeded(ImaasError):
    """The request waited longer than its deadline."""

    status = 504
    code = "deadline_exceeded"
    title = "Deadline exceeded"


class InferenceFailed(ImaasError):
    """The inference engine failed on a batch; only that batch's requests see this."""

    status = 500
    code = "inference_failed"
    title = "Inference failed"


class TransportError(ImaasError):
    """The SDK could not exchange a request with the server (raised client-side, never sent)."""

    status = 503
    code = "transport_error"
    title = "No answer from the server"


class ServerUnreachable(TransportError):
    """Nothing accepted the connection at the server's URL (not started, wrong URL or port)."""

    code = "server_unreachable"
    title = "Server unreachable"


class ServerTimeout(TransportError):
    """The server accepted the request but did not answer within the client's timeout."""

    status = 504
    code = "server_timeout"
    title = "The server did not answer in time"


def all_error_classes() -> list[type[ImaasError]]:
    """Every concrete error class, base first, for mapping a problem ``code`` back to a class."""
    seen: list[type[ImaasError]] = []
    stack: list[type[ImaasError]] = [ImaasError]
    while stack:
        cls = stack.pop(0)
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


def error_for_code(code: str) -> type[ImaasError]:
    """The error class whose stable ``code`` is ``code``; ``ImaasError`` when unknown."""
    for cls in all_error_classes():
        if cls.code == code:
            return cls
    return ImaasError


class UnsafeSettings(ImaasError):
    """The settings would expose the server unprotected (authentication off on a non-loopback address)."""

    code = "unsafe_settings"
    title = "Refusing unsafe settings"
