"""End to end: captions + region shards → phrases → teacher → match → label shards, on the Beam DirectRunner."""
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from label_fixtures import make_corpus
from pipelines.label_pipeline import LabelConfig, parse_args, run_labels, summary
from schemas.manifest import DEAD_LETTER_NAME, read_manifest, reconciles
from schemas.shards import LABEL_PREFIX, REGION_PREFIX, iter_labels, iter_regions, iter_shard
from schemas.discovery import list_shards

ONE_WORKER = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=1"]
TWO_WORKERS = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
IN_MEMORY = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]


def _cfg(c, out, teacher="tag_similarity", **kw):
    args = {"objects_vocab": str(c["vocab"])} if teacher == "tag_similarity" else {}
    return LabelConfig(captions=str(c["captions"]), regions=str(c["regions"]), out=str(out), teacher=teacher,
                       teacher_args=args, flickr30k=str(c["flickr30k"]), **kw)


def _dead(m, stage):
    return [json.loads(line) for line in (Path(m[stage]["dir"]) / DEAD_LETTER_NAME).read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    c = make_corpus(root / "corpus", num_images=8, num_shards=2)
    one = run_labels(_cfg(c, root / "one"), ONE_WORKER)
    two = run_labels(_cfg(c, root / "two"), TWO_WORKERS)  # a second run, with two workers
    return c, root, one, two


def test_label_shards_zip_with_region_shards_key_by_key(runs):
    c, root, m, _ = runs
    region_shards = list_shards(c["regions"], REGION_PREFIX)
    label_shards = list_shards(m["labels"]["dir"], LABEL_PREFIX)
    assert [Path(p).name.split("-")[1] for p in label_shards] == [Path(p).name.split("-")[1] for p in region_shards]
    seen = 0
    for rs, ls in zip(region_shards, label_shards):
        regions, labels = list(iter_regions(rs)), list(iter_labels(ls))
        assert [k for k, _ in regions] == [k for k, _ in labels]
        for (_, reg), (_, lab) in zip(regions, labels):
            seen += 1
            p = sum(len(cap["phrases"]) for cap in lab.captions)
            assert lab.image_id == reg.image_id and lab.num_boxes == reg.num_boxes
            assert lab.align.shape == lab.iou.shape == lab.score.shape == (p, reg.num_boxes)
            assert lab.align.dtype == np.uint8 and lab.iou.dtype == np.float32
            np.testing.assert_array_equal(lab.align, (lab.iou >= 0.5) & (lab.score > 0))
            assert [cap["caption_id"] for cap in lab.captions] == sorted(cap["caption_id"] for cap in lab.captions)
            if reg.image_id in (c["no_caption"], c["no_cls"]):
                assert p == 0 and lab.captions == []  # every region image gets a sample, even with P = 0
    assert seen == m["labels"]["images"]["in"] == m["labels"]["images"]["out"] == 7


def test_nothing_is_lost_dead_letters_and_counts_reconcile(runs):
    c, root, m, _ = runs
    out = root / "one"
    for s in ("phrases", "teacher", "labels"):
        assert reconciles(m[s]["counts"]), (s, m[s]["counts"])
        assert Path(m[s]["dir"]) == out / s / m[s]["fingerprint"]  # output named by its fingerprint
        assert read_manifest(m[s]["dir"])["fingerprint"] == m[s]["fingerprint"]
        assert (out / s / "CURRENT").read_text().strip() == m[s]["fingerprint"]
    assert m["phrases"]["counts"] == {"in": c["num_rows"], "out": m["teacher"]["counts"]["in"], "rejected": 2}
    reasons = {d["record_id"]: d["reason"] for d in _dead(m, "phrases") + _dead(m, "teacher")}
    assert "2 tab-separated columns" in reasons[f"{c['captions']}:4"]
    assert "no noun phrase" in reasons["000000#2"]
    assert "not in the region source" in reasons[f"{c['missing']}#0"] and "not in the region source" in reasons[f"{c['missing']}#1"]
    assert "teacher failed" in reasons[f"{c['no_cls']}#0"] and "cls_prob" in reasons[f"{c['no_cls']}#1"]
    assert m["teacher"]["counts"]["rejected"] == len(_dead(m, "teacher")) == 4
    assert m["labels"]["counts"]["out"] == m["teacher"]["counts"]["out"] == m["labels"]["stats"]["captions"]
    # Parquet stages hold exactly the surviving records
    phr = sum(pq.read_table(p).num_rows for p in Path(m["phrases"]["dir"]).glob("phrases-*.parquet"))
    tea = pq.read_table(sorted(Path(m["teacher"]["dir"]).glob("teacher-*.parquet"))[0])
    assert phr == m["phrases"]["counts"]["out"]
    assert set(tea.column("teacher").to_pylist()) == {m["teacher"]["teacher"]["fingerprint"]}
    stats = m["labels"]["stats"]
    assert sum(stats["phrases_per_caption"].values()) == stats["captions"]
    assert sum(stats["positives_per_phrase"].values()) == stats["phrases"]
    assert sum(stats["teacher_score_hist"].values()) == stats["teacher_boxes"] > 0


def test_byte_identical_on_rerun_and_with_two_workers(runs):
    _, root, one, two = runs
    for stage, pattern in (("labels", "labels-*.tar"), ("phrases", "*.parquet"), ("teacher", "*.parquet")):
        a = sorted(Path(one[stage]["dir"]).glob(pattern))
        b = sorted(Path(two[stage]["dir"]).glob(pattern))
        assert [p.name for p in a] == [p.name for p in b] and a
        for x, y in zip(a, b):
            assert x.read_bytes() == y.read_bytes(), x.name
    assert (Path(one["teacher"]["dir"]) / DEAD_LETTER_NAME).read_bytes() == (Path(two["teacher"]["dir"]) / DEAD_LETTER_NAME).read_bytes()
    assert one["labels"]["fingerprint"] == two["labels"]["fingerprint"]


def test_precision_recall_in_manifest_and_summary(runs):
    _, _, m, _ = runs
    q = m["labels"]["quality"]["tag_similarity"]
    assert 0 < q["precision"] <= 1 and 0 < q["recall"] <= 1 and q["phrases_with_gt"] == m["labels"]["stats"]["phrases"]
    assert q["precision"] == q["tp"] / (q["tp"] + q["fp"])
    assert "precision=" in summary(m)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """40 images from the project's generator, regions ingested from the .npz form (cls_prob present)."""
    from pipelines.regions import run_regions
    from pipelines.synthetic import generate

    root = tmp_path_factory.mktemp("generated")
    generate(root / "sample", num_images=40, seed=0)
    run_regions(npz_dir=root / "sample" / "regions_npz", out_dir=root / "regions", num_shards=3, pipeline_args=IN_MEMORY)
    return root


def test_generated_corpus_with_oracle_teacher_end_to_end(generated, tmp_path):
    sample = generated / "sample"
    cfg = LabelConfig(captions=str(sample / "captions.tsv"), regions=str(generated / "regions"), out=str(tmp_path / "oracle"),
                      teacher="oracle", flickr30k=str(sample / "flickr30k"))
    m = run_labels(cfg, IN_MEMORY)
    q = m["labels"]["quality"]["oracle"]
    assert q["precision"] == 1.0 and q["recall"] == 1.0 and q["tp"] > 0 and q["phrases_without_gt"] == 0
    assert all(reconciles(m[s]["counts"]) for s in ("phrases", "teacher", "labels"))
    assert m["labels"]["images"] == {"in": 40, "out": 40} and m["labels"]["stats"]["captions"] == 80
    for rs, ls in zip(list_shards(generated / "regions", REGION_PREFIX), list_shards(m["labels"]["dir"], LABEL_PREFIX), strict=True):
        assert Path(rs).name.replace(REGION_PREFIX, LABEL_PREFIX) == Path(ls).name
        assert [k for k, _ in iter_shard(rs)] == [k for k, _ in iter_shard(ls)]
    before = (Path(m["labels"]["dir"]) / "_MANIFEST.json").stat().st_mtime_ns
    again = run_labels(cfg, IN_MEMORY)  # same fingerprint: nothing re-runs
    assert again["labels"]["fingerprint"] == m["labels"]["fingerprint"]
    assert not any(again[s]["ran"] for s in ("phrases", "teacher", "labels")) and all(m[s]["ran"] for s in ("phrases", "teacher", "labels"))
    assert (Path(m["labels"]["dir"]) / "_MANIFEST.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("teacher", ["tag_similarity", "simulated", "grounding_dino", "owlv2"])
def test_generated_corpus_with_each_teacher(generated, tmp_path, teacher):
    sample = generated / "sample"
    args = {
        "tag_similarity": {"objects_vocab": str(sample / "objects_vocab.txt")},
        "simulated": {"miss_rate": 0.2, "false_rate": 0.5, "jitter": 0.1, "seed": 3},
        "grounding_dino": {"box_threshold": 0.0, "top_k": 2},
        "owlv2": {"box_threshold": 0.0, "top_k": 2},
    }[teacher]
    if teacher in ("grounding_dino", "owlv2"):  # tiny random weights, saved and loaded back like real ones
        import hf_tiny

        save = hf_tiny.save_tiny_grounding_dino if teacher == "grounding_dino" else hf_tiny.save_tiny_owlv2
        args["model_dir"] = str(save(tmp_path / teacher))
    cfg = LabelConfig(captions=str(sample / "captions.tsv"), regions=str(generated / "regions"), out=str(tmp_path / "out"),
                      teacher=teacher, teacher_args=args, flickr30k=str(sample / "flickr30k"))
    m = run_labels(cfg, IN_MEMORY)
    assert all(reconciles(m[s]["counts"]) for s in ("phrases", "teacher", "labels"))
    assert m["teacher"]["counts"] == {"in": 80, "out": 80, "rejected": 0}
    assert m["labels"]["images"] == {"in": 40, "out": 40}
    st, q = m["labels"]["stats"], m["labels"]["quality"][teacher]
    assert st["teacher_boxes"] > 0 and q["phrases_without_gt"] == 0 and q["tp"] + q["fp"] == st["positive_pairs"]
    if teacher in ("tag_similarity", "simulated"):  # the tiny HF models have random weights: no skill to check
        assert q["tp"] > 0
    if teacher == "simulated":  # misses and false boxes cost recall and precision, but most labels survive
        assert 0.5 < q["recall"] < 1.0 and 0.5 < q["precision"] <= 1.0
    for rs, ls in zip(list_shards(generated / "regions", REGION_PREFIX), list_shards(m["labels"]["dir"], LABEL_PREFIX), strict=True):
        assert [k for k, _ in iter_shard(rs)] == [k for k, _ in iter_shard(ls)]


def test_cli_parsing_passes_beam_options_through():
    cfg, beam_args = parse_args(["--captions", "c.tsv", "--regions", "r", "--out", "o", "--teacher", "simulated",
                                 "--teacher-arg", "miss_rate=0.3", "--iou-threshold", "0.6", "--runner=FlinkRunner",
                                 "--flink_master=host:8081"])
    assert cfg.teacher_args == {"miss_rate": "0.3"} and cfg.iou_threshold == 0.6
    assert beam_args == ["--runner=FlinkRunner", "--flink_master=host:8081"]


def test_runs_on_a_non_local_filesystem(generated, tmp_path, monkeypatch):
    """Every read and write goes through Beam's FileSystems for URL paths (as for gs:// on Dataflow)."""
    import shutil

    import fake_remote_fs  # noqa: F401 - registers the ssgatest:// scheme with Beam

    root = tmp_path / "bucket"
    shutil.copytree(generated / "sample", root / "sample")
    shutil.copytree(generated / "regions", root / "regions")
    monkeypatch.setenv(fake_remote_fs.ROOT_ENV, str(root))
    url = f"{fake_remote_fs.SCHEME}://"
    cfg = LabelConfig(captions=url + "sample/captions.tsv", regions=url + "regions", out=url + "labels", teacher="simulated",
                      flickr30k=url + "sample/flickr30k")
    m = run_labels(cfg, IN_MEMORY)
    assert all(reconciles(m[s]["counts"]) for s in ("phrases", "teacher", "labels"))
    assert m["labels"]["images"] == {"in": 40, "out": 40}
    for rs in list_shards(root / "regions", REGION_PREFIX):
        ls = root / "labels" / "labels" / m["labels"]["fingerprint"] / Path(rs).name.replace(REGION_PREFIX, LABEL_PREFIX)
        assert [k for k, _ in iter_shard(rs)] == [k for k, _ in iter_shard(ls)]
    assert (root / "labels" / "labels" / m["labels"]["fingerprint"] / "_MANIFEST.json").exists()
    assert (root / "labels" / "teacher" / m["teacher"]["fingerprint"] / DEAD_LETTER_NAME).exists()
    assert run_labels(cfg, IN_MEMORY)["labels"]["fingerprint"] == m["labels"]["fingerprint"]  # complete: skipped


def test_tag_similarity_refuses_regions_without_class_distributions(tmp_path):
    c = make_corpus(tmp_path / "corpus", num_images=5, num_shards=1)
    manifest = json.loads((c["regions"] / "_MANIFEST.json").read_text())
    (c["regions"] / "_MANIFEST.json").write_text(json.dumps({**manifest, "has_cls_prob": False}))
    with pytest.raises(ValueError, match="no detector classes.*--lxmert"):
        run_labels(_cfg(c, tmp_path / "out"), IN_MEMORY)
    assert not (tmp_path / "out").exists()  # refused before any work


# Where the graph groups on purpose: sources spread their input (Reshuffle), sinks group by output
# shard, and counts, statistics and dead letters are gathered. Any other grouping sits between stages.
SINKS_AND_SOURCES = {"ReadCaptions", "ReadRegions", "ReadPhrases", "ReadTeacher", "WritePhrases", "WriteTeacher", "WriteLabels",
                     "PhraseCounts", "TeacherCounts", "LabelCounts", "PhraseDeadLetters", "TeacherDeadLetters", "LabelDeadLetters",
                     "SumStats"}


@pytest.mark.parametrize("run", [
    {"phrases": True, "teacher": True, "labels": True},
    {"phrases": False, "teacher": True, "labels": True},  # a new teacher: phrases read back from Parquet
    {"phrases": False, "teacher": False, "labels": True},  # a new IoU threshold: teacher records read back
], ids=["all", "stored-phrases", "stored-teacher"])
def test_teacher_match_labels_group_by_block_once(tmp_path, run):
    """Between the stages, one shuffle: each block of images is grouped once and carried through teacher →
    match → labels (no re-join by image, no join by caption id), whichever stages are read back."""
    import apache_beam as beam
    from apache_beam.portability import common_urns

    from pipelines.label_graph import build_pipeline
    from pipelines.label_plan import plan_labels, stage_dirs

    c = make_corpus(tmp_path / "corpus", num_images=4, num_shards=2)
    cfg = _cfg(c, tmp_path / "out")
    teacher, params, fps = plan_labels(cfg)
    p = beam.Pipeline()
    build_pipeline(p, cfg, teacher.fingerprint, params, stage_dirs(cfg.out, fps), run)
    proto = p.to_runner_api()
    grouping = {t.unique_name.split("/")[0] for t in proto.components.transforms.values() if t.spec.urn == common_urns.primitives.GROUP_BY_KEY.urn}
    assert grouping - SINKS_AND_SOURCES == {"GroupByBlock"}
