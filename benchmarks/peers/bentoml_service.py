"""BentoML with adaptive batching, as its docs describe (one API worker process per core)."""

from __future__ import annotations

from pathlib import Path

import bentoml
import numpy as np
from common import preprocess, session, top5


@bentoml.service(workers=2)
class Classifier:
    def __init__(self) -> None:
        self.sess = session()

    @bentoml.api(batchable=True, max_batch_size=8, max_latency_ms=10_000)
    def predict(self, images: list[Path]) -> list[dict[str, object]]:
        x = np.stack([preprocess(p.read_bytes()) for p in images])
        logits = self.sess.run(None, {"input": x})[0]
        return [{"predictions": top5(row)} for row in logits]
