"""torch.compile against eager, BERT-base model only, side by side in one process (one GPU).

    python scripts/gpu_compile_ab.py [--batch 512] [--static]

For single and dual stream: compiled, then eager, on the same fixed synthetic batch (36 text + 36
regions, bf16), samples/s, FLOPs per sample and peak memory, with the seconds each took (compiling
included). ``--static`` compiles with torch's default shape specialisation, as the first H200 run did
(6,962 against 5,654 samples/s single, 4,938 against 3,967 dual, at batch 512); without it, the
trainer's dynamic-shape build (``trainer.train.compile_model``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--static", action="store_true", help="torch's default shape specialisation instead of the trainer's dynamic build")
    args = ap.parse_args(argv)
    import torch

    from bench.gpu_trainer import BERT_BASE, DUAL, VG_CLASSES, VOCAB, TrainConfig, _model, model_only

    if not torch.cuda.is_available():
        print("gpu_compile_ab: no CUDA device here; run it on a GPU node", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    shapes = {"text": 36, "regions": 36, "feat": 2048, "classes": VG_CLASSES, "vocab": VOCAB}
    for name, extra in (("single", {}), ("dual", DUAL)):
        for compile in ("on", "off"):
            t0 = time.perf_counter()
            cfg = TrainConfig(**{**BERT_BASE, **extra, "compile": compile, "batch_size": args.batch})
            built = _model(cfg, shapes["feat"], shapes["classes"], shapes["vocab"], device, dynamic=not args.static)
            r = model_only(cfg, device, args.batch, args.steps, shapes, built)
            print(name, f"b{args.batch}", "compile", compile, json.dumps({k: round(v, 2) for k, v in r.items()}),
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
            del built
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
