"""pipelines.retrieval pieces: tag sentences, exact and FAISS search, sentence reading, shard round trip."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.retrieval.index import SentenceIndex
from pipelines.retrieval.shards import Retrieved, decode_retrieved, encode_retrieved, iter_retrieved
from pipelines.retrieval.stage import read_sentences
from pipelines.retrieval.tags import tag_sentence
from schemas.shards import ShardError, write_shard


def test_tag_sentence_orders_distinct_names_by_confidence():
    names = ["circle", "square", "triangle"]
    classes = np.array([2, 1, 2, 3, 1])
    conf = np.array([0.9, 0.5, 0.95, 0.2, 0.5])
    assert tag_sentence(classes, conf, names) == ["square", "circle", "triangle"]
    assert tag_sentence(classes, conf, names, max_regions=2) == ["square"]
    assert tag_sentence(classes, conf, names, min_conf=0.3) == ["square", "circle"]
    assert tag_sentence(classes, None, names) == ["square", "circle", "triangle"]  # all 1: region order
    with pytest.raises(ValueError, match="outside 1..3"):
        tag_sentence(np.array([4]), None, names)


def _normed(rng, n, d=16):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_ranks_by_cosine_then_id():
    emb = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], np.float32)
    idx = SentenceIndex(emb, np.array([10, 11, 7, 12]), "exact")
    ids, sims = idx.search(np.array([1.0, 0.0], np.float32), 3)
    assert ids.tolist() == [7, 10, 12]  # 7 and 10 tie at 1.0: lower id first
    np.testing.assert_allclose(sims, [1.0, 1.0, 0.6], atol=1e-6)
    assert idx.search(np.array([1.0, 0.0], np.float32), 10)[0].shape == (4,)


def test_faiss_ivf_agrees_with_exact_search():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    emb, queries = _normed(rng, 500), _normed(rng, 40)
    ids = np.arange(1, 501)
    exact = SentenceIndex(emb, ids, "exact")
    full = SentenceIndex(emb, ids, "ivf", nlist=16, nprobe=16)  # every list probed: exact
    approx = SentenceIndex(emb, ids, "ivf", nlist=16, nprobe=4)
    overlap = []
    for q in queries:
        e_ids, e_sims = exact.search(q, 5)
        f_ids, f_sims = full.search(q, 5)
        assert f_ids.tolist() == e_ids.tolist() and np.array_equal(f_sims, e_sims)
        overlap.append(len(set(approx.search(q, 5)[0]) & set(e_ids)) / 5)
    assert np.mean(overlap) > 0.6  # a quarter of the lists still finds most true neighbours
    again = SentenceIndex(emb, ids, "ivf", nlist=16, nprobe=4)
    assert all(np.array_equal(again.search(q, 5)[0], approx.search(q, 5)[0]) for q in queries)  # reproducible


def test_index_kind_is_checked():
    with pytest.raises(ValueError, match="unknown index kind"):
        SentenceIndex(np.zeros((1, 2), np.float32), np.array([1]), "hnsw")


def test_read_sentences_blank_and_undecodable_lines(tmp_path):
    p = tmp_path / "s.txt"
    p.write_bytes(b"a red circle\r\n\n  \nbad \xff byte\nthe end")
    items = list(read_sentences(str(p)))
    assert [(t, v.line, v.text) for t, v in items if t == "sentence"] == [("sentence", 1, "a red circle"), ("sentence", 5, "the end")]
    assert [v for t, v in items if t == "blank"] == [2, 3]
    dead = [v for t, v in items if t == "dead"]
    assert len(dead) == 1 and dead[0]["record_id"] == "line 4" and "not UTF-8" in dead[0]["reason"] and dead[0]["source"].endswith(":4")
    p.write_bytes(b"one\n")
    assert [t for t, _ in read_sentences(str(p))] == ["sentence"]


def test_retrieval_shard_round_trip(tmp_path):
    r = Retrieved("000001", ["circle", "square"], np.array([4, 2]), np.array([0.5, 0.25], np.float32), ["a circle", "a square"])
    write_shard(tmp_path / "retrieval-000000.tar", {"000001": encode_retrieved(r)})
    [(key, back)] = list(iter_retrieved(tmp_path / "retrieval-000000.tar"))
    assert key == "000001" and back.tags == r.tags and back.texts == r.texts
    assert back.sentence_ids.tolist() == [4, 2] and back.sims.tolist() == [0.5, 0.25]
    members = encode_retrieved(r)
    del members["sim.npy"]
    with pytest.raises(ShardError, match="lacks"):
        decode_retrieved(members, "x")
