"""The user's mistakes and stage behaviour (issue #15): one-line errors, stage guards, Ctrl-C, quiet console,
fingerprints that cover every input, and skipping that costs O(files) (issue #11)."""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from label_fixtures import make_corpus
from pipelines import cli, dag, label_pipeline, regions
from pipelines.dag import DagConfig, pretrain_fingerprint
from pipelines.label_plan import LabelConfig, stage_fingerprints
from schemas.manifest import DEAD_LETTER_NAME, read_manifest

ROOT = Path(__file__).resolve().parents[1]
IN_MEMORY = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]


def _exit(main, argv, capsys):
    """Run a command line in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("cli") / "corpus", num_images=8, num_shards=2)


def _labels_argv(c, out, **over):
    args = {"--captions": str(c["captions"]), "--regions": str(c["regions"]), "--out": str(out), "--objects-vocab": str(c["vocab"])}
    args.update(over)
    return [x for k, v in args.items() if v is not None for x in (k, v)] + IN_MEMORY


# --- item 4: --out is the data root, and the README says so -------------------------------------


def test_out_named_after_a_stage_is_refused_with_the_fix(corpus, tmp_path, capsys):
    code, _, err = _exit(label_pipeline.main, _labels_argv(corpus, tmp_path / "data" / "labels"), capsys)
    line = _one_line_error(err)
    assert code == 2 and f"pass --out {tmp_path / 'data'}" in line and "data root" in line
    assert not (tmp_path / "data").exists()


def test_readme_label_command_uses_the_data_root_and_no_fixed_worker_count():
    text = (ROOT / "README.md").read_text()
    start = text.index("python -m pipelines.label_pipeline --captions my/captions.tsv")
    command = text[start:text.index("\n", text.index("--objects-vocab", start))].replace("\\\n", " ")
    cfg, beam_args = label_pipeline.parse_args(shlex.split(command)[3:])
    assert cfg.out == "data" and beam_args == []  # data/labels/<fp>, which `--labels data/labels` follows
    assert "--direct_num_workers=8" not in text


# --- item 8: stages that complete with nothing useful fail with their reasons -----------------


def test_captions_matching_no_region_are_refused_before_any_work(corpus, tmp_path, capsys):
    """The image-id join is checked on the data when the run is planned: one line naming the keys tried
    and ids from both sides, exit 2, and no stage directory written."""
    caps = tmp_path / "captions.tsv"
    caps.write_text("".join(f"a red circle next to a blue square\timages/elsewhere{i}.png\n" for i in range(5)))
    code, _, err = _exit(label_pipeline.main, _labels_argv(corpus, tmp_path / "out", **{"--captions": str(caps)}), capsys)
    line = _one_line_error(err)
    assert code == 2 and "joins a region sample" in line and "elsewhere0" in line and "000000" in line, err
    assert not (tmp_path / "out").exists()


def test_a_stage_that_rejects_everything_keeps_its_output_but_never_becomes_current(corpus, tmp_path, capsys):
    # Captions whose images join the regions, but every region lacks the detector classes tag_similarity reads.
    caps = tmp_path / "captions.tsv"
    caps.write_text(f"a red circle next to a blue square\timages/{corpus['no_cls']}.png\n" * 3)
    code, _, err = _exit(label_pipeline.main, _labels_argv(corpus, tmp_path / "out", **{"--captions": str(caps)}), capsys)
    assert code == 1 and "Traceback" not in err, err
    assert "failed: stage teacher: it output nothing: all 3 records were rejected" in err
    teacher_dir = next(d for d in (tmp_path / "out" / "teacher").iterdir() if d.is_dir())
    assert f"dead letters: {teacher_dir / DEAD_LETTER_NAME}" in err
    assert read_manifest(teacher_dir)["counts"] == {"in": 3, "out": 0, "rejected": 3}  # the output is kept ...
    assert not (tmp_path / "out" / "teacher" / "CURRENT").exists()  # ... but never becomes current


def test_objects_vocabulary_of_the_wrong_size_fails(corpus, tmp_path, capsys):
    vocab = tmp_path / "objects_vocab.txt"
    vocab.write_text("circle\n")  # the detector has 4 classes
    code, _, err = _exit(label_pipeline.main, _labels_argv(corpus, tmp_path / "out", **{"--objects-vocab": str(vocab)}), capsys)
    assert code == 1 and "failed: stage teacher:" in err and "region class id outside #..# of" in err, err
    assert "is --objects-vocab the detector's own class list" in err


def test_empty_captions_file_fails_the_phrases_stage(corpus, tmp_path, capsys):
    caps = tmp_path / "captions.tsv"
    caps.write_text("")
    code, _, err = _exit(label_pipeline.main, _labels_argv(corpus, tmp_path / "out", **{"--captions": str(caps)}), capsys)
    assert code == 1 and "failed: stage phrases: its input is empty (in=0 out=0)" in err, err


def test_empty_tsv_or_a_captions_file_as_regions_fail_the_regions_stage(corpus, tmp_path, capsys):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    code, _, err = _exit(regions.main, ["--tsv", str(empty), "--out", str(tmp_path / "a"), "--num-shards", "2"], capsys)
    assert code == 1 and "failed: stage regions: its input is empty" in err, err
    code, _, err = _exit(regions.main, ["--tsv", str(corpus["captions"]), "--out", str(tmp_path / "b"), "--num-shards", "2"], capsys)
    assert code == 1 and f"all {corpus['num_rows']} records were rejected" in err and "bottom-up-attention TSV" in err, err
    assert f"dead letters: {tmp_path / 'b' / DEAD_LETTER_NAME}" in err


def test_more_shards_than_images_warns(caplog):
    manifest = {"counts": {"in": 3, "out": 3, "rejected": 0}, "num_shards": 8, "rejected_by_reason": {}}
    regions.check_regions(manifest, "out")
    assert "8 shards for 3 images: 5 shards will be empty" in caplog.text


# --- item 10: user errors are one line (exit 2), Ctrl-C one line (exit 130) ---------------------


def test_wrong_data_unknown_teacher_and_missing_vocab_are_one_line(corpus, tmp_path, capsys):
    code, _, err = _exit(dag.main, ["labels", "--data", str(tmp_path / "nope")], capsys)
    assert code == 2 and "make sample" in _one_line_error(err)
    code, _, err = _exit(dag.main, ["labels", "--data", str(tmp_path), "--teacher", "nope"], capsys)
    assert code == 2 and "unknown teacher 'nope': pass --teacher with one of" in _one_line_error(err)
    code, _, err = _exit(label_pipeline.main, _labels_argv(corpus, tmp_path / "out", **{"--objects-vocab": None}), capsys)
    assert code == 2 and "pass --objects-vocab" in _one_line_error(err)
    sample = tmp_path / "d" / "sample"  # the DAG finds out before ingesting regions
    shutil.copytree(corpus["root"], sample, ignore=shutil.ignore_patterns("objects_vocab.txt"))
    (sample / "regions_npz").mkdir()
    code, _, err = _exit(dag.main, ["labels", "--data", str(tmp_path / "d")], capsys)
    assert code == 2 and "pass --objects-vocab" in _one_line_error(err) and not (tmp_path / "d" / "regions").exists()
    code, _, err = _exit(dag.main, ["labels", "--data", str(tmp_path), "--num-shads", "3"], capsys)  # a typo Beam would swallow
    assert code == 2 and "unknown option --num-shads" in _one_line_error(err)
    with pytest.raises(cli.UserError, match="make sample"):  # --debug keeps the traceback
        dag.main(["labels", "--data", str(tmp_path / "nope"), "--debug"])


def test_keyboard_interrupt_is_one_line_with_the_state_left_behind(capsys):
    def interrupted(argv):
        cli.note_state("stage x incomplete in D: the next run redoes it")
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        cli.run_cli(interrupted, [])
    assert e.value.code == 130 and capsys.readouterr().err == "interrupted; stage x incomplete in D: the next run redoes it\n"


def _generated(tmp_path_factory, n=16):
    from pipelines.synthetic import generate

    root = tmp_path_factory.mktemp("gen")
    generate(root / "sample", num_images=n, seed=0)
    return root


@pytest.mark.slow
def test_ctrl_c_during_multiprocess_run_and_quiet_console(tmp_path_factory):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while Beam workers run: one line, exit
    130; the rerun completes. Beam's chatter goes to DATA/logs, not the console."""
    data = _generated(tmp_path_factory)
    cmd = [sys.executable, "-m", "pipelines.dag", "labels", "--data", str(data), "--runner=DirectRunner",
           "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(p.stderr))
    reader.start()
    deadline = time.time() + 240
    while not any("stage labels: running" in line for line in err) and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(8)  # workers are up and working
    os.killpg(p.pid, signal.SIGINT)
    p.wait(timeout=120)
    reader.join()
    text = "".join(err)
    assert p.returncode == 130, text
    assert "Traceback" not in text and "CRITICAL" not in text and "apitools" not in text and "Discarding unparseable" not in text, text
    assert [line for line in text.splitlines() if line.startswith("interrupted; ")][0].count("the next run redoes") == 1
    logs = "".join(f.read_text() for f in (data / "logs").iterdir())
    assert "sdk harness" in logs.lower()  # what the console did not show
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(done.stderr.splitlines()) <= 8, done.stderr  # our own lines only
    m = json.loads((data / "dag.json").read_text())
    assert all(read_manifest(m[s]["dir"]) for s in ("regions", "phrases", "teacher", "labels"))
    verbose = subprocess.run(cmd + ["--verbose"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 0 and "skipped" in verbose.stderr


# --- item 12, 14: fingerprints cover everything that changes an output ------------------------


def test_world_size_is_in_the_pretrain_fingerprint():
    args = ["--steps", "500"]
    assert pretrain_fingerprint("r", "l", args, 1) != pretrain_fingerprint("r", "l", args, 2)


def test_images_and_ground_truth_enter_the_fingerprints(corpus, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"{i:06d}.png").write_bytes(b"png" * (i + 1))
    cfg = LabelConfig(captions=str(corpus["captions"]), regions=str(corpus["regions"]), out=str(tmp_path), images=str(images),
                      flickr30k=str(corpus["flickr30k"]))
    before = stage_fingerprints(cfg, "t-1", "owlv2", {})
    (images / "000001.png").write_bytes(b"another image, same name")
    after = stage_fingerprints(cfg, "t-1", "owlv2", {})
    assert after["phrases"] == before["phrases"] and after["teacher"] != before["teacher"]
    assert stage_fingerprints(cfg, "t-1", "tag_similarity", {})["teacher"] == stage_fingerprints(
        LabelConfig(**{**cfg.__dict__, "images": ""}), "t-1", "tag_similarity", {})["teacher"]  # no pixels read: images do not matter
    gt = tmp_path / "gt"
    shutil.copytree(corpus["flickr30k"], gt)
    cfg_gt = LabelConfig(**{**cfg.__dict__, "flickr30k": str(gt)})
    a = stage_fingerprints(cfg_gt, "t-1", "tag_similarity", {})
    ann = next((gt / "Annotations").iterdir())
    ann.write_text(ann.read_text().replace("<xmin>", "<xmin>1"))  # another ground truth at the same path
    b = stage_fingerprints(cfg_gt, "t-1", "tag_similarity", {})
    assert a["teacher"] == b["teacher"] and a["labels"] != b["labels"]
    c = stage_fingerprints(cfg_gt, "t-1", "oracle", {"flickr30k": str(gt)})  # an oracle's labels come from it
    ann.write_text(ann.read_text() + "\n")
    assert stage_fingerprints(cfg_gt, "t-1", "oracle", {"flickr30k": str(gt)})["teacher"] != c["teacher"]


# --- issue #11 item 4: deciding to skip costs O(files) -----------------------------------------


def test_region_fingerprint_from_metadata_by_default_content_behind_a_flag(tmp_path_factory, monkeypatch):
    npz = _generated(tmp_path_factory, n=6) / "sample" / "regions_npz"
    _, _, meta = regions.plan_regions(npz_dir=npz, num_shards=2)
    _, _, content = regions.plan_regions(npz_dir=npz, num_shards=2, content_hash=True)
    f = sorted(npz.iterdir())[0]
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: same bytes, new mtime
    assert regions.plan_regions(npz_dir=npz, num_shards=2)[2] != meta
    assert regions.plan_regions(npz_dir=npz, num_shards=2, content_hash=True)[2] == content != meta

    def no_reading(*a, **k):
        raise AssertionError("the metadata fingerprint read file content")

    monkeypatch.setattr(regions, "scan_source", no_reading)
    monkeypatch.setattr(regions, "files_digest", no_reading)
    assert regions.plan_regions(npz_dir=npz, num_shards=2)[0] is None


def test_progress_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert dag.pretrain._console_args(["--batch-size", "8"]) == ["--progress", "false"]
    assert dag.pretrain._console_args(["--progress", "true"]) == []
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert dag.pretrain._console_args([]) == []


def test_make_prints_the_resolved_teacher_and_workers():
    r = subprocess.run(["make", "-n", "labels", "TEACHER=simulated", "WORKERS=3"], cwd=ROOT, capture_output=True, text=True)
    line = next(x for x in r.stdout.splitlines() if "pipelines.dag labels" in x)
    assert "--teacher simulated" in line and "--direct_num_workers=3" in line and "${" not in line, r.stdout
