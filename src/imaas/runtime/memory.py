"""Resident memory of this process, and handing freed memory back to the system.

An unloaded ONNX Runtime session frees its weights and arenas, but glibc keeps freed
blocks in its heaps for reuse, so the process's resident size does not drop by itself:
``release_freed_memory`` collects garbage and asks glibc to return free pages
(``malloc_trim``), so an operator who unloads a version sees the memory come back.

Example::

    before = resident_bytes()
    release_freed_memory()
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from functools import cache

import psutil

log = logging.getLogger(__name__)


def resident_bytes() -> int:
    """This process's resident set size (RSS) in bytes."""
    return int(psutil.Process().memory_info().rss)


@cache
def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    """glibc's ``malloc_trim``, or None on a C library without it (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Collect unreachable objects, then return the C heap's free pages to the system."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
