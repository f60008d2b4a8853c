"""GPU check of pre-training: checkpoint, kill, resume, bench (3 min 18 s on one H200 with eager runs;
the runs now compile, as ``make pretrain`` does on CUDA, which adds a build to each of the three launches).

    python scripts/gpu_check.py [--out DIR] [--nproc 1] [--with-compile] [--profile]   # on a GPU node
    python scripts/gpu_check.py --smoke                                                # tiny, on CPU: proves the script

1. Writes a synthetic corpus in the real shard formats (``trainer.toydata``): >= 20,000 examples of
   36 regions x 2048-d features (smoke: 40 images, 16-d).
2. Pre-trains under ``torchrun`` (BERT-base width, 4 layers, 300 steps, so that three launches fit the
   budget): once straight through, and once killed (SIGKILL to the launcher and every worker) after
   its first checkpoint, then resumed.
3. Compares the losses of every step with the uninterrupted run, and the resumed steps with the
   ones the killed run logged from the same checkpoint. CPU runs are bit-exact; CUDA kernels with
   atomics (embedding and index_select backward) are not deterministic, so on a GPU the check is
   a relative tolerance (``--rtol``, default 2e-2) and the largest difference is printed.
4. Prints the bench figures of the GPU section (bench/gpu_trainer.py) on the same corpus.

Exits non-zero when a run fails or the losses differ.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# A GPU step of this model takes milliseconds: 300 steps give the killer a window of 100 steps between
# checkpoints (it polls every 20 ms), where 60 steps ran to the end before it could act.
FULL = dict(hidden_size=768, num_layers=4, num_heads=12, intermediate_size=3072, batch_size=128, steps=300,
            ckpt_every=100, log_every=10, max_text_len=36, max_regions=36)
SMOKE = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, batch_size=4, steps=16,
             ckpt_every=4, log_every=1, max_text_len=16)


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def launch(args: argparse.Namespace, train_args: list[str], out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
           "-m", "trainer.train", *train_args, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)


def losses(run: Path) -> dict[int, dict]:
    """Step → record of every complete line (a running trainer may be mid-write on the last)."""
    path = run / "losses.jsonl"
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    return {r["step"]: r for r in map(json.loads, lines)}


def run_to_end(args, train_args, out: Path) -> None:
    if launch(args, train_args, out).wait() != 0:
        raise SystemExit(f"gpu_check: pre-training into {out} failed")


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (Linux ``/proc``). torchrun starts each worker in a session of
    its own, so killing torchrun's process group alone leaves the trainer running to the end."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            ppid = int(rest.rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(ppid, []).append(int(pid))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def kill_tree(root: int) -> None:
    """SIGKILL the launcher and every worker at once (a lost node), then wait until all are gone."""
    tree = process_tree(root)
    for pid in reversed(tree):  # workers first: the launcher must not get to restart or clean them up
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(_state(pid) == "alive" for pid in tree[1:]):
        if time.monotonic() > deadline:
            raise SystemExit(f"gpu_check: workers {tree[1:]} still alive 30 s after SIGKILL")
        time.sleep(0.05)


def _state(pid: int) -> str:
    """"alive", or "zombie" once the process has died (gone, or dead and not yet reaped)."""
    try:
        return "zombie" if Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z") else "alive"
    except (OSError, IndexError):
        return "zombie"


def kill_after_checkpoint(args, train_args, out: Path, first_ckpt: int, log_every: int) -> int:
    """Start a run, SIGKILL it once it has logged past its first checkpoint; returns the last logged step."""
    proc = launch(args, train_args, out)
    want = first_ckpt + log_every
    while proc.poll() is None:
        latest = out / "latest.json"
        logged = max(losses(out), default=0)
        # Past a checkpoint, with steps logged after it: resume must drop and redo those.
        if latest.exists() and logged >= want and logged > json.loads(latest.read_text())["step"]:
            kill_tree(proc.pid)
            proc.wait()
            return max(losses(out))
        time.sleep(0.02)
    raise SystemExit(f"gpu_check: the run into {out} ended (exit {proc.returncode}) before it could be killed after step {want}")


def compare(straight: dict, resumed: dict, killed: dict, ckpt: int, rtol: float) -> float:
    """Largest relative loss difference; raises when a step is missing or beyond ``rtol``."""
    if sorted(resumed) != sorted(straight):
        raise SystemExit(f"gpu_check: resumed run logged steps {sorted(resumed)}, uninterrupted {sorted(straight)}")
    worst = 0.0
    pairs = [(s, straight[s], resumed[s], "uninterrupted") for s in straight]
    pairs += [(s, killed[s], resumed[s], "killed run, same checkpoint") for s in killed if s > ckpt]
    for step, a, b, what in pairs:
        for term in ("loss", "word", "img", "align", "gnd"):
            rel = abs(a[term] - b[term]) / max(abs(a[term]), 1e-6)
            worst = max(worst, rel)
            if rel > rtol:
                raise SystemExit(f"gpu_check: step {step} {term}: resumed {b[term]:.6g} vs {what} {a[term]:.6g} (rel {rel:.2g} > {rtol})")
    return worst


def check_resume(args: argparse.Namespace, train_args: list[str], work: Path, model: dict, rtol: float, t0: float) -> None:
    """Uninterrupted run; a run SIGKILLed after a checkpoint, then resumed; their losses compared."""
    run_to_end(args, train_args, work / "straight")
    log(f"uninterrupted run: {model['steps']} steps ({time.perf_counter() - t0:.0f} s)")
    last = kill_after_checkpoint(args, train_args, work / "resumed", model["ckpt_every"], model["log_every"])
    ckpt = json.loads((work / "resumed" / "latest.json").read_text())["step"]
    killed = losses(work / "resumed")
    if ckpt >= model["steps"]:
        raise SystemExit(f"gpu_check: the run was killed only after its last checkpoint (step {ckpt}): nothing to resume; "
                         "raise the steps in FULL")
    log(f"killed at step {last} (last checkpoint {ckpt}); resuming ({time.perf_counter() - t0:.0f} s)")
    run_to_end(args, train_args, work / "resumed")
    worst = compare(losses(work / "straight"), losses(work / "resumed"), killed, ckpt, rtol)
    log(f"resume OK: every step's losses match the uninterrupted run (largest relative difference {worst:.2g}, tolerance {rtol:g})")
    rates = [r["samples_per_s"] for r in losses(work / "straight").values()]
    log(f"pre-training samples/s (per log window, all ranks): {', '.join(f'{x:.0f}' for x in rates[::max(1, len(rates) // 6)])}")


def write_figures(args: argparse.Namespace, figures: dict) -> None:
    print(json.dumps(figures, indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny corpus and model; runs on CPU")
    ap.add_argument("--out", default="", help="work directory (default: a temporary one, removed after)")
    ap.add_argument("--nproc", type=int, default=1, help="processes (GPUs) for torchrun")
    ap.add_argument("--rtol", type=float, default=None, help="relative loss tolerance (default: 1e-6 on CPU, 2e-2 on CUDA)")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--with-compile", action="store_true", help="also bench with torch.compile (adds minutes: one compile per stream)")
    ap.add_argument("--compile-only", action="store_true",
                    help="skip the runs, bench with torch.compile only (the CUDA default)")
    ap.add_argument("--bench-only", action="store_true", help="skip the runs: the bench (eager; with --with-compile also compiled)")
    ap.add_argument("--streams", default="single,dual", help="the bench's models: single, dual or both (comma-separated)")
    ap.add_argument("--json", default="", help="also write the bench figures to this file")
    ap.add_argument("--profile", action="store_true", help="also print a profiler table of BERT-base model-only steps (CUDA)")
    ap.add_argument("--tokenizer", default="minilm",
                    help="'minilm' (the packaged vocabulary) or a local directory with vocab.txt (a machine without the package)")
    args = ap.parse_args(argv)
    if not set(args.streams.split(",")) <= {"single", "dual"}:
        ap.error(f"--streams {args.streams!r}: give single, dual or single,dual")

    import torch

    from trainer.toydata import write_corpus

    t0 = time.perf_counter()
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:  # the full size on a CPU would run for hours and prove nothing
        print("gpu_check: no CUDA device here; run it on a GPU node, or with --smoke on a CPU", file=sys.stderr)
        return 2
    rtol = args.rtol if args.rtol is not None else (2e-2 if cuda else 1e-6)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    try:
        shutil.rmtree(work / "straight", ignore_errors=True)
        shutil.rmtree(work / "resumed", ignore_errors=True)
        size = dict(num_images=40, num_shards=4, num_regions=6, feat_dim=16) if args.smoke else \
            dict(num_images=13_500, num_shards=32, num_regions=36, feat_dim=2048)
        # A corpus an earlier call wrote to the end (its marker says so, with the size) is reused: on a
        # lent GPU machine the write costs 40 s of each call.
        done = work / "corpus" / "COMPLETE"
        if done.is_file() and done.read_text() == json.dumps(size):
            regions, labels = work / "corpus" / "regions", work / "corpus" / "labels"
        else:
            shutil.rmtree(work / "corpus", ignore_errors=True)
            regions, labels = write_corpus(work / "corpus", **size, no_caption_every=0)
            done.write_text(json.dumps(size))
        from bench.gpu_trainer import count_examples

        examples = count_examples(labels)
        log(f"corpus: {examples} examples in {size['num_shards']} shards ({time.perf_counter() - t0:.0f} s)")
        if not args.smoke and examples < 20_000:
            raise SystemExit(f"gpu_check: corpus has {examples} examples, fewer than 20,000")

        model = SMOKE if args.smoke else FULL
        # Loader workers as `make pretrain` gets them (-1: the trainer's auto, by device and cores per process).
        workers = 1 if args.smoke else -1
        train_args = ["--regions", str(regions), "--labels", str(labels), "--progress", "false", "--dropout", "0.1",
                      "--warmup-steps", "5", "--num-workers", str(workers), "--keep-ckpts", "10", "--lr", "1e-4",
                      "--tokenizer", args.tokenizer]
        for k, v in model.items():
            train_args += [f"--{k.replace('_', '-')}", str(v)]

        if not (args.compile_only or args.bench_only):
            check_resume(args, train_args, work, model, rtol, t0)

        if not args.skip_bench:
            from bench.gpu_trainer import run
            from trainer.data.text import load_tokenizer

            tok = load_tokenizer(args.tokenizer)
            streams = tuple(args.streams.split(","))
            figures = {} if args.compile_only else run(tok, smoke=args.smoke, corpus=(regions, labels), streams=streams)
            if args.with_compile or args.compile_only:
                write_figures(args, figures)  # a compile that outlives the machine must not take these with it
                compiled = run(tok, smoke=args.smoke, corpus=(regions, labels), compile="on", streams=streams)
                figures.update({f"compiled_{k}": v for k, v in compiled.items() if "samples_per_s" in k or k.endswith("_error")})
            write_figures(args, figures)
        if args.profile and cuda:
            from bench.gpu_trainer import profile_model_only

            for dual in (False, True):
                log(f"profile: {'dual' if dual else 'single'} stream, model only, batch 512, 5 steps")
                print(profile_model_only(512, dual=dual), flush=True)
        log(f"done in {time.perf_counter() - t0:.0f} s")
        return 0
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
