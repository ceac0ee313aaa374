"""Coverage-guided fuzzing of the untrusted-input parsers, a fixed number of runs per target.

Each target runs ``tests/fuzz/fuzz_codecs.py`` in its own process (libFuzzer owns the
process and exits on the first crash) from a seed corpus, with a fixed seed, so that a run
is reproducible; the run fails on any exception other than a 4xx ``ImaasError`` or on
resident memory past 2 GB. A crash leaves the input that caused it in the test's temporary
folder, and the output names it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("fuzz_codecs.py")
RUNS = {"oip": 100_000, "oip-doc": 30_000, "bytes": 100_000, "image": 6_000}


@pytest.mark.parametrize("target", sorted(RUNS))
def test_fuzz_target_raises_only_4xx_errors(target: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    corpus = tmp_path / "corpus"
    base = [sys.executable, str(SCRIPT), "--target", target]
    subprocess.run([*base, "--seeds", str(corpus)], env=env, cwd=tmp_path, check=True, capture_output=True)
    args = [f"-runs={RUNS[target]}", "-seed=1", f"-artifact_prefix={tmp_path}/", "-rss_limit_mb=2048"]
    if target == "oip":
        args.append(f"-dict={tmp_path / 'oip.dict'}")
    run = subprocess.run(
        [*base, *args, str(corpus)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    output = "\n".join(line for line in run.stderr.splitlines() if not line.startswith("INFO: Instrumenting"))
    assert run.returncode == 0, output[-4000:]
    assert f"Done {RUNS[target]} runs" in output
