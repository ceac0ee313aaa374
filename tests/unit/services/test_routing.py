"""Canary and shadow placement: the split follows the weight, a routing key is sticky."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime

from imaas.domain import ModelVersion, Route
from imaas.schemas.manifest import Manifest
from imaas.services.routing import choose, position


def version(n: int, model: str = "cnn") -> ModelVersion:
    manifest = Manifest.model_validate({"task": "classification", "input": {"size": [8, 8]}})
    return ModelVersion(model, n, "0" * 64, 1, manifest, datetime.now(UTC))


def route(canary_weight: float = 0.0, shadow_weight: float = 0.0) -> Route:
    return Route(
        primary=version(1),
        alias="production",
        canary=version(2) if canary_weight else None,
        canary_weight=canary_weight,
        shadow=version(3) if shadow_weight else None,
        shadow_weight=shadow_weight,
    )


def test_position_is_the_documented_keyed_hash() -> None:
    digest = hashlib.blake2b(b"cnn\0production\0alice", digest_size=8).digest()
    assert position("alice", "cnn", "production") == int.from_bytes(digest, "big") * 100.0 / 2**64


def test_without_a_canary_the_primary_answers_and_nothing_is_drawn() -> None:
    def draw() -> float:
        raise AssertionError("no draw without a canary or shadow")

    assert choose(route(), "key", draw).version.version == 1


def test_the_split_follows_the_weight_exactly_for_a_uniform_draw() -> None:
    points = iter([i / 1000 for i in range(1000)])  # 0.000 ... 0.999: exactly 10% below 0.1
    answers = [choose(route(canary_weight=10), None, lambda: next(points)).version.version for _ in range(1000)]
    assert answers.count(2) == 100


def test_a_routing_key_is_sticky_and_moves_only_towards_the_canary_as_the_weight_grows() -> None:
    keys = [f"user-{i}" for i in range(500)]
    at10 = {k: choose(route(canary_weight=10), k).version.version for k in keys}
    again = {k: choose(route(canary_weight=10), k).version.version for k in keys}
    at30 = {k: choose(route(canary_weight=30), k).version.version for k in keys}
    assert at10 == again
    assert all(at30[k] == 2 for k in keys if at10[k] == 2)  # nobody goes back to the old version
    expected = {k: 2 if position(k, "cnn", "production") < 10 else 1 for k in keys}
    assert at10 == expected
    assert 20 <= sum(v == 2 for v in at10.values()) <= 85  # 500 keys at 10%: 50 +- 4.5 sigma


def test_a_shadow_is_drawn_at_its_weight_and_never_answers() -> None:
    rng = random.Random(7)
    choices = [choose(route(shadow_weight=25), "k", rng.random) for _ in range(4000)]
    assert {c.version.version for c in choices} == {1}
    shadowed = sum(c.shadow is not None for c in choices)
    assert 880 <= shadowed <= 1120  # 1000 +- 4.5 sigma


def test_a_utf8_key_from_an_http_header_is_the_key_grpc_would_carry() -> None:
    from imaas.services.routing import header_key

    sent = "utilisateur-é-42"
    as_http_server_decodes_it = sent.encode("utf-8").decode("latin-1")
    assert header_key(as_http_server_decodes_it) == sent
    assert header_key("") is None
    assert header_key(None) is None
