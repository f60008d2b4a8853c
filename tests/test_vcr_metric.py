"""VCR Q→A, QA→R and Q→AR computed by hand; the majority baseline; head, linked-region embedding and loss."""
from __future__ import annotations

import pytest
import torch

from trainer.tasks.vcr import VCRError, VCRExample, VCRHead, add_linked_regions, evaluate, majority_predictions, vcr_loss

CH = (("a",),) * 4


def _ex(i, a, r):
    return VCRExample(f"val-{i}", f"m/{i}.jpg", f"m/{i}.json", ("person",), ("why", "?"), CH, CH, a, r)


EXAMPLES = [_ex(0, 0, 1), _ex(1, 2, 2), _ex(2, 3, 0), _ex(3, 1, 3)]


def test_q2ar_by_hand():
    answers = {"val-0": 0, "val-1": 2, "val-2": 1, "val-3": 1}  # right, right, wrong, right → 75
    rationales = {"val-0": 1, "val-1": 0, "val-2": 0, "val-3": 3}  # right, wrong, right, right → 75
    s = evaluate(answers, rationales, EXAMPLES)
    assert (s.q2a, s.qa2r, s.n) == (75.0, 75.0, 4)
    assert s.q2ar == 50.0  # both right only for val-0 and val-3: not 75 * 75 / 100


def test_scores_are_argmaxed_first_max_wins():
    answers = {"val-0": [0.9, 0.1, 0.0, 0.0], "val-1": [1.0, 1.0, 1.0, 1.0], "val-2": [0, 0, 0, 5], "val-3": [0, 2, 0, 2]}
    rationales = {e.annot_id: e.rationale_label for e in EXAMPLES}
    s = evaluate(answers, rationales, EXAMPLES)
    assert s.q2a == 75.0 and s.q2ar == 75.0  # val-1 ties → choice 0 (wrong)


def test_prediction_errors():
    full = {e.annot_id: 0 for e in EXAMPLES}
    with pytest.raises(VCRError, match=r"rationale predictions: annot_id val-3: no prediction"):
        evaluate(full, {k: 0 for k in list(full)[:3]}, EXAMPLES)
    with pytest.raises(VCRError, match=r"answer predictions: annot_id val-9: not an evaluated question"):
        evaluate({**full, "val-9": 0}, full, EXAMPLES)
    with pytest.raises(VCRError, match=r"annot_id val-0 answer: predicted choice 4"):
        evaluate({**full, "val-0": 4}, full, EXAMPLES)


def test_majority_baseline():
    train = [_ex(10, 2, 1), _ex(11, 2, 3), _ex(12, 0, 3), _ex(13, 1, 1)]  # answer 2 twice; rationale 1 and 3 tie → 1
    a, r = majority_predictions(train, EXAMPLES)
    assert set(a.values()) == {2} and set(r.values()) == {1}
    s = evaluate(a, r, EXAMPLES)
    assert (s.q2a, s.qa2r, s.q2ar) == (25.0, 25.0, 0.0)


def test_linked_region_embedding_adds_the_referenced_feature():
    emb = torch.zeros(1, 4, 3)
    regions = torch.tensor([[[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]]])
    out = add_linked_regions(emb, regions, torch.tensor([[-1, 2, -1, 0]]))
    assert torch.equal(out[0], torch.tensor([[0, 0, 0], [0, 0, 3.0], [0, 0, 0], [1.0, 0, 0]]))
    with pytest.raises(ValueError, match="link points at region 3"):
        add_linked_regions(emb, regions, torch.tensor([[3, -1, -1, -1]]))


def test_head_scores_four_choices_and_loss_learns():
    torch.manual_seed(0)
    head = VCRHead(8, 6, fused_dim=8, dropout=0.0)
    cls, img = torch.randn(8, 8), torch.randn(8, 6)
    assert head(cls, img).shape == (2, 4)
    with pytest.raises(ValueError, match="not a multiple of 4"):
        head(cls[:7], img[:7])
    labels = torch.tensor([1, 3])
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = vcr_loss(head(cls, img), labels).item()
    for _ in range(50):
        opt.zero_grad()
        loss = vcr_loss(head(cls, img), labels)
        loss.backward()
        opt.step()
    assert abs(first - torch.log(torch.tensor(4.0)).item()) < 0.5 and loss.item() < 0.1
