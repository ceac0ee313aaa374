"""Training from the caller's side: ``imaas datasets``, ``imaas train``, ``imaas jobs`` and the
SDK's dataset and job calls, against a real server, with one job run to its end by a worker
in this process.

The dataset is generated here: three classes of 28x28 grey stripes (horizontal, vertical,
diagonal), twelve images each, plus a text file, an exact duplicate and a 4x4 image in a
class folder of its own, so every count the cleaning report gives is known beforehand.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from imaas.cli.main import app
from imaas.cli.training import merge_config, progress_fields
from imaas.client import AsyncClient, Client
from imaas.errors import InsufficientScope
from imaas.schemas.datasets import DatasetPushResult
from imaas.schemas.jobs import JobInfo
from imaas.settings import ServerSettings, Settings
from tests.conftest import RunningServer

runner = CliRunner()
CLASSES = ("d", "h", "v")
PER_CLASS = 12
SIDE = 28
JUNK = {"h/notes.txt": "not_image", "v/copy.png": "duplicate", "x/tiny.png": "tiny"}
TINY_TRAINING = {"epochs": 2, "batch_size": 8}


def stripes(kind: str, k: int) -> np.ndarray:
    """A 28x28 uint8 image of period-4 stripes, shifted by ``k`` and lightly noised (so no two match)."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    coord = {"h": y, "v": x, "d": x + y}[kind]
    base = np.where((coord + k) % 4 < 2, 220, 30)
    noise = np.random.default_rng(ord(kind) * 100 + k).integers(-20, 21, size=(SIDE, SIDE))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def shapes_zip() -> bytes:
    """The 36 images in class folders, plus the three files the cleaning must drop."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for kind in CLASSES:
            for k in range(PER_CLASS):
                z.writestr(f"{kind}/{k:02d}.png", png(stripes(kind, k)))
        z.writestr("h/notes.txt", "collected on tuesday")
        z.writestr("v/copy.png", png(stripes("v", 0)))  # the same bytes as v/00.png
        z.writestr("x/tiny.png", png(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16))
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the module; its jobs run only when a test runs a worker."""
    settings = Settings(home=tmp_path_factory.mktemp("training") / "home", server=ServerSettings(grpc_port=None))
    running = RunningServer(settings).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "shapes.zip"
    path.write_bytes(shapes_zip())
    return path


@pytest.fixture(scope="module")
def pushed(server: RunningServer, archive: Path) -> DatasetPushResult:
    """``shapes@1``, pushed with the SDK from an open file."""
    with Client(server.url, api_key=server.key) as c, archive.open("rb") as f:
        return c.push_dataset("shapes", f, description="stripes")


def invoke(server: RunningServer, *args: str) -> Result:
    """``imaas ARGS --url <server>`` with the server's admin key found in its home."""
    result = runner.invoke(app, [*args, "--url", server.url, "--home", str(server.settings.home)])
    assert server.key not in result.output
    return result


def pushed_archive_path(server: RunningServer) -> Path:
    """The same archive again, written by the test (the CLI reads a path)."""
    path = server.settings.home.parent / "again.zip"
    path.write_bytes(shapes_zip())
    return path


def table_rows(output: str) -> list[list[str]]:
    """The cells of each row of the Rich tables in ``output``."""
    return [[cell.strip() for cell in line.strip("│┃ ").split("│")] for line in output.splitlines() if "│" in line]


def queued_id(result: Result) -> str:
    found = re.search(r"queued job (job_[a-z0-9]{12})", result.output)
    assert found, result.output
    return found.group(1)


