"""Fine-tune a pre-trained encoder for referring-expression comprehension and evaluate it (RefCOCO+ protocol).

    python -m trainer.finetune_rec --refer DIR/refer --regions REGIONS --init RUN_OR_CKPT --out OUT \\
        [--head grounding] [--train-fraction 0.125] [--seed 0] [--steps 400] [--lr 1e-3]
    python -m trainer.finetune_rec ... --init none --model-config RUN/config.json   # no pre-training

The model is the pre-training encoder (same class, weights loaded from the checkpoint's
safetensors) plus a region scorer over each proposal's output token, one of two (``--head``):

- ``linear``: ``score(r) = w · dropout(h_r) + b``, new weights, as ViLBERT does for RefCOCO+;
- ``grounding``: the pre-training grounding head ``f_align(phrase, region)`` with the whole
  expression as the phrase, weights from the checkpoint, so the region-phrase alignment the
  grounding loss taught is carried into fine-tuning instead of being thrown away.

The expression is the text, the image's detector proposals are the regions; the loss is softmax
cross-entropy over the proposals against the proposal with the highest IoU with the ground-truth box
(a hard target; expressions whose best proposal is below 0.5 IoU still train towards their closest
proposal). The other pre-training heads are dropped. Training runs on ``train`` (or a seeded
``--train-fraction`` of its expressions) for a fixed number of steps (AdamW, linear warm-up then
linear decay); the final model is evaluated on ``val``/``testA``/``testB`` with
:mod:`trainer.tasks.rec.metrics` (no checkpoint selection on val).

Writes ``OUT/results.json`` (accuracies per split at IoU ≥ 0.5 and > 0.5, oracle upper bound,
the swapped-text control, accuracy by what the expression needs when the corpus records it) and
``OUT/predictions.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from schemas.boxes import box_iou
from schemas.records import RegionRecord
from trainer.runtime.checkpoint import latest_checkpoint, load_checkpoint
from trainer.config import TrainConfig, apply_overrides
from trainer.models import build_model
from trainer.models.heads import GroundingHead
from trainer.tasks.rec.metrics import rec_accuracy
from ssga_io.security import PICKLE_RISK
from trainer.tasks.rec.refer import SPLITS, Expression, join_refer
from trainer.data.text import load_tokenizer
from trainer.train import make_optimizer
from ssga_io import atomic

log = logging.getLogger("trainer.finetune_rec")
EVAL_SPLITS = ("val", "testA", "testB")
HEADS = ("linear", "grounding")


@dataclass
class FinetuneConfig:
    refer: str
    regions: str
    init: str  # a pre-training run dir (latest.json), a ckpt-NNNNNNNN dir, or "none"
    out: str
    model_config: str = ""  # TrainConfig JSON for --init none (e.g. a pre-training run's config.json)
    train_fraction: float = 1.0  # seeded share of train expressions
    seed: int = 0
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-4  # 4e-5 is the paper's for BERT-base at batch 256; a tiny model needs more
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    head_dropout: float = 0.1
    head: str = "linear"  # "linear" (ViLBERT's) | "grounding" (the pre-trained f_align, expression as phrase)
    max_regions: int = 0  # 0: the pre-training config's max_regions
    allow_pickle: bool = False
    image_id: str = "auto"  # REFER image → region sample key: auto | stem | int (trainer.tasks.rec.refer)
    id_map: str = ""  # or a mapping file (COCO instances JSON, or TSV stem<TAB>region image_id)
    device: str = "auto"
    cpu_threads: int = 0  # 0: all cores
    progress: bool = True


# ---------------------------------------------------------------------------------------------
# Model


class RECModel(nn.Module):
    """Pre-trained encoder + a score per region token.

    ``head="linear"``: ``score(r) = w · dropout(h_r) + b`` (ViLBERT's RefCOCO+ head; new weights).
    ``head="grounding"``: the pre-training grounding head ``f_align`` scores (expression, region) with
    the whole expression as the phrase, so what the grounding loss trained is kept, not dropped. Its
    weights come from the checkpoint whatever the variant (untrained, as initialised, when λ_gnd = 0).
    """

    def __init__(self, encoder: nn.Module, dropout: float = 0.1, grounding: GroundingHead | None = None):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.grounding = grounding
        self.score = nn.Linear(encoder.visual_dim, 1) if grounding is None else None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B, R]``; padding regions get ``-inf`` so softmax and argmax ignore them."""
        enc = self.encoder(batch["input_ids"], batch["text_mask"], batch["feat"], batch["boxes"], batch["region_mask"])
        regions = self.dropout(enc.regions)  # [B, R, Hv]
        if self.grounding is None:
            logits = self.score(regions).squeeze(-1)
        else:
            # The phrase is the expression without [CLS] and [SEP]: tokens [1, n - 1).
            n = batch["text_mask"].sum(1)  # [B]
            logits = self.grounding.score_regions(enc.text, regions, torch.ones_like(n), (n - 1).clamp(min=2))
        return logits.float().masked_fill(~batch["region_mask"], float("-inf"))


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


def build_rec_model(cfg: TrainConfig, ckpt: Path | None, feat_dim: int, num_classes: int, vocab: int, dropout: float,
                    head: str = "linear") -> RECModel:
    """Build the pre-training model class, load the checkpoint into it, keep its encoder (and grounding head)."""
    if head not in HEADS:
        raise ValueError(f"REC head {head!r} is not one of {HEADS}")
    model = build_model(cfg, feat_dim, num_classes, vocab)
    if ckpt is not None:
        try:
            load_checkpoint(ckpt, model)
        except RuntimeError as e:  # shape mismatch: other feature width, class count or vocabulary
            raise ValueError(f"{ckpt}: weights do not fit a model for these regions ({feat_dim}-d features, {num_classes} classes): {e}") from e
    return RECModel(model.encoder, dropout, model.grounding if head == "grounding" else None)


# ---------------------------------------------------------------------------------------------
# Data


def make_examples(expressions: list[Expression], proposals: dict[str, RegionRecord], tokenizer, max_len: int) -> list[dict[str, Any]]:
    """Tokenised text, relative proposal boxes and the training target of each expression."""
    out = []
    for e in expressions:
        rec = proposals[e.image_id]
        wh = np.array([rec.image_w, rec.image_h] * 2, dtype=np.float32)
        ious = box_iou(rec.boxes, e.gt_box[None])[:, 0]
        ids = tokenizer(e.text, truncation=True, max_length=max_len)["input_ids"]
        out.append(
            {
                "expr": e,
                "input_ids": np.asarray(ids, np.int64),
                "feat": rec.features,
                "boxes": np.clip(rec.boxes / wh, 0.0, 1.0),
                "target": int(ious.argmax()),
            }
        )
    return out


def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    b = len(examples)
    t = max(ex["input_ids"].size for ex in examples)
    r = max(ex["feat"].shape[0] for ex in examples)
    d = examples[0]["feat"].shape[1]
    out = {
        "input_ids": torch.zeros(b, t, dtype=torch.long),
        "text_mask": torch.zeros(b, t, dtype=torch.bool),
        "feat": torch.zeros(b, r, d, dtype=torch.float32),
        "boxes": torch.zeros(b, r, 4),
        "region_mask": torch.zeros(b, r, dtype=torch.bool),
        "target": torch.tensor([ex["target"] for ex in examples], dtype=torch.long),
    }
    for i, ex in enumerate(examples):
        n, nr = ex["input_ids"].size, ex["feat"].shape[0]
        out["input_ids"][i, :n] = torch.from_numpy(ex["input_ids"])
        out["text_mask"][i, :n] = True
        out["feat"][i, :nr] = torch.from_numpy(ex["feat"].astype(np.float32))
        out["boxes"][i, :nr] = torch.from_numpy(ex["boxes"])
        out["region_mask"][i, :nr] = True
    return out


def train_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded ``fraction`` of ``n`` training expressions (at least one)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train fraction must lie in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(n)
    k = max(1, int(round(n * fraction)))
    return np.sort(np.random.default_rng([seed, 0xF1E]).choice(n, size=k, replace=False))


# ---------------------------------------------------------------------------------------------
# Train and evaluate


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def fit(model: RECModel, examples: list[dict[str, Any]], cfg: FinetuneConfig, device: torch.device) -> list[float]:
    """Fixed-step training over seeded reshuffles of ``examples``; returns the loss per step."""
    opt = make_optimizer(model, cfg)  # AdamW, no decay on biases and norms (uses cfg.lr, cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 0xBA7C])
    warmup = int(math.ceil(cfg.warmup_frac * cfg.steps))
    order: list[int] = []
    losses = []
    progress = None
    if cfg.progress:
        from tqdm import tqdm

        progress = tqdm(total=cfg.steps, desc="finetune rec", unit="step", dynamic_ncols=True)
    model.train()
    for step in range(cfg.steps):
        while len(order) < cfg.batch_size:  # epochs of seeded permutations, concatenated
            order.extend(rng.permutation(len(examples)).tolist())
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        batch = to_device(collate([examples[i] for i in idx]), device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.steps, cfg.lr, warmup)
        loss = F.cross_entropy(model(batch), batch["target"])
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
            log.info("step %d loss %.4f", step + 1, float(np.mean(losses[-50:])))
    if progress is not None:
        progress.close()
    return losses


@torch.no_grad()
def predict(model: RECModel, examples: list[dict[str, Any]], device: torch.device, batch_size: int = 128) -> np.ndarray:
    """Index of the top-scored proposal of each example."""
    model.eval()
    out = []
    for i in range(0, len(examples), batch_size):
        out.append(model(to_device(collate(examples[i : i + batch_size]), device)).argmax(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def swap_texts(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The control for "does the model read the expression?": each example with the text of another
    expression of the same image that names a different object (the next such one in order, wrapping
    round), its target unchanged. Examples whose image has no such expression are left out."""
    by_image: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_image[ex["expr"].image_id].append(i)
    out = []
    for i, ex in enumerate(examples):
        e = ex["expr"]
        others = [j for j in by_image[e.image_id] if not np.array_equal(examples[j]["expr"].gt_box, e.gt_box)]
        if others:
            j = next((j for j in others if j > i), others[0])
            out.append({**ex, "input_ids": examples[j]["input_ids"]})
    return out


def _predict_boxes(model: RECModel, examples: list[dict[str, Any]], proposals: dict[str, RegionRecord],
                   device: torch.device) -> tuple[list[Expression], np.ndarray, np.ndarray, np.ndarray]:
    """Expressions, predicted proposal index, its box ``[N, 4]`` and the ground-truth box ``[N, 4]``."""
    pred = predict(model, examples, device)
    exprs = [ex["expr"] for ex in examples]
    pred_boxes = np.stack([proposals[e.image_id].boxes[p] for e, p in zip(exprs, pred)]) if exprs else np.zeros((0, 4), np.float32)
    gt = np.stack([e.gt_box for e in exprs]) if exprs else np.zeros((0, 4), np.float32)
    return exprs, pred, pred_boxes, gt


def evaluate(model: RECModel, examples: list[dict[str, Any]], proposals: dict[str, RegionRecord], device: torch.device,
             control: bool = False) -> tuple[dict[str, Any], list[dict]]:
    """Metrics per split, per (split, need), and one prediction line per expression.

    With ``control``, each split also gets ``acc_swapped_text``: accuracy against the true target when
    the expression is swapped for one naming another object of the image (:func:`swap_texts`). A
    model that reads the text falls far below ``acc``; one that only ranks objectness does not.
    """
    exprs, pred, pred_boxes, gt = _predict_boxes(model, examples, proposals, device)
    boxes = [proposals[e.image_id].boxes for e in exprs]
    metrics: dict[str, Any] = {}
    for split in sorted({e.split for e in exprs}, key=SPLITS.index):
        sel = [i for i, e in enumerate(exprs) if e.split == split]
        metrics[split] = rec_accuracy(pred_boxes[sel], gt[sel], [boxes[i] for i in sel])
        needs = sorted({n for i in sel for n in exprs[i].needs})
        if needs:
            metrics[split]["by_need"] = {
                n: rec_accuracy(pred_boxes[[i for i in sel if n in exprs[i].needs]], gt[[i for i in sel if n in exprs[i].needs]]) for n in needs
            }
    if control:
        s_exprs, _, s_pred_boxes, s_gt = _predict_boxes(model, swap_texts(examples), proposals, device)
        for split in metrics:
            sel = [i for i, e in enumerate(s_exprs) if e.split == split]
            if sel:
                m = rec_accuracy(s_pred_boxes[sel], s_gt[sel])
                metrics[split]["acc_swapped_text"], metrics[split]["n_swapped_text"] = m["acc"], m["n"]
    lines = [
        {"sent_id": e.sent_id, "split": e.split, "pred": int(p), "iou": float(box_iou(pb[None], e.gt_box[None])[0, 0])}
        for e, p, pb in zip(exprs, pred, pred_boxes)
    ]
    return metrics, lines


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Load, fine-tune on train, evaluate on val/testA/testB, write OUT/results.json. Returns the results."""
    start = time.perf_counter()
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(cfg.cpu_threads or os.cpu_count() or 1)
    pcfg, ckpt = resolve_init(cfg.init, cfg.model_config)
    max_regions = cfg.max_regions or pcfg.max_regions
    expressions, proposals, _ = join_refer(cfg.refer, cfg.regions, cfg.image_id, cfg.id_map, cfg.allow_pickle, max_regions)
    tokenizer = load_tokenizer(pcfg.tokenizer)
    first = next(iter(proposals.values()))
    feat_dim, num_classes = int(first.features.shape[1]), int(first.cls_prob.shape[1]) if first.cls_prob is not None else 1

    train_exprs = [e for e in expressions if e.split == "train"]
    if not train_exprs:
        raise ValueError(f"{cfg.refer}: no expressions in the train split")
    keep = train_subset(len(train_exprs), cfg.train_fraction, cfg.seed)
    train_ex = make_examples([train_exprs[i] for i in keep], proposals, tokenizer, pcfg.max_text_len)
    eval_ex = make_examples([e for e in expressions if e.split in EVAL_SPLITS], proposals, tokenizer, pcfg.max_text_len)
    log.info("%d train expressions (fraction %g of %d), %d to evaluate, init %s", len(train_ex), cfg.train_fraction, len(train_exprs), len(eval_ex), ckpt or "random")

    torch.manual_seed(cfg.seed)
    model = build_rec_model(pcfg, ckpt, feat_dim, num_classes, len(tokenizer), cfg.head_dropout, cfg.head).to(device)
    losses = fit(model, train_ex, cfg, device)
    metrics, lines = evaluate(model, eval_ex, proposals, device, control=True)
    train_metrics, _ = evaluate(model, train_ex, proposals, device)
    results = {
        "config": asdict(cfg),
        "init_checkpoint": str(ckpt) if ckpt else None,
        "pretrain_config": pcfg.to_dict(),
        "train_expressions": len(train_ex),
        "train_expressions_available": len(train_exprs),
        "train_acc": train_metrics.get("train", {}).get("acc"),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "splits": metrics,
        "wall_s": round(time.perf_counter() - start, 2),
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "predictions.jsonl", "".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))
    atomic.write_text(out / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    log.info("%s", " | ".join(f"{s} acc {m['acc']:.3f} (>0.5: {m['acc_strict']:.3f}, oracle {m['oracle']:.3f}, "
                              f"swapped text {m.get('acc_swapped_text', float('nan')):.3f})" for s, m in metrics.items()))
    return results


def parse_args(argv: list[str] | None = None) -> FinetuneConfig:
    d = FinetuneConfig("", "", "", "")
    ap = argparse.ArgumentParser(prog="python -m trainer.finetune_rec", description="Fine-tune and evaluate referring-expression comprehension.")
    ap.add_argument("--refer", required=True, help="REFER directory: refs.json (or refs(unc).p with --allow-pickle) + instances.json")
    ap.add_argument("--regions", required=True, help="region shard directory of the REFER images (proposals)")
    ap.add_argument("--init", required=True, help="pre-training run dir, checkpoint dir, or 'none' (random init; needs --model-config)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model-config", default="", help="TrainConfig JSON for --init none")
    ap.add_argument("--train-fraction", type=float, default=d.train_fraction)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    ap.add_argument("--warmup-frac", type=float, default=d.warmup_frac)
    ap.add_argument("--head-dropout", type=float, default=d.head_dropout)
    ap.add_argument("--head", default=d.head, choices=HEADS, help="region scorer: linear on region tokens (ViLBERT), or the pre-trained grounding head")
    ap.add_argument("--max-regions", type=int, default=d.max_regions, help="0: the pre-training config's")
    ap.add_argument("--allow-pickle", action="store_true", help=f"read refs(unc).p when there is no refs.json: {PICKLE_RISK}")
    ap.add_argument("--image-id", default=d.image_id, choices=("auto", "stem", "int"),
                    help="how a REFER image names its region sample: instances.json file_name stem, COCO integer id, or auto")
    ap.add_argument("--id-map", default=d.id_map, help="mapping file file-stem → region image_id (COCO instances JSON or TSV)")
    ap.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    ap.add_argument("--cpu-threads", type=int, default=d.cpu_threads)
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    return FinetuneConfig(**vars(ap.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_finetune(parse_args(argv))


if __name__ == "__main__":
    main()
