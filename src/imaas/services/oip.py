"""The Open Inference Protocol data plane, shared by the REST (``/v2``) and gRPC edges.

A served model takes either its raw input tensor (already pre-processed by the client) or
a BYTES tensor of encoded image files (``image``), which goes through the manifest's
pre-processing. Both paths submit each item to the model's one batch queue, the same one
the ``/v1`` API uses. Outputs are the model's raw output; the classification extension
(``classification: N``) returns the top N as BYTES ``"score:index:label"`` with the same
probabilities as ``/v1``.

Example::

    response = await oip.infer(InferRequest(model="mobilenet-v2", inputs=[InTensor("image", "BYTES", [1],
                                                                                   np.array([jpeg], object))]))
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imaas import __version__
from imaas.domain import ModelRef, ModelVersion, Principal, Scope, parse_decimal
from imaas.errors import InvalidInput, InvalidRequest, ModelNotFound
from imaas.imaging.pipeline import Geometry
from imaas.runtime.engine import LoadedModel
from imaas.runtime.graph import GraphInfo, check_model_file
from imaas.runtime.tasks import task
from imaas.runtime.tasks.classification import to_probabilities, top_k
from imaas.security.quotas import Decision
from imaas.services.access import authorize, check_model, visible
from imaas.services.audit import AuditService
from imaas.services.inference import ImageInput, InferenceService
from imaas.services.models import ModelService
from imaas.services.shadow import ShadowCopy
from imaas.services.tensors import ONNX_TO_OIP
from imaas.services.usage import UsageService

PLATFORM = "onnxruntime_onnx"
IMAGE_INPUT = "image"
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]


@dataclass
class InTensor:
    """An input tensor of a request (BYTES data as an object array of ``bytes``)."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray


@dataclass
class OutSpec:
    """A requested output: ``classification`` > 0 asks for the top N; ``binary`` None means the request default."""

    name: str
    classification: int = 0
    binary: bool | None = None


@dataclass
class InferRequest:
    """An inference request, whatever protocol carried it."""

    model: str
    version: str | None = None
    id: str | None = None
    inputs: list[InTensor] = field(default_factory=list)
    outputs: list[OutSpec] | None = None
    binary_output: bool = False
    routing_key: str | None = None  # X-Imaas-Routing-Key (gRPC: x-imaas-routing-key metadata)


@dataclass
class OutTensor:
    """An output tensor of a response."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    binary: bool = False


@dataclass
class InferResponse:
    """The answer to an ``InferRequest``."""

    model_name: str
    model_version: str
    id: str | None
    outputs: list[OutTensor]


def image_input_name(version: ModelVersion) -> str:
    """Name of the BYTES input that takes encoded images (``image`` unless the graph uses it)."""
    return IMAGE_INPUT if version.manifest.input.name != IMAGE_INPUT else "encoded_image"


def offered_outputs(version: ModelVersion, model: LoadedModel) -> tuple[list[str], list[str]]:
    """The outputs an OIP request may name: the graph outputs the task fetches, and the task's
    decoded outputs (``Task.oip_outputs``), which win over a graph output of the same name."""
    decoded = [o.name for o in model.task.oip_outputs(version.manifest)]
    fetched = model.task.fetch(version.manifest) or model.session.output_names[:1]
    return [n for n in fetched if n not in decoded], decoded


def parse_ref(name: str, version: str | None) -> ModelRef:
    """A model reference from OIP's model name and optional version string."""
    if version is not None and version != "":
        number = parse_decimal(version)
        if number is None or number < 1:
            raise InvalidRequest(f"invalid model version {version!r}: versions are positive integers")
        return ModelRef.parse(name, version=number)
    return ModelRef.parse(name)