# -- datasets --------------------------------------------------------------------------------------
def test_a_pushed_archive_is_cleaned_and_split_as_generated(server: RunningServer, pushed: DatasetPushResult) -> None:
    assert (pushed.ref, pushed.created, pushed.description) == ("shapes@1", True, "stripes")
    r = pushed.report
    assert r["files"] == PER_CLASS * len(CLASSES) + len(JUNK)
    assert r["kept"] == PER_CLASS * len(CLASSES)
    assert r["dropped"]["by_reason"] == {"duplicate": 1, "not_image": 1, "tiny": 1}
    assert {i["reason"] for i in r["dropped"]["items"] if i["name"] in ("h/notes.txt", "x/tiny.png")} == {
        "not_image", "tiny",
    }  # fmt: skip
    assert r["class_counts"] == dict.fromkeys(CLASSES, PER_CLASS)
    assert r["empty_classes"] == ["x"]  # its only image was dropped
    s = pushed.summary
    assert s["classes"] == list(CLASSES)
    assert s["input"]["size"] == [SIDE, SIDE]
    assert s["input"]["channels"] == 1
    for label in CLASSES:  # every image in exactly one split
        assert sum(s["counts"][split][label] for split in ("train", "validation", "test")) == PER_CLASS
        assert min(s["counts"][split][label] for split in ("validation", "test")) >= 1

    again = invoke(server, "datasets", "push", "shapes", str(pushed_archive_path(server)))
    assert again.exit_code == 0, again.output
    assert "shapes@1: already stored" in again.output
    assert f"kept {PER_CLASS * len(CLASSES)} of {PER_CLASS * len(CLASSES) + len(JUNK)} files" in again.output
    for name, reason in JUNK.items():
        assert f"{reason}: 1" in again.output
        assert name in again.output or reason == "duplicate"  # which copy goes is the server's choice
    assert "empty classes (no image kept): x" in again.output


def test_the_cli_pushes_a_new_split_and_shows_it(server: RunningServer, pushed: DatasetPushResult) -> None:
    made = invoke(server, "datasets", "push", "shapes", str(pushed_archive_path(server)), "--split", "0.5,0.25,0.25",
                  "--seed", "3", "--json")  # fmt: skip
    assert made.exit_code == 0, made.output
    body = json.loads(made.output)
    assert (body["version"], body["created"]) == (2, True)
    with Client(server.url, api_key=server.key) as c:
        v2 = c.get_dataset_version("shapes", 2)
        assert [d.name for d in c.list_datasets()] == ["shapes"]
        assert [v.version for v in c.get_dataset("shapes").versions] == [2, 1]
    assert v2.summary["split"] == {"fractions": [0.5, 0.25, 0.25], "seed": 3}
    assert sum(v2.summary["counts"]["train"].values()) == PER_CLASS * len(CLASSES) // 2

    listed = invoke(server, "datasets", "list")
    assert listed.exit_code == 0, listed.output
    assert [row[:6] for row in table_rows(listed.output)] == [["shapes", "2", "shapes@2", "36", "3", "28x28"]]
    shown = invoke(server, "datasets", "show", "shapes@1")
    assert shown.exit_code == 0, shown.output
    assert "shapes@1: 36 images in 3 classes (d, h, v)" in shown.output
    assert "input 28x28 (height x width), 1 channel (L)" in shown.output
    assert "split 0.8/0.1/0.1 (train/validation/test), seed 0" in shown.output
    report = invoke(server, "datasets", "report", "shapes")  # the newest: version 2, the same cleaning
    assert report.exit_code == 0, report.output
    assert "shapes@2: cleaning report" in report.output
    assert "x/tiny.png" in report.output
    assert "4x4; each side must be at least min_side=8" in report.output
    bad = invoke(server, "datasets", "show", "shapes@two")
    assert bad.exit_code == 2
    missing = invoke(server, "datasets", "show", "shapes@9")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error dataset_not_found:")


