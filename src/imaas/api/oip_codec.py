"""The REST wire form of OIP inference, with the binary tensor data extension.

A request body is JSON, or JSON followed by binary tensor data when the
``Inference-Header-Content-Length`` header gives the JSON's length; each input with a
``binary_data_size`` parameter takes that many bytes, in input order. Outputs asked for
with ``binary_data`` (or all, with the request's ``binary_data_output``) are answered the
same way.
"""

from __future__ import annotations

from typing import Any

import orjson

from imaas.api.bodies import check_json_size
from imaas.domain import parse_decimal
from imaas.errors import InvalidInput, InvalidRequest
from imaas.services.oip import InferRequest, InferResponse, InTensor, OutSpec
from imaas.services.tensors import ElementBudget, from_json_data, from_raw, to_json_data, to_raw

HEADER_LENGTH = "inference-header-content-length"


def parse_request(
    model: str,
    version: str | None,
    body: bytes,
    header_length: str | None,
    max_elements: int,
    max_json_values: int = 1_000_000,
) -> InferRequest:
    """Parse an infer body into a protocol-neutral request.

    The JSON is bounded to ``max_json_values`` values (a tenth of them arrays and objects)
    before it is parsed; every input's declared shape is charged to one ``ElementBudget`` of
    ``max_elements`` and checked against the bytes it carries before its array is built.
    """
    if header_length is not None:
        split = parse_decimal(header_length)
        if split is None or split > len(body):
            raise InvalidRequest(
                f"Inference-Header-Content-Length {header_length[:40]!r} does not fit a {len(body)}-byte body"
            )
        head, binary = body[:split], memoryview(body)[split:]
    else:
        head, binary = body, memoryview(b"")
    check_json_size(head, max_json_values, max(16, max_json_values // 10))
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the inference header is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("the inference request must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidRequest("'inputs' must be a non-empty list")
    inputs: list[InTensor] = []
    budget = ElementBudget(max_elements)
    pos = 0
    for i, t in enumerate(raw_inputs):
        if not isinstance(t, dict):
            raise InvalidRequest(f"inputs[{i}] must be an object")
        name, datatype, shape = t.get("name"), t.get("datatype"), t.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
            raise InvalidRequest(f"inputs[{i}] needs 'name', 'datatype' and 'shape'")
        params = t.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or pos + size > len(binary):
                raise InvalidInput(
                    f"input {name[:64]!r}: binary_data_size {str(size)[:20]} exceeds "
                    f"the {len(binary) - pos} binary bytes left"
                )
            data = from_raw(datatype, shape, bytes(binary[pos : pos + size]), budget)
            pos += size
        elif "data" in t:
            data = from_json_data(datatype, shape, t["data"], budget)
        else:
            raise InvalidRequest(f"input {name[:64]!r} has neither 'data' nor binary_data_size")
        inputs.append(InTensor(name=name, datatype=datatype, shape=shape, data=data))
    if pos != len(binary):
        raise InvalidInput(f"{len(binary) - pos} bytes of binary data were not claimed by any input")
    params = doc.get("parameters") or {}
    return InferRequest(
        model=model,
        version=version,
        id=doc.get("id") if isinstance(doc.get("id"), str) else None,
        inputs=inputs,
        outputs=_outputs(doc.get("outputs")),
        binary_output=bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False,
    )


def _outputs(raw: Any) -> list[OutSpec] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidRequest("'outputs' must be a list")
    specs = []
    for i, o in enumerate(raw):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise InvalidRequest(f"outputs[{i}] needs a 'name'")
        p = o.get("parameters") or {}
        if not isinstance(p, dict):
            raise InvalidRequest(f"outputs[{i}]: 'parameters' must be an object")
        classification = p.get("classification", 0)
        if not isinstance(classification, int) or isinstance(classification, bool) or classification < 0:
            raise InvalidRequest(f"outputs[{i}]: classification must be a non-negative integer")
        binary = p.get("binary_data")
        specs.append(OutSpec(o["name"], classification, None if binary is None else bool(binary)))
    return specs


def encode_response(response: InferResponse) -> tuple[bytes, dict[str, str]]:
    """The response body and the headers it needs."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for o in response.outputs:
        entry: dict[str, Any] = {"name": o.name, "datatype": o.datatype, "shape": o.shape}
        if o.binary:
            raw = to_raw(o.data, o.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = to_json_data(o.data, o.datatype)
        outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id is not None:
        doc["id"] = response.id
    head = orjson.dumps(doc)
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(blobs), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
