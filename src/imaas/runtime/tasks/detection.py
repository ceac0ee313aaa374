"""Detection: raw box outputs -> boxes with labels and scores in the photo's pixels.

The manifest says how the outputs hold boxes (``postprocess.format``, inferred from the
graph's output shapes when left out): ``yolov8`` (one ``[batch, 4 + classes, anchors]``
output of centre/size boxes in input pixels and class scores, as Ultralytics exports it)
or ``boxes_scores`` (``[batch, anchors, 4]`` corners and ``[batch, anchors, classes]``
scores, as SSD-style detectors export them) or ``retinaface`` (offsets from RetinaFace's
priors, with five landmarks per face). Post-processing takes each
anchor's best class, keeps those over the ``score`` threshold, runs class-aware NMS
(``nms.py``) and maps the boxes back through the image's ``Geometry`` (letterbox, resize
and JPEG DCT scaling undone, EXIF orientation applied). A request may set ``score``,
``iou`` and ``max_detections``, and ``draw`` for the image with its boxes drawn.

OIP outputs (padded to the most boxes of any image in the batch): ``boxes`` FP32
``[N, K, 4]``, ``scores`` FP32 ``[N, K]``, ``classes`` INT32 ``[N, K]`` (-1 pads),
``labels`` BYTES ``[N, K]``, ``count`` INT32 ``[N]``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from imaas.errors import InvalidField, InvalidManifest, InvalidRequest
from imaas.imaging.draw import REDACT_METHODS, RedactMethod, draw_boxes, redact
from imaas.imaging.pipeline import Geometry
from imaas.runtime.graph import GraphInfo, TensorInfo
from imaas.runtime.labelsets import label_count
from imaas.runtime.tasks.base import (
    Labelled,
    OipOutput,
    Task,
    bool_option,
    float_option,
    int_option,
    output_named,
    refuse_fields,
    reject_unknown,
)
from imaas.runtime.tasks.nms import iou_matrix, nms
from imaas.schemas.manifest import Manifest

OPTIONS = ("score", "iou", "max_detections", "draw", "redact", "regions")
MAX_DETECTIONS = 1000


@dataclass(frozen=True)
class DetectionOptions:
    """A request's thresholds (None: the manifest's), and the image it wants as the answer:
    the photo with its boxes drawn, or with them blurred or pixelated (``redact``);
    ``regions``: that image in the JSON answer (base64), beside the regions it changed."""

    score: float | None = None
    iou: float | None = None
    max_detections: int | None = None
    draw: bool = False
    redact: RedactMethod | None = None
    regions: bool = False


class Detection(Task):
    """Boxes, class-aware NMS, the photo's pixels."""

    name = "detection"
    option_names = OPTIONS

    def check(self, manifest: Manifest, graph: GraphInfo) -> Manifest:
        """The format and outputs against the graph's shapes, and the labels against the classes."""
        refuse_fields(manifest, self.name, ("activation", "top_k"))
        post = manifest.postprocess
        if post.output is not None and post.outputs is not None:
            raise InvalidManifest("postprocess.output: give `outputs` only, not both")
        names = post.outputs or ((post.output,) if post.output else None)
        fmt = post.format or _guess_format(graph, names)
        if fmt == "yolov8":
            if names is not None and len(names) != 1:
                raise InvalidManifest(f"postprocess.outputs: the yolov8 format reads one output, not {len(names)}")
            tensor = output_named(graph, names[0] if names else None, "postprocess.outputs")
            if len(tensor.shape) != 3 or (tensor.shape[1] is not None and tensor.shape[1] < 5):
                raise InvalidManifest(
                    f"postprocess.format: a yolov8 output is [batch, 4 + classes, anchors]; "
                    f"{tensor.name!r} has shape {_shape(tensor)}"
                )
            classes = None if tensor.shape[1] is None else tensor.shape[1] - 4
            outputs: tuple[str, ...] = (tensor.name,)
        elif fmt == "retinaface":
            if names is None:
                names = tuple(o.name for o in graph.outputs[:3])
            if len(names) not in (2, 3):
                raise InvalidManifest(
                    "postprocess.outputs: the retinaface format reads [loc, conf] or [loc, conf, landmarks]"
                )
            widths = (4, 2, 10)
            for name, width in zip(names, widths, strict=False):
                tensor = output_named(graph, name, "postprocess.outputs")
                if len(tensor.shape) != 3 or tensor.shape[2] not in (width, None):
                    raise InvalidManifest(
                        f"postprocess.outputs: retinaface outputs are [batch, priors, {width}] for {name!r}; "
                        f"it has shape {_shape(tensor)}"
                    )
            classes, outputs = 2, tuple(names)
        else:
            if names is None and len(graph.outputs) == 2:
                names = tuple(o.name for o in graph.outputs)
            if names is None or len(names) != 2:
                raise InvalidManifest(
                    "postprocess.outputs: the boxes_scores format reads two outputs, [boxes, scores]; "
                    f"the graph has {[o.name for o in graph.outputs]}"
                )
            boxes = output_named(graph, names[0], "postprocess.outputs")
            scores = output_named(graph, names[1], "postprocess.outputs")
            if len(boxes.shape) != 3 or boxes.shape[2] not in (4, None):
                raise InvalidManifest(
                    f"postprocess.outputs: boxes are [batch, anchors, 4]; {boxes.name!r} has shape {_shape(boxes)}"
                )
            if len(scores.shape) != 3:
                raise InvalidManifest(
                    f"postprocess.outputs: scores are [batch, anchors, classes]; {scores.name!r} has shape "
                    f"{_shape(scores)}"
                )
            if None not in (boxes.shape[1], scores.shape[1]) and boxes.shape[1] != scores.shape[1]:
                raise InvalidManifest(
                    f"postprocess.outputs: {boxes.shape[1]} boxes but {scores.shape[1]} rows of scores"
                )
            classes = scores.shape[2]
            if post.background and classes is not None and classes < 2:
                raise InvalidManifest("postprocess.background: a background class needs at least one other class")
            outputs = (boxes.name, scores.name)
        n_labels = label_count(manifest.labels)
        if classes is not None and n_labels is not None and n_labels != classes:
            raise InvalidManifest(f"labels: {n_labels} labels for {classes} classes in the output")
        update = {"format": fmt, "outputs": outputs, "output": None}
        return manifest.model_copy(update={"postprocess": post.model_copy(update=update)})

    def options(self, params: Mapping[str, str]) -> DetectionOptions:
        """``score`` and ``iou`` in 0..1, ``max_detections`` in 1..1000, ``draw``, ``redact``
        (``blur`` or ``pixelate``; not with ``draw``), ``regions`` (with ``draw`` or ``redact``)."""
        reject_unknown(params, OPTIONS, self.name)
        redact = params.get("redact")
        if redact is not None and redact not in REDACT_METHODS:
            raise InvalidRequest(f"query.redact: {redact[:20]!r} is not one of {', '.join(REDACT_METHODS)}")
        options = DetectionOptions(
            score=float_option(params, "score", 0.0, 1.0),
            iou=float_option(params, "iou", 0.0, 1.0),
            max_detections=int_option(params, "max_detections", 1, MAX_DETECTIONS),
            draw=bool_option(params, "draw"),
            redact=redact,
            regions=bool_option(params, "regions"),
        )
        if options.draw and options.redact:
            raise InvalidField("query.redact: an answer either draws the boxes or redacts them, not both")
        if options.regions and not (options.draw or options.redact):
            raise InvalidField("query.regions: asks for the drawn or redacted image in JSON; add draw or redact")
        return options

    def postprocess(
        self, outputs: list[np.ndarray], geometry: Geometry, model: Labelled, options: Any
    ) -> dict[str, Any]:
        """``{"width", "height", "detections": [{index, label, score, box}, ...]}``, best first."""
        opts = options if isinstance(options, DetectionOptions) else DetectionOptions()
        post = model.manifest.postprocess
        found = candidates(outputs, model.manifest, post.score if opts.score is None else opts.score)
        limit = post.max_detections if opts.max_detections is None else opts.max_detections
        iou = post.iou if opts.iou is None else opts.iou
        chosen = nms(found.boxes, found.scores, found.classes, iou, limit)
        photo = geometry.to_original(found.boxes[chosen]).tolist()
        points = None if found.keypoints is None else geometry.points_to_original(found.keypoints[chosen]).tolist()
        detections = []
        for n, (box, score, index) in enumerate(
            zip(photo, found.scores[chosen].tolist(), found.classes[chosen].tolist(), strict=True)
        ):
            if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
                continue  # wholly in the letterbox's padding
            detection: dict[str, Any] = {
                "index": int(index),
                "label": model.label(int(index)),
                "score": float(score),
                "box": [round(v, 2) for v in box],
            }
            if points is not None:
                detection["keypoints"] = [[round(x, 2), round(y, 2)] for x, y in points[n]]
            detections.append(detection)
        return {"width": geometry.width, "height": geometry.height, "detections": detections}

    def oip_outputs(self, manifest: Manifest) -> list[OipOutput]:
        """``boxes``, ``scores``, ``classes``, ``labels`` and ``count``."""
        return [
            OipOutput("boxes", "FP32", (-1, -1, 4)),
            OipOutput("scores", "FP32", (-1, -1)),
            OipOutput("classes", "INT32", (-1, -1)),
            OipOutput("labels", "BYTES", (-1, -1)),
            OipOutput("count", "INT32", (-1,)),
        ]

    def to_oip(self, results: list[dict[str, Any]], manifest: Manifest) -> dict[str, np.ndarray]:
        """The results as padded tensors; ``count`` says how many rows of each image are real."""
        n = len(results)
        k = max((len(r["detections"]) for r in results), default=0)
        boxes = np.zeros((n, k, 4), dtype=np.float32)
        scores = np.zeros((n, k), dtype=np.float32)
        classes = np.full((n, k), -1, dtype=np.int32)
        labels = np.full((n, k), b"", dtype=object)
        for i, r in enumerate(results):
            for j, d in enumerate(r["detections"]):
                boxes[i, j] = d["box"]
                scores[i, j] = d["score"]
                classes[i, j] = d["index"]
                labels[i, j] = (d["label"] or "").encode()
        count = np.array([len(r["detections"]) for r in results], dtype=np.int32)
        return {"boxes": boxes, "scores": scores, "classes": classes, "labels": labels, "count": count}

    def renders(self, options: Any) -> bool:
        """``draw=true`` asks for the photo with the boxes drawn, ``redact`` for it with them hidden."""
        return isinstance(options, DetectionOptions) and (options.draw or options.redact is not None)

    def image_in_json(self, options: Any) -> bool:
        """``regions=true``: the image goes into the JSON answer, beside the detections."""
        return isinstance(options, DetectionOptions) and options.regions

    def render(self, photo: Image.Image, result: dict[str, Any], options: Any) -> Image.Image:
        """``photo`` with each detection outlined and captioned with its label (or index) and
        score, or (``redact``) blurred or pixelated."""
        found = result["detections"]
        if isinstance(options, DetectionOptions) and options.redact is not None:
            return redact(photo, [tuple(d["box"]) for d in found], options.redact)
        captions = [(tuple(d["box"]), f"{d['label'] or d['index']} {d['score']:.2f}") for d in found]
        return draw_boxes(photo, captions, [d["index"] for d in found])

    def agreement(self, a: dict[str, Any], b: dict[str, Any]) -> float:
        """Matched boxes over all boxes: greedy matching of same-class boxes with IoU >= 0.5
        (an F1 score; two empty answers agree fully)."""
        da, db = a["detections"], b["detections"]
        if not da and not db:
            return 1.0
        if not da or not db:
            return 0.0
        ious = iou_matrix(np.array([d["box"] for d in da]), np.array([d["box"] for d in db]))
        same = np.array([d["index"] for d in da])[:, None] == np.array([d["index"] for d in db])[None, :]
        ious = np.where(same, ious, 0.0)
        matched = 0
        while ious.size and ious.max() >= 0.5:
            i, j = np.unravel_index(int(np.argmax(ious)), ious.shape)
            matched += 1
            ious[i, :] = 0.0
            ious[:, j] = 0.0
        return 2 * matched / (len(da) + len(db))