# -- one job, start to end -------------------------------------------------------------------------
def test_a_job_trains_registers_and_serves_a_version(server: RunningServer, pushed: DatasetPushResult) -> None:
    import torch

    from imaas.jobs.process import build_worker

    torch.set_num_threads(1)
    with Client(server.url, api_key=server.key) as c:
        job = c.train(pushed.ref, "shapes-cnn", TINY_TRAINING, description="two epochs")
        assert (job.state, job.dataset, job.description) == ("queued", "shapes@1", "two epochs")
        assert job.config["epochs"] == 2
        assert job.config["optimizer"] == "adamw"  # not sent: the server's default

        worker = build_worker(server.app.state.services)
        ran: list[Any] = []
        thread = threading.Thread(target=lambda: ran.append(worker.run_once()), daemon=True)
        thread.start()
        live = list(c.job_events(job.id))  # followed while it trains; the stream ends with the job
        thread.join(timeout=120)
        assert ran, "the worker did not finish"
        assert (ran[0].id, ran[0].state.value) == (job.id, "succeeded"), ran[0].error

        done = c.wait_for_job(job.id, timeout=30)  # over already: answered at once
        assert done.result["model"] == "shapes-cnn"
        version = done.result["version"]
        events = list(c.job_events(job.id))  # a finished job replays its history and the stream ends
        tail = list(c.job_events(job.id, after=events[2].seq))
        plots = [c.job_plot(job.id, "confusion"), c.job_plot(job.id, "curves")]
        image = png(stripes("h", 1))
        answer = c.predict("shapes-cnn", image, alias="staging")
        assert c.get_model("shapes-cnn").aliases == {"staging": version}

    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    assert [e.seq for e in live] == seqs  # following it live missed nothing
    states = [e.data["state"] for e in events if e.kind == "state"]
    assert states[0] == "queued"
    assert states[-1] == "succeeded"
    assert events[-1].kind == "state"
    assert [e.data["epoch"] for e in events if e.kind == "epoch"] == [1, 2]
    assert [e.seq for e in tail] == seqs[3:]

    async def replay() -> list[int]:
        async with AsyncClient(server.url, api_key=server.key) as ac:
            return [e.seq async for e in ac.job_events(job.id)]

    assert asyncio.run(replay()) == seqs
    assert all(p.startswith(b"\x89PNG") for p in plots)
    assert (answer.model, answer.version) == ("shapes-cnn", version)
    assert answer.results[0].predictions[0].label in CLASSES

    shown = invoke(server, "jobs", "show", job.id)
    assert shown.exit_code == 0, shown.output
    assert f"shapes-cnn@{version} (alias staging)" in shown.output
    assert f"imaas models promote shapes-cnn {version}" in shown.output
    logs = invoke(server, "jobs", "logs", job.id)
    assert logs.exit_code == 0, logs.output
    assert "epoch 1/2: train loss" in logs.output
    assert "epoch 2/2: train loss" in logs.output
    assert f"registered shapes-cnn@{version} as staging" in logs.output
    watched = invoke(server, "jobs", "watch", job.id)
    assert watched.exit_code == 0, watched.output
    assert f"succeeded: shapes-cnn@{version} (alias staging), test accuracy" in watched.output
    assert f"promote it to production: imaas models promote shapes-cnn {version}" in watched.output
    assert "epoch 2/2: train loss" in watched.output  # the log printed above the bar
    listed = invoke(server, "jobs", "list", "--state", "succeeded")
    assert listed.exit_code == 0, listed.output
    assert [row[:5] for row in table_rows(listed.output)] == [[job.id, "succeeded", "shapes-cnn", "shapes@1", "2/2"]]
    promoted = invoke(server, "models", "promote", "shapes-cnn", str(version))  # the command printed works
    assert promoted.exit_code == 0, promoted.output


