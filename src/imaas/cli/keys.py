"""``imaas keys create/list/revoke/rotate``, ``imaas usage`` and ``imaas audit``.

Each command parses its options, makes one SDK call against a running server (``--url``,
with ``--api-key`` or a local server's admin key, see ``credentials.py``) and renders the
answer. Key management and the audit log need a key with ``keys:admin``; ``usage`` answers
any key with its own usage, and everyone's with ``usage:read``.

A new key's secret is printed once, by the command that made it (``create``, ``rotate``);
the server keeps only its hash.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from imaas.cli.credentials import call
from imaas.cli.terminal import (
    DEFAULT_URL,
    ApiKeyOption,
    ServerHomeOption,
    UrlOption,
    add_plain_row,
    console,
    wide_console,
)
from imaas.cli.times import DURATION_FORMS, parse_day, parse_duration, parse_instant, shown
from imaas.schemas.keys import SCOPES_DOC, CreatedKeyInfo, KeyInfo, KeyLimitsInfo, UsageReport, UsageRow

keys_app = typer.Typer(
    help="Create, list, revoke and rotate API keys on a running server (needs a key with keys:admin).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
JsonOption = Annotated[bool, typer.Option("--json", help="print the server's JSON answer")]


class UsageFormat(StrEnum):
    """How ``imaas usage`` prints its report."""

    table = "table"
    csv = "csv"
    json = "json"


class AuditFormat(StrEnum):
    """How ``imaas audit`` prints its page."""

    table = "table"
    json = "json"


def _parsed(option: str, parse: Any, text: str, *args: Any, **kwargs: Any) -> Any:
    """``parse(text, ...)``; its ValueError becomes a usage error naming ``option``."""
    try:
        return parse(text, *args, **kwargs)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _items(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    if text is None:
        return None
    return [item.strip() for item in text.split(",") if item.strip()]


# -- rendering -------------------------------------------------------------------------------------
def state(key: KeyInfo, now: datetime) -> str:
    """``active``, ``revoked``, ``expired`` or, during a rotation's grace, ``until <time>``."""
    if key.revoked_at is not None:
        return "revoked" if key.revoked_at <= now else f"until {shown(key.revoked_at)}"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def limits_text(limits: KeyLimitsInfo) -> str:
    """A key's limits in a few words, ``-`` when it has none."""
    parts = []
    if limits.rps is not None:
        parts.append(f"{limits.rps:g} rps" + (f" (burst {limits.burst})" if limits.burst is not None else ""))
    if limits.images_per_day is not None:
        parts.append(f"{limits.images_per_day:,} images/day")
    if limits.images_per_month is not None:
        parts.append(f"{limits.images_per_month:,} images/month")
    if limits.free_images_per_month:
        parts.append(f"{limits.free_images_per_month:,} free/month")
    return ", ".join(parts) or "-"


def _print_secret(made: CreatedKeyInfo, verb: str) -> None:
    key = made.key
    console.print(f"{verb} API key {key.id} ({key.name}): {', '.join(key.scopes)}", markup=False, highlight=False)
    # one unbroken line (soft_wrap), so the whole key is copied even in a narrow terminal
    console.print(f"API key (shown once): {made.secret}", markup=False, highlight=False, soft_wrap=True)
    console.print("Store it now: the server keeps only its hash.", markup=False, highlight=False)


