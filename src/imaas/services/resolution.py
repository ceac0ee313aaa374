"""The per-process cache of resolved model references, invalidated without races.

A predict resolves ``name`` / ``name:alias`` / ``name@N`` to a ``Route`` from this cache, so
the hot path does not touch the database. Invalidation comes from this process's writes
(on a worker thread) and from the change feed (``services/changes.py``) for other
processes' writes. A lookup that missed reads the registry on a thread; an invalidation that
runs meanwhile bumps the generation, and the read that started before it is returned to
its caller but not cached, so an old alias never outlives the write that moved it.

Example::

    cache = RouteCache(registry.resolve_route)
    route = await cache.get(ModelRef.parse("mobilenet-v2"))
    cache.invalidate("mobilenet-v2")
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from imaas.domain import ModelRef, Route


class RouteCache:
    """Resolved references by ``ModelRef``; ``invalidate`` may be called from any thread."""

    def __init__(self, resolve: Callable[[ModelRef], Route]) -> None:
        self._resolve = resolve
        self._routes: dict[ModelRef, Route] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def peek(self, ref: ModelRef) -> Route | None:
        """The cached route of ``ref``, without reading the registry."""
        return self._routes.get(ref)

    async def get(self, ref: ModelRef) -> Route:
        """The route ``ref`` designates: cached, else read from the registry on a thread."""
        route = self._routes.get(ref)
        if route is not None:
            return route
        generation = self._generation
        route = await asyncio.to_thread(self._resolve, ref)
        with self._lock:
            if self._generation == generation:  # nothing changed while we read
                self._routes[ref] = route
        return route

    def invalidate(self, name: str | None = None) -> None:
        """Forget the routes of model ``name`` (every model when None)."""
        with self._lock:
            self._generation += 1
            if name is None:
                self._routes.clear()
            else:
                for ref in [r for r in self._routes if r.name == name]:
                    del self._routes[ref]
