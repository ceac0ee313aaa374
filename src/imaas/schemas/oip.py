"""Wire models of the Open Inference Protocol REST API (``/v2``), as the OpenAPI description shows them.

The server's codec (``api/oip_codec.py``) reads and writes these bodies by hand, for speed
and for the binary tensor data extension; these models are what the OpenAPI description
and client generators see, so they follow the KServe V2 REST specification field by field.

Example::

    InferenceRequest.model_validate({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                 "data": ["<JPEG as text>"]}]})
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"
]
MAX_RANK = 16


class OipError(BaseModel):
    """Every error under ``/v2``: the protocol's ``{"error": "..."}`` (RFC 9457 is for ``/v1``)."""

    error: str


class Live(BaseModel):
    """``GET /v2/health/live``."""

    live: bool


class Ready(BaseModel):
    """A readiness answer: 200 with ``true``, 400 with ``false``."""

    ready: bool


class ServerMetadata(BaseModel):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    """An input or output of a model; ``-1`` marks a variable dimension."""

    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(BaseModel):
    """``GET /v2/models/{model}``: the raw input tensor and ``image`` (encoded files as BYTES)."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class InputParameters(BaseModel):
    """Per-input parameters; ``binary_data_size`` says the data follows the JSON as binary."""

    model_config = ConfigDict(extra="allow")

    binary_data_size: int | None = Field(None, ge=0, description="bytes of this input's binary data")


class RequestInput(BaseModel):
    """An input tensor: ``data`` in row-major order (strings for BYTES), or binary data."""

    name: str
    datatype: Datatype
    shape: list[Annotated[int, Field(ge=0)]] = Field(max_length=MAX_RANK)
    parameters: InputParameters | None = None
    data: Any = Field(None, description="nested or flat list of values; absent with binary_data_size")


class OutputParameters(BaseModel):
    """Per-output parameters: the classification extension and binary output."""

    model_config = ConfigDict(extra="allow")

    classification: int = Field(0, ge=0, description="return the top N classes as BYTES score:index:label")
    binary_data: bool | None = Field(None, description="return this output as binary data after the JSON")


class RequestOutput(BaseModel):
    """A requested output."""

    name: str
    parameters: OutputParameters | None = None


class RequestParameters(BaseModel):
    """Request-wide parameters."""

    model_config = ConfigDict(extra="allow")

    binary_data_output: bool | None = Field(None, description="return every output as binary data")


class InferenceRequest(BaseModel):
    """``POST /v2/models/{model}/infer``: one input tensor, the raw one or ``image``."""

    id: str | None = None
    parameters: RequestParameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseParameters(BaseModel):
    """Per-output response parameters."""

    binary_data_size: int = Field(ge=0, description="bytes of this output's binary data after the JSON")


class ResponseOutput(BaseModel):
    """An output tensor: ``data`` in row-major order, or ``parameters.binary_data_size`` bytes after the JSON."""

    name: str
    datatype: Datatype
    shape: list[int]
    data: list[Any] | None = None
    parameters: ResponseParameters | None = None


class InferenceResponse(BaseModel):
    """The answer to an inference request."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class RepositoryIndexRequest(BaseModel):
    """``POST /v2/repository/index``: ``ready`` lists only the models that are loaded."""

    ready: StrictBool = False  # strict: JSON true or false, never a truthy string or number


class RepositoryModel(BaseModel):
    """A model in the repository index, with its default version."""

    name: str
    version: str
    state: Literal["READY", "LOADING", "UNAVAILABLE"]
    reason: str
