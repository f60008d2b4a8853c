"""Same-image ITM hard negatives (trainer.data.hard_negatives, itm_negatives) and the held-out ITM evaluation (trainer.eval_itm)."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from schemas.discovery import shard_dir
from schemas.shards import LABEL_PREFIX
from trainer.config import TrainConfig, validate
from trainer.data import chain
from trainer.data.chain import make_loader
from trainer.data.examples import itm_kind, itm_negatives, tokenize
from trainer.data.hard_negatives import COLOURS, RELATIONS, SIZES, BufferVocab, hard_negative, replace, words
from trainer.data.masking import IGNORE, mask_regions as pick_masked_regions, mask_tokens
from trainer.data.read import SkipCounter, decode_pairs, to_examples, zip_label_shards
from trainer.data.shard_set import example_rng, region_shards
from trainer.data.text import load_tokenizer
from trainer_fixtures import one_thread, tiny_config, write_corpus  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]

# A two-phrase caption of an image whose other caption names a green square.
TEXT = "a red circle to the left of a large blue star"
SPANS = [(0, 12), (28, 45)]
IMAGE = (TEXT, "a green square on a plain background")
OTHERS = ["an orange triangle above a small yellow diamond", "a purple star to the right of a medium red diamond",
          "a large green triangle below a blue square"]


def vocab_of(texts):
    v = BufferVocab()
    for t in texts:
        # phrases of the hand-written captions: "a/an ... <noun>" runs, enough for head nouns
        spans = [(m.start(), m.end()) for m in re.finditer(r"\ban? (?:\w+ ){0,2}?(?:circle|square|triangle|diamond|star)\b", t)]
        v.add(t, spans)
    return v


def phrases(text, spans):
    return [text[s:e] for s, e in spans]


def test_replace_shifts_spans_and_fixes_the_article():
    text, spans = replace(TEXT, SPANS, 2, 5, "orange")  # "red" → "orange": "a" must become "an"
    assert text == "an orange circle to the left of a large blue star"
    assert phrases(text, spans) == ["an orange circle", "a large blue star"]
    text, spans = replace(TEXT, SPANS, 13, 27, "to the right of")
    assert phrases(text, spans) == ["a red circle", "a large blue star"] and "to the right of" in text
    text, spans = replace(TEXT, SPANS, 41, 45, "diamond")
    assert phrases(text, spans) == ["a red circle", "a large blue diamond"]


def test_each_kind_changes_one_word_to_one_the_image_does_not_name():
    vocab, image_words = vocab_of(OTHERS + list(IMAGE)), set(words(" ".join(IMAGE)))
    seen = {}
    for seed in range(60):
        made = hard_negative(TEXT, SPANS, IMAGE, vocab, np.random.default_rng(seed))
        assert made is not None
        text, spans, edit = made
        seen.setdefault(edit.kind, set()).add((edit.old, edit.new))
        assert text != TEXT and len(phrases(text, spans)) == 2
        # Exactly the edited words differ (an article may follow the new word's first letter).
        before, after = TEXT.split(), text.split()
        if edit.kind == "relation":
            assert (edit.old, edit.new) == ("to the left of", "to the right of")
            assert text == TEXT.replace("left", "right")
        else:
            changed = [(a, b) for a, b in zip(before, after) if a != b and a not in ("a", "an")]
            assert len(before) == len(after) and changed == [(edit.old, edit.new)]
            assert edit.new not in image_words  # not named by any caption of the image
            assert edit.new in vocab.words  # a word the corpus uses (no unseen-word shortcut)
        # The phrases are the old ones with the edit applied, nothing else.
        for old, new in zip(phrases(TEXT, SPANS), phrases(text, spans)):
            assert old == new or new.split()[-1] == edit.new or edit.new in new.split()
        if edit.kind == "attribute":
            assert edit.old in ("red", "large", "blue")
            if edit.old in ("red", "blue"):
                assert edit.new in ("orange", "yellow", "purple")  # green: this image's other caption names it
            else:
                assert edit.new in ("small", "medium")
        if edit.kind == "object":
            assert edit.old in ("circle", "star") and edit.new in ("triangle", "diamond")  # square: in the image
    assert set(seen) == {"attribute", "object", "relation"}


def test_no_edit_without_replacements_and_no_relation_edit_between_twins():
    assert hard_negative(TEXT, SPANS, IMAGE, BufferVocab(), np.random.default_rng(0)) is None
    twins = "a blue circle to the left of a blue circle"
    vocab = vocab_of(OTHERS + [twins, "a red star to the right of a red square"])
    kinds = {hard_negative(twins, [(0, 13), (29, 42)], (twins,), vocab, np.random.default_rng(s))[2].kind for s in range(30)}
    assert "relation" not in kinds and kinds  # "to the right of" would be just as true


def _examples(texts_by_image):
    out = []
    for i, texts in enumerate(texts_by_image):
        for c, t in enumerate(texts):
            spans = [(m.start(), m.end()) for m in re.finditer(r"\ban? (?:\w+ ){0,2}?(?:circle|square|triangle|diamond|star)\b", t)]
            k = len(spans)
            out.append({"uid": f"im{i}/c{c}", "image_id": f"im{i}", "text": t, "spans": spans, "image_texts": tuple(texts),
                        "align": np.ones((k, 3), np.uint8), "iou": np.ones((k, 3), np.float16), "score": np.ones((k, 3), np.float16),
                        "feat": np.zeros((3, 4), np.float16), "boxes": np.zeros((3, 4), np.float32), "cls": None})
    return out


CORPUS = [[TEXT, IMAGE[1]], OTHERS[:2], [OTHERS[2]], ["a small purple circle above a yellow square", "a yellow square"],
          ["a medium green diamond to the left of a red star"], ["an orange star below a blue triangle"]] * 3


def _old_itm_negatives(src, buffer_size, neg_prob, seed, epoch, rank=0, worker=0):
    """trainer.data.examples.itm_negatives as it was before hard negatives (commit b909907), verbatim."""
    fields = ("text", "spans", "input_ids", "phrase_spans", "align", "iou", "score")
    rng = np.random.default_rng([seed, epoch, rank, worker, 0x17])
    buf = []

    def emit(ex):
        others = [o for o in buf if o["image_id"] != ex["image_id"]]
        if others and rng.random() < neg_prob:
            other = others[rng.integers(len(others))]
            return {**ex, **{f: other[f] for f in fields}, "uid": f"{ex['uid']}|neg|{other['uid']}", "itm": 0.0}
        return {**ex, "itm": 1.0}

    for ex in src:
        if len(buf) < buffer_size:
            buf.append(ex)
            continue
        i = int(rng.integers(len(buf)))
        out, buf[i] = buf[i], ex
        yield emit(out)
    while buf:
        out = buf.pop(int(rng.integers(len(buf))))
        yield emit(out)


def _old_mask_text(src, prob, mask_id, vocab_size, special_ids, seed, epoch, *_):
    """trainer.data.examples.mask_text before ``itm_mask_negatives`` (commit b909907), verbatim."""
    for ex in src:
        if ex["itm"] == 0.0:
            ids, labels = ex["input_ids"], np.full_like(ex["input_ids"], IGNORE)
        else:
            rng = example_rng(seed, epoch, ex["uid"], "mlm")
            ids, labels = mask_tokens(ex["input_ids"], rng, prob, mask_id, vocab_size, special_ids)
        yield {**ex, "input_ids": ids, "mlm_labels": labels}


def _old_mask_regions(src, prob, seed, epoch, *_):
    """trainer.data.examples.mask_regions before ``itm_mask_negatives`` (commit b909907), verbatim."""
    for ex in src:
        n = ex["feat"].shape[0]
        if ex["itm"] == 0.0 or ex["cls"] is None:
            masked = np.zeros(n, dtype=bool)
        else:
            masked = pick_masked_regions(n, example_rng(seed, epoch, ex["uid"], "mrc"), prob)
        feat = ex["feat"]
        if masked.any():
            feat = feat.copy()
            feat[masked] = 0.0
        yield {**ex, "feat": feat, "region_masked": masked}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("minilm")


def _tokenized(tok):
    return list(tokenize(_examples(CORPUS), tok, 32, SkipCounter()))


def _same(a, b):
    assert [x["uid"] for x in a] == [x["uid"] for x in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert (np.array_equal(x[k], y[k]) if isinstance(x[k], np.ndarray) else x[k] == y[k]), k


def test_share_zero_is_the_stream_from_before(tok):
    exs = _tokenized(tok)
    for seed in (0, 3):
        _same(list(itm_negatives(exs, 8, 0.5, seed, 1, hard_share=0.0, tokenizer=tok, max_len=32)), list(_old_itm_negatives(exs, 8, 0.5, seed, 1)))


def test_hard_share_changes_only_the_kind_of_the_same_negatives_deterministically(tok):
    exs = _tokenized(tok)
    base = list(itm_negatives(exs, 8, 0.5, 0, 0))
    hard = list(itm_negatives(exs, 8, 0.5, 0, 0, hard_share=1.0, tokenizer=tok, max_len=32))
    again = list(itm_negatives(exs, 8, 0.5, 0, 0, hard_share=1.0, tokenizer=tok, max_len=32))
    _same(hard, again)
    assert [x["itm"] for x in base] == [x["itm"] for x in hard]
    assert [x["uid"].split("|")[0] for x in base] == [x["uid"].split("|")[0] for x in hard]
    kinds = [itm_kind(x["uid"]) for x in hard]
    assert "positive" in kinds and kinds.count("hard") >= 0.8 * (kinds.count("hard") + kinds.count("swap"))
    originals = {x["uid"]: x for x in exs}
    for x in hard:
        if itm_kind(x["uid"]) == "hard":
            _check_edit(originals[x["uid"].split("|")[0]], x, tok)


def _check_edit(orig: dict, x: dict, tok) -> None:
    """``x`` is ``orig``'s image with one word (or relation) of its caption changed as ``x["itm_edit"]`` says."""
    e = x["itm_edit"]
    assert x["image_id"] == orig["image_id"] and np.array_equal(x["feat"], orig["feat"])
    assert orig["text"][e.start:e.end] == e.old and x["text"] == replace(orig["text"], [], e.start, e.end, e.new)[0]
    if e.kind == "relation":
        assert RELATIONS[e.old.lower()] == e.new.lower()
    else:
        assert e.new.lower() not in {w for t in orig["image_texts"] for w in words(t)}
        if e.kind == "attribute":
            assert {e.old.lower(), e.new.lower()} <= COLOURS or {e.old.lower(), e.new.lower()} <= SIZES
        else:
            assert any(orig["text"][s:t].split()[-1] == e.old for s, t in orig["spans"])
    # The spans are the edited phrases, and the re-tokenized token spans cover them.
    assert len(x["spans"]) == len(orig["spans"])
    got = [tok.decode(x["input_ids"][s:t]) for s, t in x["phrase_spans"]]
    assert got == [tok.decode(tok(x["text"][s:t], add_special_tokens=False)["input_ids"]) for s, t in x["spans"]]
    assert len(x["align"]) == len(x["phrase_spans"])


