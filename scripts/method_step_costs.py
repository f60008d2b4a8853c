"""Training time per step of each ``--method``, timed one run at a time on a quiet machine.

``make compare`` reports each method's seconds per step from its pre-training runs, but those run two
at a time beside everything else on the machine, so their per-step times carry the machine's load.
This re-runs each method's seed-0 pre-training command from a finished comparison work directory
(same data, model, batch; ``--steps N``, one thread, into a scratch directory), one after the other,
and prints the median seconds per logged window (:func:`trainer.experiment.compare.seconds_per_step`)
and each method's ratio to ``none``. Two rounds, the second in reverse order (drift on a shared
machine hits every method); a method's figure is the mean of its two. μ-VLA's curriculum switch
points are scaled with the steps, so its three stages keep their shares.

    python scripts/method_step_costs.py --work runs/compare [--steps 200] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from trainer.experiment.compare import METHODS, seconds_per_step


def command(spec: list, work: Path, out: Path, steps: int, threads: int) -> list[str]:
    """The run's recorded command (``spec.json``: arguments with ``<work>`` paths), re-pointed and shortened."""
    args = [a.replace("<work>", str(work)) for a in spec if isinstance(a, str)]
    scale = steps / int(args[args.index("--steps") + 1])  # μ-VLA's curriculum keeps its shares of the steps
    set_to = {f: str(int(round(int(args[args.index(f) + 1]) * scale))) for f in ("--mu-region-phrase-at", "--mu-image-sentence-at") if f in args}
    set_to |= {"--out": str(out), "--steps": str(steps), "--warmup-steps": str(max(1, steps // 10)), "--ckpt-every": str(steps),
              "--log-every": str(max(1, steps // 10))}
    for flag, value in set_to.items():
        args[args.index(flag) + 1] = value
    return [sys.executable, *args, "--cpu-threads", str(threads)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--work", required=True, help="a finished `make compare` work directory")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    work = Path(a.work).resolve()
    specs = {}
    for m in METHODS:
        spec_file = work / "pretrain" / f"{m.replace('+', '_')}_s0" / "spec.json"
        if not spec_file.exists():
            sys.exit(f"error: {spec_file} missing: run `make compare` (python -m trainer.experiment.compare --work {a.work}) first")
        specs[m] = json.loads(spec_file.read_text())
    rounds: dict[str, list[float]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory(prefix="ssga-step-cost-") as tmp:
        for r, order in enumerate((list(METHODS), list(reversed(METHODS)))):
            for m in order:
                out = Path(tmp) / f"{m.replace('+', '_')}_{r}"
                subprocess.run(command(specs[m], work, out, a.steps, a.threads), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                rounds[m].append(seconds_per_step(out))
                print(f"round {r + 1}: {m:16s} {rounds[m][-1]:.4f} s/step", flush=True)
    costs = {m: sum(v) / len(v) for m, v in rounds.items()}
    for m in METHODS:
        print(f"{m:16s} {costs[m]:.4f} s/step  ({costs[m] / costs['none']:.2f}x none)")
    print(json.dumps({"steps": a.steps, "threads": a.threads, "s_per_step": costs, "rounds": rounds}))


if __name__ == "__main__":
    main()
