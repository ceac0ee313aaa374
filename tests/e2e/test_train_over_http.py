"""Train a model over HTTP as a user would: upload a zip, queue a job, follow its Server-Sent
Events to the end while an ``imaas worker`` process runs it, then predict with the version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from imaas.settings import Settings
from tests.conftest import RunningServer
from tests.factories import pattern_dataset_zip, pattern_image


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    """Parse a text/event-stream body into its events (id, event, data), independently of the SDK."""
    events, current = [], {}
    for line in response.iter_lines():
        if not line:
            if current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            current[field] = value.removeprefix(" ")
    return events


def test_upload_follow_the_stream_and_predict(serve: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server: RunningServer = serve(Settings(home=home))
    auth = server.headers
    up = httpx.post(
        f"{server.url}/v1/datasets/stripes?seed=3",
        content=pattern_dataset_zip(classes=3, per_class=20),
        headers={**auth, "content-type": "application/zip"},
        timeout=60,
    )
    assert up.status_code == 201, up.text
    assert up.json()["summary"]["counts"]["test"] == {"class-0": 2, "class-1": 2, "class-2": 2}

    job = httpx.post(
        f"{server.url}/v1/jobs",
        json={"dataset": "stripes", "model": "stripes-cnn", "config": {"epochs": 4}},
        headers=auth,
        timeout=30,
    )
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    assert job.json()["dataset"] == "stripes@1"

    env = {**os.environ, "IMAAS_HOME": str(home), "IMAAS_JOBS__HEARTBEAT_S": "0.2"}
    worker = subprocess.Popen([sys.executable, "-m", "imaas.cli.main", "worker"], env=env)
    try:
        with httpx.stream(
            "GET", f"{server.url}/v1/jobs/{job_id}/events", headers=auth, timeout=httpx.Timeout(120, read=120)
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    ids = [int(e["id"]) for e in events]
    assert ids == list(range(1, len(ids) + 1))  # every event, in order, once
    states = [json.loads(e["data"])["data"]["state"] for e in events if e["event"] == "state"]
    assert states[0] == "queued"
    assert states[-1] == "succeeded"
    epochs = [json.loads(e["data"])["data"]["epoch"] for e in events if e["event"] == "epoch"]
    assert epochs == [1, 2, 3, 4]

    # a reconnection from Last-Event-ID gets only what came after it, and then the end
    with httpx.stream(
        "GET", f"{server.url}/v1/jobs/{job_id}/events", headers={**auth, "last-event-id": str(ids[-2])}, timeout=30
    ) as r:
        assert [int(e["id"]) for e in sse_events(r)] == [ids[-1]]

    done = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=auth).json()
    assert done["state"] == "succeeded"
    version = done["result"]["version"]
    log = httpx.get(f"{server.url}/v1/jobs/{job_id}/log", headers=auth).text
    assert "epoch 4/4" in log
    assert f"registered stripes-cnn@{version} as staging" in log
    png = httpx.get(f"{server.url}/v1/jobs/{job_id}/plots/confusion.png", headers=auth)
    assert png.status_code == 200
    assert png.content.startswith(b"\x89PNG")

    answer = httpx.post(
        f"{server.url}/v1/models/stripes-cnn@{version}:predict",
        content=pattern_image(2, 500),
        headers={**auth, "content-type": "image/png"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert done["result"]["accuracy"] >= 0.8  # stripes 2, 3 and 4 pixels apart are easy to tell apart
    assert answer.json()["results"][0]["predictions"][0]["label"] == "class-2"


def test_a_stream_ends_when_its_key_is_revoked(serve: Any, tmp_path: Path) -> None:
    import threading

    server: RunningServer = serve(Settings(home=tmp_path / "home"))
    admin = server.headers
    up = httpx.post(
        f"{server.url}/v1/datasets/stripes",
        content=pattern_dataset_zip(classes=2, per_class=10),
        headers={**admin, "content-type": "application/zip"},
        timeout=60,
    )
    assert up.status_code == 201, up.text
    job = httpx.post(
        f"{server.url}/v1/jobs", json={"dataset": "stripes", "model": "m", "config": {"epochs": 1}}, headers=admin
    ).json()  # no worker runs here: the job stays queued and its stream would never end by itself
    made = httpx.post(f"{server.url}/v1/keys", json={"name": "watcher", "scopes": ["jobs"]}, headers=admin).json()
    watcher = {"authorization": f"Bearer {made['secret']}"}
    opened, ended = threading.Event(), threading.Event()

    def watch() -> None:
        with httpx.stream(
            "GET", f"{server.url}/v1/jobs/{job['id']}/events", headers=watcher, timeout=httpx.Timeout(60)
        ) as r:
            for line in r.iter_lines():
                if line.startswith("id:"):
                    opened.set()
        ended.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert opened.wait(30), "the stream sent nothing"
    assert not ended.is_set()
    assert httpx.delete(f"{server.url}/v1/keys/{made['key']['id']}", headers=admin).status_code == 200
    assert ended.wait(30), "the stream went on after its key was revoked"
    thread.join(5)
