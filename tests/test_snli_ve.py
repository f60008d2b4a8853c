"""SNLI-VE reader on hand-written records in the published layout, accuracy overall and per class by hand.

Records follow necla-ml/SNLI-VE (README, ``snli_ve_generator.py``): SNLI's jsonl records (``annotator_labels``,
``captionID``, ``gold_label``, ``pairID``, ``sentence1``/``sentence2`` and their parses) with the premise
image added as ``Flickr30K_ID``; files ``snli_ve_{train,dev,test}.jsonl`` (as e-bug/volta ``data/snli_ve/README.md``
lists them). The first record is SNLI train's first pair, whose premise is Flickr30k 3416050480.jpg.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

from trainer.tasks.snli_ve import LABELS, SNLIVEError, SNLIVEHead, evaluate, majority_predictions, read_snli_ve, read_split, snli_ve_loss
from trainer.tasks.vcr.join import join_image_names


def _rec(fid, k, suffix, hypothesis, label):
    return {
        "Flickr30K_ID": fid, "annotator_labels": [label], "captionID": f"{fid}.jpg#{k}", "gold_label": label,
        "pairID": f"{fid}.jpg#{k}{suffix}", "sentence1": "A person on a horse jumps over a broken down airplane.",
        "sentence1_binary_parse": "( ( ( A person ) ( on ( a horse ) ) ) ( ( jumps ( over ( a ( broken ( down airplane ) ) ) ) ) . ) )",
        "sentence1_parse": "(ROOT (S (NP (NP (DT A) (NN person)) ...", "sentence2": hypothesis,
        "sentence2_binary_parse": "", "sentence2_parse": "",
    }  # fmt: skip


RECORDS = [
    _rec("3416050480", 4, "r1n", "A person is training his horse for a competition.", "neutral"),
    _rec("3416050480", 4, "r1c", "A person is at a diner, ordering an omelette.", "contradiction"),
    _rec("3416050480", 4, "r1e", "A person is outdoors, on a horse.", "entailment"),
    _rec("2267923837", 2, "r1e", "Children smiling and waving at camera", "entailment"),
]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_reads_published_layout(tmp_path):
    _write(tmp_path / "snli_ve_dev.jsonl", RECORDS)
    ex = read_split(tmp_path, "dev")
    assert [e.label for e in ex] == ["neutral", "contradiction", "entailment", "entailment"]
    assert ex[0].image_id == "3416050480" and ex[0].pair_id == "3416050480.jpg#4r1n" and ex[2].hypothesis == "A person is outdoors, on a horse."
    assert ex[0].label_index == LABELS.index("neutral") and ex[0].extra["captionID"] == "3416050480.jpg#4"


@pytest.mark.parametrize("edit, msg", [
    (lambda r: r.pop("gold_label"), r"snli_ve_dev.jsonl:2: pairID 3416050480.jpg#4r1c: field 'gold_label' is missing"),
    (lambda r: r.update(gold_label="-"), r"snli_ve_dev.jsonl:2: pairID 3416050480.jpg#4r1c: field 'gold_label' '-' is not one of"),
    (lambda r: r.pop("Flickr30K_ID"), r"snli_ve_dev.jsonl:2: pairID 3416050480.jpg#4r1c: field 'Flickr30K_ID' is missing"),
    (lambda r: r.update(sentence2=""), r"field 'sentence2' \(the hypothesis\) is missing or empty"),
])  # fmt: skip
def test_bad_records_name_file_line_and_field(tmp_path, edit, msg):
    bad = copy.deepcopy(RECORDS[1])
    edit(bad)
    _write(tmp_path / "snli_ve_dev.jsonl", [RECORDS[0], bad])
    with pytest.raises(SNLIVEError, match=msg):
        read_split(tmp_path, "dev")


def test_image_absent_from_region_shards(tmp_path):
    path = _write(tmp_path / "snli_ve_dev.jsonl", RECORDS)
    known, key = join_image_names([r["Flickr30K_ID"] for r in RECORDS], ["flickr30k_3416050480", "flickr30k_1"], "auto")
    assert key == "int" and known == {"3416050480": "flickr30k_3416050480"}
    with pytest.raises(SNLIVEError, match=r"snli_ve_dev.jsonl:4: pairID 2267923837.jpg#2r1e: field 'Flickr30K_ID' '2267923837' has no region sample \(joined by int\)"):
        read_snli_ve(path, known_images=known, join_key=key)


def test_accuracy_overall_and_per_class_by_hand(tmp_path):
    ex = read_snli_ve(_write(tmp_path / "snli_ve_dev.jsonl", RECORDS))
    preds = {"3416050480.jpg#4r1n": "entailment", "3416050480.jpg#4r1c": 2, "3416050480.jpg#4r1e": "entailment", "2267923837.jpg#2r1e": "neutral"}
    s = evaluate(preds, ex)
    assert s.accuracy == 50.0 and s.per_class == {"entailment": 50.0, "neutral": 0.0, "contradiction": 100.0}
    with pytest.raises(SNLIVEError, match=r"pairID 3416050480.jpg#4r1n: 'yes' is not one of"):
        evaluate({**preds, "3416050480.jpg#4r1n": "yes"}, ex)
    base = majority_predictions(ex, ex)
    assert set(base.values()) == {"entailment"} and evaluate(base, ex).accuracy == 50.0


def test_head_and_loss():
    head = SNLIVEHead(8, 6, dropout=0.0)
    logits = head(torch.randn(5, 8), torch.randn(5, 6))
    assert logits.shape == (5, 3)
    assert snli_ve_loss(logits, torch.tensor([0, 1, 2, 0, 1])).ndim == 0
    with pytest.raises(ValueError):
        snli_ve_loss(logits[:, :2], torch.tensor([0, 1, 0, 0, 1]))
