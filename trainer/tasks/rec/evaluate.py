"""REC evaluation: predicted boxes, accuracy per split and per need, the swapped-text control, prediction lines."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from schemas.boxes import box_iou
from schemas.records import RegionRecord
from trainer.tasks.finetune import predict
from trainer.tasks.rec.data import collate, swap_texts
from trainer.tasks.rec.metrics import rec_accuracy
from trainer.tasks.rec.model import RECModel
from trainer.tasks.rec.refer import SPLITS, Expression


def _predict_boxes(model: RECModel, examples: list[dict[str, Any]], proposals: dict[str, RegionRecord],
                   device: torch.device) -> tuple[list[Expression], np.ndarray, np.ndarray, np.ndarray]:
    """Expressions, predicted proposal index, its box ``[N, 4]`` and the ground-truth box ``[N, 4]``."""
    pred = predict(model, examples, collate, device)
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
