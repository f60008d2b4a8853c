"""The streaming loader: batches, spans, determinism, and bad input (mismatched keys, truncation, bad spans)."""
from __future__ import annotations

import dataclasses
import io
import json
import re
import tarfile

import numpy as np
import pytest
import torch

from schemas.shards import iter_shard, write_shard
from trainer.data.read import DataError
from trainer.data.chain import make_loader
from trainer.data.masking import IGNORE, mask_tokens
from trainer.data.text import _backend as text_backend, load_tokenizer, tokenize_with_spans
from trainer_fixtures import tiny_config, write_corpus


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("minilm")


@pytest.fixture()
def corpus(tmp_path):
    regions, labels = write_corpus(tmp_path / "data", num_images=20, num_shards=2)
    return tmp_path, regions, labels


def batches(cfg, tok, epoch=0):
    return [b for b in make_loader(cfg, tok, epoch)]


def test_batches_have_consistent_shapes_and_targets(corpus, tok):
    root, regions, labels = corpus
    cfg = tiny_config(regions, labels, root / "out")
    got = batches(cfg, tok)
    real = [b for b in got if b["n"]]
    assert real, "no batches"
    total = sum(b["n"] for b in real)
    # 20 images, every 9th without captions (2 of them), 1-2 captions each.
    skips = sum(b["skips"].get("images_without_captions", 0) for b in got)
    assert skips == 2
    assert total >= 18
    for b in real:
        B, T = b["input_ids"].shape
        assert b["text_mask"].shape == (B, T) and b["feat"].shape[:2] == b["region_mask"].shape
        assert (b["mlm_labels"][~b["text_mask"]] == IGNORE).all()
        assert (b["pair_end"] > b["pair_start"]).all()
        assert (b["pair_region"][b["pair_mask"]] < b["region_mask"].sum(1, keepdim=True).expand_as(b["pair_region"])[b["pair_mask"]]).all()
        # ITM negatives carry no MLM / region / grounding targets.
        neg = b["itm_label"] == 0
        assert not b["pair_mask"][neg].any() and (b["mlm_labels"][neg] == IGNORE).all() and not b["region_masked"][neg].any()
    itm = torch.cat([b["itm_label"] for b in real])
    assert 0 < itm.mean() < 1


def test_phrase_spans_map_to_the_phrase_tokens(tok):
    text = "a dog near the unbelievably red ball"
    spans = [(0, 5), (11, 36), (100, 120)]
    ids, tspans = tokenize_with_spans(tok, text, spans[:2], max_len=32)
    words = [tok.decode(ids[s:e]) for s, e in tspans]
    assert words == ["a dog", "the unbelievably red ball"]
    # truncated away → None (the caller drops and counts the phrase)
    ids, tspans = tokenize_with_spans(tok, text, [(0, 5), (31, 36)], max_len=5)
    assert tspans[0] == (1, 3) and tspans[1] is None


@pytest.mark.parametrize("max_len", [5, 36, 512])
def test_tokenizing_through_the_rust_backend_gives_what_the_tokenizer_call_gives(tok, max_len):
    """The loader calls the fast tokenizer's backend directly (the Python wrapper was two thirds of the
    cost): same ids and offsets as ``tok(text, truncation=True, max_length=…)``, truncation included, and
    the caller's tokenizer keeps its own settings."""
    texts = ["a dog near the unbelievably red ball", "", "Ünïcödé café, naïve résumé 東京 🐶 dog", "word " * 100,
             "A MAN in a red shirt, holding a sign.", "   spaced   out   ", "don't stop-believing #1 @home"]
    for text in texts:
        want = tok(text, truncation=True, max_length=max_len, return_offsets_mapping=True)
        settings = tok.backend_tokenizer.truncation
        ids, _ = tokenize_with_spans(tok, text, [], max_len)
        assert tok.backend_tokenizer.truncation == settings
        enc = text_backend(tok, max_len).encode(text)
        assert ids.tolist() == want["input_ids"] == enc.ids, text
        assert [tuple(o) for o in enc.offsets] == [tuple(o) for o in want["offset_mapping"]], text


