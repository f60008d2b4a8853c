"""Models, heads and losses: finite terms, over-fitting, grounding learns, config and checkpoints."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from trainer.runtime.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trainer.config import TrainConfig, parse_args
from trainer.losses import TERMS, loss_counts, loss_sums
from trainer.models import build_model
from trainer.models.embeddings import box_sine_cosine
from trainer.data.text import load_tokenizer
from trainer.data.stream import BatchStream
from trainer.runtime.loss_log import stats_dict
from trainer.runtime.optim import make_optimizer
from trainer.train import train_step
from trainer_fixtures import one_thread  # noqa: F401  (autouse fixture: one torch thread per test)
from trainer_fixtures import NUM_CLASSES, first_batch, grounding_scores, tiny_config, write_corpus

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, *write_corpus(root / "train", num_images=64, seed=0), *write_corpus(root / "heldout", num_images=24, seed=1)


VARIANTS = [("single", "lstm", "spe"), ("single", "mean", "5d"), ("dual", "lstm", "5d"), ("dual", "mean", "spe")]


@pytest.mark.parametrize("model,phrase_repr,location", VARIANTS)
def test_every_loss_term_is_finite_and_overfitting_lowers_the_total(corpus, tok, model, phrase_repr, location):
    root, regions, labels, *_ = corpus
    cfg = tiny_config(regions, labels, root / "out", model=model, phrase_repr=phrase_repr, location=location,
                      lr=3e-3, warmup_steps=1, steps=1000)
    batch = first_batch(cfg, tok)
    torch.manual_seed(0)
    net = build_model(cfg, batch["feat"].shape[-1], NUM_CLASSES, len(tok))
    counts = loss_counts(batch)
    assert (counts[:4] > 0).all(), counts  # the batch exercises every paired term (the others belong to other methods)
    terms = loss_sums(net(batch), batch) / counts.clamp(min=1)
    assert torch.isfinite(terms).all(), dict(zip(TERMS, terms.tolist()))
    opt = make_optimizer(net, cfg)
    history = [stats_dict(train_step(net, opt, [batch], cfg, i, CPU)) for i in range(25)]
    for h in history:
        assert all(torch.isfinite(torch.tensor(h[t])) for t in (*TERMS, "loss"))
    assert history[-1]["loss"] < 0.6 * history[0]["loss"], [round(h["loss"], 3) for h in history]


def test_grounding_head_learns_a_separable_toy_alignment(corpus, tok):
    root, regions, labels, held_regions, held_labels = corpus
    cfg = tiny_config(regions, labels, root / "gnd", steps=150, batch_size=16, lr=3e-3, warmup_steps=5,
                      phrase_repr="mean", lambda_word=0.0, lambda_img=0.0, lambda_align=0.0)
    torch.manual_seed(0)
    net = build_model(cfg, 16, NUM_CLASSES, len(tok))
    before_logits, targets = grounding_scores(net, dataclasses.replace(cfg, regions=str(held_regions), labels=str(held_labels)), tok)
    opt = make_optimizer(net, cfg)
    stream = BatchStream(cfg, tok)
    for step in range(cfg.steps):
        train_step(net, opt, [stream.next()], cfg, step, CPU)
    logits, targets = grounding_scores(net, dataclasses.replace(cfg, regions=str(held_regions), labels=str(held_labels)), tok)
    pos, neg = logits[targets > 0.5], logits[targets < 0.5]
    auc = (pos[:, None] > neg[None, :]).float().mean().item()
    before_auc = (before_logits[targets > 0.5][:, None] > before_logits[targets < 0.5][None, :]).float().mean().item()
    accuracy = ((logits > 0).float() == targets).float().mean().item()
    majority = max(targets.mean().item(), 1 - targets.mean().item())
    assert auc > 0.85, (before_auc, auc)
    assert accuracy > majority + 0.08, (accuracy, majority)


def test_sine_cosine_location_is_fixed_and_distinguishes_boxes():
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]])
    enc = box_sine_cosine(boxes, 32)
    assert enc.shape == (1, 2, 128)
    assert not torch.allclose(enc[0, 0], enc[0, 1])
    assert torch.equal(enc, box_sine_cosine(boxes, 32))


def test_config_from_file_then_cli(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"batch_size": 4, "lambda_gnd": 5, "iou_threshold": 0.4}))
    cfg = parse_args(["--config", str(f), "--lambda-gnd", "7.5", "--soft_targets", "true", "--model", "dual"])
    assert (cfg.batch_size, cfg.lambda_gnd, cfg.iou_threshold, cfg.soft_targets, cfg.model) == (4, 7.5, 0.4, True, "dual")
    assert parse_args(["--iou-threshold", "none"]).iou_threshold is None
    with pytest.raises(ValueError, match="unknown config key"):
        parse_args(["--config", str(_write(tmp_path / "bad.json", {"nope": 1}))])
    with pytest.raises(ValueError, match="model must be one of"):
        parse_args(["--model", "triple"])
    assert TrainConfig().lambda_align == 1.0 and TrainConfig().lambda_gnd == 20.0 and TrainConfig().location == "spe"


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_checkpoint_roundtrip_keeps_tied_weights_and_optimizer(corpus, tok, tmp_path):
    root, regions, labels, *_ = corpus
    cfg = tiny_config(regions, labels, tmp_path)
    batch = first_batch(cfg, tok)
    torch.manual_seed(0)
    net = build_model(cfg, 16, NUM_CLASSES, len(tok))
    opt = make_optimizer(net, cfg)
    train_step(net, opt, [batch], cfg, 0, CPU)
    save_checkpoint(tmp_path, 1, net, opt, {"epoch": 0, "batches_in_epoch": 1}, keep=1)
    save_checkpoint(tmp_path, 2, net, opt, {"epoch": 0, "batches_in_epoch": 2}, keep=1)
    assert [p.name for p in tmp_path.glob("ckpt-*")] == ["ckpt-00000002"]  # pruned
    torch.manual_seed(1)
    other = build_model(cfg, 16, NUM_CLASSES, len(tok))
    other_opt = make_optimizer(other, cfg)
    state = load_checkpoint(latest_checkpoint(tmp_path), other, other_opt)
    assert state["batches_in_epoch"] == 2 and state["step"] == 2
    for (n, a), (_, b) in zip(net.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), n
    assert other.mlm.word_embeddings.weight is other.encoder.bert.embeddings.word_embeddings.weight
    sa, sb = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"])


@pytest.mark.parametrize("phrase_repr", ["lstm", "mean"])
def test_grounding_score_regions_equals_scoring_every_pair(phrase_repr):
    from trainer.models.heads import GroundingHead

    torch.manual_seed(0)
    head = GroundingHead(16, 12, 8, phrase_repr).eval()
    text, regions = torch.randn(3, 9, 16), torch.randn(3, 5, 12)
    start, end = torch.tensor([1, 1, 2]), torch.tensor([4, 8, 3])
    pairs = head(text, regions, start[:, None].expand(3, 5), end[:, None].expand(3, 5), torch.arange(5).expand(3, 5))
    torch.testing.assert_close(head.score_regions(text, regions, start, end), pairs)
