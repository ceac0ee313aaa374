"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``).

The message and service definitions are the generated modules tritonclient ships
(``tritonclient.grpc.service_pb2*``, a superset of the OIP service), not a re-typed .proto.
The servicer is a thin edge over ``OipService``, the data plane REST uses too; it runs on
the server's event loop (grpc.aio), on its own port (8001 by default, Triton's).

Example::

    server = await start_grpc(services, "127.0.0.1", 8001)
    ...
    await server.stop(grace=5)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from imaas.api.offload import parse_sized
from imaas.domain import ANONYMOUS, Principal
from imaas.errors import ImaasError, InvalidInput, InvalidRequest
from imaas.services.container import Services
from imaas.services.oip import InferRequest, InTensor, OutSpec
from imaas.services.routing import ROUTING_KEY_HEADER
from imaas.services.tensors import ElementBudget, from_json_data, from_raw, to_raw

log = logging.getLogger("imaas.grpc")
T = TypeVar("T")

_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _rpc(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Translate imaas errors to gRPC status codes (and hide unexpected ones)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            for key, value in context.invocation_metadata() or ():
                if key == "x-request-id":  # echoed like REST's header, so a caller can match its logs
                    if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
                        await context.send_initial_metadata(((key, value),))
                    break
            return await method(self, request, context)
        except ImaasError as exc:
            if exc.retry_after is not None:  # as REST's Retry-After header, in the trailing metadata
                context.set_trailing_metadata((("retry-after", str(max(1, math.ceil(exc.retry_after)))),))
            await context.abort(_STATUS.get(exc.status, grpc.StatusCode.INTERNAL), exc.detail)
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "an unexpected error occurred")
        raise AssertionError("unreachable")  # context.abort raises

    return wrapper


def _metadata(context: grpc.aio.ServicerContext, name: str) -> str | None:
    """The first text value of metadata key ``name`` sent by the caller (gRPC bounds metadata size)."""
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str) and value:
            return value
    return None


def _input(t: Any, raw: bytes | None, budget: ElementBudget) -> InTensor:
    shape = list(t.shape)
    if raw is not None:
        return InTensor(t.name, t.datatype, shape, from_raw(t.datatype, shape, raw, budget))
    field = _CONTENTS.get(t.datatype)
    if field is None:
        raise InvalidInput(f"input {t.name[:64]!r}: {t.datatype[:16]} data must be sent in raw_input_contents")
    contents = getattr(t.contents, field)
    if t.datatype != "BYTES":
        return InTensor(t.name, t.datatype, shape, from_json_data(t.datatype, shape, list(contents), budget))
    n = budget.take(shape)
    if len(contents) != n:
        raise InvalidInput(f"shape {shape} needs {n} elements, the data has {len(contents)}")
    data = np.empty(n, dtype=object)
    data[:] = list(contents)
    return InTensor(t.name, t.datatype, shape, data.reshape(shape))


