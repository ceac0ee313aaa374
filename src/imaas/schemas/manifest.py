"""The manifest: what turns an ONNX file into a servable model.

A manifest says which task the model does, what image tensor it takes and how to get
there from a photo, which labels its outputs mean and how to post-process them. Fields
left out are inferred from the ONNX graph on push (input name, layout, size, dtype).

Example (YAML)::

    task: classification
    input: {name: input, layout: NCHW, size: [224, 224], color: RGB, dtype: float32}
    preprocess: {resize: shorter, resize_to: 256, crop: center, scale: 0.00392156862745098,
                 mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
    labels: imagenet-1k
    postprocess: {activation: softmax, top_k: 5}

No text in a manifest may contain a NUL character: PostgreSQL cannot store one in JSON, so
it is refused on every backend, naming the field (``description: ... NUL characters``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

Task = Literal["classification", "detection", "ocr", "embedding", "image-to-image"]
NAMED_LABEL_SETS = ("imagenet-1k",)
NUL_MESSAGE = "must not contain NUL characters (\\u0000)"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NUL_MESSAGE)
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A ``str`` field of the manifest: any text but NUL."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Strict):
    """The image tensor the model takes. ``size`` is ``[height, width]``.

    ``batch`` is the batch size the model must run at, or None when any works: push reads it
    from the graph, and sets 1 when a graph with a dynamic batch axis fails on two images
    (a ``Reshape`` to ``[1, -1]`` inside, say); a manifest may set it for a dynamic axis. A
    model with a fixed batch never gets more images stacked than that, and smaller batches
    are padded to it.
    """

    name: Text | None = None
    layout: Literal["NCHW", "NHWC"] | None = None
    size: tuple[int, int] | None = None
    color: Literal["RGB", "BGR", "L"] = "RGB"
    dtype: Literal["float32", "float16", "uint8"] | None = None
    batch: int | None = Field(None, ge=1, le=4096)

    @field_validator("size")
    @classmethod
    def _positive(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and (v[0] < 1 or v[1] < 1 or v[0] > 8192 or v[1] > 8192):
            raise ValueError("size must be [height, width] with each side in 1..8192")
        return v

    @property
    def channels(self) -> int:
        """Number of colour channels the tensor carries."""
        return 1 if self.color == "L" else 3


class Preprocess(_Strict):
    """How a decoded image becomes the input tensor.

    ``resize``: ``shorter`` scales the shorter side to ``resize_to`` (then ``crop``),
    ``exact`` stretches to the input size, ``letterbox`` fits inside it and pads with
    ``pad_value``, ``none`` expects images already at the input size.
    Values become ``(pixel * scale - mean) / std``.
    """

    resize: Literal["shorter", "exact", "letterbox", "none"] = "shorter"
    resize_to: int | None = Field(None, ge=1, le=16384)
    crop: Literal["center", "none"] = "center"
    interpolation: Literal["bilinear", "bicubic", "nearest", "lanczos"] = "bilinear"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    pad_value: int = Field(114, ge=0, le=255)

    @field_validator("std")
    @classmethod
    def _nonzero(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(s == 0 for s in v):
            raise ValueError("std values must be non-zero")
        return v


DetectionFormat = Literal["yolov8", "boxes_scores", "retinaface"]


class Postprocess(_Strict):
    """How raw outputs become a prediction; each task reads its own fields (and refuses the others').

    Classification: ``activation`` is ``softmax`` for logits, ``sigmoid`` for multi-label
    logits, ``none`` when the model already outputs probabilities, ``auto`` to detect
    probabilities; ``top_k`` classes are answered; ``output`` names the scores output.

    Embedding: ``output`` names the vector output (L2-normalised on the way out).

    Detection: ``format`` says how the outputs hold boxes: ``yolov8`` is one output
    ``[batch, 4 + classes, anchors]`` (centre x, centre y, width, height in input pixels,
    then class scores); ``boxes_scores`` is two outputs, ``outputs: [boxes, scores]``, of
    ``[batch, anchors, 4]`` corners (``x1, y1, x2, y2``, as fractions of the input when
    ``normalized``) and ``[batch, anchors, classes]`` scores, where ``background: true``
    means class 0 is "nothing" and is never answered; ``retinaface`` is RetinaFace's
    ``outputs: [loc, conf]`` or ``[loc, conf, landmarks]`` (``[batch, priors, 4 | 2 | 10]``,
    offsets from the priors of strides 8, 16 and 32; class 0 of ``conf`` is the background),
    whose five landmarks per face are answered as ``keypoints``. ``score`` and ``iou`` are the default
    confidence and non-maximum-suppression thresholds (a request may override both), and
    at most ``max_detections`` boxes are answered per image.
    """

    activation: Literal["softmax", "sigmoid", "none", "auto"] = "auto"
    top_k: int = Field(5, ge=1, le=1000)
    output: Text | None = None
    outputs: tuple[Text, ...] | None = None
    format: DetectionFormat | None = None
    normalized: bool = False
    background: bool = False
    score: float = Field(0.25, ge=0, le=1)
    iou: float = Field(0.45, ge=0, le=1)
    max_detections: int = Field(100, ge=1, le=1000)


class Manifest(_Strict):
    """Everything imaas needs to serve an ONNX file."""

    task: Task = "classification"
    description: Text = ""
    input: InputSpec = Field(default_factory=InputSpec)
    preprocess: Preprocess = Field(default_factory=Preprocess)
    labels: str | list[str] | None = None
    postprocess: Postprocess = Field(default_factory=Postprocess)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, str) and v not in NAMED_LABEL_SETS:
            raise ValueError(f"unknown label set {v!r}; use one of {list(NAMED_LABEL_SETS)} or a list")
        if isinstance(v, list) and not v:
            raise ValueError("labels must not be an empty list")
        if isinstance(v, list):
            for i, label in enumerate(v):
                if "\x00" in label:
                    raise ValueError(f"label {i} {NUL_MESSAGE}")
        return v

    @model_validator(mode="after")
    def _channels_match(self) -> Manifest:
        n = self.input.channels
        for field in ("mean", "std"):
            values = getattr(self.preprocess, field)
            if len(values) not in (1, n):
                raise ValueError(f"preprocess.{field} needs 1 or {n} values for color {self.input.color}")
        return self
