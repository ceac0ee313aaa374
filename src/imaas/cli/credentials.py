"""Which API key a CLI command sends, and the SDK client it sends it with.

``--api-key`` (``IMAAS_API_KEY``) wins. Without it, a command talking to a server on this
machine (a loopback ``--url``: ``localhost``, 127.0.0.0/8, ``::1``) uses the admin key that
server wrote on its first start, ``admin.key`` in its ``IMAAS_HOME`` (``--home``; or
``IMAAS_AUTH__KEY_FILE``), when the file is there and readable. A remote server never gets
the local key, nor does a local port that another user's process listens on (Linux: the
owner is read from ``/proc/net/tcp``). The key is never printed: not in output, errors or
``--help``.

Example::

    api_key_for("http://127.0.0.1:8000", None, None)  # the key in ~/.imaas/admin.key, or None
    with connect("http://127.0.0.1:8000", None, None) as c:
        c.list_models()
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import typer

from imaas.cli.terminal import fail
from imaas.errors import ImaasError

if TYPE_CHECKING:
    from imaas.client import Client

T = TypeVar("T")


def admin_key_file(home: Path | None) -> Path | None:
    """Where a server with ``home`` (default: ``IMAAS_HOME``, else ~/.imaas) wrote its admin key;
    None when the environment's settings do not parse (the server would not start on them either)."""
    from pydantic import ValidationError

    from imaas.settings import Settings

    try:
        settings = Settings()
    except ValidationError:
        return None
    if home is not None:
        settings.home = home
    return settings.admin_key_file


def local_admin_key(home: Path | None) -> str | None:
    """The admin key in ``home``'s key file, or None when it is missing, unreadable or empty."""
    path = admin_key_file(home)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeError):
        return None
    return text or None


def api_key_for(url: str, api_key: str | None, home: Path | None, *, check_listener: bool = True) -> str | None:
    """The key to send to ``url``: ``api_key`` if given, else a loopback server's admin key
    (when the process listening there is ours, unless ``check_listener`` is off: ``bench``
    names the peers it starts itself with ``--peer-auth``).

    ``typer.BadParameter`` (naming where the key came from, never the key) for a key that no
    HTTP header can carry.
    """
    from imaas.settings import is_loopback

    if api_key is not None and api_key.strip():
        return _checked(api_key.strip(), "--api-key / IMAAS_API_KEY")
    try:
        host = urlsplit(url).hostname
    except ValueError:  # a malformed URL: the client names it when it is used
        return None
    if host is None or not is_loopback(host):
        return None
    try:
        port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    except ValueError:
        return None
    if check_listener and not listener_is_ours(port):  # another user's process (or a tunnel) on this machine's port
        return None
    key = local_admin_key(home)
    return _checked(key, str(admin_key_file(home))) if key is not None else None


def listener_is_ours(port: int, proc: Path = Path("/proc/net")) -> bool:
    """Whether the process listening on TCP ``port`` runs as this user: the admin key goes only
    to a server of our own, not to whatever another local user (or an ``ssh -L`` tunnel)
    listens with. Read from Linux's ``/proc/net/tcp*``; elsewhere (no such files) True."""
    tables = [proc / "tcp", proc / "tcp6"]
    if not any(t.exists() for t in tables):
        return True
    owners = set()
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                owners.add(int(fields[7]))  # st 0A: LISTEN; the eighth field is the uid
    return os.getuid() in owners


def _checked(key: str, source: str) -> str:
    from imaas.client.common import auth_headers

    try:
        auth_headers(key)
    except ValueError:
        raise typer.BadParameter("not an API key (visible ASCII characters only)", param_hint=source) from None
    return key


def connect(url: str, api_key: str | None, home: Path | None, timeout: float = 60.0) -> Client:
    """An SDK ``Client`` for ``url`` with the key ``api_key_for`` picks."""
    from imaas.client import Client

    return Client(url, api_key=api_key_for(url, api_key, home), timeout=timeout)


def call(url: str, api_key: str | None, home: Path | None, work: Callable[[Client], T]) -> T:
    """``work(client)`` against ``url``; an ``ImaasError`` ends the command with one line on stderr."""
    try:
        with connect(url, api_key, home) as c:
            return work(c)
    except ImaasError as exc:
        raise fail(exc) from None
