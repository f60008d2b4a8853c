"""μ-VLA region–tag alignment: the text is the image's own tag sentence (detector class names).

The model sees the regions with their tag sentence; three masked terms tie them together: MLM over
the tag tokens (a masked tag is recoverable from the regions), masked region classification and
masked region feature regression (a masked region is recoverable from the tags and the context).
"""
from __future__ import annotations

import torch

from trainer.objectives.masked import (
    Term,
    masked_region_classification_loss,
    masked_region_feature_regression_loss,
    masked_token_loss,
)

REGION_TAG_TERMS = ("tag_mlm", "mrc", "mrfr")


def region_tag_losses(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, Term]:
    """The three region–tag terms from model outputs and the batch.

    ``out``: ``mlm_logits`` [B, T, V], ``region_logits`` [B, N, C], ``region_feat_pred`` [B, N, D].
    ``batch``: ``tag_labels`` [B, T] (``IGNORE`` except at masked tag tokens), ``region_cls`` [B, N, C]
    (detector distribution), ``region_feat`` [B, N, D] (original features), ``region_masked`` [B, N]
    (``None``: every row is a masked region).
    """
    return {
        "tag_mlm": masked_token_loss(out["mlm_logits"], batch["tag_labels"]),
        "mrc": masked_region_classification_loss(out["region_logits"], batch["region_cls"], batch["region_masked"]),
        "mrfr": masked_region_feature_regression_loss(out["region_feat_pred"], batch["region_feat"], batch["region_masked"]),
    }
