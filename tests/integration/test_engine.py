"""Engine with real ONNX Runtime sessions: solo sessions for lone requests, capped per server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from imaas.domain import ModelVersion
from imaas.runtime.engine import Engine, EngineConfig
from imaas.runtime.graph import check_model_file, complete_manifest
from imaas.schemas.manifest import Manifest
from tests.factories import tiny_classifier


def version(path: Path, name: str) -> ModelVersion:
    manifest = complete_manifest(Manifest(), check_model_file(path))
    return ModelVersion(name, 1, "0" * 64, path.stat().st_size, manifest, datetime.now(UTC))


async def test_the_first_models_get_a_solo_session_up_to_the_cap(tmp_path: Path) -> None:
    engine = Engine(EngineConfig(solo_threads=2, solo_models=1))
    a_path, b_path = tiny_classifier(tmp_path / "a.onnx"), tiny_classifier(tmp_path / "b.onnx", seed=1)
    a = await engine.load(version(a_path, "a"), a_path)
    b = await engine.load(version(b_path, "b"), b_path)
    try:
        assert a.solo_session is not None
        assert a.queue.run_solo is not None
        assert b.solo_session is None
        assert b.queue.run_solo is None
        x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
        alone = await a.queue.submit(x[0])  # the idle queue uses the solo session
        np.testing.assert_allclose(alone[0], a.session.run({"input": x})[0][0], rtol=1e-5)
        assert a.queue.stats.solo_batches == 1
        await engine.unload(a.version.key)  # its slot goes to the next model loaded
        c = await engine.load(version(a_path, "c"), a_path)
        assert c.solo_session is not None
    finally:
        await engine.close()


async def test_no_solo_session_when_it_would_add_no_threads(tmp_path: Path) -> None:
    engine = Engine(EngineConfig(solo_threads=1, solo_models=4))
    path = tiny_classifier(tmp_path / "a.onnx")
    try:
        model = await engine.load(version(path, "a"), path)
        assert model.solo_session is None
    finally:
        await engine.close()
