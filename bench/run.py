"""Run every benchmark module (``bench/bench_*.py``) side by side and collect their figures.

Each module exposes ``main() -> dict``; results are printed and written to
``bench/results/<name>.json``. Run one with ``python -m bench.bench_<name>``. A module with ``OPT_IN``
(a reason: too slow for every run) runs only when named: ``python -m bench.run labels_scale``
(``make bench BENCH=labels_scale``).
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
        named = name.removeprefix("bench_") in only or name in only
        if only and not named:
            continue
        module = importlib.import_module(f"bench.{name}")
        if getattr(module, "OPT_IN", None) and not named:
            print(f"\n=== {name}: skipped ({module.OPT_IN}); run it with python -m bench.run {name.removeprefix('bench_')}", flush=True)
            continue
        t0 = time.perf_counter()
        print(f"\n=== {name}", flush=True)
        result = module.main()
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(json.dumps(result, indent=2, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
