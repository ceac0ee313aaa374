"""The task contract: what a vision task declares so that imaas can serve its models.

A task module (one per task, beside this one) says, in this order:

1. what the manifest needs (``check``: the graph's outputs against the manifest, defaults
   filled, every error naming its field) and which outputs a batch fetches (``fetch``);
2. the options a request may set (``options``: query parameters such as ``top_k`` or
   ``score``, each checked and named in the error);
3. how one image's raw outputs become its result (``postprocess``, a pure function of
   arrays, the image's ``Geometry`` and the model's labels), whose wire form is the task's
   pydantic schema in ``imaas.schemas.results``;
4. how results map onto Open Inference Protocol outputs (``oip_outputs`` declares them for
   the model metadata, ``to_oip`` fills them);
5. how two results of one image agree (``agreement``, for shadow comparisons), and its
   metering unit (``unit``);
6. whether a request asked for an image as the answer (``renders``), that image
   (``render``: boxes drawn, regions redacted) and whether it goes into the JSON answer
   instead (``image_in_json``).

The API and services layers only ever call these methods, so adding a task is its module,
its schema and one line in ``runtime/tasks/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from imaas.domain import parse_decimal
from imaas.errors import InvalidField, InvalidManifest, InvalidRequest
from imaas.imaging.pipeline import Geometry
from imaas.runtime.graph import GraphInfo, TensorInfo
from imaas.schemas.manifest import Manifest

GENERAL_PARAMETERS = frozenset({"version", "alias"})
"""Query parameters of a predict call that choose the model, whatever its task."""


@dataclass(frozen=True)
class Labelled:
    """What a loaded model hands its task besides the raw outputs."""

    manifest: Manifest
    labels: tuple[str, ...] | None

    def label(self, index: int) -> str | None:
        """The class name of ``index``, or None when the model has no labels for it."""
        labels = self.labels
        return labels[index] if labels is not None and 0 <= index < len(labels) else None


@dataclass(frozen=True)
class OipOutput:
    """A task-level output of the Open Inference Protocol: its name, datatype and shape
    (``-1`` for the batch axis and for axes that vary with the images)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


class Task:
    """Base of the task modules' classes; see the module docstring for the contract."""

    name: ClassVar[str]
    unit: ClassVar[str] = "image"
    """What one unit of usage is: every task meters images (one image = one unit)."""
    option_names: ClassVar[tuple[str, ...]] = ()
    """The query parameters (and JSON body fields) a predict call of this task may set."""

    def check(self, manifest: Manifest, graph: GraphInfo) -> Manifest:
        """``manifest`` (its input already completed from ``graph``) with the task's fields
        checked against the graph's outputs and their defaults filled; ``InvalidManifest``
        names the field that is wrong."""
        raise NotImplementedError

    def fetch(self, manifest: Manifest) -> list[str]:
        """The graph outputs a batch fetches (the manifest is complete)."""
        names = manifest.postprocess.outputs or ((manifest.postprocess.output,) if manifest.postprocess.output else ())
        return list(names)

    def options(self, params: Mapping[str, str]) -> Any:
        """The request's options from ``params`` (query parameters, strings); ``InvalidRequest``
        (400) names a value out of range, ``InvalidField`` (422) a parameter the task does not take."""
        reject_unknown(params, self.option_names, self.name)
        return None

    def postprocess(
        self, outputs: list[np.ndarray], geometry: Geometry, model: Labelled, options: Any
    ) -> dict[str, Any]:
        """One image's result from its raw outputs (in ``fetch`` order, without the batch axis)."""
        raise NotImplementedError

    def oip_outputs(self, manifest: Manifest) -> list[OipOutput]:
        """The task-level outputs an OIP request may ask for by name (besides the graph's)."""
        return []

    def to_oip(self, results: list[dict[str, Any]], manifest: Manifest) -> dict[str, np.ndarray]:
        """The task-level OIP outputs of a batch of results, by name (shapes as ``oip_outputs`` says)."""
        return {}

    def agreement(self, a: dict[str, Any], b: dict[str, Any]) -> float:
        """How far two results of one image agree, from 0 (not at all) to 1 (the same answer)."""
        raise NotImplementedError

    def renders(self, options: Any) -> bool:
        """Whether the request asked for an image as the answer (detection's ``draw`` or ``redact``)."""
        return False

    def image_in_json(self, options: Any) -> bool:
        """Whether that image goes into the JSON answer (base64) instead of being the answer."""
        return False

    def render(self, photo: Image.Image, result: dict[str, Any], options: Any) -> Image.Image:
        """The answer's image: ``photo`` (upright, full size) with ``result`` drawn on or applied to it."""
        raise NotImplementedError(f"{self.name} results have no image form")


def reject_unknown(params: Mapping[str, str], known: tuple[str, ...], task: str) -> None:
    """``InvalidField`` (422) for a parameter that neither chooses the model nor is one of
    ``known``: the request is well formed (another task's models take it), this model does not."""
    for name in params:
        if name not in known and name not in GENERAL_PARAMETERS:
            takes = ", ".join(known) if known else "no options"
            raise InvalidField(f"query.{name[:64]}: not an option of {task} models (they take {takes})")


def float_option(params: Mapping[str, str], name: str, low: float, high: float) -> float | None:
    """An optional number in ``[low, high]``; ``InvalidRequest`` naming ``query.<name>`` otherwise."""
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # NaN fails too
        raise InvalidRequest(f"query.{name}: must be a number between {low:g} and {high:g}")
    return value


def int_option(params: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    """An optional integer in ``[low, high]``; ``InvalidRequest`` naming ``query.<name>`` otherwise."""
    raw = params.get(name)
    if raw is None:
        return None
    value = parse_decimal(raw)
    if value is None or not low <= value <= high:
        raise InvalidRequest(f"query.{name}: must be an integer between {low} and {high}")
    return value


def bool_option(params: Mapping[str, str], name: str) -> bool:
    """An optional flag: ``true``/``1``/``yes`` or ``false``/``0``/``no`` (absent: false)."""
    raw = params.get(name)
    if raw is None:
        return False
    text = raw.strip().lower()
    if text in ("true", "1", "yes", ""):
        return True
    if text in ("false", "0", "no"):
        return False
    raise InvalidRequest(f"query.{name}: must be true or false")


def output_named(graph: GraphInfo, name: str | None, field: str) -> TensorInfo:
    """The graph output ``name`` (the first output when None); ``InvalidManifest`` names ``field``."""
    names = [o.name for o in graph.outputs]
    if name is None:
        return graph.outputs[0]
    for o in graph.outputs:
        if o.name == name:
            return o
    raise InvalidManifest(f"{field}: the graph has no output {name!r}; it has {names}")


def refuse_fields(manifest: Manifest, task: str, fields: tuple[str, ...]) -> None:
    """``InvalidManifest`` when the manifest sets post-processing fields of another task."""
    given = manifest.postprocess.model_fields_set
    for field in fields:
        if field in given:
            raise InvalidManifest(f"postprocess.{field}: not a field of {task} models")