# -- submitting, cancelling, refusing --------------------------------------------------------------
def test_a_queued_job_is_cancelled_from_the_cli(server: RunningServer, pushed: DatasetPushResult) -> None:
    submitted = invoke(server, "train", "shapes@1", "--model", "shapes-cancel", "--epochs", "1", "--no-watch")
    assert submitted.exit_code == 0, submitted.output
    job_id = queued_id(submitted)
    assert f"imaas jobs watch {job_id}" in submitted.output

    cancelled = invoke(server, "jobs", "cancel", job_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert f"job {job_id}: cancelled" in cancelled.output
    with Client(server.url, api_key=server.key) as c:
        job = c.get_job(job_id)
    assert job.state == "cancelled"
    assert job.config["epochs"] == 1
    watched = invoke(server, "jobs", "watch", job_id)
    assert watched.exit_code == 1
    assert "cancelled: cancelled by" in watched.output


def test_options_override_the_config_file_and_the_server_names_a_bad_one(
    server: RunningServer, pushed: DatasetPushResult, tmp_path: Path
) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 5\nlr: 0.01\naugment: {shift_px: 1}\nearly_stopping: {min_delta: 0.01}\n")
    made = invoke(server, "train", "shapes", "--model", "shapes-opts", "--config", str(config), "--epochs", "3",
                  "--patience", "2", "--optimizer", "sgd", "--no-watch", "--json")  # fmt: skip
    assert made.exit_code == 0, made.output
    job = JobInfo.model_validate_json(made.output)
    invoke(server, "jobs", "cancel", job.id)  # no worker should ever take it
    c = job.config
    assert (c["epochs"], c["lr"], c["optimizer"]) == (3, 0.01, "sgd")
    assert c["augment"]["shift_px"] == 1
    assert c["early_stopping"] == {"patience": 2, "min_delta": 0.01}
    assert job.dataset == "shapes@2"  # the newest version when none is named

    refused = invoke(server, "train", "shapes", "--model", "shapes-opts", "--epochs", "0", "--no-watch")
    assert refused.exit_code == 1
    assert "epochs" in refused.stderr
    assert "greater than or equal to 1" in refused.stderr


def test_a_key_without_the_jobs_scope_cannot_train(server: RunningServer, pushed: DatasetPushResult) -> None:
    with Client(server.url, api_key=server.key) as c:
        reader = c.create_key("reader", ["datasets:read", "models:read"]).secret
    with Client(server.url, api_key=reader) as c:
        assert [d.name for d in c.list_datasets()] == ["shapes"]
        with pytest.raises(InsufficientScope) as refused_sdk:
            c.train("shapes", "shapes-cnn")
    assert refused_sdk.value.extra["status"] == 403
    refused = runner.invoke(app, ["train", "shapes", "--model", "shapes-cnn", "--url", server.url, "--api-key", reader])
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error insufficient_scope:")
    assert "jobs" in refused.stderr
    assert reader not in refused.output


def test_patience_joins_the_files_early_stopping() -> None:
    base = {"epochs": 5, "early_stopping": {"min_delta": 0.1}, "augment": {"flip": True}}
    merged = merge_config(base, {"epochs": 2, "lr": None}, patience=3)
    assert merged == {"epochs": 2, "early_stopping": {"min_delta": 0.1, "patience": 3}, "augment": {"flip": True}}
    assert base["early_stopping"] == {"min_delta": 0.1}  # the file's mapping is not changed
    assert merge_config({}, {"lr": None}, None) == {}  # nothing given: nothing sent


def test_the_bar_counts_steps_across_epochs() -> None:
    p = {"epoch": 2, "epochs": 5, "step": 3, "steps": 10, "train_loss": 0.5, "train_accuracy": 0.75,
         "val_loss": None, "images_per_s": 120.4, "eta_s": 65}  # fmt: skip
    fields = progress_fields(p)
    assert (fields["completed"], fields["total"]) == (13, 50)  # one epoch of 10 steps done, 3 of the next
    assert (fields["description"], fields["step"], fields["eta"]) == ("epoch 2/5", "step 3/10", "ETA 1:05")
    assert fields["metrics"] == "loss 0.500 acc 0.750 | 120 img/s"  # no validation before the epoch ends
    assert progress_fields(p | {"eta_s": 3725})["eta"] == "ETA 1:02:05"
