"""``imaas train`` and ``imaas jobs list/show/logs/cancel/watch``.

Each command parses its options, makes SDK calls against a running server (``--url``, with
``--api-key`` or a local server's admin key, see ``credentials.py``) and renders the answer;
``--json`` prints the server's JSON instead. Nothing is validated here that the server
validates: a bad training option comes back as the server's error naming the field.

``imaas train`` and ``imaas jobs watch`` follow the job's event stream with a progress bar
(log lines and epochs printed above it) and end with its outcome; their exit code is 0 only
when the job succeeded.

Example::

    imaas train digits --model digits-cnn --epochs 20
    imaas models promote digits-cnn 1
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from imaas.cli.credentials import call
from imaas.cli.terminal import (
    DEFAULT_URL,
    ApiKeyOption,
    JsonOption,
    ServerHomeOption,
    UrlOption,
    add_plain_row,
    console,
    number,
    print_all,
    print_plain,
    wide_console,
)
from imaas.cli.times import shown
from imaas.schemas.jobs import JobEventInfo, JobInfo, describe_event

if TYPE_CHECKING:
    from imaas.client import Client

jobs_app = typer.Typer(
    help="List, follow, read and cancel training jobs on a running server (needs a key with jobs).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
JobIdArgument = Annotated[str, typer.Argument(metavar="ID", help="the job's id (imaas jobs list)")]
PROMOTE = "imaas models promote {model} {version}"  # src/imaas/cli/lifecycle.py: promote NAME VERSION


# -- training --------------------------------------------------------------------------------------
def load_config_file(path: Path) -> dict[str, Any]:
    """A training configuration from a YAML or JSON file (JSON is YAML too); a usage error
    naming ``--config`` when it cannot be read or is not a mapping."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: must be a mapping of TrainConfig fields", param_hint="--config")
    return data


def merge_config(base: dict[str, Any], options: dict[str, Any], patience: int | None) -> dict[str, Any]:
    """``base`` (a config file) with the options given on top; ``--patience`` sets
    ``early_stopping.patience`` and keeps the file's other early-stopping fields."""
    merged = dict(base) | {k: v for k, v in options.items() if v is not None}
    if patience is not None:
        early = merged.get("early_stopping")
        merged["early_stopping"] = (dict(early) if isinstance(early, dict) else {}) | {"patience": patience}
    return merged