@dataclass(frozen=True)
class Candidates:
    """Every anchor's box (corners in input pixels), best score, its class and its keypoints
    (``[anchors, points, 2]`` in input pixels, when the format has them)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    keypoints: np.ndarray | None = None


def candidates(outputs: list[np.ndarray], manifest: Manifest, min_score: float = 0.0) -> Candidates:
    """The anchors of one image's outputs whose best score reaches ``min_score``: their box,
    score and class, as the format lays them out. Scores are read first and only the anchors
    kept are decoded (RetinaFace's 16,800 priors at 640x640 keep a handful)."""
    post = manifest.postprocess
    assert manifest.input.size is not None
    height, width = manifest.input.size
    if post.format == "yolov8":
        raw = np.asarray(outputs[0], dtype=np.float32)  # [4 + classes, anchors]
        class_scores = raw[4:]
        classes = np.argmax(class_scores, axis=0)
        scores = class_scores[classes, np.arange(class_scores.shape[1])]
        kept = np.nonzero(scores >= min_score)[0]
        cx, cy, w, h = raw[0, kept], raw[1, kept], raw[2, kept], raw[3, kept]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        return Candidates(boxes, scores[kept], classes[kept])
    if post.format == "retinaface":
        return _retinaface(outputs, height, width, min_score)
    boxes = np.asarray(outputs[0], dtype=np.float32).reshape(-1, 4)
    table = np.asarray(outputs[1], dtype=np.float32).reshape(len(boxes), -1)
    first = 1 if post.background else 0
    classes = np.argmax(table[:, first:], axis=1) + first
    scores = table[np.arange(len(table)), classes]
    kept = np.nonzero(scores >= min_score)[0]
    boxes = boxes[kept]
    if post.normalized:
        boxes = boxes * np.array([width, height, width, height], dtype=np.float32)
    return Candidates(boxes, scores[kept], classes[kept])


RETINAFACE_STEPS = (8, 16, 32)
RETINAFACE_SIZES = ((16, 32), (64, 128), (256, 512))
RETINAFACE_VARIANCE = (0.1, 0.2)


@functools.lru_cache(maxsize=16)
def retinaface_priors(height: int, width: int) -> np.ndarray:
    """RetinaFace's priors for an input of ``height`` x ``width``: ``[priors, 4]`` centre x, centre y,
    width, height as fractions of the input; cells row by row per stride, two sizes per cell."""
    rows = []
    for step, sizes in zip(RETINAFACE_STEPS, RETINAFACE_SIZES, strict=True):
        fh, fw = -(-height // step), -(-width // step)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = np.repeat(((xs.reshape(-1) + 0.5) * step / width)[:, None], len(sizes), axis=1)
        cy = np.repeat(((ys.reshape(-1) + 0.5) * step / height)[:, None], len(sizes), axis=1)
        pw = np.broadcast_to(np.array(sizes, dtype=np.float64) / width, cx.shape)
        ph = np.broadcast_to(np.array(sizes, dtype=np.float64) / height, cx.shape)
        rows.append(np.stack([cx, cy, pw, ph], axis=2).reshape(-1, 4))
    priors: np.ndarray = np.concatenate(rows).astype(np.float32)
    priors.setflags(write=False)
    return priors


def _retinaface(outputs: list[np.ndarray], height: int, width: int, min_score: float) -> Candidates:
    loc = np.asarray(outputs[0], dtype=np.float32).reshape(-1, 4)
    conf = np.asarray(outputs[1], dtype=np.float32).reshape(len(loc), -1)
    priors = retinaface_priors(height, width)
    if len(priors) != len(loc):
        raise InvalidManifest(
            f"postprocess.format: {len(loc)} retinaface boxes for {len(priors)} priors of the input size"
        )
    kept = np.nonzero(conf[:, 1] >= min_score)[0]
    loc, priors = loc[kept], priors[kept]
    v0, v1 = RETINAFACE_VARIANCE
    centre = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
    scale = np.array([width, height], dtype=np.float32)
    boxes = np.concatenate([(centre - size / 2) * scale, (centre + size / 2) * scale], axis=1)
    classes = np.ones(len(kept), dtype=np.int64)
    keypoints = None
    if len(outputs) > 2:
        marks = np.asarray(outputs[2], dtype=np.float32).reshape(-1, 5, 2)[kept]
        keypoints = (priors[:, None, :2] + marks * v0 * priors[:, None, 2:]) * scale
    return Candidates(boxes, conf[kept, 1], classes, keypoints)


def _guess_format(graph: GraphInfo, names: tuple[str, ...] | None) -> str:
    if names is not None:
        if len(names) == 2:
            return "boxes_scores"
        return "yolov8"
    if len(graph.outputs) == 1 and len(graph.outputs[0].shape) == 3:
        return "yolov8"
    raise InvalidManifest(
        "postprocess.format: cannot tell how the outputs hold boxes; set `format` (yolov8 or boxes_scores) "
        f"and `outputs` (the graph has {[f'{o.name} {_shape(o)}' for o in graph.outputs]})"
    )


def _shape(tensor: TensorInfo) -> list[int | str]:
    return ["?" if d is None else d for d in tensor.shape]
