"""The DAG orchestrator: fingerprint-named stage directories, skipping, teacher changes, crash safety."""
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines.dag import DagConfig, labels_dag, label_config, loss_summary, parse_args, summary
from pipelines.label_plan import current_dir, plan_labels
from schemas.manifest import MANIFEST_NAME, read_manifest, reconciles
from schemas.shards import LABEL_PREFIX, REGION_PREFIX, iter_shard
from schemas.discovery import list_shards

IN_MEMORY = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
ROOT = Path(__file__).resolve().parents[1]
STAGES = ("regions", "phrases", "teacher", "labels")


def _cfg(corpus, data, **teacher_args):
    return DagConfig(data=str(data), corpus=str(corpus), num_shards=2, teacher="simulated", teacher_args=teacher_args, beam_args=IN_MEMORY)


def _outputs(d: str | Path) -> dict[str, bytes]:
    """Every published file of a stage directory except the manifest (which holds times and paths)."""
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file() and p.name != MANIFEST_NAME}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from pipelines.synthetic import generate

    root = tmp_path_factory.mktemp("dag")
    generate(root / "sample", num_images=24, seed=0)
    return root / "sample"


@pytest.fixture(scope="module")
def first(corpus, tmp_path_factory):
    """One uninterrupted run with the default simulated teacher: the reference outputs."""
    data = tmp_path_factory.mktemp("first")
    return data, labels_dag(_cfg(corpus, data))


def test_stage_dirs_are_named_by_fingerprint_and_published_with_manifests(first):
    data, report = first
    for s in STAGES:
        m = report[s]
        assert m["ran"] and Path(m["dir"]) == data / s / m["fingerprint"]
        assert read_manifest(m["dir"])["fingerprint"] == m["fingerprint"] and reconciles(m["counts"])
        assert (data / s / "CURRENT").read_text().strip() == m["fingerprint"]
    dag = json.loads((data / "dag.json").read_text())
    assert {s: dag[s]["dir"] for s in STAGES} == {s: report[s]["dir"] for s in STAGES}
    assert current_dir(str(data), "labels") == report["labels"]["dir"]
    from schemas.discovery import shard_dir  # the trainer follows the pointers: --labels DATA and --regions DATA work

    assert Path(shard_dir(data, LABEL_PREFIX)) == Path(report["labels"]["dir"]) and Path(shard_dir(data, REGION_PREFIX)) == Path(report["regions"]["dir"])
    assert Path(shard_dir(data / "labels", LABEL_PREFIX)) == Path(report["labels"]["dir"])
    # label shard k pairs with region shard k, key by key
    for rs, ls in zip(list_shards(report["regions"]["dir"], REGION_PREFIX), list_shards(report["labels"]["dir"], LABEL_PREFIX), strict=True):
        assert [k for k, _ in iter_shard(rs)] == [k for k, _ in iter_shard(ls)]


def test_changing_only_the_teacher_reruns_teacher_and_labels(first, corpus, tmp_path, caplog):
    ref_data, ref = first
    data = tmp_path / "data"
    a = labels_dag(_cfg(corpus, data))
    phrases_manifest = Path(a["phrases"]["dir"]) / MANIFEST_NAME
    before = {s: (Path(a[s]["dir"]) / MANIFEST_NAME).stat().st_mtime_ns for s in ("regions", "phrases")}

    with caplog.at_level(logging.INFO):
        b = labels_dag(_cfg(corpus, data, miss_rate=0.6, seed=1))  # another teacher: new parameters
    ran = {s for s in STAGES if b[s]["ran"]}
    assert ran == {"teacher", "labels"}
    assert "stage regions: skipped (complete manifest" in caplog.text and "stage phrases: skipped (complete manifest" in caplog.text
    assert "stage teacher: running" in caplog.text and "stage labels: running" in caplog.text
    assert {s: (Path(b[s]["dir"]) / MANIFEST_NAME).stat().st_mtime_ns for s in ("regions", "phrases")} == before
    assert b["phrases"]["dir"] == a["phrases"]["dir"] and phrases_manifest.exists()
    assert b["teacher"]["fingerprint"] != a["teacher"]["fingerprint"] and b["labels"]["fingerprint"] != a["labels"]["fingerprint"]
    # the label shards changed, and later steps find the new ones
    old, new = _outputs(a["labels"]["dir"]), _outputs(b["labels"]["dir"])
    assert [n for n in old if n.startswith(LABEL_PREFIX)] == [n for n in new if n.startswith(LABEL_PREFIX)]
    assert any(old[n] != new[n] for n in old if n.startswith(LABEL_PREFIX))
    assert json.loads((data / "dag.json").read_text())["labels"]["dir"] == b["labels"]["dir"] == current_dir(str(data), "labels")
    assert b["labels"]["counts"]["in"] == a["labels"]["counts"]["in"] and b["labels"]["stats"]["positive_pairs"] < a["labels"]["stats"]["positive_pairs"]
    # phrases read back from Parquet give the same labels as a run that extracts them afresh
    fresh = labels_dag(_cfg(corpus, tmp_path / "fresh", miss_rate=0.6, seed=1))
    assert all(fresh[s]["ran"] for s in STAGES)
    assert _outputs(fresh["labels"]["dir"]) == new and _outputs(fresh["teacher"]["dir"]) == _outputs(b["teacher"]["dir"])
    # back to the first teacher: everything is complete already
    again = labels_dag(_cfg(corpus, data))
    assert not any(again[s]["ran"] for s in STAGES) and again["labels"]["dir"] == a["labels"]["dir"] == current_dir(str(data), "labels")
    assert "skipped" in summary(again)


