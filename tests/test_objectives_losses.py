"""μ-VLA and GroundedBERT objectives (trainer.objectives): values computed by hand, or by POT for OT,
and each loss driven down by a few Adam steps on one batch."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

ot = pytest.importorskip("ot")  # POT: the reference for the partial-OT solver

from trainer.objectives import (  # noqa: E402
    Curriculum,
    cosine_cost,
    entropic_partial_ot,
    grounded_alignment_losses,
    itm_loss,
    itm_self_weights,
    link_phrases_to_regions,
    masked_region_classification_loss,
    masked_region_feature_regression_loss,
    masked_token_loss,
    partial_ot_loss,
    region_tag_losses,
    region_to_token_loss,
)
from trainer.objectives.masked import IGNORE  # noqa: E402

LN = math.log


def test_masked_token_loss_by_hand():
    logits = torch.zeros(1, 3, 3)
    logits[0, 2] = torch.tensor([0.0, LN(2), 0.0])  # p = 1/4, 2/4, 1/4
    labels = torch.tensor([[IGNORE, 0, 1]])
    t = masked_token_loss(logits, labels)
    assert t.count.item() == 2
    assert t.sum.item() == pytest.approx(LN(3) + LN(2), abs=1e-6)
    assert t.mean.item() == pytest.approx((LN(3) + LN(2)) / 2, abs=1e-6)
    empty = masked_token_loss(logits, torch.full((1, 3), IGNORE))
    assert empty.count.item() == 0 and empty.mean.item() == 0.0
    with pytest.raises(ValueError, match="do not fit"):
        masked_token_loss(logits, labels[:, :2])


def test_masked_region_classification_by_hand():
    logits = torch.zeros(1, 2, 2)  # predicted: uniform
    target = torch.tensor([[[2.0, 0.0], [0.3, 0.7]]])  # first row renormalised to [1, 0]
    t = masked_region_classification_loss(logits, target, torch.tensor([[True, False]]))
    assert t.count.item() == 1 and t.sum.item() == pytest.approx(LN(2), abs=1e-6)  # KL([1,0] ‖ [½,½])
    both = masked_region_classification_loss(logits, target, torch.tensor([[True, True]]))
    kl2 = 0.3 * LN(0.3 / 0.5) + 0.7 * LN(0.7 / 0.5)
    assert both.sum.item() == pytest.approx(LN(2) + kl2, abs=1e-6)


def test_masked_region_feature_regression_by_hand():
    pred = torch.tensor([[[1.0, 2.0], [5.0, 5.0]]], requires_grad=True)
    target = torch.zeros(1, 2, 2)
    t = masked_region_feature_regression_loss(pred, target, torch.tensor([[True, False]]))
    assert t.count.item() == 1 and t.sum.item() == pytest.approx(2.5)  # (1 + 4) / 2
    t.mean.backward()
    assert pred.grad.tolist() == [[[1.0, 2.0], [0.0, 0.0]]]  # 2·(pred − target)/D; unmasked: none


def test_region_tag_losses_bundle_the_three_terms():
    out = {"mlm_logits": torch.zeros(1, 2, 3), "region_logits": torch.zeros(1, 1, 2), "region_feat_pred": torch.ones(1, 1, 2)}
    batch = {"tag_labels": torch.tensor([[IGNORE, 2]]), "region_cls": torch.tensor([[[1.0, 0.0]]]),
             "region_feat": torch.zeros(1, 1, 2), "region_masked": torch.tensor([[True]])}
    terms = region_tag_losses(out, batch)
    assert set(terms) == {"tag_mlm", "mrc", "mrfr"}
    assert terms["tag_mlm"].mean.item() == pytest.approx(LN(3), abs=1e-6)
    assert terms["mrc"].mean.item() == pytest.approx(LN(2), abs=1e-6)
    assert terms["mrfr"].mean.item() == pytest.approx(1.0)


def test_link_phrases_to_most_similar_region_tag():
    regions = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    phrases = torch.tensor([[[1.0, 0.1], [0.0, 2.0], [3.0, 3.0]]])
    link, sim = link_phrases_to_regions(phrases, regions, torch.tensor([[True, True, True]]), torch.tensor([[True, True, False]]))
    assert link.tolist() == [[0, 1, -1]]
    assert sim[0, 0].item() == pytest.approx(1.0 / math.sqrt(1.01), abs=1e-6)
    assert sim[0, 2].item() == 0.0
    # With region 0 padded, phrase 0 goes to region 2: cos = 1.1 / (√2·√1.01).
    link, sim = link_phrases_to_regions(phrases, regions, torch.tensor([[False, True, True]]))
    assert link.tolist() == [[2, 1, 2]]
    assert sim[0, 0].item() == pytest.approx(1.1 / (math.sqrt(2) * math.sqrt(1.01)), abs=1e-6)
    none, _ = link_phrases_to_regions(phrases, regions, torch.zeros(1, 3, dtype=torch.bool))
    assert none.tolist() == [[-1, -1, -1]]


def test_region_to_token_loss_by_hand():
    logits = torch.log(torch.tensor([[[1.0, 2.0, 3.0, 2.0], [1.0, 1.0, 1.0, 1.0]]]))  # region 0: p = 1/8, 2/8, 3/8, 2/8
    link = torch.tensor([[0, 1, -1, 0]])
    tokens = torch.tensor([[[1, 2], [0, IGNORE], [3, IGNORE], [IGNORE, IGNORE]]])
    t = region_to_token_loss(logits, link, tokens, region_masked=torch.tensor([[True, False]]))
    # Only phrase 0 counts: linked to a masked region, with tokens. Target ½ on tokens 1 and 2.
    assert t.count.item() == 1
    assert t.sum.item() == pytest.approx(-0.5 * (LN(2 / 8) + LN(3 / 8)), abs=1e-6)
    both = region_to_token_loss(logits, link, tokens, region_masked=torch.tensor([[True, True]]))
    assert both.count.item() == 2 and both.sum.item() == pytest.approx(t.sum.item() + LN(4), abs=1e-6)


def test_itm_loss_and_self_weights_by_hand():
    logit = torch.tensor([0.0, LN(3)], requires_grad=True)
    label = torch.tensor([1.0, 0.0])
    assert itm_self_weights(logit, label, epoch=0).tolist() == [1.0, 1.0]  # first epoch: unweighted
    t = itm_loss(logit, label, itm_self_weights(logit, label, epoch=0))
    assert t.sum.item() == pytest.approx(LN(2) + LN(4), abs=1e-6) and t.count.item() == 2
    w = itm_self_weights(logit, label, epoch=1)
    assert w.tolist() == [0.5, 1.0] and not w.requires_grad  # positive: σ(0); negative: 1
    t = itm_loss(logit, label, w)
    assert t.sum.item() == pytest.approx(0.5 * LN(2) + LN(4), abs=1e-6) and t.count.item() == 1.5
    with pytest.raises(ValueError):
        itm_self_weights(logit, label, epoch=-1)


def test_curriculum_switches_and_log():
    c = Curriculum(region_phrase_at=3, image_sentence_at=5)
    assert c.active(0) == {"region_tag"} and c.active(2) == {"region_tag"}
    assert c.active(3) == {"region_tag", "region_phrase"}
    assert c.active(5) == c.active(10**6) == {"region_tag", "region_phrase", "image_sentence"}
    events = [c.observe(s) for s in range(8)]
    assert [(e.step, e.added) for e in events if e] == [(0, ("region_tag",)), (3, ("region_phrase",)), (5, ("image_sentence",))]
    assert len(c.log) == 3 and c.log[-1].active == ("region_tag", "region_phrase", "image_sentence")
    resumed = Curriculum.from_state_dict(c.state_dict())
    assert resumed == c and resumed.observe(8) is None  # a resumed run logs no spurious switch
    assert Curriculum(4, 4).active(4) == {"region_tag", "region_phrase", "image_sentence"}
    with pytest.raises(ValueError, match="region_phrase_at"):
        Curriculum(region_phrase_at=6, image_sentence_at=5)


# ---------------------------------------------------------------------------------------------
# Partial OT


def test_entropic_partial_ot_equals_pot_batched_with_padding():
    g = torch.Generator().manual_seed(0)
    tokens, regions = torch.randn(3, 5, 8, generator=g), torch.randn(3, 4, 8, generator=g)
    tmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]).bool()
    rmask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]).bool()
    s, reg = 0.6, 0.1
    term, plan = partial_ot_loss(tokens, regions, tmask, rmask, s=s, reg=reg, num_iter=300)
    cost = cosine_cost(tokens, regions).double()
    total = 0.0
    for i in range(3):
        t, n = int(tmask[i].sum()), int(rmask[i].sum())
        a, b, c = np.full(t, 1 / t), np.full(n, 1 / n), cost[i, :t, :n].numpy()
        ref, log = ot.partial.entropic_partial_wasserstein(a, b, c, reg=reg, m=s, numItermax=300, log=True)
        np.testing.assert_allclose(plan[i, :t, :n].double().numpy(), ref, atol=1e-6)
        assert plan[i, t:].abs().sum() == 0 and plan[i, :, n:].abs().sum() == 0  # padding moves nothing
        assert plan[i].sum().item() == pytest.approx(s, abs=1e-5)
        total += float(log["partial_w_dist"])
    assert term.count.item() == 3 and term.sum.item() == pytest.approx(total, abs=1e-5)


def test_small_reg_approaches_exact_partial_wasserstein():
    cost = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)
    a = b = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    for s, by_hand in ((0.5, 0.0), (1.0, 0.5)):  # s=½: token0→region0 at cost 0; s=1: plus ½ at cost 1
        exact = ot.partial.partial_wasserstein(a[0].numpy(), b[0].numpy(), cost[0].numpy(), m=s)
        assert float((exact * cost[0].numpy()).sum()) == pytest.approx(by_hand)
        plan = entropic_partial_ot(a, b, cost, s, reg=0.005, num_iter=2000)
        assert float((plan * cost).sum()) == pytest.approx(by_hand, abs=0.02)
    g = torch.Generator().manual_seed(1)
    c = torch.rand(1, 6, 4, generator=g, dtype=torch.float64) * 2
    a, b = torch.full((1, 6), 1 / 6, dtype=torch.float64), torch.full((1, 4), 0.25, dtype=torch.float64)
    exact = ot.partial.partial_wasserstein(a[0].numpy(), b[0].numpy(), c[0].numpy(), m=0.4)
    plan = entropic_partial_ot(a, b, c, 0.4, reg=0.005, num_iter=3000)
    assert float((plan * c).sum()) == pytest.approx(float((exact * c[0].numpy()).sum()), abs=0.01)


def test_partial_ot_gradient_is_the_plan_and_inputs_are_checked():
    g = torch.Generator().manual_seed(2)
    tokens = torch.randn(2, 3, 4, generator=g, requires_grad=True)
    regions = torch.randn(2, 2, 4, generator=g, requires_grad=True)
    mask_t, mask_r = torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool)
    term, plan = partial_ot_loss(tokens, regions, mask_t, mask_r, s=0.5)
    term.sum.backward()
    # ∂/∂tokens of Σ T*·C with T* fixed: the same as back-propagating the plan through the cost.
    t2, r2 = tokens.detach().clone().requires_grad_(), regions.detach().clone().requires_grad_()
    (plan.detach() * cosine_cost(t2, r2)).sum().backward()
    torch.testing.assert_close(tokens.grad, t2.grad)
    torch.testing.assert_close(regions.grad, r2.grad)
    with pytest.raises(ValueError, match="mass fraction"):
        partial_ot_loss(tokens, regions, mask_t, mask_r, s=0.0)
    # A pair without a real token (or region) is left out, not refused: refusing would read the device.
    no_words = mask_t.clone()
    no_words[0] = False
    term, plan = partial_ot_loss(tokens.detach(), regions.detach(), no_words, mask_r, s=0.5)
    alone, _ = partial_ot_loss(tokens.detach()[1:], regions.detach()[1:], mask_t[1:], mask_r[1:], s=0.5)
    assert term.count.item() == 1 and plan[0].abs().sum() == 0 and torch.isfinite(plan).all()
    assert term.sum.item() == pytest.approx(alone.sum.item(), abs=1e-6)
    with pytest.raises(ValueError, match="mass must be in"):
        entropic_partial_ot(torch.full((1, 2), 0.5), torch.full((1, 2), 0.5), torch.zeros(1, 2, 2), 1.5)


def test_grounded_alignment_local_term_counts_matched_pairs_only():
    g = torch.Generator().manual_seed(3)
    out = {"token_states": torch.randn(2, 3, 4, generator=g), "region_states": torch.randn(2, 2, 4, generator=g), "itm_logit": torch.zeros(2)}
    batch = {"token_mask": torch.ones(2, 3, dtype=torch.bool), "region_mask": torch.ones(2, 2, dtype=torch.bool), "itm_label": torch.tensor([1.0, 0.0])}
    terms = grounded_alignment_losses(out, batch, s=0.5)
    only_first, _ = partial_ot_loss(out["token_states"][:1], out["region_states"][:1], batch["token_mask"][:1], batch["region_mask"][:1], s=0.5)
    assert terms["local"].count.item() == 1 and terms["local"].sum.item() == pytest.approx(only_first.sum.item(), abs=1e-6)
    assert terms["global"].mean.item() == pytest.approx(LN(2), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Over-fitting one batch


class Tiny(torch.nn.Module):
    """Token and region encoders with the heads the objectives read; no cross-modal layer needed."""

    def __init__(self, vocab=11, classes=5, feat=6, hidden=16):
        super().__init__()
        self.tok = torch.nn.Embedding(vocab, hidden)
        self.reg = torch.nn.Linear(feat, hidden)
        self.mlm = torch.nn.Linear(hidden, vocab)
        self.cls = torch.nn.Linear(hidden, classes)
        self.feat = torch.nn.Linear(hidden, feat)
        self.itm = torch.nn.Linear(2 * hidden, 1)

    def forward(self, ids, feats):
        t, r = self.tok(ids), torch.tanh(self.reg(feats))
        ctx = t + r.mean(1, keepdim=True)  # tokens see the image
        pooled = torch.cat([t.mean(1), r.mean(1)], -1)
        return {"token_states": t, "region_states": r, "mlm_logits": self.mlm(ctx), "region_logits": self.cls(r),
                "region_feat_pred": self.feat(r), "region_token_logits": self.mlm(r), "itm_logit": self.itm(pooled).squeeze(-1)}


def _batch():
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 11, (3, 5), generator=g)
    feats = torch.randn(3, 4, 6, generator=g)
    labels = torch.full((3, 5), IGNORE)
    labels[:, 1] = ids[:, 1]
    labels[:, 3] = ids[:, 3]
    cls = torch.softmax(torch.randn(3, 4, 5, generator=g) * 3, -1)
    masked = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1]]).bool()
    return ids, feats, {"tag_labels": labels, "region_cls": cls, "region_feat": feats, "region_masked": masked,
                        "token_mask": torch.ones(3, 5, dtype=torch.bool), "region_mask": torch.ones(3, 4, dtype=torch.bool),
                        "itm_label": torch.tensor([1.0, 0.0, 1.0])}


LOSSES = {
    "tag_mlm": lambda o, b: region_tag_losses(o, b)["tag_mlm"],
    "mrc": lambda o, b: region_tag_losses(o, b)["mrc"],
    "mrfr": lambda o, b: region_tag_losses(o, b)["mrfr"],
    "region_to_token": lambda o, b: region_to_token_loss(
        o["region_token_logits"], torch.tensor([[0, 2], [1, -1], [3, 0]]), torch.tensor([[[1, 2], [4, IGNORE]], [[7, IGNORE], [0, 0]], [[5, 6], [9, 9]]]),
        b["region_masked"]),
    "itm_self_weighted": lambda o, b: itm_loss(o["itm_logit"], b["itm_label"], itm_self_weights(o["itm_logit"], b["itm_label"], epoch=1)),
    "partial_ot_local": lambda o, b: grounded_alignment_losses(o, b, s=0.5, reg=0.05, num_iter=100)["local"],
    "grounded_global": lambda o, b: grounded_alignment_losses(o, b, s=0.5, reg=0.05, num_iter=20)["global"],
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_adam_overfits_one_batch(name):
    torch.manual_seed(0)
    model = Tiny()
    ids, feats, batch = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    values = []
    for _ in range(40):
        loss = LOSSES[name](model(ids, feats), batch).mean
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < 0.5 * values[0], f"{name}: {values[0]:.4f} → {values[-1]:.4f}"
