"""What every CLI command shares: the consoles, the ``--url`` option and one-line errors."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from imaas.errors import ImaasError, ServerUnreachable

console = Console()
err_console = Console(stderr=True)

UrlOption = Annotated[str, typer.Option("--url", envvar="IMAAS_URL", help="server base URL")]
DEFAULT_URL = "http://127.0.0.1:8000"


def fail(exc: ImaasError) -> typer.Exit:
    """Print ``exc`` as one line on stderr and return the exit (code 1) for the caller to raise."""
    detail = exc.detail
    if isinstance(exc, ServerUnreachable):
        detail += "; start a server with 'imaas serve' (or 'make run'), or pass --url / set IMAAS_URL"
    err_console.print(f"[red]error[/red] [bold]{exc.code}[/bold]: {escape(detail)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)
