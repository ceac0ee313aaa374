"""``imaas models promote/rollback/canary/shadow/compare/status/history/edit/delete``.

Each command is one SDK call against a running server (``--url``, ``IMAAS_URL``; the key from
``--api-key`` or, on this machine, the server's admin.key, see ``credentials.py``) and prints
a short table or, with ``--json``, the server's answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.table import Table

from imaas.cli.credentials import call
from imaas.cli.terminal import DEFAULT_URL, ApiKeyOption, ServerHomeOption, UrlOption, add_plain_row, console

AliasOption = Annotated[str, typer.Option("--alias", "-a", help="the alias to change")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the server's JSON answer")]


def _print_json(answer: BaseModel) -> None:
    console.print_json(answer.model_dump_json())


def _route_line(name: str, r: Any) -> str:
    line = f"{name}:{r.alias} -> {r.version}"
    if r.canary_version is not None:
        line += f", canary {r.canary_version} at {r.canary_weight:g}%"
    if r.shadow_version is not None:
        line += f", shadow {r.shadow_model}@{r.shadow_version} at {r.shadow_weight:g}%"
    return line


def promote(
    name: str,
    version: int,
    alias: AliasOption = "production",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load VERSION of NAME, run one inference on it, then move the alias to it atomically."""
    change = call(url, api_key, home, lambda c: c.promote(name, version, alias))
    if as_json:
        return _print_json(change)
    verb = "now points at" if change.moved else "already pointed at"
    console.print(f"{name}:{change.alias} {verb} {change.to_version} (was {change.from_version})")


