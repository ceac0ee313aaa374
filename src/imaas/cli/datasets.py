"""``imaas datasets push/list/show/report``: dataset versions and their cleaning reports.

Each command parses its options, makes SDK calls against a running server (``--url``, with
``--api-key`` or a local server's admin key, see ``credentials.py``) and renders the answer;
``--json`` prints the server's JSON instead. Nothing is validated here that the server
validates: a bad split comes back as the server's error naming the field.

Example::

    imaas datasets push digits digits.zip --split 0.8,0.1,0.1
    imaas datasets report digits@1
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from imaas.cli.credentials import call
from imaas.cli.terminal import (
    DEFAULT_URL,
    ApiKeyOption,
    JsonOption,
    ServerHomeOption,
    UrlOption,
    add_plain_row,
    number,
    print_all,
    wide_console,
)
from imaas.cli.times import shown
from imaas.errors import DatasetNotFound
from imaas.schemas.datasets import DatasetVersionInfo, split_fractions, split_ref

if TYPE_CHECKING:
    from imaas.client import Client

datasets_app = typer.Typer(
    help="Upload archives of labelled images as dataset versions and read their cleaning reports "
    "(datasets:write to push, datasets:read to read).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
DatasetRefArgument = Annotated[str, typer.Argument(metavar="NAME[@VERSION]", help="a dataset (default: its newest)")]
SPLITS = ("train", "validation", "test")
NAMES_PER_REASON = 3  # dropped files named per reason after a push (`datasets report` names them all)


def _dataset_ref(text: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@VERSION``; a VERSION that is not a number is a usage error."""
    name, version = split_ref(text)
    if version is None:
        return name, None
    if not version.isascii() or not version.isdigit():
        raise typer.BadParameter(f"{text!r}: the version after @ is a number (digits@2)", param_hint="NAME[@VERSION]")
    return name, int(version)


