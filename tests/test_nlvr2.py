"""NLVR2 reader on hand-written records in the published layout, and the official accuracy / consistency by hand.

Records follow lil-lab/nlvr ``nlvr2/README.md`` (one JSON object per line of ``dev.json``: ``identifier``
``<split>-<set>-<pair>-<sentence>``, ``sentence``, ``label`` "True"/"False", ``left_url``, ``right_url``,
``writer``, ``synset``, ``query``, ``validation``, ``extra_validations``; train adds ``directory``); images
``<identifier without its last part>-img0/-img1`` as lxmert ``data/nlvr2/process_raw_data_scripts/process_dataset.py``
builds them. Consistency ported from ``nlvr2/eval/metrics.py`` (identifier part [2] blanked).
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

from trainer.tasks.nlvr2 import (
    NLVR2Error, NLVR2Head, evaluate, image_names, majority_predictions, nlvr2_loss, read_nlvr2, read_predictions, read_split, write_predictions,
)  # fmt: skip
from trainer.tasks.vcr.join import join_image_names


def _rec(ident, sentence, label):
    return {
        "validation": {"a1": "True"}, "sentence": sentence, "left_url": "https://example.org/left.jpg", "writer": "103",
        "label": label, "right_url": "https://example.org/right.jpg", "synset": "n02114548", "query": "white wolf82",
        "identifier": ident, "extra_validations": {},
    }  # fmt: skip


S1 = "The left image contains twice the number of dogs as the right image."
S2 = "One image shows exactly two brown acorns in back-to-back caps on green foliage."
RECORDS = [_rec("dev-850-0-0", S1, "False"), _rec("dev-850-1-0", S1, "True"), _rec("dev-850-2-0", S1, "True"),
           _rec("dev-850-0-1", S2, "True"), _rec("dev-850-3-1", S2, "False"), _rec("dev-17-0-0", "There are two dogs.", "True")]  # fmt: skip


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_reads_published_layout(tmp_path):
    _write(tmp_path / "dev.json", RECORDS)
    ex = read_split(tmp_path, "dev")
    assert [e.label for e in ex] == [False, True, True, True, False, True]
    assert ex[0].images == ("dev-850-0-img0", "dev-850-0-img1") and ex[4].images == ("dev-850-3-img0", "dev-850-3-img1")
    assert ex[0].consistency_key == "dev-850--0" and ex[1].consistency_key == "dev-850--0" and ex[3].consistency_key == "dev-850--1"
    assert ex[0].extra["synset"] == "n02114548"
    assert "dev-17-0-img1" in image_names(ex)


@pytest.mark.parametrize("edit, msg", [
    (lambda r: r.pop("label"), r"dev.json:2: identifier dev-850-1-0: field 'label' is missing"),
    (lambda r: r.update(label="true"), r"dev.json:2: identifier dev-850-1-0: field 'label' 'true' is not \"True\" or \"False\""),
    (lambda r: r.update(identifier="dev-850-1"), r"dev.json:2: identifier dev-850-1: field 'identifier' 'dev-850-1' is not <split>-<set>-<pair>-<sentence>"),
    (lambda r: r.update(sentence="  "), r"dev.json:2: identifier dev-850-1-0: field 'sentence' is missing or empty"),
])  # fmt: skip
def test_bad_records_name_file_line_and_field(tmp_path, edit, msg):
    bad = copy.deepcopy(RECORDS[1])
    edit(bad)
    _write(tmp_path / "dev.json", [RECORDS[0], bad])
    with pytest.raises(NLVR2Error, match=msg):
        read_split(tmp_path, "dev")


def test_duplicates_and_missing_file(tmp_path):
    _write(tmp_path / "dev.json", [RECORDS[0], RECORDS[0]])
    with pytest.raises(NLVR2Error, match=r"dev.json:2: identifier dev-850-0-0: listed twice"):
        read_split(tmp_path, "dev")
    with pytest.raises(NLVR2Error, match=r"train.json: no such file"):
        read_split(tmp_path, "train")


def test_image_absent_from_region_shards(tmp_path):
    path = _write(tmp_path / "dev.json", RECORDS[:2])
    region_ids = ["dev-850-0-img0", "dev-850-0-img1", "dev-850-1-img0"]  # dev-850-1-img1 lacks features
    known, key = join_image_names(["dev-850-0-img0.png", "dev-850-0-img1.png", "dev-850-1-img0.png", "dev-850-1-img1.png"], region_ids)
    assert key == "stem" and len(known) == 3
    with pytest.raises(NLVR2Error, match=r"dev.json:2: identifier dev-850-1-0: field 'identifier' names image 'dev-850-1-img1', which has no region sample \(joined by stem\)"):
        read_nlvr2(path, known_images=known, join_key=key)


def _official(predictions, examples):
    """lil-lab/nlvr nlvr2/eval/metrics.py, ported: precision and consistency over labelled examples."""
    num_correct, consistency = 0.0, {}
    for ex in examples:
        anon = ex["identifier"].split("-")
        anon[2] = ""
        anon = "-".join(anon)
        consistency.setdefault(anon, True)
        if predictions[ex["identifier"]].lower() == ex["label"].lower():
            num_correct += 1.0
        else:
            consistency[anon] = False
    return num_correct / len(examples), sum(consistency.values()) / len(consistency)


def test_accuracy_and_consistency_by_hand(tmp_path):
    ex = read_nlvr2(_write(tmp_path / "dev.json", RECORDS))
    # S1 (850, sentence 0): pairs 0,1,2 all right → consistent; S2 (850, sentence 1): pair 3 wrong → not; dev-17: right.
    preds = {"dev-850-0-0": False, "dev-850-1-0": True, "dev-850-2-0": True, "dev-850-0-1": True, "dev-850-3-1": True, "dev-17-0-0": True}
    s = evaluate(preds, ex)
    assert s.accuracy == pytest.approx(500 / 6) and s.consistency == pytest.approx(200 / 3) and s.groups == 3
    write_predictions(tmp_path / "pred.csv", preds)
    assert read_predictions(tmp_path / "pred.csv") == preds
    acc, cons = _official({k: str(v) for k, v in preds.items()}, RECORDS)
    assert (s.accuracy, s.consistency) == pytest.approx((100 * acc, 100 * cons))


def test_prediction_errors_and_majority(tmp_path):
    ex = read_nlvr2(_write(tmp_path / "dev.json", RECORDS))
    with pytest.raises(NLVR2Error, match=r"identifier dev-17-0-0: no prediction"):
        evaluate({e.identifier: True for e in ex[:-1]}, ex)
    (tmp_path / "bad.csv").write_text("dev-850-0-0,True\ndev-850-1-0,maybe\n")
    with pytest.raises(NLVR2Error, match=r"bad.csv:2: expected 'identifier,True'"):
        read_predictions(tmp_path / "bad.csv")
    preds = majority_predictions(ex, ex)  # 4 True of 6
    assert set(preds.values()) == {True}
    assert evaluate(preds, ex).accuracy == pytest.approx(400 / 6)


def test_pair_head_concatenates_the_two_encodings():
    torch.manual_seed(0)
    head = NLVR2Head(8, 6, fused_dim=4, dropout=0.0)
    cls, img = torch.randn(6, 8), torch.randn(6, 6)
    logits = head(cls, img)
    assert logits.shape == (3, 2)
    swapped = torch.stack([cls[1], cls[0], cls[3], cls[2], cls[5], cls[4]]), torch.stack([img[1], img[0], img[3], img[2], img[5], img[4]])
    assert not torch.allclose(head(*swapped), logits)  # order matters: [img0 ; img1] concatenated, not pooled
    assert head.classifier[0].in_features == 8
    with pytest.raises(ValueError, match="two"):
        head(cls[:5], img[:5])
    assert nlvr2_loss(logits, torch.tensor([1, 0, 1])).ndim == 0
