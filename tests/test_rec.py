"""Referring-expression comprehension: metric, REFER reader, fine-tuning, and the experiment runner."""
from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from schemas.boxes import box_iou, xyxy_to_xywh
from schemas.records import RegionRecord
from schemas.shards import encode_region, shard_name, write_shard
from trainer.tasks.rec.metrics import best_proposal_iou, hits, rec_accuracy, top1_iou
from trainer.tasks.rec.refer import ReferError, check_joined, read_proposals, read_refer

# ---------------------------------------------------------------------------------------------
# Metric


def test_hand_computed_hits_including_iou_exactly_one_half():
    gt = np.array([[0, 0, 2, 1]] * 4, np.float32)
    pred = np.array(
        [
            [0, 0, 2, 1],  # identical: IoU 1
            [0, 0, 1, 1],  # half of gt inside: inter 1, union 2 → IoU exactly 0.5
            [1, 0, 3, 1],  # shifted: inter 1, union 3 → IoU 1/3
            [5, 5, 6, 6],  # disjoint: IoU 0
        ],
        np.float32,
    )
    ious = top1_iou(pred, gt)
    np.testing.assert_allclose(ious, [1.0, 0.5, 1 / 3, 0.0], rtol=1e-6)
    assert hits(ious).tolist() == [True, True, False, False]  # ≥ 0.5: 0.5 is a hit
    assert hits(ious, strict=True).tolist() == [True, False, False, False]  # > 0.5: 0.5 is a miss
    acc = rec_accuracy(pred, gt)
    assert acc == {"n": 4, "acc": 0.5, "acc_strict": 0.25}


def test_oracle_upper_bound_by_hand():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    proposals = [
        np.array([[20, 20, 30, 30], [0, 0, 10, 10]], np.float32),  # second proposal matches exactly
        np.array([[0, 0, 10, 5]], np.float32),  # IoU 0.5 exactly: counts for ≥, not for >
        np.array([[0, 0, 4, 10], [50, 50, 60, 60]], np.float32),  # IoU 0.4: no proposal reaches 0.5
    ]
    np.testing.assert_allclose(best_proposal_iou(proposals, gt), [1.0, 0.5, 0.4], rtol=1e-6)
    pred = np.stack([proposals[0][0], proposals[1][0], proposals[2][0]])  # the model picked the first of each
    acc = rec_accuracy(pred, gt, proposals)
    assert acc["acc"] == pytest.approx(1 / 3) and acc["acc_strict"] == 0.0
    assert acc["oracle"] == pytest.approx(2 / 3) and acc["oracle_strict"] == pytest.approx(1 / 3)
    assert acc["acc"] <= acc["oracle"]


def test_iou_agrees_with_pycocotools():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 80, (40, 2))
    wh = rng.uniform(1, 40, (40, 2))
    a = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    b = a + rng.normal(0, 4, (40, 4)).astype(np.float32)  # jittered copies: IoUs on both sides of 0.5
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)
    ref = mask_utils.iou(xyxy_to_xywh(a).astype(np.float64).tolist(), xyxy_to_xywh(b).astype(np.float64).tolist(), [0] * 40)
    np.testing.assert_allclose(box_iou(a, b), ref, atol=1e-5)
    np.testing.assert_allclose(top1_iou(a, b), np.diag(ref), atol=1e-5)
    assert (np.diag(ref) > 0.5).any() and (np.diag(ref) < 0.5).any()  # the draw exercises both sides


# ---------------------------------------------------------------------------------------------
# A hand-made REFER corpus: coloured proposals, "the red shape" names the red one.

COLOURS = ("red", "green", "blue")


