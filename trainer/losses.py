"""The pre-training losses, as (sum, count) so that any batch split gives the same mean.

``L = Σ_t λ_t · L_t`` where each term is a mean over its own items. The terms (``TERMS``):

| term | items | methods |
|---|---|---|
| ``word`` | masked tokens | all (μ-VLA: MLM on retrieved sentences, image–sentence stage) |
| ``img`` | masked regions | all (μ-VLA: region–tag stage) |
| ``align`` | (image, text) examples | all (ITM; μ-VLA: retrieved pairs, weighted by the model's own score after the first epoch) |
| ``gnd`` | sampled region-phrase pairs | ``ssga``, ``ssga+partial_ot`` (λ_gnd; weight 0 otherwise) |
| ``pot`` | matched (image, caption) pairs | ``partial_ot``, ``ssga+partial_ot`` (partial OT between token and region states) |
| ``tag_word`` | masked tag tokens | ``mu_vla`` (region–tag: MLM over the tag sentence, weight λ_word) |
| ``mrfr`` | masked regions | ``mu_vla`` (region–tag: masked region feature regression) |
| ``r2t`` | linked noun phrases | ``mu_vla`` (region–phrase: masked region-to-token classification) |

The loop divides each sum by the count over the whole global batch (all micro-batches, all ranks),
so gradient accumulation and DDP give exactly the single-process gradient; every count is known
before the forward pass. A batch is one or more *parts*, each one forward pass: a paired batch is one
part; a μ-VLA batch has one part per active curriculum stage (``region_tag``, ``region_phrase``,
``image_sentence``), each with its own text and masks over the same images.

Nothing here reads a value back to the host: masked positions arrive as index tensors built by the
loader (``mlm_pos``/``mlm_target``, ``mrc_pos``/``mrc_target``, see ``trainer.data.batch.add_targets``),
so on a GPU the step never waits on a boolean-mask ``nonzero``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from trainer.config import TrainConfig
from trainer.data.masking import IGNORE
from trainer.objectives.curriculum import STAGES
from trainer.objectives.image_sentence import itm_loss, itm_self_weights
from trainer.objectives.masked import masked_token_loss
from trainer.objectives.partial_ot import partial_ot_loss, real_pairs
from trainer.objectives.region_phrase import region_to_token_loss
from trainer.objectives.region_tag import region_tag_losses

TERMS = ("word", "img", "align", "gnd", "pot", "tag_word", "mrfr", "r2t")
_T = {t: i for i, t in enumerate(TERMS)}
PAIRED = "paired"


def uses_grounding(cfg: TrainConfig) -> bool:
    return cfg.method in ("ssga", "ssga+partial_ot")


def uses_pot(cfg: TrainConfig | None) -> bool:
    return cfg is not None and cfg.method in ("partial_ot", "ssga+partial_ot")


def batch_parts(batch: dict[str, Any], active: set[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``(kind, part)`` per forward pass: a paired batch is one part; a μ-VLA batch (``batch["mu_vla"]``)
    has one per curriculum stage in ``active`` (all when None)."""
    if not batch.get("mu_vla"):
        return [(PAIRED, batch)]
    return [(s, {**batch[s], "epoch": batch.get("epoch", 0)}) for s in STAGES if (active is None or s in active)]