def _split(text: str) -> tuple[float, float, float]:
    """``0.8,0.1,0.1`` as three numbers (whether they make a split is the server's to say)."""
    try:
        return split_fractions(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not three fractions such as 0.8,0.1,0.1", param_hint="--split") from None


# -- rendering datasets ----------------------------------------------------------------------------
def class_table(report: dict[str, Any], summary: dict[str, Any] | None) -> Table:
    """Images per class (and per split, when the summary is known), with the empty classes."""
    counts: dict[str, int] = dict(report.get("class_counts") or {})
    splits: dict[str, dict[str, int]] = (summary or {}).get("counts") or {}
    table = Table("class", "images", *(s for s in SPLITS if splits), title="classes")
    for column in table.columns[1:]:
        column.justify = "right"
    for label, n in counts.items():
        add_plain_row(table, label, f"{n:,}", *(f"{splits.get(s, {}).get(label, 0):,}" for s in SPLITS if splits))
    for label in report.get("empty_classes") or []:
        add_plain_row(table, label, "0", *("0" for s in SPLITS if splits))
    return table


def report_lines(report: dict[str, Any], names_per_reason: int | None) -> list[str]:
    """The cleaning report in a few lines: kept/files, dropped by reason with some names
    (``None``: no names; the full list is ``dropped_table``), balance, empty classes, missing files."""
    dropped = report.get("dropped") or {}
    by_reason: dict[str, int] = dropped.get("by_reason") or {}
    lines = [f"kept {report.get('kept', 0):,} of {report.get('files', 0):,} files; dropped {dropped.get('count', 0):,}"]
    items = dropped.get("items") or []
    for reason, n in by_reason.items():
        lines.append(f"  {reason}: {n:,}")
        if names_per_reason:
            named = [i for i in items if i.get("reason") == reason]
            for item in named[:names_per_reason]:
                lines.append(f"    {item.get('name')}: {item.get('detail', '')}")
            if len(named) > names_per_reason:
                lines.append(f"    ... and {len(named) - names_per_reason:,} more (imaas datasets report)")
    if isinstance(report.get("imbalance"), int | float):
        lines.append(f"imbalance {report['imbalance']:.2f} (largest class / smallest class)")
    if report.get("empty_classes"):
        lines.append(f"empty classes (no image kept): {', '.join(report['empty_classes'])}")
    missing = report.get("missing_files") or []
    if missing:
        shown_missing = missing if names_per_reason is None else missing[: names_per_reason or len(missing)]
        more = f" ... and {len(missing) - len(shown_missing):,} more" if len(missing) > len(shown_missing) else ""
        lines.append(f"missing files named by {report.get('labels_file')}: {', '.join(shown_missing)}{more}")
    return lines


def dropped_table(report: dict[str, Any]) -> Table:
    """Every dropped file with its reason and detail."""
    table = Table("file", "reason", "detail", title="dropped")
    for item in (report.get("dropped") or {}).get("items") or []:
        add_plain_row(table, str(item.get("name", "")), str(item.get("reason", "")), str(item.get("detail", "")))
    return table


def summary_lines(v: DatasetVersionInfo) -> list[str]:
    """A version's summary: classes, images, input, statistics, split."""
    s = v.summary
    inp = s.get("input") or {}
    size = inp.get("size") or []
    channels = inp.get("channels")
    split = s.get("split") or {}
    fractions = "/".join(number(x, "g") for x in split.get("fractions") or [])
    return [
        f"{v.ref}: {s.get('images', 0):,} images in {len(s.get('classes') or [])} classes "
        f"({', '.join(s.get('classes') or [])})",
        f"created {shown(v.created_at)} by {v.created_by or '-'}; sha256 {v.sha256[:16]}, {v.size_bytes:,} bytes",
        f"input {'x'.join(str(n) for n in size)} (height x width), {channels} channel{'s' if channels != 1 else ''}"
        f" ({inp.get('color', '-')})",
        f"mean {', '.join(number(m) for m in s.get('mean') or [])}; "
        f"std {', '.join(number(x) for x in s.get('std') or [])} (train split, 0..1 scale)",
        f"split {fractions} (train/validation/test), seed {split.get('seed', '-')}; layout {s.get('layout', '-')}",
    ] + ([f"description: {v.description}"] if v.description else [])


# -- datasets --------------------------------------------------------------------------------------
@datasets_app.command("push")
def datasets_push(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the dataset's name")],
    archive: Annotated[
        Path,
        typer.Argument(
            metavar="ARCHIVE",
            exists=True,
            dir_okay=False,
            readable=True,
            help="zip or tar (.tar.gz, .tar.bz2, .tar.xz): one folder per class, or images with a labels.csv "
            "or labels.json",
        ),
    ],
    split: Annotated[str, typer.Option(help="train,validation,test fractions")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="seed of the stratified split")] = 0,
    description: Annotated[str, typer.Option(help="what the version holds")] = "",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload ARCHIVE as a new version of dataset NAME: the server drops what cannot be trained
    on (the report says what and why), splits it by class and stores it."""
    fractions = _split(split)
    pushed = call(
        url, api_key, home, lambda c: c.push_dataset(name, archive, split=fractions, seed=seed, description=description)
    )
    if as_json:
        typer.echo(pushed.model_dump_json(indent=2))
        return
    state = "new version" if pushed.created else "already stored: the same images, labels and split"
    print_all(f"{pushed.ref}: {state}", *report_lines(pushed.report, NAMES_PER_REASON))
    print_all(class_table(pushed.report, pushed.summary))


@datasets_app.command("list")
def datasets_list(
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the datasets with their newest version."""
    found = call(url, api_key, home, lambda c: c.list_datasets())
    if as_json:
        typer.echo(json.dumps([d.model_dump(mode="json") for d in found], indent=2))
        return
    table = Table("name", "versions", "latest", "images", "classes", "input", "created")
    for d in found:
        s = d.latest.summary if d.latest is not None else {}
        size = (s.get("input") or {}).get("size") or []
        add_plain_row(
            table,
            d.name,
            str(d.versions),
            d.latest.ref if d.latest is not None else "-",
            f"{s.get('images', 0):,}",
            str(len(s.get("classes") or [])),
            "x".join(str(n) for n in size) or "-",
            shown(d.latest.created_at if d.latest is not None else d.created_at),
        )
    wide_console().print(table)


def _version(c: Client, name: str, version: int | None) -> tuple[DatasetVersionInfo, list[DatasetVersionInfo]]:
    versions = c.get_dataset(name).versions
    if version is not None:
        return c.get_dataset_version(name, version), versions
    if not versions:
        raise DatasetNotFound(f"dataset {name!r} has no version")
    return versions[0], versions


@datasets_app.command("show")
def datasets_show(
    ref: DatasetRefArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """A dataset version's summary: classes, counts per split, input size and channels,
    mean and std, and the dataset's versions."""
    name, number = _dataset_ref(ref)
    v, versions = call(url, api_key, home, lambda c: _version(c, name, number))
    if as_json:
        typer.echo(v.model_dump_json(indent=2))
        return
    print_all(*summary_lines(v), class_table(v.report, v.summary))
    table = Table("version", "created", "by", "images", "sha256", "description", title="versions")
    for other in versions:
        add_plain_row(
            table,
            str(other.version),
            shown(other.created_at),
            other.created_by or "-",
            f"{other.summary.get('images', 0):,}",
            other.sha256[:12],
            other.description,
        )
    print_all(table)


@datasets_app.command("report")
def datasets_report(
    ref: DatasetRefArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """A dataset version's cleaning report in full: every dropped file with its reason,
    class counts, empty classes, missing files and image sizes."""
    name, number = _dataset_ref(ref)
    v, _ = call(url, api_key, home, lambda c: _version(c, name, number))
    r = v.report
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    sizes = r.get("sizes") or {}
    common = sizes.get("most_common") or []
    print_all(
        f"{v.ref}: cleaning report of its upload (layout {r.get('layout', '-')}"
        + (f", labels file {r['labels_file']}" if r.get("labels_file") else "")
        + ")",
        *report_lines(r, None),
        f"sizes: most common {'x'.join(str(n) for n in common) or '-'} (width x height, "
        f"{sizes.get('most_common_count', 0):,} images); sides {sizes.get('min_side', '-')} to "
        f"{sizes.get('max_side', '-')} pixels; {r.get('channels', '-')} channel(s)",
        class_table(r, v.summary),
        dropped_table(r),
    )


def register(app: typer.Typer) -> None:
    """Add ``datasets`` to the ``imaas`` command."""
    app.add_typer(datasets_app, name="datasets")
