"""How much slower a little Python runs right after the core did something else (target 2's profile).

At concurrency 1 every request's serving code (parse, queue, post-process, JSON) runs just
after a ~10 ms inference. This probe times one small numpy call back to back (warm) and
right after 10 ms of: sleeping, a pure-Python spin, and an ONNX Runtime inference of the
zoo's mobilenet-v2 (when installed). Run from the repository root after `make test`:

    .venv/bin/python benchmarks/cold_probe.py

On this project's VM the call takes ~2 us warm and ~50 us after any of the three, which is
why ~0.1 ms of warm serving Python costs about 1-1.5 ms per request at concurrency 1.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import numpy as np


def median_us(before: Callable[[], object], probe: Callable[[], object], n: int = 200) -> float:
    """Median time of ``probe`` in microseconds, each run right after ``before``."""
    times = []
    for _ in range(n):
        before()
        t = time.perf_counter()
        probe()
        times.append((time.perf_counter() - t) * 1e6)
    return round(statistics.median(times), 1)


def spin(seconds: float) -> None:
    """Busy-wait in Python without touching much memory."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def inference() -> Callable[[], object] | None:
    """One mobilenet-v2 run at batch 1 on one thread, if the zoo is installed in IMAAS_HOME."""
    from imaas.domain import ModelRef
    from imaas.errors import ImaasError
    from imaas.runtime.session import OnnxSession, SessionOptions
    from imaas.services.container import build_services
    from imaas.settings import Settings

    services = build_services(Settings())
    try:
        version = services.registry.resolve(ModelRef("mobilenet-v2"))
    except ImaasError:
        return None
    session = OnnxSession(services.artifacts.open_path(version.sha256), SessionOptions())
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    return lambda: session.run({"input": x})


def main() -> None:
    scores = np.random.default_rng(0).random(1000, dtype=np.float32)

    def probe() -> object:
        return scores.max()

    report = {
        "warm_us": median_us(lambda: None, probe),
        "after_10ms_sleep_us": median_us(lambda: time.sleep(0.01), probe),
        "after_10ms_python_spin_us": median_us(lambda: spin(0.01), probe),
    }
    run = inference()
    if run is not None:
        report["after_inference_us"] = median_us(run, probe)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
