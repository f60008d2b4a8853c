"""The retrieval stage end to end on a synthetic corpus whose true pairs are known (captions with the
pairing removed): recall@5 far above random, identical shards with 1 and 2 workers, every record in
the output or the dead letter, counts reconciled, a rerun skipped, user errors in one line."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.regions import run_regions
from pipelines.retrieval.evaluate import recall_at_k
from pipelines.retrieval.run import RetrievalConfig, run_retrieval
from pipelines.synthetic import generate
from schemas.manifest import DEAD_LETTER_NAME, reconciles
from schemas.discovery import list_shards

ONE = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=1"]
TWO = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval")
    generate(root / "sample", num_images=40, seed=3)
    npz = root / "npz"
    shutil.copytree(root / "sample/regions_npz", npz)
    # Planted: an image whose regions carry no detector classes (no tags possible).
    with np.load(npz / "000005.npz") as z:
        kept = {k: z[k] for k in z.files if k not in ("cls_prob", "objects")}
    np.savez(npz / "000005.npz", **kept)
    run_regions(npz_dir=npz, out_dir=root / "regions", num_shards=3)
    captions = [line.split("\t")[0] for line in (root / "sample/captions.tsv").read_text().splitlines()]
    order = np.random.default_rng(0).permutation(len(captions))
    lines = [captions[i].encode() for i in order] + [b"", b"broken \xff line"]  # planted: a blank and an undecodable line
    (root / "sentences.txt").write_bytes(b"\n".join(lines) + b"\n")
    return root


def _cfg(root, out, **kw):
    return RetrievalConfig(str(root / "regions"), str(root / "sentences.txt"), str(root / "sample/objects_vocab.txt"), str(out), **kw)


@pytest.mark.slow
def test_retrieval_end_to_end(corpus):
    one = run_retrieval(_cfg(corpus, corpus / "one"), ONE)
    two = run_retrieval(_cfg(corpus, corpus / "two"), TWO)
    assert one["counts"] == {"in": 40, "out": 39, "rejected": 1} and reconciles(one["counts"])
    assert one["sentences"] == {"in": 81, "out": 80, "rejected": 1, "blank_lines": 1}
    dead = [json.loads(x) for x in (corpus / "one" / DEAD_LETTER_NAME).read_text().splitlines()]
    assert sorted(d["record_id"] for d in dead) == ["000005", "line 82"]
    assert any("no class distribution" in d["reason"] for d in dead)
    # Determinism across worker counts: byte-identical shards.
    a, b = [Path(p) for p in list_shards(corpus / "one", "retrieval")], [Path(p) for p in list_shards(corpus / "two", "retrieval")]
    assert [p.name for p in a] == [p.name for p in b] == ["retrieval-000000.tar", "retrieval-000001.tar", "retrieval-000002.tar"]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    assert one["fingerprint"] == two["fingerprint"]
    # μ-VLA's region–phrase inputs: noun phrases of each retrieved sentence, their embeddings, the tags'
    # embeddings and each region's tag (its class name's place in the tag list).
    from pipelines.retrieval.shards import iter_retrieved
    from schemas.shards import decode_region, iter_shard

    from pipelines.teachers.tag_similarity import read_objects_vocab

    regions = {rec.image_id: rec for p in list_shards(corpus / "regions", "regions") for rec in (decode_region(m, k) for k, m in iter_shard(p))}
    vocab = read_objects_vocab(corpus / "sample/objects_vocab.txt")
    for _, r in (x for p in a for x in iter_retrieved(p)):
        assert len(r.phrases) == len(r.texts) and len(r.phrase_emb) == sum(map(len, r.phrases)) > 0
        assert np.allclose(np.linalg.norm(r.tag_emb.astype(np.float32), axis=1), 1, atol=1e-2)
        reg = regions[r.image_id]
        names = [vocab[c - 1] for c in np.argmax(reg.cls_prob[:, 1:], 1) + 1]
        assert [r.tags[t] if t >= 0 else None for t in r.region_tag] == [n if n in r.tags else None for n in names]
    # The true caption is retrieved far more often than by chance.
    r = recall_at_k(str(corpus / "one"), str(corpus / "sample/captions.tsv"))
    assert r["k"] == 5 and r["images"] == 39 and r["recall"] > 4 * r["random"], r
    # Same inputs: skipped (the shards are not rewritten).
    mtime = a[0].stat().st_mtime_ns
    assert run_retrieval(_cfg(corpus, corpus / "one"))["fingerprint"] == one["fingerprint"] and a[0].stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_faiss_index_in_the_stage_matches_exact(corpus):
    pytest.importorskip("faiss")
    exact = run_retrieval(_cfg(corpus, corpus / "exact", index="exact"))
    ivf = run_retrieval(_cfg(corpus, corpus / "ivf", index="ivf", nlist=4, nprobe=4))  # all lists probed
    assert exact["fingerprint"] != ivf["fingerprint"]
    for x, y in zip(map(Path, list_shards(corpus / "exact", "retrieval")), map(Path, list_shards(corpus / "ivf", "retrieval"))):
        assert x.read_bytes() == y.read_bytes()


def test_cli_user_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipelines.retrieval", "--regions", str(tmp_path), "--sentences", str(tmp_path / "nope.txt"),
                        "--objects-vocab", str(tmp_path / "v.txt"), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--sentences" in r.stderr and "no such file" in r.stderr, r.stderr
    (tmp_path / "s.txt").write_text("a circle\n")
    (tmp_path / "v.txt").write_text("circle\n")
    r = subprocess.run([sys.executable, "-m", "pipelines.retrieval", "--regions", str(tmp_path), "--sentences", str(tmp_path / "s.txt"),
                        "--objects-vocab", str(tmp_path / "v.txt"), "--out", str(tmp_path / "out"), "--top-k", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--top-k" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_retrieval_reads_and_writes_through_a_url(corpus, tmp_path, monkeypatch):
    """Inputs and outputs on a Beam filesystem URL (the stand-in for gs://): the driver reads the counts,
    shards and dead letters back through it; the result equals a local run's."""
    import fake_remote_fs

    root = tmp_path / "bucket"
    shutil.copytree(corpus / "regions", root / "regions")
    shutil.copy(corpus / "sentences.txt", root / "sentences.txt")
    shutil.copy(corpus / "sample/objects_vocab.txt", root / "objects_vocab.txt")
    monkeypatch.setenv(fake_remote_fs.ROOT_ENV, str(root))
    url = f"{fake_remote_fs.SCHEME}://"
    in_memory = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]  # the test scheme lives in this process
    m = run_retrieval(RetrievalConfig(url + "regions", url + "sentences.txt", url + "objects_vocab.txt", url + "out"), in_memory)
    assert m["counts"] == {"in": 40, "out": 39, "rejected": 1} and m["sentences"]["rejected"] == 1
    assert sorted(p.name for p in (root / "out").iterdir()) == [
        DEAD_LETTER_NAME, "_MANIFEST.json", "retrieval-000000.tar", "retrieval-000001.tar", "retrieval-000002.tar"]
    local = run_retrieval(_cfg(corpus, tmp_path / "local"), in_memory)
    assert local["fingerprint"] != "" and [s["samples"] for s in local["shards"]] == [s["samples"] for s in m["shards"]]
    for name in ("retrieval-000000.tar", "retrieval-000001.tar", "retrieval-000002.tar"):
        assert (root / "out" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