def parse_infer(request: Any, max_elements: int) -> InferRequest:
    """A protocol-neutral request from a ``ModelInferRequest``; shapes are charged to one
    ``ElementBudget`` of ``max_elements`` and checked against their data before allocation."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    budget = ElementBudget(max_elements)
    inputs = [_input(t, raw[i] if raw else None, budget) for i, t in enumerate(request.inputs)]
    outputs = None
    if request.outputs:
        outputs = []
        for o in request.outputs:
            p = o.parameters.get("classification")
            classification = int(p.int64_param) if p is not None else 0
            if classification < 0:
                raise InvalidRequest(f"output {o.name[:64]!r}: classification must be a non-negative integer")
            outputs.append(OutSpec(o.name, classification))
    return InferRequest(
        model=request.model_name,
        version=request.model_version or None,
        id=request.id or None,
        inputs=inputs,
        outputs=outputs,
    )


class OipServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """OIP RPCs; the Triton-only ones answer UNIMPLEMENTED (the base class)."""

    def __init__(self, services: Services, max_elements: int) -> None:
        self.oip = services.oip
        self.auth = services.auth if services.settings.auth.enabled else None
        self.usage = services.usage
        self.refusal_delay_s = services.settings.auth.refusal_delay_s
        self.max_elements = max_elements

    async def _caller(self, context: grpc.aio.ServicerContext) -> Principal:
        """The caller named by the ``authorization`` metadata (``Bearer <key>``, as REST's
        header; tritonclient sends it with ``headers=``), its rate-limit token taken."""
        if self.auth is None:
            return ANONYMOUS
        try:
            principal = self.auth.authenticate(_metadata(context, "authorization"))
            await self.usage.take_request(principal)
        except ImaasError:
            await asyncio.sleep(self.refusal_delay_s)  # as REST's: a refusal loop cannot spin the loop
            raise
        return principal

    @_rpc
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.oip.server_ready())

    @_rpc
    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(
            ready=await self.oip.model_ready(await self._caller(context), request.name, request.version or None)
        )

    @_rpc
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        md = self.oip.server_metadata()
        return pb.ServerMetadataResponse(name=md["name"], version=md["version"], extensions=md["extensions"])

    @_rpc
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        md = await self.oip.model_metadata(await self._caller(context), request.name, request.version or None)

        def tensors(items: list[dict[str, Any]]) -> list[Any]:
            return [
                pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                for t in items
            ]

        return pb.ModelMetadataResponse(
            name=md["name"],
            versions=md["versions"],
            platform=md["platform"],
            inputs=tensors(md["inputs"]),
            outputs=tensors(md["outputs"]),
        )

    @_rpc
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        caller = await self._caller(context)
        size = request.ByteSize()
        parsed = await parse_sized(size, parse_infer, request, self.max_elements)
        parsed.routing_key = _metadata(context, ROUTING_KEY_HEADER)
        response, _ = await self.oip.infer(caller, parsed, size)
        return pb.ModelInferResponse(
            model_name=response.model_name,
            model_version=response.model_version,
            id=response.id or "",
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(name=o.name, datatype=o.datatype, shape=o.shape)
                for o in response.outputs
            ],
            raw_output_contents=[to_raw(o.data, o.datatype) for o in response.outputs],
        )

    @_rpc
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        index = await self.oip.repository_index(await self._caller(context), request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**m) for m in index])

    @_rpc
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        await self.oip.load(await self._caller(context), request.model_name)
        return pb.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await self.oip.unload(await self._caller(context), request.model_name)
        return pb.RepositoryModelUnloadResponse()


def grpc_port_taken(host: str, port: int) -> str:
    """The one message for a gRPC port that cannot be bound (the server's start and the CLI's check)."""
    return f"cannot bind gRPC to {host}:{port}: the port is taken (choose another with --grpc-port, or --no-grpc)"


def port_is_free(host: str, port: int) -> bool:
    """Whether a TCP listener could bind ``host:port`` now (SO_REUSEADDR, as gRPC binds, so a
    port in TIME_WAIT counts as free and only a live listener as taken)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return True  # an unresolvable host fails at bind with its own message
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError:
                return False
    return True


async def start_grpc(services: Services, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server on ``host:port`` (0 picks a free port); returns it and its port.

    SO_REUSEPORT is off (gRPC turns it on by default): a second server on a taken port must
    fail, not share the port and answer half of the first one's clients from its own registry.
    Raises ``OSError`` when the port cannot be bound.
    """
    server_settings = services.settings.server
    limit = server_settings.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ]
    )
    servicer = OipServicer(services, server_settings.max_tensor_elements)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpcio raises RuntimeError("Failed to bind ...") on a taken port
        bound = 0
    if bound == 0:
        raise OSError(grpc_port_taken(host, port))
    await server.start()
    log.info("gRPC (Open Inference Protocol) listening on %s:%d", host, bound)
    return server, bound