def rollback(
    name: str,
    alias: AliasOption = "production",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move the alias back to the version its last change took it from."""
    change = call(url, api_key, home, lambda c: c.rollback(name, alias))
    if as_json:
        return _print_json(change)
    console.print(f"{name}:{change.alias} rolled back from {change.from_version} to {change.to_version}")


def canary(
    name: str,
    version: Annotated[int | None, typer.Argument(help="the candidate version (omit with --off)")] = None,
    weight: Annotated[float, typer.Option(help="percent of requests it answers, 0-100; 100 completes")] = 10.0,
    off: Annotated[bool, typer.Option("--off", help="end the canary")] = False,
    alias: AliasOption = "production",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer WEIGHT percent of the alias's requests with VERSION (warmed first).

    Callers that send X-Imaas-Routing-Key stay on one side for the same key.
    """
    if version is None and not off:
        raise typer.BadParameter("give a VERSION, or --off to end the canary")
    route = call(url, api_key, home, lambda c: c.set_canary(name, None if off else version, weight, alias))
    if as_json:
        return _print_json(route)
    console.print(_route_line(name, route))


def shadow(
    name: str,
    version: Annotated[int | None, typer.Argument(help="the shadow version (omit with --off)")] = None,
    model: Annotated[str | None, typer.Option(help="a model of the same task (default NAME)")] = None,
    weight: Annotated[float, typer.Option(help="percent of requests copied, 0-100")] = 10.0,
    off: Annotated[bool, typer.Option("--off", help="end the shadow")] = False,
    alias: AliasOption = "production",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Copy WEIGHT percent of the alias's requests to VERSION, which never answers callers;
    see how it agrees with `imaas models compare NAME`."""
    if version is None and not off:
        raise typer.BadParameter("give a VERSION, or --off to end the shadow")
    target = None if off or version is None else (model or name, version)
    route = call(url, api_key, home, lambda c: c.set_shadow(name, target, weight, alias))
    if as_json:
        return _print_json(route)
    console.print(_route_line(name, route))


def compare(
    name: str,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """How each shadow agrees with the version that answered, and both latencies."""
    answer = call(url, api_key, home, lambda c: c.comparison(name))
    if as_json:
        return _print_json(answer)
    table = Table("serving", "shadow", "compared", "agreement", "dropped", "failed", "p50 ms", "shadow p50 ms")
    for p in answer.pairs:
        add_plain_row(
            table,
            f"{name}@{p.version}",
            f"{p.shadow_model}@{p.shadow_version}",
            str(p.compared),
            f"{p.agreement:.1%}" if p.agreement is not None else "-",
            str(p.dropped),
            str(p.failed),
            _ms(p.latency.p50_ms),
            _ms(p.shadow_latency.p50_ms),
        )
    console.print(table)


def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def _when(at: datetime | None) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if at is not None else "-"  # local time


def status(
    name: str,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Each version's state (ready, loading, failed, draining, unloaded), memory, load time
    and last use, on the server that answered."""
    answer = call(url, api_key, home, lambda c: c.status(name))
    if as_json:
        return _print_json(answer)
    table = Table("version", "state", "pinned", "memory", "load s", "last used", "reason")
    for v in answer.versions:
        add_plain_row(
            table,
            str(v.version),
            v.state,
            "yes" if v.pinned else "",
            f"{v.memory_bytes / 2**20:.1f} MiB" if v.memory_bytes is not None else "-",
            f"{v.load_seconds:.2f}" if v.load_seconds is not None else "-",
            _when(v.last_used_at),
            v.reason or "",
        )
    console.print(table)
    console.print(f"server resident memory: {answer.resident_bytes / 2**20:.0f} MiB")


def history(
    name: str,
    limit: Annotated[int, typer.Option(help="events to show")] = 50,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every push, promote, rollback, canary, shadow, edit and delete: who, when, from, to."""
    answer = call(url, api_key, home, lambda c: c.history(name, limit))
    if as_json:
        return _print_json(answer)
    table = Table("#", "when", "action", "alias", "from", "to", "who")
    for e in answer.events:
        add_plain_row(
            table,
            str(e.seq),
            _when(e.at),
            e.action,
            e.alias or "",
            "" if e.from_version is None else str(e.from_version),
            "" if e.to_version is None else str(e.to_version),
            e.actor or "",
        )
    console.print(table)


def edit(
    name: str,
    version: Annotated[int | None, typer.Option(help="edit this version's card instead of the model's")] = None,
    description: Annotated[str | None, typer.Option(help="new description")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeat); replaces the tags")] = None,
    keep_latest: Annotated[int | None, typer.Option(help="newest versions kept loaded")] = None,
    price: Annotated[str | None, typer.Option(help="price per 1,000 predicted images, e.g. 1.50")] = None,
    clear_price: Annotated[bool, typer.Option("--clear-price", help="drop the price (the task price applies)")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    home: ServerHomeOption = None,
) -> None:
    """Edit the description and tags of a model (and its keep_latest and price) or of one version."""
    if price is not None and clear_price:
        raise typer.BadParameter("give --price or --clear-price, not both")
    tags = None
    if tag is not None:
        pairs = [t.partition("=") for t in tag]
        if any(not sep or not k for k, sep, _ in pairs):
            raise typer.BadParameter("tags are KEY=VALUE")
        tags = {k: v for k, _, v in pairs}
    if version is None:
        call(
            url,
            api_key,
            home,
            lambda c: c.update_model(
                name,
                description=description,
                tags=tags,
                keep_latest=keep_latest,
                price_per_1000=price,
                clear_price=clear_price,
            ),
        )
        console.print(f"{name}: card updated")
    else:
        if keep_latest is not None or price is not None or clear_price:
            raise typer.BadParameter("--keep-latest and prices are model settings; drop --version")
        call(url, api_key, home, lambda c: c.update_version(name, version, description=description, tags=tags))
        console.print(f"{name}@{version}: card updated")


def delete(
    name: str, version: int, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, home: ServerHomeOption = None
) -> None:
    """Delete VERSION of NAME (refused while an alias, canary or shadow points at it)."""
    call(url, api_key, home, lambda c: c.delete_version(name, version))
    console.print(f"{name}@{version} deleted")


def register(models: typer.Typer) -> None:
    """Add the lifecycle commands to ``imaas models``."""
    for command in (promote, rollback, canary, shadow, compare, status, history, edit, delete):
        models.command(command.__name__)(command)