def test_share_must_lie_in_unit_interval_and_cli_says_so_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"itm_hard_neg_share must lie in \[0, 1\], got 1.5"):
        validate(TrainConfig(itm_hard_neg_share=1.5))
    r = subprocess.run([sys.executable, "-m", "trainer.train", "--itm-hard-neg-share", "-0.2", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "itm_hard_neg_share must lie in [0, 1], got -0.2" in lines[0]


def test_chain_with_unmasked_negatives_matches_the_old_stream_and_hard_ones_carry_no_targets(tmp_path, tok, monkeypatch):
    regions, labels = write_corpus(tmp_path / "data", num_images=20, num_shards=2)
    cfg = tiny_config(regions, labels, tmp_path / "out", itm_mask_negatives=False)  # the default before it was on
    now = list(make_loader(cfg, tok, 0))
    monkeypatch.setattr(chain, "itm_negatives", lambda src, b, p, s, e, r, w, *rest: _old_itm_negatives(src, b, p, s, e, r, w))
    monkeypatch.setattr(chain, "mask_text", _old_mask_text)
    monkeypatch.setattr(chain, "mask_regions", _old_mask_regions)
    before = list(make_loader(cfg, tok, 0))
    monkeypatch.undo()
    assert len(now) == len(before)
    for x, y in zip(now, before):
        assert x.get("uids") == y.get("uids")
        for k in x:
            if torch.is_tensor(x[k]):
                assert torch.equal(x[k], y[k]), k
    hard = [b for b in make_loader(dataclasses.replace(cfg, itm_hard_neg_share=1.0), tok, 0) if b["n"]]
    n_hard = 0
    for b in hard:
        is_hard = torch.tensor(["|hard|" in u for u in b["uids"]])
        n_hard += int(is_hard.sum())
        assert (b["itm_label"][is_hard] == 0).all()
        assert not b["pair_mask"][is_hard].any() and (b["mlm_labels"][is_hard] == IGNORE).all() and not b["region_masked"][is_hard].any()
    assert n_hard > 0


def test_hard_negatives_from_real_shards_name_nothing_the_image_captions_name(tmp_path, tok):
    regions, labels = write_corpus(tmp_path / "data", num_images=24, num_shards=2)
    skips = SkipCounter()
    src = ({"url": s} for s in region_shards(regions))
    src = to_examples(decode_pairs(zip_label_shards(src, str(shard_dir(labels, LABEL_PREFIX)), skips), skips), 36, skips)
    exs = list(tokenize(src, tok, 36, skips))
    out = list(itm_negatives(exs, 16, 1.0, 0, 0, hard_share=1.0, tokenizer=tok, max_len=36, skips=skips))
    hard = [x for x in out if itm_kind(x["uid"]) == "hard"]
    assert len(hard) >= 0.5 * len(out)
    originals = {x["uid"]: x for x in exs}
    for x in hard:
        _check_edit(originals[x["uid"].split("|")[0]], x, tok)


@pytest.mark.slow
def test_eval_itm_reports_each_kind_on_a_tiny_run(tmp_path, capsys):
    from trainer.eval_itm import evaluate, main
    from trainer.train import train

    regions, labels = write_corpus(tmp_path / "data", num_images=24, num_shards=2)
    held_r, held_l = write_corpus(tmp_path / "held", num_images=12, num_shards=2, seed=5)
    run = tmp_path / "run"
    train(tiny_config(regions, labels, run, steps=3, ckpt_every=3, itm_hard_neg_share=0.5))
    main(["--regions", str(held_r), "--labels", str(held_l), "--ckpt", str(run), "--json", str(tmp_path / "r.json"), "--group", "8"])
    printed = capsys.readouterr().out
    assert "positive" in printed and "hard" in printed and "swap" in printed
    r = json.loads((tmp_path / "r.json").read_text())
    captions = 12 - 1  # the toy corpus leaves every 9th image without captions
    assert r["positive"]["n"] >= captions and r["swap"]["n"] == r["positive"]["n"] and 0 < r["hard"]["n"] <= r["positive"]["n"]
    for kind in ("positive", "swap", "hard"):
        assert np.isfinite(r[kind]["loss"]) and 0 <= r[kind]["accuracy"] <= 1
    assert r["step"] == 3 and r["itm_hard_neg_share"] == 0.5
    again = evaluate(str(held_r), str(held_l), str(run), group=8)
    assert {k: again[k] for k in ("positive", "swap", "hard")} == {k: r[k] for k in ("positive", "swap", "hard")}
    with pytest.raises(SystemExit) as e:
        main(["--regions", str(held_r), "--labels", str(held_l), "--ckpt", str(tmp_path / "nope")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a pre-training run" in err[0]


def test_masked_negatives_look_like_positives_but_teach_nothing(tmp_path, tok):
    """With itm_mask_negatives, a negative's caption has [MASK]s and its regions zeroed as a positive's, with no targets."""
    regions, labels = write_corpus(tmp_path / "data", num_images=24, num_shards=2)
    cfg = tiny_config(regions, labels, tmp_path / "out", itm_mask_negatives=True, itm_hard_neg_share=0.5, max_text_len=24)
    plain = [b for b in make_loader(dataclasses.replace(cfg, itm_mask_negatives=False), tok, 0) if b["n"]]
    masked = [b for b in make_loader(cfg, tok, 0) if b["n"]]
    share = {}
    for name, got in (("plain", plain), ("masked", masked)):
        neg = torch.cat([b["itm_label"] == 0 for b in got])
        has_mask = torch.cat([(b["input_ids"] == tok.mask_token_id).any(1) for b in got])
        zeroed = torch.cat([((b["feat"] == 0).all(-1) & b["region_mask"]).any(1) for b in got])
        share[name] = (float(has_mask[neg].float().mean()), float(zeroed[neg].float().mean()), float(has_mask[~neg].float().mean()))
        for b in got:
            n = b["itm_label"] == 0
            assert (b["mlm_labels"][n] == IGNORE).all() and not b["region_masked"][n].any() and not b["pair_mask"][n].any()
    assert share["plain"][:2] == (0.0, 0.0)  # the shortcut: no negative is ever masked
    assert share["masked"][0] > 0.5 and share["masked"][1] > 0.3 and share["masked"][2] > 0.5
    # Positives are untouched by the flag.
    for a, b in zip(plain, masked):
        pos = b["itm_label"] == 1
        assert torch.equal(a["input_ids"][pos], b["input_ids"][pos]) and torch.equal(a["mlm_labels"], b["mlm_labels"])


def test_summary_by_hand():
    from trainer.eval_itm import summarise

    uids = ["a", "a|neg|b", "a|hard|object", "c", "c|hard|relation"]
    r = summarise(uids, torch.tensor([2.0, -1.0, 3.0, -0.5, -2.0]), torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0]))
    assert r["positive"]["n"] == 2 and r["positive"]["accuracy"] == 0.5
    assert r["positive"]["loss"] == pytest.approx((np.log1p(np.exp(-2.0)) + np.log1p(np.exp(0.5))) / 2, rel=1e-5)
    assert r["swap"] == {"n": 1, "loss": pytest.approx(np.log1p(np.exp(-1.0)), rel=1e-5), "accuracy": 1.0}
    assert r["hard"]["accuracy"] == 0.5 and r["hard"]["loss"] == pytest.approx((np.log1p(np.exp(3.0)) + np.log1p(np.exp(-2.0))) / 2, rel=1e-5)
    assert r["hard_ranked"] == {"object": {"n": 1, "rate": 0.0}, "relation": {"n": 1, "rate": 1.0}}