def test_changed_teacher_weights_change_teacher_and_label_fingerprints_only(first, corpus, tmp_path):
    _, report = first
    vocab = tmp_path / "objects_vocab.txt"
    vocab.write_bytes((corpus / "objects_vocab.txt").read_bytes())
    cfg = DagConfig(data=str(tmp_path / "d"), corpus=str(corpus), teacher="tag_similarity", teacher_args={"objects_vocab": str(vocab)})
    _, _, fps = plan_labels(label_config(cfg, report["regions"]["dir"]))
    vocab.write_text(vocab.read_text().replace("circle", "disc", 1))  # same path, same parameters, new content
    _, _, fps2 = plan_labels(label_config(cfg, report["regions"]["dir"]))
    assert fps2["phrases"] == fps["phrases"]
    assert fps2["teacher"] != fps["teacher"] and fps2["labels"] != fps["labels"]


KILLER = textwrap.dedent(
    """
    import os, signal, sys, tempfile
    from pathlib import Path
    import {module} as target
    real, calls = target.write_shard, [0]

    def dying_write_shard(path, samples):
        calls[0] += 1
        if calls[0] < 2:
            return real(path, samples)
        # Half of the shard under write_shard's temp name, then SIGKILL: a worker dying mid-write.
        with tempfile.TemporaryDirectory() as d:
            whole = Path(d) / Path(path).name
            real(whole, samples)
            data = whole.read_bytes()
        Path(path).with_name(f".{{Path(path).name}}.tmp-{{os.getpid()}}").write_bytes(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    target.write_shard = dying_write_shard
    from pipelines.dag import main
    main(sys.argv[1:])
    """
)


@pytest.mark.parametrize("stage,module", [("regions", "pipelines.stages.regions"), ("labels", "pipelines.stages.labels")])
def test_stage_killed_mid_write_leaves_no_manifest_and_rerun_equals_uninterrupted(first, corpus, tmp_path, stage, module):
    ref_data, ref = first
    data = tmp_path / "data"
    cmd = [sys.executable, "-c", KILLER.format(module=module), "labels", "--data", str(data), "--corpus", str(corpus),
           "--num-shards", "2", "--teacher", "simulated", *IN_MEMORY]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    killed = data / stage / ref[stage]["fingerprint"]
    assert killed.is_dir() and not (killed / MANIFEST_NAME).exists()
    prefix = REGION_PREFIX if stage == "regions" else LABEL_PREFIX
    temps = [p.name for p in killed.iterdir() if p.name.startswith(f".{prefix}-")]
    assert temps, "the killed writer left its temp file"
    visible = list_shards(killed, prefix)
    assert len(visible) == 1  # the shard written before the kill; the half one is invisible
    for p in visible:
        list(iter_shard(p))  # complete: reads to the end-of-archive marker
    assert not (data / stage / "CURRENT").exists() and not (data / "dag.json").exists()

    rerun = labels_dag(_cfg(corpus, data))
    assert rerun[stage]["ran"] and read_manifest(killed)["fingerprint"] == ref[stage]["fingerprint"]
    if stage == "labels":
        assert not rerun["regions"]["ran"]  # it had completed before the kill
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]  # temp files cleaned up
    for s in STAGES:  # byte for byte what the uninterrupted run published
        assert rerun[s]["fingerprint"] == ref[s]["fingerprint"]
        assert _outputs(rerun[s]["dir"]) == _outputs(ref[s]["dir"]), s


