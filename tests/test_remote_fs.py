"""Every stage and the trainer on a non-local Beam filesystem (``ssgatest://``, the stand-in for ``gs://``).

End to end: region ingest → label DAG → the trainer streams a batch and takes a few steps, with every
data path a URL; nothing lands outside the bucket (a scratch cwd and TMPDIR stay empty), and the
manifests reconcile. Plus the pieces: atomic remote writes, one-line errors for unknown schemes.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import fake_remote_fs
from ssga_io import fs

ROOT = Path(__file__).resolve().parents[1]
IN_MEMORY = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]  # workers in this process see the test scheme
URL = f"{fake_remote_fs.SCHEME}://"


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    root = tmp_path / "bucket"
    root.mkdir()
    monkeypatch.setenv(fake_remote_fs.ROOT_ENV, str(root))
    return root


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """An empty cwd and TMPDIR: whatever a stage leaves on the local disk shows up there."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(), tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return cwd, tmp


def _left_behind(*dirs: Path) -> list[str]:
    """Files under ``dirs`` (Beam's DirectRunner leaves empty scratch directories in TMPDIR: no data)."""
    return sorted(str(p) for d in dirs for p in d.rglob("*") if not p.is_dir())


def test_remote_write_is_atomic_and_a_failed_write_leaves_nothing(bucket):
    fs.write_text(URL + "d/a.txt", "one")
    fs.write_text(URL + "d/a.txt", "two")  # replaces
    assert fs.read_text(URL + "d/a.txt") == "two"
    with pytest.raises(KeyError):
        with fs.open_write(URL + "d/b.txt") as f:
            f.write(b"half")
            assert not fs.exists(URL + "d/b.txt")  # not visible under its name while written
            raise KeyError("writer died")
    assert sorted(p.name for p in (bucket / "d").iterdir()) == ["a.txt"]  # no temp object left either


def test_shards_round_trip_through_a_url(bucket):
    from schemas.discovery import list_shards
    from schemas.shards import iter_shard, write_shard

    samples = {"b": {"json": b'{"x": 2}'}, "a": {"json": b'{"x": 1}', "feat.npy": b"\x93NUMPY"}}
    write_shard(URL + "s/regions-000000.tar", samples)
    local = bucket / "local.tar"
    write_shard(local, samples)
    assert (bucket / "s" / "regions-000000.tar").read_bytes() == local.read_bytes()  # same bytes as a local write
    assert list_shards(URL + "s", "regions") == [URL + "s/regions-000000.tar"]
    assert [k for k, _ in iter_shard(URL + "s/regions-000000.tar")] == ["a", "b"]


def test_a_scheme_without_a_filesystem_is_one_line_naming_the_url_and_what_to_install():
    with pytest.raises(fs.UnsupportedURL, match=r"^nosuch://b/regions/\*.tar: no filesystem for nosuch:// is installed: pip install"):
        fs.glob("nosuch://b/regions/*.tar")
    assert "apache-beam[gcp]" in fs._install_hint("gs://bucket/x") and "apache-beam[aws]" in fs._install_hint("s3://b/x")


def test_trainer_cli_names_an_unreadable_url_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "trainer.train", "--regions", "nosuch://bucket/regions", "--labels", "nosuch://bucket/labels",
                        "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "nosuch://bucket/regions" in errors[0] and "pip install" in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_trainer_run_directory_must_be_local():
    from trainer.config import TrainConfig, validate

    with pytest.raises(ValueError, match="must be a local or mounted directory"):
        validate(TrainConfig(regions="gs://b/regions", labels="gs://b/labels", out="gs://b/run"))


