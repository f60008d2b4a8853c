"""Run every benchmark module (``bench/bench_*.py``) side by side and collect their figures.

Each module exposes ``main() -> dict``; results are printed and written to
``bench/results/<name>.json``. Run one with ``python -m bench.bench_<name>``.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

import bench

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> None:
    only = set(argv if argv is not None else sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    for name in names:
        if only and name.removeprefix("bench_") not in only and name not in only:
            continue
        t0 = time.perf_counter()
        print(f"\n=== {name}", flush=True)
        result = importlib.import_module(f"bench.{name}").main()
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(json.dumps(result, indent=2, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