def test_mlm_masking_is_80_10_10():
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, 200_000)
    masked, labels = mask_tokens(ids, rng, 0.15, mask_id=103, vocab_size=30522, special_ids={101, 102, 0})
    picked = labels != IGNORE
    assert abs(picked.mean() - 0.15) < 0.005
    assert abs((masked[picked] == 103).mean() - 0.8) < 0.01
    assert abs((masked[picked] == ids[picked]).mean() - 0.1) < 0.01


def test_epoch_is_deterministic_and_workers_do_not_change_examples(corpus, tok):
    root, regions, labels = corpus
    cfg = tiny_config(regions, labels, root / "out", num_workers=2)
    a, b = batches(cfg, tok, epoch=1), batches(cfg, tok, epoch=1)
    assert [x.get("uids") for x in a] == [x.get("uids") for x in b]
    for x, y in zip(a, b):
        if x["n"]:
            for k in ("input_ids", "mlm_labels", "feat", "pair_region", "pair_target", "itm_label"):
                assert torch.equal(x[k], y[k]), k
    other = batches(cfg, tok, epoch=2)
    assert [x.get("uids") for x in a] != [x.get("uids") for x in other]


def _rewrite(path, mutate):
    """Rewrite a shard with ``mutate({key: {ext: bytes}})`` applied."""
    samples = dict(iter_shard(path))
    write_shard(path, mutate(samples))


def test_label_keys_that_do_not_match_raise_or_are_skipped(corpus, tok):
    root, regions, labels = corpus
    shard = sorted(labels.glob("labels-*.tar"))[0]

    def rename_last(samples):
        keys = sorted(samples)
        samples["zzz_other"] = samples.pop(keys[-1])
        return samples

    _rewrite(shard, rename_last)
    cfg = tiny_config(regions, labels, root / "out")
    with pytest.raises(DataError, match=r"labels-000000\.tar:zzz_other.*out of step"):
        batches(cfg, tok)
    got = batches(dataclasses.replace(cfg, bad_input="skip"), tok)
    assert sum(b["skips"].get("key_mismatch", 0) for b in got) == 1
    assert sum(b["n"] for b in got) > 0


