"""Exact resume, gradient accumulation and DDP (2 gloo processes) against one process."""
from __future__ import annotations

import json

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from trainer.models import build_model
from trainer.data.text import load_tokenizer
from trainer.runtime.loss_log import stats_dict
from trainer.runtime.optim import make_optimizer
from trainer.train import train, train_step
from trainer_fixtures import one_thread  # noqa: F401  (autouse fixture: one torch thread per test)
from trainer_fixtures import NUM_CLASSES, ddp_worker, first_batch, rendezvous, split_batch, tiny_config, write_corpus

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, *write_corpus(root, num_images=24, num_shards=4)


def test_stop_and_resume_gives_the_same_next_losses(corpus, tmp_path):
    root, regions, labels = corpus
    # 7 steps with batch 8 cross an epoch boundary (about 3 batches per epoch per worker split).
    kw = dict(steps=7, num_workers=2, dropout=0.1, ckpt_every=100)
    straight = train(tiny_config(regions, labels, tmp_path / "straight", **kw))
    first = train(tiny_config(regions, labels, tmp_path / "resumed", stop_at=3, **kw))
    # A crash after logging step 4 but before its checkpoint: resuming redoes step 4, logged once.
    with open(tmp_path / "resumed" / "losses.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 0.0}\n')
    rest = train(tiny_config(regions, labels, tmp_path / "resumed", **kw))
    assert [r["step"] for r in first + rest] == list(range(1, 8))
    assert [r["epoch"] for r in straight][-1] >= 1, "the run should cross an epoch"
    for a, b in zip(straight, first + rest):
        for key in ("loss", "word", "img", "align", "gnd"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (a["step"], key)
    lines = (tmp_path / "resumed" / "losses.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 8))
    # Same inputs + seed → byte-identical weights, interrupted or not.
    final = "ckpt-00000007/model.safetensors"
    assert (tmp_path / "straight" / final).read_bytes() == (tmp_path / "resumed" / final).read_bytes()


def test_gradient_accumulation_matches_the_full_batch(corpus):
    root, regions, labels = corpus
    cfg = tiny_config(regions, labels, root / "acc")
    tok = load_tokenizer(cfg.tokenizer)
    batch = first_batch(cfg, tok)
    results = []
    for micro in ([batch], split_batch(batch, 2)):
        torch.manual_seed(0)
        net = build_model(cfg, 16, NUM_CLASSES, len(tok))
        res = stats_dict(train_step(net, make_optimizer(net, cfg), micro, cfg, 0, CPU))
        results.append((res, [p.detach().clone() for p in net.parameters()]))
    (ra, pa), (rb, pb) = results
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(180)
def test_ddp_two_gloo_processes_match_one_process(corpus, tmp_path):
    root, regions, labels = corpus
    cfg = tiny_config(regions, labels, root / "ddp")
    out = tmp_path / "rank0.safetensors"
    mp.start_processes(ddp_worker, args=(2, rendezvous(tmp_path), cfg, str(out)), nprocs=2, join=True, start_method="spawn")
    got = load_file(str(out))

    tok = load_tokenizer(cfg.tokenizer)
    batch = first_batch(cfg, tok)
    torch.manual_seed(cfg.seed)
    net = build_model(cfg, 16, NUM_CLASSES, len(tok))
    res = stats_dict(train_step(net, make_optimizer(net, cfg), [batch], cfg, 0, CPU))
    assert got["__loss__"][0].item() == pytest.approx(res["loss"], rel=1e-5)
    assert got["__loss__"][1].item() == pytest.approx(res["gnd"], rel=1e-5)
    for name, p in net.named_parameters():
        torch.testing.assert_close(got[name], p.detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_cli_run_writes_losses_tensorboard_checkpoint_and_report(corpus, tmp_path):
    import json

    from trainer.train import main

    root, regions, labels = corpus
    assert labels == root / "labels"
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("hidden_size: 32\nnum_layers: 1\nnum_heads: 2\nintermediate_size: 64\nmax_text_len: 16\n")
    out = tmp_path / "run"
    # --labels names the parent directory, as the label pipeline lays it out (OUT/labels/labels-*.tar).
    main(["--config", str(cfg_file), "--regions", str(regions), "--labels", str(root), "--out", str(out),
          "--steps", "3", "--batch-size", "4", "--num-workers", "0", "--progress", "false", "--model", "dual"])
    lines = [json.loads(x) for x in (out / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    assert {"loss", "word", "img", "align", "gnd", "lr", "samples_per_s"} <= set(lines[0])
    assert json.loads((out / "latest.json").read_text())["checkpoint"] == "ckpt-00000003"
    assert (out / "ckpt-00000003" / "model.safetensors").exists()
    assert any((out / "tb").iterdir())
    assert json.loads((out / "config.json").read_text())["model"] == "dual"
    assert "images_without_captions" in json.loads((out / "data_report.json").read_text())["dropped_or_skipped"]
