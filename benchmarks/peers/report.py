"""Merge the JSON reports of compare.sh into one table with imaas' ratios to the peers."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(folder: Path) -> None:
    imaas = json.loads((folder / "imaas.json").read_text())
    served = [r for r in imaas["runs"] if r["mode"] == "served"]
    peers = []
    for name in ("fastapi", "litserve", "bentoml"):
        path = folder / f"{name}.json"
        if path.exists():
            peers += json.loads(path.read_text())["runs"]
    print(f"{'server':<10} {'conc':>4} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for r in served + peers:
        name = "imaas" if r["mode"] == "served" else r["mode"]
        cells = (name, r["concurrency"], r["images_per_s"], r["p50_ms"], r["p99_ms"], r["errors"])
        print("{:<10} {:>4} {:>8} {:>8} {:>8} {:>6}".format(*cells))
    print(f"raw pipeline best: {imaas['best_raw_images_per_s']} img/s")
    for r in served:
        rivals = [p for p in peers if p["concurrency"] == r["concurrency"]]
        if not rivals:
            continue
        best = max(rivals, key=lambda p: p["images_per_s"])
        print(
            f"c={r['concurrency']}: imaas/raw = {r['images_per_s'] / imaas['best_raw_images_per_s']:.3f}, "
            f"imaas/best peer ({best['mode']}) = {r['images_per_s'] / best['images_per_s']:.3f}, "
            f"p99 {r['p99_ms']} vs {best['p99_ms']} ms"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
