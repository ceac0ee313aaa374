"""Detection post-processing: NMS against a plain reference, box formats, geometry, manifests."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imaas.errors import InvalidField, InvalidManifest, InvalidRequest
from imaas.imaging.decode import DecodeLimits
from imaas.imaging.pipeline import Geometry, prepare_image
from imaas.runtime.graph import GraphInfo, TensorInfo
from imaas.runtime.tasks import Labelled, complete_manifest, task
from imaas.runtime.tasks.detection import retinaface_priors
from imaas.runtime.tasks.nms import nms
from imaas.schemas.manifest import Manifest


def reference_nms(boxes: list[list[float]], scores: list[float], classes: list[int], thr: float) -> list[int]:
    """Textbook greedy NMS, one box pair at a time, per class."""

    def iou(a: list[float], b: list[float]) -> float:
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    kept: list[int] = []
    for i in order:
        if all(classes[k] != classes[i] or iou(boxes[k], boxes[i]) <= thr for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(20))
def test_nms_matches_the_textbook_algorithm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(5, 80, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.permutation(n).astype(np.float64) / n  # distinct, so the order is unique
    classes = rng.integers(0, 3, n)
    thr = float(rng.uniform(0.2, 0.7))
    got = nms(boxes, scores, classes, thr, limit=1000).tolist()
    assert got == reference_nms(boxes.tolist(), scores.tolist(), classes.tolist(), thr)


def test_nms_never_suppresses_across_classes_and_honours_the_limit() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], dtype=np.float32)
    kept = nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), iou=0.5, limit=10)
    assert kept.tolist() == [0, 1]  # box 2 overlaps box 0 of its own class, box 1 is another class
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 2]), iou=0.5, limit=2).tolist() == [0, 1]


def jpeg_with_square(width: int, height: int, box: tuple[int, int, int, int], orientation: int = 1) -> bytes:
    img = Image.new("RGB", (width, height), (20, 20, 20))
    img.paste((250, 250, 250), box)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def bright_box(tensor: np.ndarray) -> np.ndarray:
    """The bounding box ``x1, y1, x2, y2`` of bright pixels in a CHW tensor (pixels scaled 0..1)."""
    ys, xs = np.nonzero(tensor[0] > 0.5)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


@pytest.mark.parametrize("resize", ["letterbox", "exact", "shorter"])
def test_geometry_maps_tensor_pixels_back_to_the_photo(resize: str) -> None:
    manifest = Manifest.model_validate(
        {
            "task": "detection",
            "input": {"name": "x", "layout": "NCHW", "size": [128, 128], "dtype": "float32"},
            "preprocess": {"resize": resize, "resize_to": 128, "scale": 1 / 255},
        }
    )
    square = (700, 300, 1000, 600)  # in a 1600x900 photo (inside the centre crop), decoded at 1/4 scale
    tensor, geometry = prepare_image(
        jpeg_with_square(1600, 900, square), manifest.input, manifest.preprocess, DecodeLimits()
    )
    assert (geometry.width, geometry.height) == (1600, 900)
    back = geometry.to_original(bright_box(tensor))
    assert np.allclose(back, square, atol=1600 / 128 * 1.5)  # within about a tensor pixel


def test_geometry_follows_the_exif_orientation() -> None:
    # stored 300 wide, 200 high, with "rotate 90 clockwise to view" (6): upright it is 200x300
    data = jpeg_with_square(300, 200, (0, 0, 60, 40), orientation=6)
    manifest = Manifest.model_validate(
        {
            "input": {"name": "x", "layout": "NCHW", "size": [300, 200], "dtype": "float32"},
            "preprocess": {"resize": "exact"},
        }
    )
    tensor, geometry = prepare_image(data, manifest.input, manifest.preprocess, DecodeLimits())
    assert (geometry.width, geometry.height) == (200, 300)
    # the stored top-left corner is the upright top-right corner: x from 160 to 200, y from 0 to 60
    assert np.allclose(geometry.to_original(bright_box(tensor)), [160, 0, 200, 60], atol=2)


def test_boxes_outside_the_photo_are_clipped() -> None:
    g = Geometry(width=100, height=50, scale_x=2.0, scale_y=2.0, pad_x=10.0, pad_y=0.0)
    assert g.to_original(np.array([[0, -5, 400, 60]], dtype=np.float32)).tolist() == [[0, 0, 100, 30]]


def test_retinaface_priors_count_and_layout() -> None:
    priors = retinaface_priors(640, 480)
    expected = sum(2 * -(-640 // s) * -(-480 // s) for s in (8, 16, 32))
    assert priors.shape == (expected, 4)
    first = priors[0]  # cell (0, 0) of stride 8, size 16
    assert np.allclose(first, [4 / 480, 4 / 640, 16 / 480, 16 / 640])
    assert np.allclose(priors[1, 2:], [32 / 480, 32 / 640])  # the same cell's second size


def yolo_manifest(classes: int) -> Manifest:
    graph = GraphInfo(
        inputs=(TensorInfo("images", "float32", (1, 3, 64, 64)),),
        outputs=(TensorInfo("output0", "float32", (1, 4 + classes, 84)),),
        opset=17,
    )
    labels = [f"c{i}" for i in range(classes)]
    return complete_manifest(
        Manifest.model_validate({"task": "detection", "labels": labels, "preprocess": {"resize": "letterbox"}}), graph
    )


def test_yolov8_outputs_become_boxes_in_photo_pixels() -> None:
    manifest = yolo_manifest(2)
    assert manifest.postprocess.format == "yolov8"
    raw = np.zeros((6, 84), dtype=np.float32)
    raw[:4, 0] = [32, 32, 20, 10]  # centre (32, 32), 20 x 10 in the 64x64 input
    raw[5, 0] = 0.9  # class 1
    raw[:4, 1] = [33, 32, 20, 10]  # a near copy: suppressed
    raw[5, 1] = 0.8
    raw[:4, 2] = [10, 10, 8, 8]
    raw[4, 2] = 0.1  # under the threshold
    # the photo was 128 x 64, letterboxed into 64x64: scale 0.5, 16 rows of padding on top
    geometry = Geometry(width=128, height=64, scale_x=0.5, scale_y=0.5, pad_x=0, pad_y=16)
    out = task("detection").postprocess([raw], geometry, Labelled(manifest, ("c0", "c1")), None)
    assert out["width"] == 128
    assert [(d["label"], d["score"]) for d in out["detections"]] == [("c1", pytest.approx(0.9))]
    assert out["detections"][0]["box"] == [44.0, 22.0, 84.0, 42.0]


def test_request_thresholds_override_the_manifest() -> None:
    manifest = yolo_manifest(1)
    raw = np.zeros((5, 84), dtype=np.float32)
    raw[:, 0] = [32, 32, 20, 10, 0.3]
    raw[:, 1] = [34, 32, 20, 10, 0.2]
    detection = task("detection")
    same = Geometry.identity(64, 64)
    labelled = Labelled(manifest, ("c0",))
    assert len(detection.postprocess([raw], same, labelled, detection.options({}))["detections"]) == 1
    loose = detection.options({"score": "0.1", "iou": "0.95"})
    assert len(detection.postprocess([raw], same, labelled, loose)["detections"]) == 2
    strict = detection.options({"score": "0.5"})
    assert detection.postprocess([raw], same, labelled, strict)["detections"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"score": "1.5"}, "query.score"),
        ({"iou": "-0.1"}, "query.iou"),
        ({"score": "nan"}, "query.score"),
        ({"max_detections": "0"}, "query.max_detections"),
        ({"draw": "maybe"}, "query.draw"),
    ],
)
def test_bad_detection_options_name_their_parameter(params: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidRequest, match=field):
        task("detection").options(params)


def test_another_tasks_option_is_an_invalid_field() -> None:
    with pytest.raises(InvalidField, match=r"query\.top_k: not an option of detection models"):
        task("detection").options({"top_k": "3"})
    with pytest.raises(InvalidField, match=r"query\.score: not an option of classification models"):
        task("classification").options({"score": "0.5"})


@pytest.mark.parametrize(
    ("outputs", "manifest", "message"),
    [
        ((TensorInfo("logits", "float32", (1, 1000)),), {}, "postprocess.format"),
        ((TensorInfo("out", "float32", (1, 3, 84)),), {"postprocess": {"format": "yolov8"}}, "4 \\+ classes"),
        (
            (TensorInfo("b", "float32", (1, 10, 4)), TensorInfo("s", "float32", (1, 12, 3))),
            {"postprocess": {"format": "boxes_scores", "outputs": ["b", "s"]}},
            "10 boxes but 12 rows",
        ),
        ((TensorInfo("out", "float32", (1, 6, 84)),), {"labels": ["a", "b", "c"]}, "labels: 3 labels for 2 classes"),
        ((TensorInfo("out", "float32", (1, 6, 84)),), {"postprocess": {"top_k": 3}}, "postprocess.top_k"),
        ((TensorInfo("out", "float32", (1, 6, 84)),), {"postprocess": {"outputs": ["nope"]}}, "no output 'nope'"),
    ],
)
def test_detection_manifests_that_cannot_be_boxes_are_refused(
    outputs: tuple[TensorInfo, ...], manifest: dict[str, object], message: str
) -> None:
    graph = GraphInfo(inputs=(TensorInfo("x", "float32", (1, 3, 64, 64)),), outputs=outputs, opset=17)
    with pytest.raises(InvalidManifest, match=message):
        complete_manifest(Manifest.model_validate({"task": "detection", **manifest}), graph)


def test_detection_agreement_is_an_f1_of_matched_boxes() -> None:
    def det(*boxes: tuple[int, list[float]]) -> dict[str, object]:
        return {"detections": [{"index": i, "box": b} for i, b in boxes]}

    a = det((1, [0, 0, 10, 10]), (1, [20, 20, 30, 30]))
    assert task("detection").agreement(a, a) == 1.0
    assert task("detection").agreement(a, det((1, [0, 0, 10, 11]))) == pytest.approx(2 / 3)
    assert task("detection").agreement(a, det((2, [0, 0, 10, 10]))) == 0.0  # another class
    assert task("detection").agreement(det(), det()) == 1.0