def test_truncated_tar_raises_or_is_skipped(corpus, tok):
    root, regions, labels = corpus
    shard = sorted(regions.glob("regions-*.tar"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    cfg = tiny_config(regions, labels, root / "out")
    with pytest.raises(DataError, match=r"regions-000001\.tar.*truncated"):
        batches(cfg, tok)
    got = batches(dataclasses.replace(cfg, bad_input="skip"), tok)
    assert sum(b["skips"].get("unreadable_shard", 0) + b["skips"].get("key_mismatch", 0) for b in got) == 1


def test_phrase_span_outside_caption_raises_or_is_skipped(corpus, tok):
    root, regions, labels = corpus
    shard = sorted(labels.glob("labels-*.tar"))[0]
    bad_key = {}

    def break_span(samples):
        for key, members in samples.items():
            meta = json.loads(members["json"])
            if meta["captions"]:
                meta["captions"][0]["phrases"][0]["end"] = 999
                members["json"] = json.dumps(meta).encode()
                bad_key["key"] = key
                break
        return samples

    _rewrite(shard, break_span)
    cfg = tiny_config(regions, labels, root / "out")
    with pytest.raises(DataError, match=rf"{bad_key['key']}.*outside the caption"):
        batches(cfg, tok)
    got = batches(dataclasses.replace(cfg, bad_input="skip"), tok)
    assert sum(b["skips"].get("bad_record", 0) for b in got) == 1
    assert all(not any(u.startswith(bad_key["key"] + "/") for u in b.get("uids", [])) for b in got)


def test_missing_label_shard_is_an_error(corpus, tok):
    root, regions, labels = corpus
    sorted(labels.glob("labels-*.tar"))[0].unlink()
    with pytest.raises(DataError, match="no label shard"):
        batches(tiny_config(regions, labels, root / "out"), tok)


def test_pickle_members_are_refused(corpus, tok):
    root, regions, labels = corpus
    shard = sorted(regions.glob("regions-*.tar"))[0]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("evil.pkl")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x80\x04N."))
    shard.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="forbidden extension"):
        batches(tiny_config(regions, labels, root / "out"), tok)


def test_training_time_threshold_and_soft_targets_reach_the_batch(corpus, tok):
    root, regions, labels = corpus
    base = tiny_config(regions, labels, root / "out", itm_neg_prob=0.0)
    soft = [b for b in batches(dataclasses.replace(base, soft_targets=True, hard_negatives="iou"), tok) if b["n"]]
    t = torch.cat([b["pair_target"][b["pair_mask"]] for b in soft])
    assert ((t > 0) & (t < 1)).any() and (t >= 0).all() and (t <= 1).all()
    # The toy labels put non-matching IoU in [0, 0.45): a 0.3 threshold turns some into positives.
    hard = [b for b in batches(base, tok) if b["n"]]
    low = [b for b in batches(dataclasses.replace(base, iou_threshold=0.3), tok) if b["n"]]
    pos = lambda bs: sum(float(b["pair_target"][b["pair_mask"]].sum()) for b in bs)  # noqa: E731
    assert pos(low) > pos(hard)


def test_collate_zeroes_padding_rows_of_features_in_reused_memory(monkeypatch):
    """Features are collated into uninitialised memory (zero-filling 75 MB per batch of 512 cost 5 % of a
    loader worker); padding rows must still be exact zeros: NaN there would reach attention."""
    from trainer.data import batch as batch_mod

    real_empty = torch.empty
    monkeypatch.setattr(batch_mod.torch, "empty", lambda *a, **k: real_empty(*a, **k).fill_(float("nan")))
    rng = np.random.default_rng(0)

    def example(uid: str, regions: int) -> dict:
        return {"uid": uid, "input_ids": np.arange(5), "mlm_labels": np.full(5, IGNORE), "feat": rng.standard_normal((regions, 8)).astype(np.float16),
                "boxes": np.zeros((regions, 4), np.float32), "cls": None, "pairs": [], "itm": 1.0}

    exs = [example("a", 3), example("b", 6), example("c", 1)]
    out = batch_mod.collate(exs)
    assert out["feat"].shape == (3, 6, 8) and not torch.isnan(out["feat"]).any()
    assert (out["feat"][0, 3:] == 0).all() and (out["feat"][2, 1:] == 0).all()
    for i, ex in enumerate(exs):
        assert torch.equal(out["feat"][i, : len(ex["feat"])], torch.from_numpy(ex["feat"]))


def _collate_before(examples):
    """trainer.data.batch.collate as it was at b7b0f5f (dense cls_target, torch slice assignments), verbatim."""
    b = len(examples)
    t = max(ex["input_ids"].size for ex in examples)
    r = max(ex["feat"].shape[0] for ex in examples)
    d = examples[0]["feat"].shape[1]
    c = max((ex["cls"].shape[1] for ex in examples if ex["cls"] is not None), default=1)
    k = max(1, max(len(ex["pairs"]) for ex in examples))
    out = {
        "input_ids": torch.zeros(b, t, dtype=torch.long), "text_mask": torch.zeros(b, t, dtype=torch.bool),
        "mlm_labels": torch.full((b, t), IGNORE, dtype=torch.long), "feat": torch.zeros(b, r, d, dtype=torch.float16),
        "boxes": torch.zeros(b, r, 4), "region_mask": torch.zeros(b, r, dtype=torch.bool), "region_masked": torch.zeros(b, r, dtype=torch.bool),
        "cls_target": torch.zeros(b, r, c), "itm_label": torch.tensor([ex["itm"] for ex in examples], dtype=torch.float32),
        "pair_region": torch.zeros(b, k, dtype=torch.long), "pair_start": torch.zeros(b, k, dtype=torch.long),
        "pair_end": torch.ones(b, k, dtype=torch.long), "pair_target": torch.zeros(b, k), "pair_mask": torch.zeros(b, k, dtype=torch.bool),
    }
    for i, ex in enumerate(examples):
        n, nr, np_ = ex["input_ids"].size, ex["feat"].shape[0], len(ex["pairs"])
        out["input_ids"][i, :n] = torch.from_numpy(ex["input_ids"])
        out["text_mask"][i, :n] = True
        out["mlm_labels"][i, :n] = torch.from_numpy(ex["mlm_labels"])
        out["feat"][i, :nr] = torch.from_numpy(ex["feat"])
        out["boxes"][i, :nr] = torch.from_numpy(ex["boxes"])
        out["region_mask"][i, :nr] = True
        if ex["cls"] is not None:
            out["region_masked"][i, :nr] = torch.from_numpy(ex["region_masked"])
            out["cls_target"][i, :nr] = torch.from_numpy(ex["cls"])
        if np_:
            p = ex["pairs"]
            spans = ex["phrase_spans"][p.phrase]
            out["pair_region"][i, :np_] = torch.from_numpy(p.region)
            out["pair_start"][i, :np_] = torch.from_numpy(spans[:, 0])
            out["pair_end"][i, :np_] = torch.from_numpy(spans[:, 1])
            out["pair_target"][i, :np_] = torch.from_numpy(p.target)
            out["pair_mask"][i, :np_] = True
    out["uids"] = [ex["uid"] for ex in examples]
    from trainer.data.batch import add_targets

    return add_targets(out)


@pytest.mark.parametrize("with_cls", ["all", "some", "none"])
def test_collate_gives_the_batch_it_gave_before(with_cls):
    """collate fills NumPy buffers and gathers only the masked regions' class rows; every tensor must be
    what the dense torch version built (values, dtypes, shapes)."""
    from trainer.data.batch import collate
    from trainer.data.sampling import Pairs

    rng = np.random.default_rng(1)

    def example(i: int) -> dict:
        n, nr, phrases, k = int(rng.integers(3, 12)), int(rng.integers(1, 7)), int(rng.integers(1, 4)), int(rng.integers(0, 5))
        cls = None
        if with_cls == "all" or (with_cls == "some" and i % 2):
            cls = rng.dirichlet(np.ones(9), nr).astype(np.float16)
        return {"uid": f"u{i}", "input_ids": rng.integers(0, 100, n), "mlm_labels": np.where(rng.random(n) < 0.3, rng.integers(0, 100, n), IGNORE),
                "feat": rng.standard_normal((nr, 8)).astype(np.float16), "boxes": rng.random((nr, 4)).astype(np.float32), "cls": cls,
                "region_masked": rng.random(nr) < 0.4, "phrase_spans": np.sort(rng.integers(1, n, (phrases, 2)), 1) + [0, 1],
                "pairs": Pairs(rng.integers(0, phrases, k), rng.integers(0, nr, k), rng.random(k).astype(np.float32)), "itm": float(i % 3 != 0)}

    exs = [example(i) for i in range(7)]
    new, old = collate(exs), _collate_before(exs)
    assert new.keys() == old.keys()
    for key in old:
        if torch.is_tensor(old[key]):
            assert new[key].dtype == old[key].dtype and torch.equal(new[key], old[key]), key
        else:
            assert new[key] == old[key], key
    assert len(new["mrc_target"]) == int(new["region_masked"].sum())


def test_a_bad_shard_read_by_a_loader_worker_is_one_line(corpus, tok):
    """The DataLoader re-raises a worker's error with the worker's whole traceback in its message;
    BatchStream gives the worker's own line (file, record, why), as the CLI prints it."""
    from trainer.data.stream import BatchStream, worker_error_message

    root, regions, labels = corpus
    shard = sorted(regions.glob("regions-*.tar"))[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # past the first sample: the worker finds it
    stream = BatchStream(tiny_config(regions, labels, root / "out", num_workers=2), tok)
    try:
        with pytest.raises(DataError) as err:
            for _ in range(50):
                stream.next()
    finally:
        stream.close()
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg and re.search(r"regions-000001\.tar.*(truncated|not a tar)", msg), msg
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                        '  File "x.py", line 1, in f\ntrainer.data.read.DataError: a.tar: member k.json is truncated\n')
    assert worker_error_message(wrapped) == "a.tar: member k.json is truncated"
    assert worker_error_message(DataError("plain")) == "plain"