# -- keys ------------------------------------------------------------------------------------------
@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="who or what the key is for")],
    scopes: Annotated[str, typer.Option("--scopes", help=f"comma-separated, some of: {SCOPES_DOC}")],
    models: Annotated[
        str | None,
        typer.Option(help="comma-separated model names or shell patterns (team-a-*) the key may use; default all"),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            help=f"when it stops working: ISO-8601 (2027-01-31, 2027-01-31T12:00Z) or from now ({DURATION_FORMS})"
        ),
    ] = None,
    rps: Annotated[float | None, typer.Option(help="rate limit, requests per second")] = None,
    burst: Annotated[int | None, typer.Option(help="requests allowed at once above the rate (default: rps)")] = None,
    images_per_day: Annotated[int | None, typer.Option(help="images predicted per UTC day")] = None,
    images_per_month: Annotated[int | None, typer.Option(help="images predicted per calendar month")] = None,
    free_images_per_month: Annotated[int | None, typer.Option(help="images each month that cost nothing")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key and print its secret, once: the server stores only a hash of it.

    A key can be given no scope or model that the key creating it lacks.
    """
    expires_at = _parsed("--expires", parse_instant, expires, datetime.now(UTC), ahead=True) if expires else None
    given = (rps, burst, images_per_day, images_per_month, free_images_per_month)
    # not validated here: the server names a bad field in its answer
    limits = KeyLimitsInfo.model_construct(
        rps=rps,
        burst=burst,
        images_per_day=images_per_day,
        images_per_month=images_per_month,
        free_images_per_month=free_images_per_month or 0,
    )
    scope_list = _items(scopes) or []
    made = call(
        url,
        api_key,
        home,
        lambda c: c.create_key(
            name,
            scope_list,
            models=_items(models),
            expires_at=expires_at,
            limits=limits if any(v is not None for v in given) else None,
        ),
    )
    if as_json:
        typer.echo(made.model_dump_json(indent=2))
        return
    _print_secret(made, "Created")


@keys_app.command("list")
def list_keys(
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List every API key (never a secret): scopes, models, limits, state and last use."""
    keys = call(url, api_key, home, lambda c: c.list_keys())
    if as_json:
        typer.echo(json.dumps([k.model_dump(mode="json") for k in keys], indent=2))
        return
    now = datetime.now(UTC)
    table = Table("id", "name", "scopes", "models", "limits", "state", "created", "expires", "last used")
    for k in keys:
        add_plain_row(
            table,
            k.id,
            k.name,
            ", ".join(k.scopes),
            ", ".join(k.models) if k.models is not None else "all",
            limits_text(k.limits),
            state(k, now),
            shown(k.created_at),
            shown(k.expires_at),
            shown(k.last_used_at),
        )
    wide_console().print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="the key's id (imaas keys list)")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke an API key now; every server refuses it within seconds (the last admin key cannot go)."""
    key = call(url, api_key, home, lambda c: c.revoke_key(key_id))
    if as_json:
        typer.echo(key.model_dump_json(indent=2))
        return
    console.print(f"API key {key.id} ({key.name}) revoked at {shown(key.revoked_at)}", markup=False, highlight=False)


@keys_app.command("rotate")
def rotate(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="the key to replace")],
    grace: Annotated[
        str,
        typer.Option(help=f"how long the old key keeps working, so callers can switch ({DURATION_FORMS} or seconds)"),
    ] = "0",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replace an API key with a new secret of the same name, scopes, models, limits and expiry;
    the old one works for --grace more and then stops."""
    grace_s = _parsed("--grace", parse_duration, grace).total_seconds()
    made = call(url, api_key, home, lambda c: c.rotate_key(key_id, grace_s))
    if as_json:
        typer.echo(made.model_dump_json(indent=2))
        return
    _print_secret(made, "Rotated: new")
    old = f"keeps working for {grace.strip()}" if grace_s else "no longer works"
    console.print(f"The old key {key_id} {old}.", markup=False, highlight=False)


# -- usage and audit -------------------------------------------------------------------------------
USAGE_COLUMNS = [
    *("day", "key", "model", "task"),
    *("requests", "images", "compute ms", "free", "billable", "per 1k", "cost"),  # right-aligned numbers
]


