"""A worker thread at a lower CPU priority, for work that must never slow the serving path.

Shadow copies run here: on Linux each thread has its own nice value, so a thread at nice 10
gets about a tenth of a core's share when the serving threads (nice 0) want every core,
and all the idle CPU otherwise. ONNX Runtime with one intra-op thread (the default) runs a
session in the calling thread, so the model runs at that priority too.

Example::

    executor = background_executor(nice=10)
    outputs = await loop.run_in_executor(executor, run, batch)
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


def _lower_priority(nice: int) -> None:
    try:  # Linux: PRIO_PROCESS with a thread id sets that thread's nice value
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as exc:  # other systems: it runs at normal priority
        log.info("background work runs at normal priority: %s", exc)


def background_executor(nice: int = 10, name: str = "background") -> ThreadPoolExecutor:
    """One worker thread whose nice value is ``nice`` (0-19; higher yields more)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=_lower_priority, initargs=(nice,))
