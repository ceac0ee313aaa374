"""Which version answers a request to an alias with a canary, and whether a shadow gets a copy.

A canary takes ``canary_weight`` percent of the alias's requests. A request that carries a
routing key (the ``X-Imaas-Routing-Key`` header; gRPC metadata ``x-imaas-routing-key``) is
placed by a hash of the key, the model and the alias, so one caller keeps seeing one
version, and raising the weight only moves callers towards the canary (a key below 10 is
below 20 too). Requests without a key are placed at random. Shadow copies are always
drawn at random: they never change what a caller sees.

Example::

    choice = choose(route, request.headers.get(ROUTING_KEY_HEADER))
    choice.version  # the ModelVersion that answers
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from imaas.domain import ModelVersion, Route

ROUTING_KEY_HEADER = "x-imaas-routing-key"
VERSION_HEADER = "x-imaas-version"
"""Response header naming the version that answered (``name@N``)."""


def header_key(value: str | None) -> str | None:
    """The routing key an HTTP header carried, as the text the caller sent.

    HTTP servers hand header bytes over as latin-1; a UTF-8 key is decoded back, so a key
    sent over REST and the same key in gRPC metadata (UTF-8) land on the same side.
    """
    if not value:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


@dataclass(frozen=True)
class Choice:
    """The version that answers one request, and the shadow that gets a copy of it (if any)."""

    version: ModelVersion
    shadow: ModelVersion | None = None


def position(routing_key: str, model: str, alias: str) -> float:
    """Where ``routing_key`` falls in [0, 100) for ``model``'s ``alias``: stable across
    processes and restarts (a keyed hash, not Python's randomised ``hash``)."""
    digest = hashlib.blake2b(f"{model}\0{alias}\0{routing_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * 100.0 / 2**64


def choose(route: Route, routing_key: str | None = None, draw: Callable[[], float] = random.random) -> Choice:
    """The version of ``route`` that answers this request, and its shadow copy (if drawn).

    ``draw`` returns a uniform number in [0, 1) (injected so tests can count exactly).
    """
    version = route.primary
    if route.canary is not None and route.canary_weight > 0:
        point = position(routing_key, route.primary.model, route.alias or "") if routing_key else draw() * 100.0
        if point < route.canary_weight:
            version = route.canary
    shadow = None
    shadowed = route.shadow is not None and route.shadow_weight > 0 and route.shadow.key != version.key
    if shadowed and draw() * 100.0 < route.shadow_weight:
        shadow = route.shadow
    return Choice(version, shadow)
