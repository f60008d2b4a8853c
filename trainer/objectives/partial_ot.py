"""GroundedBERT's teacher-free local alignment: partial optimal transport between token and region states.

Each (sentence, image) pair transports a fraction ``s`` of the mass between its tokens (uniform
weights over real tokens) and its regions (uniform over real regions) at cosine cost
``1 − cos(token, region)``: only the ``s`` best-matching mass has to move, so words with no region
(function words) and regions with no word (background) are left out. The loss is the transport cost.

The plan is entropic partial OT, solved by the iterative Bregman projections of Benamou et al. (2015)
exactly as POT's ``ot.partial.entropic_partial_wasserstein`` (method "sinkhorn") runs them, batched,
with padding entries held at zero mass (which gives the same plan as solving the unpadded problem).
Gradient: the plan is computed without autograd and the loss is ``Σ T*·C``, so ``∂loss/∂C = T*``
(Danskin: the gradient of an optimal transport value with respect to its cost), flowing into the
token and region states through the cost; no backward through hundreds of iterations.

The training loss reads no value back from the device (that would stall a GPU step): a pair without
a real token or region is left out of the loss and of its count instead of being refused.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.objectives.image_sentence import itm_loss
from trainer.objectives.masked import Term


def cosine_cost(tokens: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """``1 − cos`` between every token [B, T, D] and region [B, N, D] state: [B, T, N] in [0, 2]."""
    return 1.0 - torch.einsum("btd,bnd->btn", F.normalize(tokens, dim=-1), F.normalize(regions, dim=-1))


def uniform_marginals(token_mask: torch.Tensor, region_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform weights over real tokens [B, T] and real regions [B, N] (zeros on padding); each sums to 1,
    or to 0 for a pair with no real token (region): :func:`partial_ot_loss` leaves such a pair out."""
    a = token_mask.float()
    b = region_mask.float()
    return a / a.sum(-1, keepdim=True).clamp(min=1), b / b.sum(-1, keepdim=True).clamp(min=1)


def real_pairs(token_mask: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
    """[B] bool: pairs with at least one real token and one real region (the ones partial OT can align)."""
    return token_mask.any(-1) & region_mask.any(-1)


def _safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where den > 0, else 1 (a zero-mass entry stays zero)."""
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.ones_like(den))


@torch.no_grad()
def entropic_partial_ot(
    a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, mass: torch.Tensor | float, reg: float = 0.05, num_iter: int = 200,
    check: bool = True,
) -> torch.Tensor:
    """Entropic partial OT plans [B, T, N] moving ``mass`` between ``a`` [B, T] and ``b`` [B, N].

    The same iterations as POT's ``entropic_partial_wasserstein`` (sinkhorn), batched: a zero weight
    in ``a`` or ``b`` (padding) keeps its row/column at zero. ``mass``: a scalar or [B], at most
    ``min(a.sum, b.sum)`` per pair. Runs in float64 (the kernel ``exp(−C/reg)`` spans many decades).
    ``check=False``: the caller vouches for the mass (checking it reads the device); a pair with no
    weight at all then gets a zero plan.
    """
    dtype = torch.float64
    a, b, cost = a.to(dtype), b.to(dtype), cost.detach().to(dtype)
    if reg <= 0:
        raise ValueError(f"reg must be > 0, got {reg}")
    if isinstance(mass, (int, float)):
        if not mass > 0:
            raise ValueError(f"partial OT mass must be > 0, got {mass}")
        m = torch.full((cost.shape[0], 1, 1), float(mass), dtype=dtype, device=cost.device)
    else:
        m = torch.as_tensor(mass, dtype=dtype, device=cost.device).expand(cost.shape[0]).reshape(-1, 1, 1)
    if check and ((m <= 0).any() or (m.flatten() > torch.minimum(a.sum(-1), b.sum(-1)) + 1e-12).any()):
        raise ValueError("partial OT mass must be in (0, min(|a|, |b|)] for every pair")
    support = (a[:, :, None] > 0) & (b[:, None, :] > 0)
    K = torch.exp(-cost / reg) * support
    K = K * _safe_ratio(m, K.sum((1, 2), keepdim=True))
    q1, q2, q3 = torch.ones_like(K), torch.ones_like(K), torch.ones_like(K)
    for _ in range(num_iter):
        k_prev = K
        K = K * q1
        K1 = torch.minimum(_safe_ratio(a, K.sum(2)), torch.ones_like(a))[:, :, None] * K
        q1 = q1 * _safe_ratio(k_prev, K1)
        k1_prev = K1
        K1 = K1 * q2
        K2 = K1 * torch.minimum(_safe_ratio(b, K1.sum(1)), torch.ones_like(b))[:, None, :]
        q2 = q2 * _safe_ratio(k1_prev, K2)
        k2_prev = K2
        K2 = K2 * q3
        K = K2 * _safe_ratio(m, K2.sum((1, 2), keepdim=True))
        q3 = q3 * _safe_ratio(k2_prev, K)
    return K


def partial_ot_loss(
    tokens: torch.Tensor,
    regions: torch.Tensor,
    token_mask: torch.Tensor,
    region_mask: torch.Tensor,
    s: float = 0.5,
    reg: float = 0.05,
    num_iter: int = 200,
    pair_mask: torch.Tensor | None = None,
) -> tuple[Term, torch.Tensor]:
    """Partial-OT alignment loss of token states [B, T, D] and region states [B, N, D].

    ``s`` in (0, 1]: the fraction of mass transported (marginals are uniform, each summing to 1).
    ``pair_mask`` [B]: the pairs that count (matched pairs: aligning a mismatched caption would teach
    the wrong thing); default all. A pair without a real token or region never counts. Returns
    ``(Term(Σ cost, pairs), plans [B, T, N])``.
    """
    if not 0 < s <= 1:
        raise ValueError(f"transported mass fraction s must be in (0, 1], got {s}")
    cost = cosine_cost(tokens.float(), regions.float())
    a, b = uniform_marginals(token_mask, region_mask)
    plan = entropic_partial_ot(a, b, cost, s, reg, num_iter, check=False).to(cost.dtype)  # s ≤ 1 = |a| = |b|
    per_pair = (plan * cost).sum((1, 2))
    real = real_pairs(token_mask, region_mask)
    w = (real if pair_mask is None else real & pair_mask.bool()).float()
    return Term((w * per_pair).sum(), w.sum()), plan


def grounded_alignment_losses(
    out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], s: float = 0.5, reg: float = 0.05, num_iter: int = 200
) -> dict[str, Term]:
    """GroundedBERT's two terms: ``local`` (partial OT on matched pairs) and ``global`` (ITM).

    ``out``: ``token_states`` [B, T, D], ``region_states`` [B, N, D], ``itm_logit`` [B].
    ``batch``: ``token_mask`` [B, T], ``region_mask`` [B, N], ``itm_label`` [B] (1 = the caption's own image).
    """
    local, _ = partial_ot_loss(
        out["token_states"], out["region_states"], batch["token_mask"], batch["region_mask"], s, reg, num_iter, pair_mask=batch["itm_label"] > 0.5
    )
    return {"local": local, "global": itm_loss(out["itm_logit"], batch["itm_label"])}