def test_loss_summary_and_cli(tmp_path):
    rows = [{"step": i + 1, "loss": 10.0 - i, "word": 5.0, "img": 1.0, "align": 0.7, "gnd": 0.6 - i / 100} for i in range(20)]
    (tmp_path / "losses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = loss_summary(tmp_path / "losses.jsonl")
    assert s["loss"]["first"] == 10.0 and s["loss"]["last"] == -9.0 and s["loss"]["last_10pct_mean"] == pytest.approx(-8.5)
    command, cfg, _ = parse_args(["pretrain", "--data", "D", "--teacher", "oracle", "--teacher-arg", "x=1", "--steps", "7",
                                  "--train-arg=--batch-size", "--train-arg=8", "--runner=FlinkRunner", "--flink_master=h:8081"])
    assert command == "pretrain" and cfg.teacher_args == {"x": "1"} and cfg.steps == 7
    assert cfg.train_args == ["--batch-size", "8"] and cfg.beam_args == ["--runner=FlinkRunner", "--flink_master=h:8081"]


TINY_TRAINER = ["--batch-size", "4", "--num-workers", "0", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2",
                "--intermediate-size", "64", "--progress", "false", "--warmup-steps", "1"]


def test_pretrain_runs_on_the_current_labels_and_reruns_when_they_change(first, corpus, tmp_path):
    import shutil

    from pipelines.dag import pretrain_stage

    data = tmp_path / "data"
    shutil.copytree(first[0], data)  # complete stages, wherever they live, are skipped
    cfg = DagConfig(**{**_cfg(corpus, data).__dict__, "steps": 2, "train_args": TINY_TRAINER})
    report = labels_dag(cfg)
    assert not any(report[s]["ran"] for s in STAGES)
    a = pretrain_stage(cfg, report)
    assert a["ran"] and a["upstream"]["labels"] == report["labels"]["fingerprint"]
    assert json.loads((Path(a["dir"]) / "config.json").read_text())["labels"] == report["labels"]["dir"]
    assert set(a["losses"]) >= {"loss", "gnd"} and len((Path(a["dir"]) / "losses.jsonl").read_text().splitlines()) == 2
    assert not pretrain_stage(cfg, labels_dag(cfg))["ran"]  # complete: skipped

    cfg_b = DagConfig(**{**cfg.__dict__, "teacher_args": {"miss_rate": 0.6, "seed": 1}})
    report_b = labels_dag(cfg_b)
    b = pretrain_stage(cfg_b, report_b)
    assert b["ran"] and b["dir"] != a["dir"] and b["upstream"]["labels"] == report_b["labels"]["fingerprint"] != report["labels"]["fingerprint"]
    assert json.loads((Path(b["dir"]) / "config.json").read_text())["labels"] == report_b["labels"]["dir"]
    assert json.loads((data / "dag.json").read_text())["pretrain"]["dir"] == b["dir"]


def test_a_no_op_run_reads_no_file_content(first, corpus, tmp_path, monkeypatch):
    """Deciding to skip costs O(files): fingerprints come from file metadata, not bytes (issue #11)."""
    import shutil

    from pipelines import regions
    from ssga_io import fs

    data = tmp_path / "data"
    shutil.copytree(first[0], data)

    def no_reading(*a, **k):
        raise AssertionError("a skipped stage read file content to fingerprint it")

    for target, name in ((fs, "content_digest"), (regions, "scan_source"), (regions, "scan_tsv"), (regions, "files_digest")):
        monkeypatch.setattr(target, name, no_reading)
    report = labels_dag(_cfg(corpus, data))
    assert not any(report[s]["ran"] for s in STAGES)
    assert {s: report[s]["fingerprint"] for s in STAGES} == {s: first[1][s]["fingerprint"] for s in STAGES}