class OipService:
    """Health, metadata, inference and repository control in OIP terms."""

    def __init__(
        self, inference: InferenceService, models: ModelService, usage: UsageService, audit: AuditService
    ) -> None:
        self.inference = inference
        self.models = models
        self.usage = usage
        self.audit = audit
        self._graphs: dict[str, GraphInfo] = {}

    # -- health and metadata ----------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``."""
        return {"name": "imaas", "version": __version__, "extensions": EXTENSIONS}

    def server_ready(self) -> bool:
        """Ready once every production model is loaded."""
        return self.inference.readiness().ready

    async def model_ready(self, p: Principal, name: str, version: str | None) -> bool:
        """Whether the designated version is loaded."""
        authorize(p, Scope.INFER, Scope.MODELS_READ)
        check_model(p, name)
        resolved = await self.inference.resolve(parse_ref(name, version))
        return self.inference.engine.get(resolved.key) is not None

    async def _graph(self, version: ModelVersion) -> GraphInfo:
        graph = self._graphs.get(version.sha256)
        if graph is None:
            # S3: a download; the loader checks the sha256 before anything runs the file
            path = await asyncio.to_thread(self.inference.artifacts.open_path, version.sha256, verify=False)
            graph = await asyncio.to_thread(check_model_file, path)
            self._graphs[version.sha256] = graph
        return graph

    async def model_metadata(self, p: Principal, name: str, version: str | None) -> dict[str, Any]:
        """Inputs (raw tensor and encoded images), outputs, versions, platform."""
        authorize(p, Scope.INFER, Scope.MODELS_READ)
        check_model(p, name)
        resolved = await self.inference.resolve(parse_ref(name, version))
        _, versions = await asyncio.to_thread(self.models.describe, resolved.model)
        graph = await self._graph(resolved)
        spec = resolved.manifest.input
        assert spec.size is not None
        assert spec.dtype is not None
        h, w = spec.size
        c = spec.channels
        shape = [-1, c, h, w] if spec.layout == "NCHW" else [-1, h, w, c]
        served = task(resolved.manifest.task)
        decoded = served.oip_outputs(resolved.manifest)
        fetched = [n for n in served.fetch(resolved.manifest) if n not in {o.name for o in decoded}]
        outputs = [
            {
                "name": o.name,
                "datatype": ONNX_TO_OIP.get(o.dtype, o.dtype.upper()),
                "shape": [-1 if d is None else d for d in o.shape],
            }
            for o in graph.outputs
            if o.name in fetched
        ] + [{"name": o.name, "datatype": o.datatype, "shape": list(o.shape)} for o in decoded]
        return {
            "name": resolved.model,
            "versions": [str(v.version) for v in sorted(versions, key=lambda v: v.version)],
            "platform": PLATFORM,
            "inputs": [
                {"name": spec.name, "datatype": ONNX_TO_OIP[spec.dtype], "shape": shape},
                {"name": image_input_name(resolved), "datatype": "BYTES", "shape": [-1]},
            ],
            "outputs": outputs,
        }

    # -- inference ----------------------------------------------------------------------------
    async def infer(
        self, p: Principal, request: InferRequest, bytes_in: int = 0
    ) -> tuple[InferResponse, list[Decision]]:
        """Run one request through the model's batch queue, charged to and metered for ``p``
        (one image per row of the input); returns the quotas' state with the answer."""
        authorize(p, Scope.INFER)
        check_model(p, request.model)
        first = request.inputs[0].shape if len(request.inputs) == 1 else []
        rows = first[0] if first and isinstance(first[0], int) and first[0] > 0 else 1
        (answer, _), decisions = await self.usage.metered(p, rows, bytes_in, lambda: self._infer(request), _answered_by)
        return answer, decisions

    async def _infer(self, request: InferRequest) -> tuple[InferResponse, tuple[str, int, str]]:
        start = self.inference.clock.now()
        deadline = self.inference.deadline()
        choice = await self.inference.choose(parse_ref(request.model, request.version), request.routing_key)
        version = choice.version
        model = await self.inference.model(version, deadline)
        tensor = self._input(version, request.inputs)
        specs = self._check_outputs(version, model, request)  # before the model runs: a bad request costs no inference
        served = model.task
        if tensor.name == image_input_name(version):
            images = self._images(tensor)
            ran = await self.inference.run_prepared(version, model, images, deadline)
        else:  # raw tensors are not copied to a shadow: its input may differ
            rows = await self.inference.run_tensors(model, self._raw_rows(version, tensor), deadline)
            assert version.manifest.input.size is not None
            same = Geometry.identity(*version.manifest.input.size)
            images, ran = [], [(r, same) for r in rows]
        results: list[dict[str, Any]] = []
        decoded = offered_outputs(version, model)[1]
        if (images and choice.shadow is not None) or any(s.name in decoded for s in specs):
            results = [served.postprocess(out, geometry, model.labelled, None) for out, geometry in ran]
        if images and choice.shadow is not None:  # compared on the task's result, like /v1
            copy = ShadowCopy(version, choice.shadow, images, results, self.inference.clock.now() - start)
            self.inference.shadows.offer(copy)
        fetched = served.fetch(version.manifest) or model.session.output_names[:1]
        raw = {name: np.stack([out[i] for out, _ in ran]) for i, name in enumerate(fetched)}
        answer = InferResponse(
            model_name=version.model,
            model_version=str(version.version),
            id=request.id,
            outputs=self._outputs(version, model, raw, results, specs, request),
        )
        return answer, (version.model, version.version, version.manifest.task)

    def _input(self, version: ModelVersion, inputs: list[InTensor]) -> InTensor:
        spec = version.manifest.input
        image_name = image_input_name(version)
        assert spec.name is not None
        known = {spec.name, image_name}
        for t in inputs:
            if t.name not in known:
                raise InvalidInput(f"unexpected input {t.name!r}; model {version.model!r} takes {sorted(known)}")
        if len(inputs) != 1:
            raise InvalidInput(
                f"send exactly one input: {spec.name!r} (a pre-processed tensor) or "
                f"{image_name!r} (encoded images as BYTES)"
            )
        return inputs[0]

    def _images(self, tensor: InTensor) -> list[ImageInput]:
        if tensor.datatype != "BYTES":
            raise InvalidInput(f"input {tensor.name!r} must be BYTES (encoded image files), not {tensor.datatype}")
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise InvalidInput(f"input {tensor.name!r} has shape {tensor.shape}; use [N] or [N, 1]")
        self.inference.check_count(tensor.shape[0])
        return [ImageInput(bytes(b)) for b in tensor.data.reshape(-1)]

    def _raw_rows(self, version: ModelVersion, tensor: InTensor) -> list[np.ndarray]:
        spec = version.manifest.input
        assert spec.dtype is not None
        assert spec.size is not None
        want = ONNX_TO_OIP[spec.dtype]
        if tensor.datatype != want:
            raise InvalidInput(f"input {tensor.name!r} must be {want}, not {tensor.datatype}")
        h, w = spec.size
        item = [spec.channels, h, w] if spec.layout == "NCHW" else [h, w, spec.channels]
        if len(tensor.shape) != 4 or list(tensor.shape[1:]) != item:
            raise InvalidInput(
                f"input {tensor.name!r} has shape {tensor.shape}; expected [N, {', '.join(map(str, item))}]"
            )
        return [np.ascontiguousarray(row) for row in tensor.data]

    def _check_outputs(self, version: ModelVersion, model: LoadedModel, request: InferRequest) -> list[OutSpec]:
        """The outputs to answer: those asked for, else the task's default (classification: its
        raw scores; other tasks: their task-level outputs); each must be one the model has."""
        served = model.task
        fetched, decoded = offered_outputs(version, model)
        known = [*fetched, *decoded]
        if not request.outputs:
            return [OutSpec(name) for name in (decoded or fetched)]
        for spec in request.outputs:
            if spec.name not in known:
                raise InvalidInput(f"unknown output {spec.name!r}; model {version.model!r} outputs {known}")
            if spec.classification > 0 and (served.name != "classification" or spec.name not in fetched):
                raise InvalidInput(
                    f"output {spec.name!r}: the classification extension applies to the scores of classification "
                    "models only"
                )
        return request.outputs

    def _outputs(
        self,
        version: ModelVersion,
        model: LoadedModel,
        raw: dict[str, np.ndarray],
        results: list[dict[str, Any]],
        specs: list[OutSpec],
        request: InferRequest,
    ) -> list[OutTensor]:
        names = offered_outputs(version, model)[1]
        decoded = model.task.to_oip(results, version.manifest) if any(s.name in names for s in specs) else {}
        out: list[OutTensor] = []
        for spec in specs:
            binary = request.binary_output if spec.binary is None else spec.binary
            if spec.classification > 0:
                data = self._classify(version, model, raw[spec.name], spec.classification)
                out.append(OutTensor(spec.name, "BYTES", list(data.shape), data, binary))
                continue
            array = decoded[spec.name] if spec.name in names else raw[spec.name]
            datatype = "BYTES" if array.dtype == object else ONNX_TO_OIP.get(str(array.dtype), "FP32")
            out.append(OutTensor(spec.name, datatype, list(array.shape), array, binary))
        return out

    def _classify(self, version: ModelVersion, model: LoadedModel, raw: np.ndarray, k: int) -> np.ndarray:
        rows = raw.reshape(raw.shape[0], -1)
        k = min(k, rows.shape[1])
        out = np.empty((rows.shape[0], k), dtype=object)
        activation = version.manifest.postprocess.activation
        for r, scores in enumerate(rows):
            for c, (index, score) in enumerate(top_k(to_probabilities(scores, activation), k)):
                label = model.labels[index] if model.labels is not None and index < len(model.labels) else None
                out[r, c] = f"{score:f}:{index}" + (f":{label}" if label else "")
        return out.astype(object)

    # -- model repository ---------------------------------------------------------------------
    async def repository_index(self, p: Principal, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every model ``p`` sees with its default version and whether that version is loaded."""
        authorize(p, Scope.MODELS_READ)
        records = await asyncio.to_thread(self.models.list_models)
        index = []
        for record in visible(p, records):
            try:
                version = await self.inference.resolve(ModelRef(record.name))
            except ModelNotFound:
                continue
            state, failure = self.inference.load_state(version.key)
            loaded = state == "ready"
            if ready_only and not loaded:
                continue
            reason = "" if loaded else (f"failed: {failure.reason}" if failure is not None else state)
            index.append(
                {
                    "name": record.name,
                    "version": str(version.version),
                    "state": "READY" if loaded else ("LOADING" if state == "loading" else "UNAVAILABLE"),
                    "reason": reason,
                }
            )
        return index

    async def load(self, p: Principal, name: str) -> None:
        """Load the model's default version (its ``production`` alias), now: an operator's
        load does not wait out the backoff of a version that failed (the file may be fixed)."""
        authorize(p, Scope.MODELS_WRITE)
        check_model(p, name)
        version = await self.inference.resolve(ModelRef.parse(name))
        await self.inference.model(version, force=True)
        await self.audit.record(p, "model.load", f"{name}@{version.version}")

    async def unload(self, p: Principal, name: str) -> None:
        """Unload every loaded version of the model; a later request loads it again."""
        authorize(p, Scope.MODELS_WRITE)
        check_model(p, name)
        ModelRef.parse(name)
        await asyncio.to_thread(self.models.registry.get_model, name)  # ModelNotFound for unknown names
        for v in self.inference.engine.loaded:
            if v.model == name:
                await self.inference.unload(v.key)
        await self.audit.record(p, "model.unload", name)


def _answered_by(result: tuple[InferResponse, tuple[str, int, str]]) -> tuple[str, int, str]:
    return result[1]