def write_toy_refer(root: Path, num_images: int = 80, seed: int = 0, feat_dim: int = 8, refs_per_image: int = 1) -> tuple[Path, Path]:
    """REFER files + one region shard. Each image has 3 proposals of different colours (one-hot
    features + noise); each expression names a colour; the ground truth is that proposal's box.
    ``refs_per_image`` > 1 refers to that many different proposals of the image."""
    rng = np.random.default_rng(seed)
    refs, anns, images, samples = [], [], [], {}
    for i in range(num_images):
        w, h = 100, 80
        boxes = np.array([[5 + 30 * k, 10, 30 + 30 * k, 60] for k in range(3)], np.float32)
        colours = rng.permutation(3)
        feat = rng.normal(0, 0.1, (3, feat_dim)).astype(np.float32)
        feat[np.arange(3), colours] += 1.0
        stem = f"img_{i:03d}"
        samples[stem] = encode_region(RegionRecord(stem, w, h, boxes, feat, None))
        images.append({"id": 1000 + i, "file_name": f"{stem}.png", "width": w, "height": h})
        split = "train" if i < num_images * 0.7 else ("val", "testA", "testB")[i % 3]
        for target in rng.permutation(3)[:refs_per_image] if refs_per_image > 1 else [int(rng.integers(3))]:
            k = len(refs) + 1
            x1, y1, x2, y2 = boxes[target].tolist()
            anns.append({"id": k, "image_id": 1000 + i, "bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": 1, "iscrowd": 0})
            refs.append({"ref_id": k, "ann_id": k, "image_id": 1000 + i, "split": split, "category_id": 1,
                         "sentences": [{"sent_id": k, "sent": f"the {COLOURS[colours[target]]} shape", "needs": ["colour"]}]})
    refer = root / "refer"
    refer.mkdir(parents=True)
    (refer / "refs.json").write_text(json.dumps(refs))
    (refer / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
    regions = root / "regions"
    write_shard(regions / shard_name("regions", 0), samples)
    return refer, regions


def test_refer_reader_joins_by_file_name_stem(tmp_path):
    refer, regions = write_toy_refer(tmp_path, num_images=10)
    exprs = read_refer(refer)
    assert len(exprs) == 10
    e = exprs[3]
    assert e.image_id == "img_003" and e.sent_id == 4 and e.needs == ["colour"]
    ann = json.loads((refer / "instances.json").read_text())["annotations"][3]
    x, y, w, h = ann["bbox"]
    np.testing.assert_array_equal(e.gt_box, np.array([x, y, x + w, y + h], np.float32))  # xywh → xyxy
    props = read_proposals(regions, max_regions=2)
    check_joined(exprs, props, refer, regions)
    assert props["img_003"].boxes.shape == (2, 4)  # first max_regions proposals only


def test_refer_reader_pickle_needs_opt_in(tmp_path):
    refer, _ = write_toy_refer(tmp_path, num_images=4)
    refs = json.loads((refer / "refs.json").read_text())
    (refer / "refs.json").unlink()
    with open(refer / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f)
    with pytest.raises(ReferError, match=r"refs\(unc\)\.p.*arbitrary code"):
        read_refer(refer)
    assert [e.sent_id for e in read_refer(refer, allow_pickle=True)] == [1, 2, 3, 4]


def test_refer_reader_names_file_and_record_on_bad_input(tmp_path):
    refer, regions = write_toy_refer(tmp_path, num_images=4)
    refs = json.loads((refer / "refs.json").read_text())
    refs[2]["ann_id"] = 999
    (refer / "refs.json").write_text(json.dumps(refs))
    with pytest.raises(ReferError, match=r"refs\.json: ref #2 \(ref_id 3\): ann_id 999 is not in"):
        read_refer(refer)
    refs[2]["ann_id"] = 3
    (refer / "refs.json").write_text(json.dumps(refs))
    inst = json.loads((refer / "instances.json").read_text())
    inst["images"][1]["file_name"] = "elsewhere.png"  # the join key is the image's file name, not the ref's
    (refer / "instances.json").write_text(json.dumps(inst))
    exprs = read_refer(refer)
    with pytest.raises(ReferError, match=r"1 image\(s\) have no region sample.*elsewhere"):
        check_joined(exprs, read_proposals(regions), refer, regions)


# ---------------------------------------------------------------------------------------------
# Fine-tuning


def tiny_model_config(path: Path) -> Path:
    path.write_text(json.dumps({"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "location": "5d",
                                "dropout": 0.0, "max_text_len": 12}))
    return path


@pytest.mark.parametrize("head", ["linear", "grounding"])
def test_finetune_learns_above_chance_and_reads_the_text(tmp_path, head):
    from trainer.tasks.rec.run import FinetuneConfig, run_finetune

    refer, regions = write_toy_refer(tmp_path, num_images=60, refs_per_image=2)
    cfg = FinetuneConfig(refer=str(refer), regions=str(regions), init="none", out=str(tmp_path / "ft"),
                         model_config=str(tiny_model_config(tmp_path / "m.json")), steps=120, batch_size=16, lr=2e-3,
                         head_dropout=0.0, head=head, cpu_threads=1, progress=False)
    res = run_finetune(cfg)
    held_out = [res["splits"][s] for s in ("val", "testA", "testB")]
    n = sum(m["n"] for m in held_out)
    acc = sum(m["acc"] * m["n"] for m in held_out) / n
    swapped = sum(m["acc_swapped_text"] * m["n_swapped_text"] for m in held_out) / sum(m["n_swapped_text"] for m in held_out)
    assert all(m["oracle"] == 1.0 for m in held_out)  # every ground truth is a proposal
    assert acc > 0.6, f"held-out accuracy {acc:.2f} is not clearly above chance (1/3)"
    # The colour word alone tells the three proposals apart, so a model that reads it picks the
    # other object when given the other object's expression: far below chance, not near acc.
    assert swapped < 0.2, f"accuracy with swapped expressions {swapped:.2f}: the model does not read the text"
    lines = (tmp_path / "ft" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == n
    # Same inputs and seed → the same predictions.
    again = run_finetune(FinetuneConfig(**{**cfg.__dict__, "out": str(tmp_path / "ft2")}))
    assert again["splits"] == res["splits"]
    assert (tmp_path / "ft2" / "predictions.jsonl").read_text() == "\n".join(lines) + "\n"


def test_swap_texts_pairs_other_objects_of_the_same_image():
    from trainer.tasks.rec.data import swap_texts
    from trainer.tasks.rec.refer import Expression

    def ex(sent_id, image, box, text):
        e = Expression(sent_id, sent_id, image, "val", text, np.array(box, np.float32))
        return {"expr": e, "input_ids": np.array([101, sent_id, 102])}

    a = ex(1, "im1", [0, 0, 5, 5], "the red one")
    a2 = ex(2, "im1", [0, 0, 5, 5], "the left red one")  # same object as a: never its partner
    b = ex(3, "im1", [6, 0, 9, 5], "the blue one")
    c = ex(4, "im2", [0, 0, 5, 5], "the only one")  # no other object named in im2: left out
    out = swap_texts([a, a2, b, c])
    assert [(o["expr"].sent_id, int(o["input_ids"][1])) for o in out] == [(1, 3), (2, 3), (3, 1)]  # b wraps round to a
    assert out[2]["expr"] is b["expr"]  # the target stays the original


def test_grounding_head_carries_pretrained_weights(tmp_path):
    import torch

    from trainer.runtime.checkpoint import save_checkpoint
    from trainer.config import TrainConfig
    from trainer.tasks.rec.data import collate
    from trainer.tasks.rec.model import build_rec_model
    from trainer.models import build_model

    cfg = TrainConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, location="5d", dropout=0.0)
    torch.manual_seed(0)
    pre = build_model(cfg, feat_dim=8, num_classes=3, vocab_size=120)
    ckpt = save_checkpoint(tmp_path / "run", 1, pre, torch.optim.AdamW(pre.parameters()), {"config": cfg.to_dict()})
    torch.manual_seed(1)  # a different init, so equal weights can only come from the checkpoint
    rec = build_rec_model(cfg, ckpt, 8, 3, 120, 0.0, head="grounding")
    for name, p in pre.grounding.state_dict().items():
        assert torch.equal(rec.grounding.state_dict()[name], p), name
    assert rec.score is None
    assert build_rec_model(cfg, ckpt, 8, 3, 120, 0.0, head="linear").grounding is None
    examples = [{"input_ids": np.array([101, 7, 8, 102]), "feat": np.ones((3, 8), np.float32), "boxes": np.full((3, 4), 0.5, np.float32), "target": 0},
                {"input_ids": np.array([101, 9, 102]), "feat": np.ones((2, 8), np.float32), "boxes": np.full((2, 4), 0.5, np.float32), "target": 1}]
    logits = rec.eval()(collate(examples))
    assert logits.shape == (2, 3) and torch.isfinite(logits[0]).all() and logits[1, 2] == float("-inf")  # padding region
    with pytest.raises(ValueError, match="not one of"):
        build_rec_model(cfg, ckpt, 8, 3, 120, 0.0, head="mlp")


def test_train_subset_is_seeded_and_sized():
    from trainer.tasks.rec.data import train_subset

    a, b, c = train_subset(80, 0.125, 0), train_subset(80, 0.125, 0), train_subset(80, 0.125, 1)
    assert len(a) == 10 and a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert train_subset(5, 1.0, 3).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        train_subset(5, 0.0, 0)


# ---------------------------------------------------------------------------------------------
# Experiment runner


def test_subset_captions_keeps_whole_images_in_file_order(tmp_path):
    from trainer.experiment.corpus import subset_captions

    caps = tmp_path / "captions.tsv"
    caps.write_text("".join(f"caption {k} of {i}\timages/{i:06d}.png\n" for i in range(16) for k in range(2)))
    out = subset_captions(caps, 0.125, 0, tmp_path / "sub" / "captions.tsv").read_text().splitlines()
    images = [line.split("\t")[1] for line in out]
    assert len(set(images)) == 2 and len(out) == 4  # 1/8 of 16 images, both captions of each
    assert out == [line for line in caps.read_text().splitlines() if line in out]  # file order kept


def test_gains_and_verdict_by_hand():
    from trainer.experiment.config import ExperimentConfig
    from trainer.experiment.stats import gains, growth, verdict

    cfg = ExperimentConfig(variants=["none", "phrase"], pretrain_fractions=[1.0, 0.125], finetune_fractions=[1.0, 0.125], seeds=[0, 1])
    # Gain of phrase over none per (pf, ff) cell and seed: flat-ish along pre-training, growing along
    # fine-tuning, shrinking when both shrink.
    gain = {(1.0, 1.0): lambda s: 0.01 + 0.002 * s, (0.125, 1.0): lambda s: 0.01 + 0.003 * s,
            (1.0, 0.125): lambda s: 0.10 + 0.002 * s, (0.125, 0.125): lambda s: -0.05 + 0.001 * s}
    rows = []
    for (pf, ff), g in gain.items():
        for s in cfg.seeds:
            rows.append({"variant": "none", "pretrain_fraction": pf, "finetune_fraction": ff, "seed": s, "mean_acc": 0.50 + 0.01 * s})
            rows.append({"variant": "phrase", "pretrain_fraction": pf, "finetune_fraction": ff, "seed": s, "mean_acc": 0.50 + 0.01 * s + g(s)})
    assert gains(rows, "phrase", 1.0, 1.0) == pytest.approx([0.01, 0.012])
    # Pre-training axis by hand: paired differences 0.000 and 0.001 → mean 0.0005, s.e. 0.0005.
    g = growth(rows, ["phrase"], (1.0, 1.0), (0.125, 1.0))
    assert g["growth"] == pytest.approx(0.0005) and g["se"] == pytest.approx(0.0005) and g["n"] == 2
    # A second variant in the same seeds shares their 'none' runs: still 2 replicates, not 4.
    twin = rows + [{**r, "variant": "token"} for r in rows if r["variant"] == "phrase"]
    assert growth(twin, ["phrase", "token"], (1.0, 1.0), (0.125, 1.0)) == pytest.approx(g)
    text, nums = verdict(rows, cfg)
    assert {axis: n["verdict"] for axis, n in nums.items()} == {"pre-training": "NOT SHOWN", "fine-tuning": "HOLDS", "both": "DOES NOT HOLD"}
    assert nums["fine-tuning"]["gain_small"] == pytest.approx(0.101) and text.startswith("holds along 1 of 3")
    one_seed = ExperimentConfig(variants=["none", "phrase"], pretrain_fractions=[1.0, 0.125], finetune_fractions=[1.0], seeds=[0])
    assert verdict([r for r in rows if r["seed"] == 0 and r["finetune_fraction"] == 1.0], one_seed)[1]["pre-training"]["verdict"].startswith("INCONCLUSIVE")
    assert verdict(rows, ExperimentConfig(variants=["phrase"]))[0].startswith("not testable")


def test_runs_are_reused_only_with_the_same_settings(tmp_path):
    import shutil

    from trainer.experiment.jobs import needs_run

    work = tmp_path / "work"
    pre, ft = work / "pretrain" / "a", work / "finetune" / "a"
    pre_cmd = lambda steps, threads="2": ["python", "-m", "trainer.train", "--out", str(pre), "--steps", steps, "--cpu-threads", threads]  # noqa: E731
    ft_cmd = lambda lr: ["python", "-m", "trainer.finetune_rec", "--init", str(pre), "--lr", lr]  # noqa: E731
    assert needs_run(pre_cmd("10"), work, pre, complete=False)
    (pre / "latest.json").write_text("{}")  # stands for a finished run
    assert not needs_run(pre_cmd("10"), work, pre, complete=True)
    assert not needs_run(pre_cmd("10", threads="1"), work, pre, complete=True)  # the thread count is not a setting
    assert needs_run(pre_cmd("10"), work, pre, complete=False)  # same settings, unfinished: kept, to resume
    assert (pre / "latest.json").exists()
    assert needs_run(ft_cmd("1e-3"), work, ft, complete=False, upstream=pre)
    (ft / "results.json").write_text("{}")
    assert not needs_run(ft_cmd("1e-3"), work, ft, complete=True, upstream=pre)
    assert needs_run(ft_cmd("2e-4"), work, ft, complete=True, upstream=pre)  # another learning rate
    assert not (ft / "results.json").exists()  # the stale result is gone
    (ft / "results.json").write_text("{}")
    # A copied work directory keeps its runs: paths inside it are recorded relative to it.
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    moved = lambda cmd: [a.replace(str(work), str(copy)) for a in cmd]  # noqa: E731
    assert not needs_run(moved(ft_cmd("2e-4")), copy, copy / "finetune" / "a", complete=True, upstream=copy / "pretrain" / "a")
    assert needs_run(pre_cmd("20"), work, pre, complete=True)  # pre-training redone…
    assert not (pre / "latest.json").exists()  # …from scratch, not resumed from the other settings' checkpoint
    assert needs_run(ft_cmd("2e-4"), work, ft, complete=True, upstream=pre)  # and so is the fine-tuning made from it


def test_a_run_made_before_a_default_changed_is_redone(tmp_path, monkeypatch):
    """The same command under a trainer whose defaults differ resolves to other settings: the run is redone."""
    import dataclasses

    import trainer.config
    from trainer.experiment.jobs import needs_run, resolved_config

    work = tmp_path / "work"
    pre = work / "pretrain" / "a"
    cmd = ["python", "-m", "trainer.train", "--out", str(pre), "--steps", "10", "--cpu-threads", "2"]
    resolved = resolved_config(cmd, work)
    assert resolved["steps"] == 10 and resolved["out"] == "<work>/pretrain/a" and "cpu_threads" not in resolved
    assert resolved["itm_mask_negatives"] is trainer.config.TrainConfig().itm_mask_negatives  # a default, not a flag
    assert needs_run(cmd, work, pre, complete=False)
    (pre / "latest.json").write_text("{}")
    assert not needs_run(cmd, work, pre, complete=True)
    validate = trainer.config.validate
    monkeypatch.setattr(trainer.config, "validate", lambda c: dataclasses.replace(validate(c), itm_mask_negatives=not c.itm_mask_negatives))
    assert needs_run(cmd, work, pre, complete=True)  # same command, another default: redone
    assert not (pre / "latest.json").exists()
    assert resolved_config(["python", "-m", "trainer.finetune_rec", "--lr", "1e-3"], work) is None  # does not parse: the run says why


@pytest.mark.slow
def test_experiment_micro_grid(tmp_path):
    from trainer.experiment.cli import main

    work = tmp_path / "exp"
    main(["--work", str(work), "--tasks", "rec", "--variants", "phrase", "--pretrain-fractions", "1", "--finetune-fractions", "1,0.5", "--seeds", "0",
          "--no-scratch", "--pretrain-images", "12", "--rec-images", "16", "--pretrain-steps", "2", "--pretrain-batch", "4",
          "--finetune-steps", "2", "--finetune-batch", "4", "--hidden-size", "32", "--num-layers", "1", "--jobs", "2"])
    with open(work / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["finetune_fraction"]) for r in rows] == [("phrase", "1.0"), ("phrase", "0.5")]
    assert all(0.0 <= float(r["mean_acc"]) <= 1.0 for r in rows)
    md = (work / "results.md").read_text()
    assert "grounding, phrase level" in md and "precision" in md and "Verdict" in md
    assert "| full | `simulated false_rate=0.3 miss_rate=0.2` |" in md  # the teacher as the labels' manifest records it
    assert (work / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((work / "pretrain" / "phrase_pfull_s0" / "latest.json").read_text())["step"] == 2
    assert all(r["mean_acc_swapped_text"] != "" for r in rows) and "swapped" in md
    assert all(0.0 <= float(r["mean_acc_swapped_text"]) <= 1.0 for r in rows)  # a measured value, not a NaN from a missing control
    quality = json.loads((work / "experiment.json").read_text())["label_quality"]["1.0"]
    assert 0.0 < quality["precision"] <= 1.0 and 0.0 < quality["recall"] <= 1.0  # read from the labels manifest
