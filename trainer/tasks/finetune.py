"""The fine-tuning loop every downstream task shares: init from a pre-training run, AdamW + warm-up/decay, fixed steps, prediction.

A task brings its examples, ``collate``, ``loss_fn(model, batch)`` and a metric over :func:`predict`'s output.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from trainer.config import TrainConfig, apply_overrides
from trainer.runtime.checkpoint import latest_checkpoint
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


def fit(model: nn.Module, examples: list[dict[str, Any]], collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
        loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor], cfg: Any, device: torch.device, name: str = "finetune") -> list[float]:
    """Fixed-step training over seeded reshuffles of ``examples``; returns the loss per step.

    ``cfg`` gives ``steps``, ``batch_size``, ``lr``, ``weight_decay``, ``warmup_frac``, ``seed`` and ``progress``;
    the task gives ``collate`` (examples → tensors) and ``loss_fn(model, batch)``.
    """
    opt = make_optimizer(model, cfg)  # AdamW, no decay on biases and norms (uses cfg.lr, cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 0xBA7C])
    warmup = int(math.ceil(cfg.warmup_frac * cfg.steps))
    order: list[int] = []
    losses = []
    progress = None
    if cfg.progress:
        from tqdm import tqdm

        progress = tqdm(total=cfg.steps, desc=name, unit="step", dynamic_ncols=True)
    model.train()
    for step in range(cfg.steps):
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
