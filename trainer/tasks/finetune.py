"""The fine-tuning engine every downstream task shares: init from a pre-training run, AdamW +
warm-up/decay over fixed steps, checkpoints with exact resume, prediction (a command's scaffolding:
:mod:`trainer.tasks.command`).

A task (REC: :mod:`trainer.tasks.rec`, VQA: :mod:`trainer.tasks.vqa`) brings its examples, a
``collate`` (examples → tensors), a head on :func:`load_pretrained`'s encoder, ``loss_fn(model,
batch)`` and a metric over :func:`predict`'s output. There is no other training loop for tasks.

**Checkpoints** (``fit(..., ckpt_dir=...)`` with ``cfg.ckpt_every`` > 0): every ``ckpt_every``
steps and at the end, :func:`trainer.runtime.checkpoint.save_checkpoint` writes the weights, the
optimiser and, in ``state.json``, the data order still to come, the shuffling generator's state,
torch's random state (dropout) and the losses so far, with the run's ``settings``. With
``cfg.resume`` the loop restarts from the newest one and continues exactly: the same batches, the
same dropout masks, so the same losses and weights as an uninterrupted run. A checkpoint written
under other settings is refused rather than resumed.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ssga_io.console import progress_enabled
from trainer.config import TrainConfig, apply_overrides
from trainer.models import PretrainModel, build_model
from trainer.runtime.checkpoint import LATEST, latest_checkpoint, load_checkpoint, save_checkpoint
from trainer.runtime.device import to_device
from trainer.runtime.optim import lr_at, make_optimizer, set_lr

log = logging.getLogger("trainer.tasks.finetune")


def resolve_init(init: str, model_config: str = "") -> tuple[TrainConfig, Path | None]:
    """(pre-training config, checkpoint dir or None) for ``--init``."""
    if init.lower() == "none":
        if not model_config:
            raise ValueError("--init none needs --model-config (a TrainConfig JSON giving the model's shape)")
        return apply_overrides(TrainConfig(), json.loads(Path(model_config).read_text()), model_config), None
    path = Path(init)
    ckpt = latest_checkpoint(path) if (path / "latest.json").exists() else path
    state_file = ckpt / "state.json"
    if not (ckpt / "model.safetensors").exists() or not state_file.exists():
        raise FileNotFoundError(f"{init}: not a pre-training run (latest.json) nor a checkpoint (model.safetensors + state.json)")
    saved = json.loads(state_file.read_text()).get("config")
    if saved is None:
        raise ValueError(f"{state_file}: the checkpoint records no config")
    return apply_overrides(TrainConfig(), saved, str(state_file)), ckpt


def load_pretrained(cfg: TrainConfig, ckpt: Path | None, feat_dim: int, num_classes: int, vocab: int) -> PretrainModel:
    """The pre-training model class for these regions and vocabulary, with the checkpoint's weights
    (random init when ``ckpt`` is None). Tasks keep its ``encoder`` (and any head they reuse)."""
    model = build_model(cfg, feat_dim, num_classes, vocab)
    if ckpt is not None:
        try:
            load_checkpoint(ckpt, model)
        except RuntimeError as e:  # shape mismatch: other feature width, class count or vocabulary
            raise ValueError(f"{ckpt}: weights do not fit a model for these regions ({feat_dim}-d features, {num_classes} classes): {e}") from e
    return model


def train_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded ``fraction`` of ``n`` training examples (at least one)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train fraction must lie in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(n)
    k = max(1, int(round(n * fraction)))
    return np.sort(np.random.default_rng([seed, 0xF1E]).choice(n, size=k, replace=False))


def _rng_state() -> dict[str, Any]:
    out: dict[str, Any] = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _start_or_resume(model: nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator, ckpt_dir: Path | None, resume: bool,
                     settings: dict[str, Any]) -> tuple[int, list[int], list[float]]:
    """``(first step, data order still to come, losses so far)``; restores weights, optimiser and RNGs on resume."""
    if ckpt_dir is None:
        return 0, [], []
    ckpt = latest_checkpoint(ckpt_dir) if resume else None
    if ckpt is None:  # a fresh run: checkpoints of an earlier one must not be mistaken for this one's
        for old in ckpt_dir.glob("ckpt-*"):
            shutil.rmtree(old, ignore_errors=True)
        (ckpt_dir / LATEST).unlink(missing_ok=True)
        return 0, [], []
    saved = json.loads((ckpt / "state.json").read_text())
    if saved.get("settings") != settings:
        differ = sorted(k for k in set(settings) | set(saved.get("settings", {})) if settings.get(k) != saved.get("settings", {}).get(k))
        raise ValueError(f"{ckpt}: written with other settings (differ in {differ}); resume with the same flags, or start afresh without --resume")
    load_checkpoint(ckpt, model, opt)
    rng.bit_generator.state = saved["shuffle_rng"]
    _set_rng_state(saved["rng"])
    log.info("resumed from %s at step %d", ckpt, saved["step"])
    return int(saved["step"]), list(saved["order"]), list(saved["losses"])


def fit(model: nn.Module, examples: list[dict[str, Any]], collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
        loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor], cfg: Any, device: torch.device, name: str = "finetune",
        ckpt_dir: str | Path | None = None, settings: dict[str, Any] | None = None) -> list[float]:
    """Fixed-step training over seeded reshuffles of ``examples``; returns the loss per step (all steps, resumed or not).

    ``cfg`` gives ``steps``, ``batch_size``, ``lr``, ``weight_decay``, ``warmup_frac``, ``seed`` and ``progress``,
    and optionally ``ckpt_every`` (0: no checkpoints) and ``resume``; the task gives ``collate`` (examples →
    tensors) and ``loss_fn(model, batch)``. Checkpoints go to ``ckpt_dir`` tagged with ``settings`` (JSON).
    """
    opt = make_optimizer(model, cfg)  # AdamW, no decay on biases and norms (uses cfg.lr, cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 0xBA7C])
    warmup = int(math.ceil(cfg.warmup_frac * cfg.steps))
    every = int(getattr(cfg, "ckpt_every", 0) or 0)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None and every > 0 else None
    settings = json.loads(json.dumps(settings or {}))  # as it reads back from state.json
    start, order, losses = _start_or_resume(model, opt, rng, ckpt_dir, bool(getattr(cfg, "resume", False)), settings)
    progress = None
    if cfg.progress if cfg.progress is not None else progress_enabled():
        from tqdm import tqdm

        progress = tqdm(total=cfg.steps, initial=start, desc=name, unit="step", dynamic_ncols=True)
    model.train()
    for step in range(start, cfg.steps):
        while len(order) < cfg.batch_size:  # epochs of seeded permutations, concatenated
            order.extend(rng.permutation(len(examples)).tolist())
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        batch = to_device(collate([examples[i] for i in idx]), device)
        set_lr(opt, lr_at(step, cfg.steps, cfg.lr, warmup))
        loss = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"step {step}: non-finite loss")
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1]:.3f}")
        elif (step + 1) % 50 == 0:
            log.info("%s step %d loss %.4f", name, step + 1, float(np.mean(losses[-50:])))
        if ckpt_dir is not None and ((step + 1) % every == 0 or step + 1 == cfg.steps):
            state = {"settings": settings, "order": order, "shuffle_rng": rng.bit_generator.state, "rng": _rng_state(), "losses": losses}
            save_checkpoint(ckpt_dir, step + 1, model, opt, state)
    if progress is not None:
        progress.close()
    return losses


@torch.no_grad()
def predict(model: nn.Module, examples: list[dict[str, Any]], collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
            device: torch.device, batch_size: int = 128) -> np.ndarray:
    """``argmax`` of the model's output for each example, in order (evaluation mode, no gradients)."""
    model.eval()
    out = []
    for i in range(0, len(examples), batch_size):
        out.append(model(to_device(collate(examples[i : i + batch_size]), device)).argmax(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)