def train(
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help="dataset name (newest version) or name@version")],
    model: Annotated[str, typer.Option("--model", help="the model the trained version is pushed to (as staging)")],
    arch: Annotated[str | None, typer.Option(help="seed-cnn or mobilenet-v2-transfer")] = None,
    epochs: Annotated[int | None, typer.Option(help="most epochs to train")] = None,
    batch_size: Annotated[int | None, typer.Option(help="images per optimiser step")] = None,
    lr: Annotated[float | None, typer.Option(help="initial learning rate")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam, adamw or sgd")] = None,
    schedule: Annotated[str | None, typer.Option(help="learning-rate schedule: cosine, step or none")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="weight decay")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="cross-entropy label smoothing")] = None,
    class_weights: Annotated[str | None, typer.Option(help="none or balanced (for imbalanced datasets)")] = None,
    patience: Annotated[int | None, typer.Option(help="epochs without improvement before stopping early")] = None,
    target_accuracy: Annotated[float | None, typer.Option(help="stop at this validation accuracy (0..1)")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="wall-clock limit in minutes")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of every random choice")] = None,
    fine_tune_blocks: Annotated[
        int | None, typer.Option(help="mobilenet-v2-transfer: MobileNetV2's last blocks trained with the head")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            exists=True,
            dir_okay=False,
            help="a YAML or JSON file of TrainConfig fields (augment, early_stopping, input_size...); "
            "options override it",
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="what the job is for")] = "",
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="follow the job until it ends")] = True,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train a model on a dataset version: queue the job (a worker runs it: imaas worker), print
    its id and, with --watch, follow it to its end (exit code 0 only when it succeeded).

    Only the options given are sent; the server's defaults apply to the rest.
    """
    options = {
        "arch": arch,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "schedule": schedule,
        "weight_decay": weight_decay,
        "label_smoothing": label_smoothing,
        "class_weights": class_weights,
        "target_accuracy": target_accuracy,
        "max_minutes": max_minutes,
        "seed": seed,
        "fine_tune_blocks": fine_tune_blocks,
    }
    fields = merge_config(load_config_file(config) if config is not None else {}, options, patience)
    job = call(url, api_key, home, lambda c: c.train(dataset, model, fields or None, description))
    if not watch:
        if as_json:
            typer.echo(job.model_dump_json(indent=2))
        else:
            print_plain(f"queued job {job.id}: {job.model} on {job.dataset}")
            print_plain(f"follow it: imaas jobs watch {job.id}")
        return
    if not as_json:
        print_plain(f"queued job {job.id}: {job.model} on {job.dataset}")
    raise typer.Exit(_follow(url, api_key, home, job.id, as_json))


# -- following a job -------------------------------------------------------------------------------
def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds < 0:
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_fields(d: dict[str, Any]) -> dict[str, Any]:
    """The bar's task update for one ``progress`` event: epoch x/y, step, losses and
    accuracies, images/s and the ETA the worker estimated."""
    epoch, epochs = int(d.get("epoch") or 0), int(d.get("epochs") or 0)
    step, steps = int(d.get("step") or 0), int(d.get("steps") or 0)
    metrics = f"loss {number(d.get('train_loss'), '.3f')} acc {number(d.get('train_accuracy'), '.3f')}"
    if d.get("val_loss") is not None:
        metrics += f" | val loss {number(d.get('val_loss'), '.3f')} acc {number(d.get('val_accuracy'), '.3f')}"
    metrics += f" | {number(d.get('images_per_s'), '.0f')} img/s"
    return {
        "description": f"epoch {epoch}/{epochs}",
        "total": max(epochs * steps, 1),
        "completed": max(epoch - 1, 0) * steps + step,
        "step": f"step {step}/{steps}",
        "metrics": metrics,
        "eta": f"ETA {_duration(d.get('eta_s'))}",
    }


def event_line(event: JobEventInfo) -> str | None:
    """The line printed above the bar for an event (None: it only moves the bar)."""
    return describe_event(event.kind, event.data)


def watch_job(c: Client, job_id: str, show: bool) -> tuple[JobInfo, str | None]:
    """Follow the job's events to its end (a progress bar when ``show``); returns the job as
    it ended and the reason its final state event gave (a queued job cancelled has no error)."""
    if not show:
        return c.wait_for_job(job_id), None
    columns = (
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        TextColumn("{task.fields[step]}"),
        TextColumn("{task.fields[metrics]}"),
        TextColumn("{task.fields[eta]}"),
    )
    reason = None
    # a file or pipe gets the lines above the bar and the outcome, not a bar redrawn into it
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task: TaskID = bar.add_task("waiting for a worker", total=None, step="", metrics="", eta="")
        for event in c.job_events(job_id):
            if event.kind in ("progress", "epoch"):  # an epoch's end is progress too (the last one fills the bar)
                bar.update(task, **progress_fields(event.data))
            if event.kind == "progress":
                continue
            line = event_line(event)
            if line:
                bar.console.print(Text(f"{shown(event.at)} {line}"), soft_wrap=True)
            if event.kind == "state":
                reason = event.data.get("reason")
                bar.update(task, description=str(event.data.get("state")))
    return c.get_job(job_id), reason


def outcome_lines(job: JobInfo, reason: str | None = None) -> tuple[int, list[str]]:
    """The exit code and what to print once the job is over: the version and how to promote
    it, the error, or the cancellation (``reason``: the final state's, when the job has no error)."""
    why = job.error or reason
    if job.state == "succeeded":
        r = job.result
        model, version = r.get("model", job.model), r.get("version")
        lines = [
            f"succeeded: {model}@{version} (alias {r.get('alias', 'staging')}), test accuracy "
            f"{number(r.get('accuracy'))}, macro F1 {number(r.get('macro_f1'))}, {r.get('epochs', '-')} epochs "
            f"(stopped: {r.get('stopped', '-')})",
            f"promote it to production: {PROMOTE.format(model=model, version=version)}",
        ]
        return 0, lines
    if job.state == "failed":
        return 1, [f"failed: {why or 'no reason recorded'}"]
    if job.state == "cancelled":
        return 1, [f"cancelled: {why or 'cancelled'}"]
    return 1, [f"job {job.id} is {job.state}"]


def _follow(url: str, api_key: str | None, home: Path | None, job_id: str, as_json: bool) -> int:
    try:
        job, reason = call(url, api_key, home, lambda c: watch_job(c, job_id, show=not as_json))
    except KeyboardInterrupt:
        print_plain(f"stopped watching; the job goes on: imaas jobs watch {job_id} (or imaas jobs cancel {job_id})")
        return 130
    code, lines = outcome_lines(job, reason)
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
    else:
        print_all(*lines)
    return code


# -- jobs ------------------------------------------------------------------------------------------
def _epoch(job: JobInfo) -> str:
    p = job.progress
    if p.get("epoch") is not None:
        return f"{p.get('epoch')}/{p.get('epochs')}"
    return str(job.result["epochs"]) if "epochs" in job.result else "-"


def _accuracy(job: JobInfo) -> str:
    if job.result.get("accuracy") is not None:
        return f"{number(job.result['accuracy'])} test"
    if job.progress.get("val_accuracy") is not None:
        return f"{number(job.progress['val_accuracy'])} val"
    return "-"


@jobs_app.command("list")
def jobs_list(
    state: Annotated[
        list[str] | None,
        typer.Option(help="only jobs in this state: queued, running, succeeded, failed, cancelled (repeat, or commas)"),
    ] = None,
    limit: Annotated[int, typer.Option(help="jobs to show, newest first")] = 100,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List training jobs, newest first."""
    states = [s.strip() for text in state or [] for s in text.split(",") if s.strip()] or None
    jobs = call(url, api_key, home, lambda c: c.list_jobs(states, limit))
    if as_json:
        typer.echo(json.dumps([j.model_dump(mode="json") for j in jobs], indent=2))
        return
    table = Table("id", "state", "model", "dataset", "epoch", "accuracy", "created")
    for j in jobs:
        add_plain_row(table, j.id, j.state, j.model, j.dataset, _epoch(j), _accuracy(j), shown(j.created_at))
    wide_console().print(table)


def job_table(job: JobInfo) -> Table:
    """A job's fields, one per row."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # a long configuration wraps; nothing is cut off
    r = job.result
    rows = [
        ("id", job.id),
        ("state", job.state + (" (cancel asked)" if job.cancel_requested and job.state == "running" else "")),
        ("model", job.model),
        ("dataset", job.dataset),
        ("description", job.description or "-"),
        ("created", f"{shown(job.created_at)} by {job.created_by or '-'}"),
        ("started", shown(job.started_at)),
        ("finished", shown(job.finished_at)),
        ("worker", f"{job.worker or '-'} (attempts {job.attempts})"),
        ("config", json.dumps(job.config, separators=(",", ":"), sort_keys=True)),
    ]
    if job.progress:
        latest = progress_fields(job.progress)
        rows.append(("progress", f"{latest['description']}, {latest['step']}: {latest['metrics']}"))
    if r:
        rows.append(("version", f"{r.get('model', job.model)}@{r.get('version')} (alias {r.get('alias', '-')})"))
        rows.append(("test accuracy", f"{number(r.get('accuracy'))} (macro F1 {number(r.get('macro_f1'))})"))
        rows.append(("epochs", f"{r.get('epochs', '-')} (stopped: {r.get('stopped', '-')})"))
        rows.append(("plots", "confusion, curves (GET /v1/jobs/ID/plots/NAME.png)" if r.get("plots") else "-"))
    if job.error:
        rows.append(("error", job.error))
    for key, value in rows:
        table.add_row(Text(key), Text(value))
    return table


@jobs_app.command("show")
def jobs_show(
    job_id: JobIdArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """A job: its state, configuration, latest progress and, once over, its version or error."""
    job = call(url, api_key, home, lambda c: c.get_job(job_id))
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
        return
    print_all(job_table(job))
    if job.state == "succeeded":
        print_all(outcome_lines(job)[1][-1])


@jobs_app.command("logs")
def jobs_logs(
    job_id: JobIdArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
) -> None:
    """The job's log: state changes, epochs and log lines, oldest first."""
    typer.echo(call(url, api_key, home, lambda c: c.job_log(job_id)), nl=False)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: JobIdArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a queued job now, or ask a running one to stop at its next step."""
    job = call(url, api_key, home, lambda c: c.cancel_job(job_id))
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
    elif job.state == "running":
        print_plain(f"job {job.id}: cancel asked; it stops at its next training step (imaas jobs watch {job.id})")
    else:
        print_plain(f"job {job.id}: {job.state}")


@jobs_app.command("watch")
def jobs_watch(
    job_id: JobIdArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Follow a job to its end: a progress bar (epoch, step, losses, accuracies, images/s, ETA)
    with its log above it, then the outcome. Exit code 0 only when the job succeeded."""
    raise typer.Exit(_follow(url, api_key, home, job_id, as_json))


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``jobs`` to the ``imaas`` command."""
    app.command("train")(train)
    app.add_typer(jobs_app, name="jobs")
