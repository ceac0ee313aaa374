"""Resident memory before and after a version is unloaded: does the memory come back?

Loads each zoo model's production version in a fresh process, runs 20 inferences, unloads
it through the path a promote or the idle policy uses (``Engine.unload``: drain, drop the
sessions, ``malloc_trim``), twice, and prints RSS at each step. The first load also pays
one-time costs that stay (ONNX Runtime's environment and thread pools, decoder libraries),
so the second cycle shows what a version costs and whether it comes back; a fresh process
per model keeps one model's arenas from hiding another's.

    .venv/bin/imaas zoo install --home /tmp/bench-home
    .venv/bin/python benchmarks/unload_memory.py --home /tmp/bench-home
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import asyncio, json, sys
from pathlib import Path
from imaas.domain import ModelRef
from imaas.imaging.samples import warmup_image
from imaas.runtime.memory import resident_bytes
from imaas.services.container import build_services
from imaas.services.inference import ImageInput
from imaas.settings import Settings

async def main(home, name):
    svc = build_services(Settings(home=Path(home)))
    try:
        steps = {"start": resident_bytes()}
        version = await svc.inference.resolve(ModelRef(name))
        for cycle in (1, 2):
            await svc.inference.warm_version(version)
            for _ in range(20):
                await svc.inference.predict(ModelRef(name), [ImageInput(warmup_image())])
            steps[f"loaded{cycle}"] = resident_bytes()
            await svc.inference.engine.unload(version.key)
            steps[f"unloaded{cycle}"] = resident_bytes()
        print(json.dumps({k: v / 2**20 for k, v in steps.items()}))
    finally:
        await svc.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def main() -> None:
    """Print one line per model: RSS at each step (MiB)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--models", nargs="*", default=["mobilenet-v2", "efficientnet-lite0"])
    args = parser.parse_args()
    print("| model | RSS at start | loaded (1st) | unloaded (1st) | loaded (2nd) | unloaded (2nd) | returned (2nd) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.home), name], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1:]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        grown = r["loaded2"] - r["unloaded1"]
        back = r["loaded2"] - r["unloaded2"]
        print(
            f"| {name} | {r['start']:.0f} MiB | {r['loaded1']:.0f} | {r['unloaded1']:.0f} | {r['loaded2']:.0f} | "
            f"{r['unloaded2']:.0f} | {back:.0f} of {grown:.0f} MiB ({back / grown:.0%}) |"
        )


if __name__ == "__main__":
    main()
