"""Parse large request bodies off the event loop, small ones inline.

Decoding a 20 MB JSON body, inflating gzip or flattening a tensor's JSON data takes tens of
milliseconds of CPU; on the event loop every other request would wait for it. A thread hop
costs about 50 microseconds, more than parsing a typical small body, so only bodies past
``OFFLOAD_BYTES`` go to a thread.

Example::

    doc = await parse_sized(len(body), orjson.loads, body)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

OFFLOAD_BYTES = 256 * 1024


async def parse_sized(size: int, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``, on a worker thread when ``size`` (the input's bytes) is large."""
    if size > OFFLOAD_BYTES:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)
