"""Open Inference Protocol workloads for ``imaas bench --protocol``.

Each builds, once, the requests a bench worker sends: REST bodies (JSON header plus binary
tensor data, as tritonclient sends them) or gRPC ``ModelInferRequest`` messages, carrying
either the JPEG files (``image`` BYTES input) or the pre-processed tensors (the model's
input, computed here with the model's own manifest). With an API key every request carries
it: ``Authorization: Bearer`` over REST, ``authorization`` metadata over gRPC.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from imaas.cli.bench import HttpSender, Sender, bearer, http_request
from imaas.imaging.decode import DecodeLimits
from imaas.imaging.pipeline import image_to_tensor
from imaas.schemas.manifest import Manifest

PROTOCOLS = ("v1", "oip-rest-jpeg", "oip-rest-tensor", "oip-grpc-jpeg", "oip-grpc-tensor")


def tensors_for(manifest: Manifest, photos: list[bytes]) -> list[np.ndarray]:
    """Each photo pre-processed as ``manifest`` says, with a batch axis of 1."""
    return [image_to_tensor(p, manifest.input, manifest.preprocess, DecodeLimits())[None] for p in photos]


def _bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def rest_bodies(input_name: str, payloads: list[tuple[str, list[int], bytes]]) -> list[tuple[bytes, int]]:
    """OIP REST bodies with binary data: ``(body, json header length)`` per payload."""
    out = []
    for datatype, shape, raw in payloads:
        head = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": input_name,
                        "datatype": datatype,
                        "shape": shape,
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        )
        out.append((head + raw, len(head)))
    return out


def payloads(kind: str, manifest: Manifest, photos: list[bytes]) -> tuple[str, list[tuple[str, list[int], bytes]]]:
    """Input name and ``(datatype, shape, raw bytes)`` per request for ``jpeg`` or ``tensor``."""
    if kind == "jpeg":
        return "image", [("BYTES", [1], _bytes_tensor([p])) for p in photos]
    assert manifest.input.name is not None
    tensors = tensors_for(manifest, photos)
    return manifest.input.name, [("FP32", list(t.shape), t.astype("<f4").tobytes()) for t in tensors]


def rest_senders(
    url: str,
    model: str,
    kind: str,
    manifest: Manifest,
    photos: list[bytes],
    concurrency: int,
    api_key: str | None = None,
) -> list[Sender]:
    """Senders for OIP over REST."""
    name, items = payloads(kind, manifest, photos)
    built = [
        http_request(
            url,
            f"/v2/models/{model}/infer",
            body,
            {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(n),
                **bearer(api_key),
            },
        )
        for body, n in rest_bodies(name, items)
    ]
    host, port = built[0][0], built[0][1]
    return [HttpSender(host, port, [b[2] for b in built]) for _ in range(concurrency)]


class GrpcSender:
    """Prebuilt ``ModelInferRequest`` messages on a shared channel, each sent with ``metadata``."""

    def __init__(self, stub: Any, messages: list[Any], metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.stub = stub
        self.messages = messages
        self.metadata = metadata or None

    async def send(self, n: int) -> str | None:
        import grpc

        try:
            await self.stub.ModelInfer(self.messages[n % len(self.messages)], metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code()}: {exc.details()}"
        return None

    def close(self) -> None:
        """The channel is shared and closed by its owner."""


def grpc_senders(
    channel: Any,
    model: str,
    kind: str,
    manifest: Manifest,
    photos: list[bytes],
    concurrency: int,
    api_key: str | None = None,
) -> list[Sender]:
    """Senders for OIP over gRPC (``raw_input_contents``, as tritonclient sends; the key as
    ``authorization`` metadata, lowercase as gRPC requires)."""
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    name, items = payloads(kind, manifest, photos)
    messages = [
        pb.ModelInferRequest(
            model_name=model,
            inputs=[pb.ModelInferRequest.InferInputTensor(name=name, datatype=dt, shape=shape)],
            raw_input_contents=[raw],
        )
        for dt, shape, raw in items
    ]
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    return [GrpcSender(stub, messages, metadata) for _ in range(concurrency)]


def peer_senders(
    spec: str, photos: list[bytes], concurrency: int, api_key: str | None = None
) -> tuple[str, list[Sender]]:
    """Senders for another server, from ``NAME=FORMAT+URL``.

    FORMAT is how that server takes an image: ``raw`` (the JPEG as the body),
    ``json-b64:KEY`` (``{"KEY": base64}``) or ``multipart:FIELD`` (a form file).
    ``api_key``: for a peer that is another imaas server (``--peer-auth``); None for the rest.
    """
    import base64

    name, _, rest = spec.partition("=")
    fmt, _, url = rest.partition("+")
    if not name or not url.startswith("http"):
        raise ValueError(f"peer {spec!r}: expected NAME=FORMAT+URL, e.g. fastapi=raw+http://127.0.0.1:9001/predict")
    kind, _, arg = fmt.partition(":")
    bodies: list[tuple[bytes, dict[str, str]]] = []
    for photo in photos:
        if kind == "raw":
            bodies.append((photo, {"Content-Type": "image/jpeg"}))
        elif kind == "json-b64" and arg:
            bodies.append((orjson.dumps({arg: base64.b64encode(photo).decode()}), {"Content-Type": "application/json"}))
        elif kind == "multipart" and arg:
            boundary = "imaasbench7d3a91"
            body = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{arg}"; filename="photo.jpg"\r\n'
                    f"Content-Type: image/jpeg\r\n\r\n"
                ).encode()
                + photo
                + f"\r\n--{boundary}--\r\n".encode()
            )
            bodies.append((body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        else:
            raise ValueError(f"peer {spec!r}: FORMAT is raw, json-b64:KEY or multipart:FIELD")
    parts = url.split("/", 3)
    base, path = "/".join(parts[:3]), "/" + (parts[3] if len(parts) > 3 else "")
    built = [http_request(base, path, body, {**headers, **bearer(api_key)}) for body, headers in bodies]
    host, port = built[0][0], built[0][1]
    return name, [HttpSender(host, port, [b[2] for b in built]) for _ in range(concurrency)]