def _stack(values: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    zero = torch.zeros((), device=device)
    return torch.stack([values.get(t, zero).float().to(device) for t in TERMS])


def word_mask(part: dict[str, torch.Tensor]) -> torch.Tensor:
    """Real word tokens [B, T]: the text mask without [CLS] (position 0) and the closing [SEP]."""
    m = part["text_mask"].clone()
    m[:, 0] = False
    last = (part["text_mask"].sum(1) - 1).clamp(min=0)
    m[torch.arange(m.shape[0], device=m.device), last] = False
    return m


def part_counts(kind: str, part: dict[str, torch.Tensor], cfg: TrainConfig | None = None) -> torch.Tensor:
    """Items each term averages over in one part, known before the forward pass: [len(TERMS)] float."""
    device = part["itm_label"].device
    n_mlm = (part["mlm_labels"] != IGNORE).sum()
    n_reg = part["region_masked"].sum()
    # torch.full, not torch.tensor(n, device=...): the latter copies from the host and waits for the GPU to drain.
    n_ex = torch.full((), part["itm_label"].numel(), device=device)
    if kind == PAIRED:
        c = {"word": n_mlm, "img": n_reg, "align": n_ex, "gnd": part["pair_mask"].sum()}
        if uses_pot(cfg):
            c["pot"] = ((part["itm_label"] > 0.5) & real_pairs(word_mask(part), part["region_mask"])).sum()
    elif kind == "region_tag":
        c = {"tag_word": n_mlm, "img": n_reg, "mrfr": n_reg}
    elif kind == "region_phrase":
        c = {"r2t": torch.full((), part["r2t_pos"].numel(), device=device)}
    elif kind == "image_sentence":
        # ITM weighted by the model's own score: the weights scale each pair's loss, the mean stays
        # over pairs (so the count is known before the forward pass).
        c = {"word": n_mlm, "align": n_ex}
    else:
        raise ValueError(f"unknown batch part {kind!r}")
    return _stack(c, device)


def part_sums(kind: str, out: dict[str, torch.Tensor], part: dict[str, Any], cfg: TrainConfig | None = None) -> torch.Tensor:
    """Per-term summed losses of one part's forward pass: [len(TERMS)]."""
    device = out["itm_logit"].device
    if kind == PAIRED:
        s = {
            "word": F.cross_entropy(out["mlm_logits"].float(), part["mlm_target"], reduction="sum"),
            "img": _region_kl(out["region_logits"], part["mrc_target"]),
            "align": F.binary_cross_entropy_with_logits(out["itm_logit"].float(), part["itm_label"], reduction="sum"),
            "gnd": (F.binary_cross_entropy_with_logits(out["gnd_logit"].float(), part["pair_target"], reduction="none") * part["pair_mask"]).sum(),
        }
        if uses_pot(cfg):
            tokens, regions = out["token_states"], out["region_states"]
            if tokens.shape[-1] != regions.shape[-1]:
                raise ValueError(f"partial OT needs token and region states of one width, got {tokens.shape[-1]} and {regions.shape[-1]}")
            local, _ = partial_ot_loss(tokens, regions, word_mask(part), part["region_mask"], cfg.pot_mass, cfg.pot_reg, cfg.pot_iters,
                                       pair_mask=part["itm_label"] > 0.5)
            s["pot"] = local.sum
    elif kind == "region_tag":
        # The heads ran at the masked positions only (gathered): one row of them, every row a masked region.
        t = region_tag_losses(
            {"mlm_logits": out["mlm_logits"][None], "region_logits": out["region_logits"][None], "region_feat_pred": out["region_feat_pred"][None]},
            {"tag_labels": part["mlm_target"][None], "region_cls": part["mrc_target"][None], "region_feat": part["mrfr_target"][None], "region_masked": None},
        )
        s = {"tag_word": t["tag_mlm"].sum, "img": t["mrc"].sum, "mrfr": t["mrfr"].sum}
    elif kind == "region_phrase":
        p = part["r2t_pos"].numel()
        link = torch.arange(p, device=device)[None]
        s = {"r2t": region_to_token_loss(out["r2t_logits"][None], link, part["r2t_tokens"][None], torch.ones(1, p, dtype=torch.bool, device=device)).sum}
    elif kind == "image_sentence":
        w = itm_self_weights(out["itm_logit"], part["itm_label"], int(part.get("epoch", 0)), cfg.mu_itm_warmup_epochs if cfg else 1)
        s = {"word": masked_token_loss(out["mlm_logits"][None], part["mlm_target"][None]).sum,
             "align": itm_loss(out["itm_logit"], part["itm_label"], w).sum}
    else:
        raise ValueError(f"unknown batch part {kind!r}")
    return _stack(s, device)


def _region_kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(detector distribution ‖ predicted), summed over classes and masked regions."""
    target = target / target.sum(-1, keepdim=True).clamp(min=1e-12)
    return F.kl_div(F.log_softmax(logits.float(), -1), target, reduction="sum")


def loss_counts(batch: dict[str, Any], cfg: TrainConfig | None = None, active: set[str] | None = None) -> torch.Tensor:
    """Items per term over every part of a batch: [len(TERMS)] float, on the batch's device."""
    return torch.stack([part_counts(k, p, cfg) for k, p in batch_parts(batch, active)]).sum(0)


def loss_sums(out: dict[str, torch.Tensor], batch: dict[str, Any], cfg: TrainConfig | None = None) -> torch.Tensor:
    """Per-term summed losses of a paired batch's forward pass: [len(TERMS)] (word CE, region KL, ITM
    BCE, grounding BCE, partial OT when ``cfg`` asks for it, 0 for the μ-VLA-only terms)."""
    return part_sums(PAIRED, out, batch, cfg)


def weights(cfg: TrainConfig) -> torch.Tensor:
    """λ per term for ``cfg.method``: a term the method does not train has weight 0 (it may still be logged)."""
    lam = {
        "word": cfg.lambda_word, "img": cfg.lambda_img, "align": cfg.lambda_align,
        "gnd": cfg.lambda_gnd if uses_grounding(cfg) else 0.0,
        "pot": cfg.lambda_pot if uses_pot(cfg) else 0.0,
        "tag_word": cfg.lambda_word, "mrfr": cfg.lambda_mrfr, "r2t": cfg.lambda_r2t,
    }
    return torch.tensor([lam[t] for t in TERMS])


def total_loss(sums: torch.Tensor, counts: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
    """Σ_t λ_t · sum_t / count_t, with empty terms contributing 0 (but staying in the graph)."""
    return (lambdas.to(sums.device) * sums / counts.to(sums.device).clamp(min=1)).sum()
