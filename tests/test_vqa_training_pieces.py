"""Answer vocabulary, soft targets, BCE loss, ViLBERT head and prior baseline on hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch

from trainer.tasks.vqa.answers import question_accuracy
from trainer.tasks.vqa.baseline import majority_answers, majority_predictions
from trainer.tasks.vqa.head import VQAHead
from trainer.tasks.vqa.loss import vqa_bce_loss
from trainer.tasks.vqa.metric import evaluate
from trainer.tasks.vqa.reader import VQAError, VQAExample
from trainer.tasks.vqa.vocab import AnswerVocab, build_answer_vocab, soft_target, target_tensor


def ex(qid: int, mc: str, answers=None, answer_type="other", question_type="what"):
    answers = tuple(answers or [mc] * 10)
    return VQAExample(qid, qid, f"q{qid}?", question_type, answer_type, mc, answers, ("yes",) * 10)


def test_vocab_min_count_normalisation_and_order():
    train = [ex(i, "yes") for i in range(5)] + [ex(10 + i, "2") for i in range(3)] + [ex(20, "Two"), ex(21, "two")]
    train += [ex(30 + i, "red") for i in range(4)] + [ex(40, "a cat."), ex(41, "cat"), ex(42, "blue")]
    v = build_answer_vocab(train, min_count=2)
    # "2"+"Two"+"two" → "2" (5 questions), "a cat."+"cat" → "cat" (2); "blue" (1) dropped; ties alphabetical
    assert v.answers == ("2", "yes", "red", "cat") and v.counts == (5, 5, 4, 2)
    assert len(build_answer_vocab(train, min_count=5)) == 2
    assert v.index("red") == 2 and v.index("blue") is None and v.decode([1, 0]) == ["yes", "2"]


def test_vocab_counts_questions_not_answers():
    # One question whose ten answers all say "net" counts once for "net" (BUTD counts question ids).
    train = [ex(1, "net"), ex(2, "net", ["net"] * 5 + ["mesh"] * 5), ex(3, "mesh")]
    assert build_answer_vocab(train, min_count=2).answers == ("net",)
    assert build_answer_vocab(train, min_count=2, source="answers").answers == ("mesh", "net")  # all answers: mesh in 2, net in 2


def test_vocab_errors_and_roundtrip(tmp_path):
    with pytest.raises(VQAError, match="no answer occurs in 9 or more"):
        build_answer_vocab([ex(1, "yes")])
    with pytest.raises(VQAError, match="question_id 5: has no annotation"):
        build_answer_vocab([VQAExample(5, 5, "q?")])
    v = build_answer_vocab([ex(i, "yes") for i in range(9)])
    v.save(tmp_path / "vocab.json")
    assert AnswerVocab.load(tmp_path / "vocab.json") == v
    (tmp_path / "bad.json").write_text('{"answers": 3}')
    with pytest.raises(VQAError, match="bad.json: not an answer vocabulary"):
        AnswerVocab.load(tmp_path / "bad.json")


def test_soft_target_hand_computed():
    vocab = AnswerVocab(("2", "3", "4", "yes"))
    # 3 × "2", 6 × "3", 1 × "4": 0.9, 1.0, 0.3 (= min(1, 0.3·count), the leave-one-out mean)
    idx, scores = soft_target(["2", "3", "3", "2", "3", "3", "4", "3", "2", "3"], vocab)
    assert idx == [0, 1, 2] and scores == pytest.approx([0.9, 1.0, 0.3])
    idx, scores = soft_target(["2", "2", "5", "5", "5", "5", "5", "5", "5", "5"], vocab)
    assert idx == [0] and scores == pytest.approx([0.6])
    assert soft_target(["zebra"] * 10, vocab) == ([], [])  # all answers outside the vocabulary: zero target


def test_soft_target_follows_the_metric_quirks():
    vocab = AnswerVocab(("t shirt", "shirt"))
    assert soft_target(["t-shirt"] * 10, vocab) == ([], [])  # identical GT is not processed: the metric gives 0
    idx, scores = soft_target(["t-shirt"] * 9 + ["shirt"], vocab)
    assert idx == [0, 1] and scores == pytest.approx([1.0, 0.3])


def test_soft_target_equals_official_accuracy_of_each_answer():
    vocab = AnswerVocab(("yes", "no", "2", "3", "t shirt", "red", "1000", "dog"))
    cases = [["yes"] * 7 + ["no"] * 3, ["2", "two", "3", "3", "2", "2", "4", "3", "3", "3"], ["t-shirt"] * 8 + ["shirt", "red"],
             ["1,000"] * 4 + ["1000"] * 6, ["a dog"] * 5 + ["dog"] * 5, ["Red"] * 10]
    for answers in cases:
        idx, scores = soft_target(answers, vocab)
        dense = dict(zip(idx, scores))
        for i, a in enumerate(vocab.answers):
            assert dense.get(i, 0.0) == question_accuracy(a, answers), (answers, a)


def test_target_tensor():
    t = target_tensor([([0, 2], [0.3, 1.0]), ([], [])], 4)
    assert t.dtype == torch.float32 and torch.allclose(t, torch.tensor([[0.3, 0.0, 1.0, 0.0], [0.0] * 4]))


def test_bce_loss_scaled_and_mean():
    logits = torch.zeros(2, 4)
    targets = torch.tensor([[1.0, 0.0, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # at logit 0 every entry costs ln 2, whatever its target
    assert vqa_bce_loss(logits, targets, "mean").item() == pytest.approx(math.log(2))
    assert vqa_bce_loss(logits, targets).item() == pytest.approx(4 * math.log(2))  # summed over answers, mean over batch
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
    t = torch.tensor([[1.0, 0.0, 0.3, 0.0]])
    by_hand = sum(-(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x)))) for x, y in zip(logits[0].tolist(), t[0].tolist()))
    assert vqa_bce_loss(logits, t).item() == pytest.approx(by_hand, rel=1e-6)
    with pytest.raises(ValueError, match="both be"):
        vqa_bce_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    assert vqa_bce_loss(logits.bfloat16(), t).dtype == torch.float32


def test_head_shapes_structure_and_learning():
    torch.manual_seed(0)
    head = VQAHead(t_dim=12, v_dim=8, num_answers=5, fused_dim=16, dropout=0.0)
    cls, img = torch.randn(3, 12), torch.randn(3, 8)
    assert head(cls, img).shape == (3, 5)
    kinds = [type(m).__name__ for m in head.classifier]
    assert kinds == ["Linear", "GELU", "LayerNorm", "Linear"] and head.classifier[0].out_features == 32
    # the fusion is a product: a zero pooled image gives the same logits for any text
    head.v_pool[0].weight.data.zero_(), head.v_pool[0].bias.data.zero_()
    assert torch.allclose(head(torch.randn(3, 12), img), head(torch.randn(3, 12), img))
    head = VQAHead(12, 8, 5, 16, dropout=0.0)
    targets = target_tensor([([1], [1.0]), ([3], [0.9]), ([0, 4], [0.3, 1.0])], 5)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = vqa_bce_loss(head(cls, img), targets)
        first = first if first is not None else loss.item()
        opt.zero_grad(), loss.backward(), opt.step()
    assert loss.item() < first / 3
    assert head(cls, img).argmax(1).tolist() == [1, 3, 4]
    with pytest.raises(ValueError, match="pool=False needs pooled inputs of one size"):
        VQAHead(12, 8, 5, pool=False)
    assert VQAHead(16, 16, 5, 16, pool=False)(torch.randn(2, 16), torch.randn(2, 16)).shape == (2, 5)


def test_majority_baseline_hand_computed():
    train = [ex(1, "yes", answer_type="yes/no"), ex(2, "yes", answer_type="yes/no"), ex(3, "no", answer_type="yes/no"),
             ex(4, "2", answer_type="number"), ex(5, "Two", answer_type="number"), ex(6, "3", answer_type="number"),
             ex(7, "red", answer_type="other"), ex(8, "blue", answer_type="other")]  # fmt: skip
    assert majority_answers(train) == {"yes/no": "yes", "number": "2", "other": "blue", "": "2"}  # ties (red/blue; 2/yes overall) → alphabetical
    val = [ex(100, "no", answer_type="yes/no"), ex(101, "2", ["2"] * 3 + ["4"] * 7, answer_type="number"), ex(102, "blue", answer_type="other")]
    preds = majority_predictions(train, val)
    assert preds == {100: "yes", 101: "2", 102: "blue"}
    scores = evaluate(preds, val)
    assert scores.per_answer_type == {"yes/no": 0.0, "number": pytest.approx(90.0), "other": 100.0}
    by_qtype = majority_predictions(train, [ex(103, "x", question_type="never seen")], by="question_type")
    assert by_qtype == {103: "2"}  # unseen group → overall majority
