"""The four pre-training losses, as (sum, count) so that any batch split gives the same mean.

``L = λ_word·L_word + λ_img·L_img + λ_align·L_align + λ_gnd·L_gnd`` where each term is a mean over
its own items: masked tokens, masked regions, (image, caption) examples, sampled region-phrase pairs.
The loop divides each sum by the count over the whole global batch (all micro-batches, all ranks),
so gradient accumulation and DDP give exactly the single-process gradient.

Nothing here reads a value back to the host: masked positions arrive as index tensors built by the
loader (``mlm_pos``/``mlm_target``, ``mrc_pos``/``mrc_target``, see ``trainer.data.batch.add_targets``),
so on a GPU the step never waits on a boolean-mask ``nonzero``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.config import TrainConfig
from trainer.data.masking import IGNORE

TERMS = ("word", "img", "align", "gnd")


def loss_counts(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Items each term averages over, known before the forward pass: [4] float, on the batch's device."""
    device = batch["itm_label"].device
    return torch.stack(
        [
            (batch["mlm_labels"] != IGNORE).sum(),
            batch["region_masked"].sum(),
            torch.tensor(batch["itm_label"].numel(), device=device),
            batch["pair_mask"].sum(),
        ]
    ).float()


def loss_sums(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-term summed losses: [4] (word CE, region KL, ITM BCE, grounding BCE)."""
    word = F.cross_entropy(out["mlm_logits"].float(), batch["mlm_target"], reduction="sum")
    # KL(detector distribution ‖ predicted), summed over classes and masked regions.
    target = batch["mrc_target"]
    target = target / target.sum(-1, keepdim=True).clamp(min=1e-12)
    img = F.kl_div(F.log_softmax(out["region_logits"].float(), -1), target, reduction="sum")
    align = F.binary_cross_entropy_with_logits(out["itm_logit"].float(), batch["itm_label"], reduction="sum")
    gnd_all = F.binary_cross_entropy_with_logits(out["gnd_logit"].float(), batch["pair_target"], reduction="none")
    gnd = (gnd_all * batch["pair_mask"]).sum()
    return torch.stack([word, img, align, gnd])


def weights(cfg: TrainConfig) -> torch.Tensor:
    return torch.tensor([cfg.lambda_word, cfg.lambda_img, cfg.lambda_align, cfg.lambda_gnd])


def total_loss(sums: torch.Tensor, counts: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
    """Σ_t λ_t · sum_t / count_t, with empty terms contributing 0 (but staying in the graph)."""
    return (lambdas.to(sums.device) * sums / counts.to(sums.device).clamp(min=1)).sum()
