"""What every CLI command shares: the consoles, the ``--url``, ``--api-key`` and ``--home``
options and one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from imaas.errors import ImaasError, MissingCredentials, ServerUnreachable

console = Console()
err_console = Console(stderr=True)


def add_plain_row(table: Table, *cells: str, end_section: bool = False) -> None:
    """A table row shown exactly as given: names, tags and audit details come from callers,
    and Rich would read ``[...]`` in them as markup (or fail on it)."""
    table.add_row(*(Text(c) for c in cells), end_section=end_section)


UrlOption = Annotated[str, typer.Option("--url", envvar="IMAAS_URL", help="server base URL")]
DEFAULT_URL = "http://127.0.0.1:8000"
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="IMAAS_API_KEY",
        show_default=False,
        help="API key, sent as Authorization: Bearer (default for a server on this machine: the admin key "
        "it wrote to admin.key in its IMAAS_HOME)",
    ),
]
ServerHomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="IMAAS_HOME",
        help="IMAAS_HOME of the server on this machine whose admin.key to use without --api-key (default ~/.imaas)",
    ),
]


def fail(exc: ImaasError) -> typer.Exit:
    """Print ``exc`` as one line on stderr and return the exit (code 1) for the caller to raise."""
    detail = exc.detail
    if isinstance(exc, ServerUnreachable):
        detail += "; start a server with 'imaas serve' (or 'make run'), or pass --url / set IMAAS_URL"
    elif isinstance(exc, MissingCredentials):
        detail += (
            "; pass --api-key or set IMAAS_API_KEY (a server on this machine: --home or IMAAS_HOME naming "
            "its home, where it wrote admin.key)"
        )
    err_console.print(f"[red]error[/red] [bold]{exc.code}[/bold]: {escape(detail)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


JsonOption = Annotated[bool, typer.Option("--json", help="print the server's JSON answer")]


def print_plain(text: str) -> None:
    """Print ``text`` as it is (no Rich markup or highlighting: it holds callers' names)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def wide_console() -> Console:
    """The console for tables: Rich never prints wider than its console, 80 columns when
    stdout is a file or pipe, so a pipe gets a 160-column one."""
    return console if console.is_terminal else Console(width=160)


def print_all(*renderables: RenderableType | str) -> None:
    """Print lines as plain text and tables on the wide console, in order."""
    for r in renderables:
        if isinstance(r, str):
            print_plain(r)
        else:
            wide_console().print(r)


def number(value: Any, spec: str = ".4f") -> str:
    """``value`` formatted with ``spec``, or ``-`` when it is not a number."""
    return format(value, spec) if isinstance(value, int | float) else "-"
