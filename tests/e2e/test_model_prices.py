"""Model prices over HTTP on one real server: ``PATCH /v1/models/{name}`` sets and clears
``price_per_1000``, ``GET /v1/models`` and ``GET /v1/models/{name}`` show it as an exact
decimal string, bad prices are refused like a bad ``keep_latest``, and the usage report
prices images with it (the task's price once it is cleared)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from imaas.settings import MeteringSettings, ServerSettings, Settings
from tests.conftest import RunningServer
from tests.factories import solid, tiny_classifier

MANIFEST = json.dumps({"labels": ["red", "blue", "green", "grey"], "preprocess": {"resize": "exact"}})
TASK_PRICE = Decimal("2")


@pytest.fixture
def http(tmp_path: Path, serve: Callable[..., RunningServer]) -> Iterator[httpx.Client]:
    settings = Settings(
        home=tmp_path / "h",
        server=ServerSettings(grpc_port=None),
        metering=MeteringSettings(flush_s=0.1, task_prices={"classification": TASK_PRICE}),
    )
    server = serve(settings)
    with httpx.Client(base_url=server.url, timeout=30.0, headers=server.headers) as client:
        model = tiny_classifier(tmp_path / "tiny.onnx").read_bytes()
        r = client.post("/v1/models/tiny/versions", files={"model": ("tiny.onnx", model)}, data={"manifest": MANIFEST})
        assert r.status_code == 201, r.text
        yield client


def price_shown(http: httpx.Client) -> tuple[Any, Any]:
    """The price in ``GET /v1/models`` and in ``GET /v1/models/tiny``."""
    listed = http.get("/v1/models")
    detail = http.get("/v1/models/tiny")
    assert listed.status_code == detail.status_code == 200, (listed.text, detail.text)
    return listed.json()["models"][0]["price_per_1000"], detail.json()["price_per_1000"]


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("1.50", "1.5"),
        ("0.000001", "0.000001"),
        ("123456789.123456", "123456789.123456"),
        ("1000000000", "1000000000"),
        ("10", "10"),  # never "1E+1"
        ("0", "0"),  # free, which is not the same as no price
        (1.5, "1.5"),  # a JSON number is read as the decimal that prints it
        (0.1, "0.1"),
        (7, "7"),
    ],
)
def test_a_price_is_set_and_shown_exactly(http: httpx.Client, sent: object, shown: str) -> None:
    assert price_shown(http) == (None, None)
    r = http.patch("/v1/models/tiny", json={"price_per_1000": sent})
    assert r.status_code == 200, r.text
    assert r.json()["price_per_1000"] == shown
    assert price_shown(http) == (shown, shown)


def test_null_clears_the_price_and_omitting_it_keeps_it(http: httpx.Client) -> None:
    assert http.patch("/v1/models/tiny", json={"price_per_1000": "2.25"}).status_code == 200
    kept = http.patch("/v1/models/tiny", json={"description": "colours", "keep_latest": None})
    assert kept.status_code == 200, kept.text
    assert (kept.json()["price_per_1000"], kept.json()["description"]) == ("2.25", "colours")
    cleared = http.patch("/v1/models/tiny", json={"price_per_1000": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["price_per_1000"] is None
    assert price_shown(http) == (None, None)
    edits = [e for e in http.get("/v1/models/tiny/history").json()["events"] if e["action"] == "edit"]
    assert [e["detail"] for e in edits] == [
        {"fields": ["price_per_1000"]},
        {"fields": ["description"]},
        {"fields": ["price_per_1000"]},
    ]


@pytest.mark.parametrize(
    "bad",
    ["-1", -1, -0.5, "NaN", "Infinity", "0.0000001", 1e-7, "1.0000001", "1000000000.000001", 1e10, "abc", "1e3",
     " 2", "", True, [], {"amount": 1}, 0.30000000000000004],
)  # fmt: skip
def test_bad_prices_are_refused_like_a_bad_keep_latest(http: httpx.Client, bad: object) -> None:
    assert http.patch("/v1/models/tiny", json={"price_per_1000": "3"}).status_code == 200
    r = http.patch("/v1/models/tiny", json={"price_per_1000": bad})
    keep = http.patch("/v1/models/tiny", json={"keep_latest": -1})
    assert (r.status_code, r.headers["content-type"]) == (keep.status_code, keep.headers["content-type"])
    assert (r.status_code, r.headers["content-type"]) == (400, "application/problem+json"), r.text
    assert r.json()["code"] == keep.json()["code"] == "invalid_request"
    assert "price_per_1000" in r.json()["detail"]
    assert price_shown(http) == ("3", "3")  # nothing refused was stored


def usage_row(http: httpx.Client, images: int) -> dict[str, Any]:
    """The usage report's row for tiny once ``images`` images are written (metering flushes in batches)."""
    deadline = time.monotonic() + 20
    while True:
        r = http.get("/v1/usage", params={"model": "tiny"})
        assert r.status_code == 200, r.text
        rows = r.json()["rows"]
        if rows and rows[0]["images"] >= images:
            assert len(rows) == 1, rows
            row: dict[str, Any] = rows[0]
            return row
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)


def test_the_usage_report_prices_images_with_the_model_price(http: httpx.Client) -> None:
    assert http.patch("/v1/models/tiny", json={"price_per_1000": "1.5"}).status_code == 200
    for _ in range(3):
        r = http.post("/v1/models/tiny:predict", content=solid((250, 10, 10)), headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
    row = usage_row(http, 3)
    assert (row["billable_images"], row["price_per_1000"]) == (3, "1.5")
    assert Decimal(row["cost"]) == Decimal("0.0045")  # 3 x 1.5 / 1000, exactly
    assert http.patch("/v1/models/tiny", json={"price_per_1000": None}).status_code == 200
    row = usage_row(http, 3)  # no price of its own: the task's price
    assert (row["price_per_1000"], Decimal(row["cost"])) == ("2", 3 * TASK_PRICE / 1000)


def test_cli_sets_shows_and_clears_a_price(tmp_path: Path, serve: Any) -> None:
    from typer.testing import CliRunner

    from imaas.cli.main import app

    server = serve(Settings(home=tmp_path / "h"))
    model = tiny_classifier(tmp_path / "tiny.onnx").read_bytes()
    pushed = httpx.post(
        f"{server.url}/v1/models/tiny/versions",
        headers=server.headers,
        files={"model": ("tiny.onnx", model)},
        data={"manifest": MANIFEST},
    )
    assert pushed.status_code == 201, pushed.text
    runner = CliRunner()
    args = ["--url", server.url, "--home", str(tmp_path / "h")]
    r = runner.invoke(app, ["models", "edit", "tiny", "--price", "1.50", *args])
    assert r.exit_code == 0, r.output
    listed = runner.invoke(app, ["models", "list", "--json", *args])
    assert listed.exit_code == 0, listed.output
    assert [m["price_per_1000"] for m in json.loads(listed.output)["models"]] == ["1.5"]
    r = runner.invoke(app, ["models", "edit", "tiny", "--clear-price", *args])
    assert r.exit_code == 0, r.output
    got = httpx.get(f"{server.url}/v1/models/tiny", headers=server.headers).json()
    assert got["price_per_1000"] is None
    both = runner.invoke(app, ["models", "edit", "tiny", "--price", "1", "--clear-price", *args])
    assert both.exit_code != 0
    assert "not both" in both.output
