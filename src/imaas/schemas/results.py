"""One image's result, per task: the wire form of what ``runtime/tasks/<task>.py`` returns.

``PredictResponse.results`` holds one of these per image; which one is said by the
response's ``task``, and the SDK reads them back into these classes.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    """One class of a classification result."""

    index: int = Field(description="class index in the model's output")
    label: str | None = Field(None, description="class name, when the model has labels")
    score: float = Field(description="probability (or score) of the class")


class ClassificationResult(BaseModel):
    """Classification: the top classes of one image, best first."""

    filename: str | None = None
    predictions: list[Prediction]


class Detection(BaseModel):
    """One object found in an image."""

    index: int = Field(description="class index in the model's output")
    label: str | None = Field(None, description="class name, when the model has labels")
    score: float = Field(description="confidence, 0 to 1")
    box: tuple[float, float, float, float] = Field(
        description="x1, y1, x2, y2 in the original image's pixels (EXIF orientation applied), origin at the top left"
    )
    keypoints: list[tuple[float, float]] | None = Field(
        None,
        description="landmarks x, y in the image's pixels, when the model has them (faces: eyes, nose, mouth corners)",
    )


class AnswerImage(BaseModel):
    """An image carried in a JSON answer."""

    media_type: str = Field(description="image/jpeg or image/png")
    data: str = Field(description="the encoded image, base64")


class DetectionResult(BaseModel):
    """Detection: the objects of one image above the confidence threshold, best first,
    after class-aware non-maximum suppression."""

    filename: str | None = None
    width: int = Field(description="the image's width in pixels, upright")
    height: int = Field(description="the image's height in pixels, upright")
    detections: list[Detection]
    image: AnswerImage | None = Field(
        None, description="with `regions=true`: the drawn or redacted image whose regions `detections` lists"
    )


class EmbeddingResult(BaseModel):
    """Embedding: one L2-normalised vector per image (cosine similarity is a dot product)."""

    filename: str | None = None
    dimension: int
    embedding: list[float]


TaskResult = ClassificationResult | DetectionResult | EmbeddingResult
"""What ``results`` may hold: the response's ``task`` says which."""

TASK_RESULTS: dict[str, type[BaseModel]] = {
    "classification": ClassificationResult,
    "detection": DetectionResult,
    "embedding": EmbeddingResult,
}
"""The result class of each task, for the SDK and the OpenAPI description."""
