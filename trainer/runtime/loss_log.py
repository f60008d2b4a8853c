"""The pre-training step log: train_step's rows flushed to ``losses.jsonl``, TensorBoard and the progress bar, once per ``log_every`` steps."""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from ssga_io import atomic
from trainer.losses import TERMS

log = logging.getLogger("trainer")

STATS = (*TERMS, "loss", "grad_norm", "examples")  # the row train_step returns, in this order


def stats_dict(row: torch.Tensor | list[float], lr: float | None = None) -> dict[str, float]:
    """A train_step row as ``{name: float}`` (reads it back to the host)."""
    values = row.tolist() if torch.is_tensor(row) else list(row)
    out = dict(zip(STATS, values))
    out["examples"] = int(out["examples"])
    if lr is not None:
        out["lr"] = lr
    return out


class LossLog:
    """Per-step stats stay on the device; every ``log_every`` steps (and before each checkpoint)
    they come to the host in one copy, are checked for non-finite values and appended to
    ``losses.jsonl`` (one line per step), so the host synchronises once per flush, not per step."""

    def __init__(self, out: Path, rank: int, writer, progress):
        self.out, self.rank, self.writer, self.progress = out, rank, writer, progress
        self.pending: list[tuple[int, torch.Tensor, dict]] = []
        self.records: list[dict[str, Any]] = []
        self.tick = time.perf_counter()

    def add(self, step: int, row: torch.Tensor, extra: dict) -> None:
        self.pending.append((step, row, extra))

    def flush(self) -> None:
        if not self.pending:
            return
        rows = torch.stack([r for _, r, _ in self.pending]).cpu().tolist()  # the one host sync
        now = time.perf_counter()
        rate = sum(r[STATS.index("examples")] for r in rows) / max(now - self.tick, 1e-9)
        recs, bad = [], None
        for (step, _, extra), row in zip(self.pending, rows):
            rec = {"step": step, **stats_dict(row), **extra, "samples_per_s": rate}
            if not all(math.isfinite(rec[t]) for t in ("loss", *TERMS)):
                bad = rec
                break
            recs.append(rec)
        self.pending, self.tick = [], now
        if self.rank == 0 and recs:
            self.records += recs
            with open(self.out / "losses.jsonl", "a") as f:
                f.write("".join(json.dumps(rec, sort_keys=True) + "\n" for rec in recs))
        if bad is not None:
            raise FloatingPointError(f"step {bad['step']}: non-finite loss {bad}")
        if self.rank != 0:
            return
        last = recs[-1]
        for k in ("loss", *TERMS, "lr", "grad_norm", "samples_per_s"):
            self.writer.add_scalar(f"train/{k}", last[k], last["step"])
        # The paired terms always; another method's terms (partial OT, μ-VLA) when they have items.
        shown = " ".join(f"{t} {last[t]:.3f}" for t in TERMS if t in ("word", "img", "align", "gnd") or last[t] != 0)
        log.info("step %d loss %.4f %s | %.1f samples/s", last["step"], last["loss"], shown, rate)
        if self.progress is not None:
            self.progress.update(len(recs))
            self.progress.set_postfix(loss=f"{last['loss']:.3f}", samples_s=f"{rate:.1f}")


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint (steps a crashed run logged but never saved): they get redone."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        atomic.write_text(path, "".join(line + "\n" for line in keep))