def test_trainer_reads_local_shards_without_importing_beam(tmp_path):
    """Local paths keep their fast path: Beam's FileSystems is imported only for a URL."""
    code = (
        "import sys\n"
        "from trainer.toydata import write_corpus\n"
        "from trainer.data.shard_set import nonempty_region_shards, probe_shapes, label_shard_for\n"
        "from schemas.shards import iter_shard\n"
        f"r, l = write_corpus({str(tmp_path)!r}, num_images=4, num_shards=2)\n"
        "shards = nonempty_region_shards(str(r))\n"
        "assert shards and probe_shapes(str(r))[0] > 0\n"
        "assert list(iter_shard(label_shard_for(shards[0], str(l))))\n"
        "assert 'apache_beam' not in sys.modules, 'beam imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr


def test_dag_pretrain_refuses_a_url_data_root_in_one_line(capsys):
    from pipelines.dag.command import main

    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--data", "gs://bucket/ssga"])
    assert e.value.code == 2
    assert "checkpoints to a local directory" in capsys.readouterr().err


@pytest.mark.slow
def test_ingest_labels_and_training_all_through_urls(bucket, scratch, tmp_path):
    """regions → phrases → teacher → labels on ssgatest://, then the trainer streams the shards from the URLs."""
    from pipelines.dag.stages import DagConfig, labels_dag
    from pipelines.synthetic import generate
    from schemas.discovery import current_output, list_shards
    from schemas.manifest import DEAD_LETTER_NAME, read_manifest, reconciles
    from schemas.shards import LABEL_PREFIX, REGION_PREFIX, iter_shard

    generate(bucket / "sample", num_images=12, seed=0)  # the corpus "uploaded" to the bucket
    before = set(_left_behind(bucket))
    cfg = DagConfig(data=URL + "data", corpus=URL + "sample", teacher="simulated", num_shards=2, beam_args=IN_MEMORY)
    report = labels_dag(cfg)

    # Outputs are where the URLs say, and the manifests reconcile.
    assert all(report[s]["dir"].startswith(URL) for s in ("regions", "phrases", "teacher", "labels"))
    for s in ("regions", "phrases", "teacher", "labels"):
        m = read_manifest(report[s]["dir"])
        assert m and reconciles(m["counts"]), (s, m and m["counts"])
        assert fs.exists(fs.join(report[s]["dir"], DEAD_LETTER_NAME))
    regions_dir, labels_dir = current_output(URL + "data/regions"), current_output(URL + "data/labels")
    assert regions_dir == report["regions"]["dir"] and labels_dir == report["labels"]["dir"]
    assert report["regions"]["counts"] == {"in": 12, "out": 12, "rejected": 0}
    assert report["labels"]["images"] == {"in": 12, "out": 12}
    region_files = list_shards(regions_dir, REGION_PREFIX)
    assert len(region_files) == 2 and sum(sum(1 for _ in iter_shard(p)) for p in region_files) == 12
    for rs, ls in zip(region_files, list_shards(labels_dir, LABEL_PREFIX), strict=True):
        assert [k for k, _ in iter_shard(rs)] == [k for k, _ in iter_shard(ls)]
    written = set(_left_behind(bucket)) - before
    assert not [p for p in written if ".tmp-" in p or "_SHARD_SUMMARY" in p or "/_work" in p], "temp or work files left in the bucket"
    assert _left_behind(*scratch) == [], ("a stage wrote to the local disk", _left_behind(*scratch))

    # The trainer: stale-label check, shapes, a batch, and a few steps, all streamed from the URLs.
    from trainer.data.chain import make_loader
    from trainer.data.shard_set import nonempty_region_shards, probe_shapes, stale_labels_problem
    from trainer.data.text import load_tokenizer
    from trainer.train import train
    from trainer_fixtures import tiny_config

    assert stale_labels_problem(URL + "data/regions", URL + "data/labels") is None
    assert probe_shapes(URL + "data/regions")[0] == 64
    assert all(s.startswith(URL) for s in nonempty_region_shards(URL + "data/regions"))
    cfg_t = tiny_config(URL + "data/regions", URL + "data/labels", tmp_path / "run", steps=3, batch_size=4)
    batch = next(b for b in make_loader(cfg_t, load_tokenizer(cfg_t.tokenizer), 0) if b["n"])
    assert batch["n"] > 0 and batch["skips"] == {}
    records = train(cfg_t)
    assert len(records) == 3 and all(math.isfinite(r["loss"]) for r in records)
    assert _left_behind(scratch[0]) == []  # only the run directory (local by design) was written


@pytest.mark.slow
def test_region_ingest_from_a_tsv_url(bucket, scratch):
    """The TSV path: the driver's scan and the workers' byte ranges read the URL; a bad line is dead-lettered."""
    from pipelines.regions import run_regions
    from pipelines.synthetic import generate
    from schemas.manifest import DEAD_LETTER_NAME

    generate(bucket / "sample", num_images=6, seed=1)
    tsv = bucket / "sample" / "regions.tsv"
    with open(tsv, "a") as f:
        f.write("broken\tline\n")
    m = run_regions(tsv=URL + "sample/regions.tsv", out_dir=URL + "regions", num_shards=2, pipeline_args=IN_MEMORY)
    assert m["counts"] == {"in": 7, "out": 6, "rejected": 1}
    dead = fs.read_text(URL + f"regions/{DEAD_LETTER_NAME}").splitlines()
    assert len(dead) == 1 and "regions.tsv:7" in dead[0]
    assert sorted(p.name for p in (bucket / "regions").iterdir()) == ["_DEAD_LETTER.jsonl", "_MANIFEST.json", "regions-000000.tar", "regions-000001.tar"]
    assert _left_behind(*scratch) == []


def test_readme_cluster_commands_with_bucket_paths_parse():
    """The README's all-in-a-bucket commands are real command lines of these modules."""
    import re
    import shlex

    from pipelines.dag.command import parse_args

    readme = (ROOT / "README.md").read_text()
    cluster = readme[readme.index("## On a cluster") : readme.index("## Layout")]
    dag = re.search(r"^python -m pipelines\.dag labels (?:.|\n)*?(?<!\\)\n", cluster, re.M).group(0).replace("\\\n", " ")
    command, cfg, _ = parse_args(shlex.split(dag)[3:])
    assert command == "labels" and cfg.data.startswith("gs://") and cfg.corpus.startswith("gs://")
    assert any(a.startswith("--runner=DataflowRunner") for a in cfg.beam_args)
    regions = re.search(r"^python -m pipelines\.regions (?:.|\n)*?(?<!\\)\n", cluster, re.M).group(0).replace("\\\n", " ")
    assert "--out gs://" in regions and "--tsv gs://" in regions


def test_dataflow_region_flag_goes_to_beam_not_to_regions():
    """``--region`` (Dataflow's) is no abbreviation of ``--regions``: it reaches Beam untouched."""
    from pipelines.label_pipeline import parse_args

    cfg, beam_args = parse_args(["--captions", "gs://b/c.tsv", "--regions", "gs://b/regions", "--out", "gs://b/data",
                                 "--runner=DataflowRunner", "--region=us-central1"])
    assert cfg.regions == "gs://b/regions" and "--region=us-central1" in beam_args
