"""The CLI hands the local admin key only to a loopback server run by this same user."""

from __future__ import annotations

import os
from pathlib import Path

from imaas.cli.credentials import listener_is_ours

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def _table(tmp_path: Path, rows: list[tuple[str, int, str, int]]) -> Path:
    proc = tmp_path / "net"
    proc.mkdir()
    lines = [
        f"   {i}: {addr}:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000  {uid}        0 1 1"
        for i, (addr, port, state, uid) in enumerate(rows)
    ]
    (proc / "tcp").write_text(HEADER + "\n".join(lines) + "\n")
    return proc


def test_a_listener_of_ours_gets_the_key_and_another_users_does_not(tmp_path: Path) -> None:
    me, other = os.getuid(), os.getuid() + 1000
    proc = _table(
        tmp_path,
        [
            ("0100007F", 8000, "0A", me),  # 127.0.0.1:8000, LISTEN, ours
            ("0100007F", 9000, "0A", other),  # 127.0.0.1:9000, LISTEN, another user's
            ("0100007F", 9100, "01", me),  # an established connection of ours is no listener
        ],
    )
    assert listener_is_ours(8000, proc)
    assert not listener_is_ours(9000, proc)
    assert not listener_is_ours(9100, proc)
    assert not listener_is_ours(9200, proc)  # nothing listens: nothing to send a key to


def test_without_proc_tables_the_check_cannot_refuse(tmp_path: Path) -> None:
    assert listener_is_ours(8000, tmp_path / "absent")