def usage(
    key: Annotated[str | None, typer.Option("--key", help="one key's id (another key's needs usage:read)")] = None,
    model: Annotated[str | None, typer.Option(help="one model")] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="first UTC day: YYYY-MM-DD, today, or days back (7d)")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="last UTC day, inclusive (same forms)")] = None,
    output: Annotated[UsageFormat, typer.Option("--format", help="table, csv or json")] = UsageFormat.table,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
) -> None:
    """Usage and cost per key, model version, task and UTC day, with a total line.

    Units: requests, images, compute milliseconds; cost = billable images x price per 1,000
    (images within a key's monthly free tier are free). Without usage:read a key sees its own.
    """
    first = _parsed("--from", parse_day, start) if start else None
    last = _parsed("--to", parse_day, end) if end else None
    report = call(url, api_key, home, lambda c: c.usage(key_id=key, model=model, start=first, end=last))
    if output is UsageFormat.json:
        typer.echo(report.model_dump_json(indent=2))
    elif output is UsageFormat.csv:
        _usage_csv(report)
    else:
        wide_console().print(usage_table(report))


def _usage_csv(report: UsageReport) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=list(UsageRow.model_fields), lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow(row.model_dump(mode="json"))


def usage_table(report: UsageReport) -> Table:
    """The report as a table: one row per key x version x task x day, then the totals."""
    table = Table(*USAGE_COLUMNS, title="usage")
    for column in table.columns[4:]:  # the numbers
        column.justify = "right"
    for i, r in enumerate(report.rows):
        add_plain_row(
            table,
            r.day.isoformat(),
            r.key_id,
            f"{r.model}@{r.version}",
            r.task,
            f"{r.requests:,}",
            f"{r.images:,}",
            f"{r.compute_ms:,.1f}",
            f"{r.free_images:,}",
            f"{r.billable_images:,}",
            r.price_per_1000 if r.price_per_1000 is not None else "free",
            r.cost,
            end_section=i == len(report.rows) - 1,
        )
    t = report.total
    compute_ms = sum(r.compute_ms for r in report.rows)
    free = sum(r.free_images for r in report.rows)
    add_plain_row(table,
        "total", "", "", "", f"{t.requests:,}", f"{t.images:,}", f"{compute_ms:,.1f}", f"{free:,}",
        f"{t.billable_images:,}", "", t.cost,
    )  # fmt: skip
    return table


def audit(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="entries to show, newest first")] = 50,
    before: Annotated[int | None, typer.Option(help="entries older than this id (the next page)")] = None,
    key: Annotated[str | None, typer.Option("--key", help="actions of one key (its id)")] = None,
    action: Annotated[str | None, typer.Option(help="one action, e.g. key.create, version.push, alias.set")] = None,
    since: Annotated[
        str | None, typer.Option(help=f"at or after: ISO-8601, or back from now ({DURATION_FORMS})")
    ] = None,
    output: Annotated[AuditFormat, typer.Option("--format", help="table or json")] = AuditFormat.table,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
) -> None:
    """The audit log: who created, revoked or rotated keys, pushed, promoted, deleted, loaded
    or unloaded what, and when (needs keys:admin)."""
    at = _parsed("--since", parse_instant, since, datetime.now(UTC), ahead=False) if since else None
    page = call(url, api_key, home, lambda c: c.audit(limit=limit, before=before, key_id=key, action=action, since=at))
    if output is AuditFormat.json:
        typer.echo(page.model_dump_json(indent=2))
        return
    table = Table("id", "when", "actor", "action", "target", "detail")
    for e in page.entries:
        detail = json.dumps(e.detail, separators=(",", ":"), sort_keys=True) if e.detail else ""
        add_plain_row(table, str(e.id), shown(e.at), e.actor, e.action, e.target, detail)
    wide_console().print(table)
    if page.next is not None:
        console.print(f"older entries: --before {page.next}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``keys``, ``usage`` and ``audit`` to the ``imaas`` command."""
    app.add_typer(keys_app, name="keys")
    app.command("usage")(usage)
    app.command("audit")(audit)
