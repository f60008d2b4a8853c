"""One loader worker's examples/s, this tree against an earlier commit, side by side.

    python scripts/loader_ab.py --base b7b0f5f [--rounds 3] [--images 3000] [--through-worker]

Writes two corpora once (36 regions x 2048-d float16 features; the toy corpus's 9 classes and a
detector's 1,601), then, round after round, alternates the base commit (a temporary git worktree) and
this tree, each reading a corpus in one process (``num_workers=0``: one worker's work) at batch 512.
``--through-worker``: through the training stream (``BatchStream``) with one loader worker process
instead, so the hand-over from worker to trainer counts too. Prints every run and the medians. Needs
the project's .venv (run it with that python).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURE = """
import dataclasses, sys, time, torch
from trainer.config import TrainConfig
from trainer.data.text import load_tokenizer
from trainer.data.chain import make_loader
torch.set_num_threads(1)
root = sys.argv[1]
cfg = TrainConfig(regions=root + "/regions", labels=root + "/labels", out=root + "/out", num_workers=0, batch_size=512,
                  shuffle_buffer=512, max_text_len=36, max_regions=36)
tok = load_tokenizer(cfg.tokenizer)
if sys.argv[2] == "worker":  # one loader process feeding the training stream; 12 batches after 2 warm-up
    from trainer.data.stream import BatchStream
    stream = BatchStream(dataclasses.replace(cfg, num_workers=1), tok)
    stream.next(), stream.next()
    t0, n = time.perf_counter(), 0
    for _ in range(12):
        n += stream.next()["n"]
    print(n / (time.perf_counter() - t0))
    stream.close()
    sys.exit(0)
for _ in range(2):  # the first pass warms imports and the file cache; the second is the one reported
    t0, n = time.perf_counter(), 0
    for b in make_loader(cfg, tok, 0):
        n += b["n"]
print(n / (time.perf_counter() - t0))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit to compare with (e.g. b7b0f5f)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--through-worker", action="store_true", help="through BatchStream with one loader worker process")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from trainer.toydata import NUM_CLASSES, write_corpus

    with tempfile.TemporaryDirectory(prefix="loader-ab-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), a.base], check=True)
        try:
            corpora = {}
            for classes in (NUM_CLASSES, 1601):
                root = Path(tmp) / f"corpus{classes}"
                write_corpus(root, a.images, num_shards=8, num_regions=36, feat_dim=2048, no_caption_every=0, num_classes=classes)
                corpora[classes] = root
            runs: dict[tuple[int, str], list[float]] = {}
            for r in range(a.rounds):
                for classes, root in corpora.items():
                    for name, tree in (("base", base), ("this", ROOT)):
                        mode = "worker" if a.through_worker else "in-process"
                        out = subprocess.run([sys.executable, "-c", MEASURE, str(root), mode], cwd=tree, env={"PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1",
                                             "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True)
                        rate = float(out.stdout.strip().splitlines()[-1])
                        runs.setdefault((classes, name), []).append(rate)
                        print(f"round {r + 1}: {classes:5d} classes, {name}: {rate:.0f} examples/s", flush=True)
            for classes in corpora:
                b, t = statistics.median(runs[classes, "base"]), statistics.median(runs[classes, "this"])
                print(f"{classes:5d} classes: {a.base} {b:.0f} -> this tree {t:.0f} examples/s ({t / b:.2f}x, medians of {a.rounds})")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
