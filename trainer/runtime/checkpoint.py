"""Checkpoints: weights and optimizer tensors as safetensors, everything else as JSON; atomic.

Layout of ``<run>/ckpt-00000100/``: ``model.safetensors`` (tied weights stored once, under the
name safetensors' ``save_model`` would keep, so either side reads the other's files),
``optimizer.safetensors`` (per-parameter tensors, keyed ``<param index>.<name>``), ``state.json``
(step, data position, optimizer hyper-parameters, config). The directory is written under a
temporary name and renamed, then ``<run>/latest.json`` is replaced atomically; so a crash at any
point leaves the previous checkpoint usable. No pickle anywhere.

Weights are copied to host tensors of their own before writing: on CUDA, cuDNN flattens an LSTM's
weights into one buffer, so each weight is a view of a larger storage, which safetensors'
``save_model`` refuses ("None is covering the entire storage"). Only true ties (the same view of
the same storage, like the MLM decoder and the word embeddings) are stored once.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from ssga_io import atomic

LATEST = "latest.json"


def _ties(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """``{dropped name: kept name}`` for entries that are the very same view of the same storage.

    Views of one buffer at different offsets (a cuDNN-flattened LSTM) are not ties: each is kept.
    The kept name is the first in sorted order, as safetensors' ``save_model`` chooses.
    """
    groups: dict[tuple, list[str]] = {}
    for name, t in state.items():
        if t.device.type == "meta" or t.numel() == 0:
            continue
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        groups.setdefault(key, []).append(name)
    return {d: sorted(names)[0] for names in groups.values() for d in sorted(names)[1:]}


def model_tensors(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(host tensors to write, ``{tied name: stored name}``): each tensor owns its storage."""
    state = model.state_dict()
    ties = _ties(state)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items() if k not in ties}
    return tensors, ties


def load_model_tensors(model: torch.nn.Module, path: str | Path) -> None:
    """Copy the file's tensors into the model in place (so flattened LSTM buffers stay flattened).

    Strict: every model entry must be in the file or tied to one that is, and nothing extra.
    """
    stored = load_file(str(path))
    state = model.state_dict()
    ties = _ties(state)
    members: dict[str, list[str]] = {}
    for name in state:
        members.setdefault(ties.get(name, name), []).append(name)
    full, missing, used = {}, [], set()
    for group in members.values():
        # A file written by safetensors' save_model may have kept another name of a tied group.
        found = next((n for n in sorted(group) if n in stored), None)
        if found is None:
            missing += group
            continue
        used.add(found)
        full.update({n: stored[found] for n in group})
    unexpected = sorted(set(stored) - used)
    if missing or unexpected:
        raise RuntimeError(f"{path}: does not match the model: missing {sorted(missing)}, unexpected {unexpected}")
    model.load_state_dict(full, strict=True)


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], keep: int = 2
) -> Path:
    """Write ``ckpt-<step>`` atomically, point ``latest.json`` at it, prune all but the newest ``keep``."""
    run_dir = Path(run_dir)
    final = run_dir / f"ckpt-{step:08d}"
    tmp = atomic.temp_name(final)  # a directory, renamed whole
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors, ties = model_tensors(model)
    # One metadata entry: safetensors writes its metadata map in hash order, so several entries
    # would make two identical checkpoints differ in their header bytes.
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"ssga.ties": json.dumps(ties, sort_keys=True)} if ties else None)
    tensors, meta = _optimizer_parts(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    atomic.write_json(tmp / "state.json", {**state, "step": step, "optimizer": meta}, indent=2, sort_keys=True)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic.write_json(run_dir / LATEST, {"checkpoint": final.name, "step": step}, indent=2, sort_keys=True)
    for old in sorted(run_dir.glob("ckpt-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    p = Path(run_dir) / LATEST
    if not p.exists():
        return None
    ckpt = Path(run_dir) / json.loads(p.read_text())["checkpoint"]
    if not (ckpt / "state.json").exists():
        raise FileNotFoundError(f"{p} points at {ckpt}, which is missing or incomplete")
    return ckpt


def load_checkpoint(ckpt: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Restore weights (and optimizer) in place; returns the JSON state (step, data position, ...)."""
    ckpt = Path(ckpt)
    state = json.loads((ckpt / "state.json").read_text())
    load_model_tensors(model, ckpt / "model.safetensors")
    if optimizer is not None:
        device = next(model.parameters()).device
        tensors = {k: v.to(device) if not k.endswith(".step") else v for k, v in load_file(str(ckpt / "optimizer.safetensors")).items()}
        optimizer.load_state_dict(_optimizer_state(tensors, state["optimizer"]))
    return state
