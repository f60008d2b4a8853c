"""The GPU benches' own arithmetic and scripts, on CPU: what CI can check of code that measures GPUs."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_union_of_kernel_intervals_counts_overlaps_once():
    from bench.bench_teachers import union_seconds

    assert union_seconds([]) == 0
    assert union_seconds([(0, 1e6)]) == pytest.approx(1.0)
    # Overlapping (two streams), nested, disjoint, unsorted: 0..3 s and 5..6 s are busy.
    assert union_seconds([(5e6, 6e6), (0, 2e6), (1e6, 3e6), (1.5e6, 2.5e6)]) == pytest.approx(4.0)


def test_the_teacher_bench_calls_the_teacher_as_the_stage_does():
    """16 images a predict call (all of an image's captions together), each call preceded by the next
    call's prefetch: what TeacherModelHandler._run_block does, so the busy share is the stage's."""
    from bench.bench_teachers import predict_as_the_stage_does

    calls = []
    teacher = SimpleNamespace(prefetch=lambda xs: calls.append(("prefetch", [x.image_path for x in xs])),
                              predict=lambda xs: calls.append(("predict", [x.image_path for x in xs])))
    xs = [SimpleNamespace(image_path=f"{i}.jpg") for i in range(20) for _ in range(2)]
    predict_as_the_stage_does(teacher, xs)
    first, second = [f"{i}.jpg" for i in range(16) for _ in range(2)], [f"{i}.jpg" for i in range(16, 20) for _ in range(2)]
    assert calls == [("prefetch", second), ("predict", first), ("predict", second)]


def test_busy_share_counts_kernels_only_and_reads_real_profiler_events():
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from bench.bench_teachers import kernel_intervals, union_seconds

    ev = lambda name, dev, a, b: SimpleNamespace(name=name, device_type=dev, time_range=SimpleNamespace(start=a, end=b))  # noqa: E731
    events = [ev("aten::mm", DeviceType.CPU, 0, 10), ev("nvjet_gemm", DeviceType.CUDA, 2, 6), ev("elementwise", DeviceType.CUDA, 4, 8),
              ev("Memcpy HtoD (Pinned -> Device)", DeviceType.CUDA, 8, 20)]
    assert union_seconds(kernel_intervals(events)) == pytest.approx(6e-6)
    # The attributes exist on the profiler's own events (a CPU profile has no kernels).
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.ones(64, 64) @ torch.ones(64, 64)
    assert prof.events() and kernel_intervals(prof.events()) == []


@pytest.mark.slow
def test_teacher_gpu_check_smoke_runs_every_part(tmp_path, monkeypatch):
    """scripts/gpu_check_teachers.py --smoke: the CPU/auto-device comparison, the shared-model stage on
    the DirectRunner, and the throughput bench with the tiny models; writes its JSON to $OUT."""
    import importlib.util
    import json

    monkeypatch.setenv("OUT", str(tmp_path))
    spec = importlib.util.spec_from_file_location("gpu_check_teachers", ROOT / "scripts" / "gpu_check_teachers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--images", "3"]) == 0
    report = json.loads((tmp_path / "gpu_check_teachers.json").read_text())
    assert report["ok"] and report["shared_stage"]["ok"] and report["shared_stage"]["results"] == report["shared_stage"]["captions"]
    assert {"grounding_dino", "owlv2"} <= set(report["bench"]) and report["bench"]["owlv2"]["batch_8"]["images_per_s"] > 0
    for name in ("grounding_dino", "owlv2"):  # the real-size processors' host-side rate, on any machine
        pre = report["bench"][name]["preprocess"]
        assert pre["image"] == "640x480 JPEG" and pre["ms_per_image_1_thread"] > 0 and pre["images_per_s_4_threads"] > 0


@pytest.mark.slow
def test_trainer_gpu_section_smoke_gives_every_row_side_by_side():
    """bench/gpu_trainer.run at toy size on CPU: every stream x mode x batch row, the end-to-end
    diagnostics (its own batch resident, time waiting on the loader), and no configuration failing."""
    from bench.gpu_trainer import run
    from trainer.data.text import load_tokenizer

    res = run(load_tokenizer("minilm"), smoke=True)
    assert not [k for k in res if k.endswith("_error")], res
    for stream in ("single", "dual"):
        for b in (4, 8):
            assert res[f"{stream}_model_only_b{b}_samples_per_s"] > 0 and res[f"{stream}_end_to_end_b{b}_samples_per_s"] > 0
            assert 0 < res[f"{stream}_end_to_end_b{b}_over_same_batch_model_only"]
            assert 0 <= res[f"{stream}_end_to_end_b{b}_loader_ms_per_step"] < res[f"{stream}_end_to_end_b{b}_step_ms"]


def test_gpu_session_without_cuda_says_so_and_writes_nothing(tmp_path):
    import subprocess

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_session.sh"), "60"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "no CUDA device" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_gpu_session_smoke_runs_its_parts_and_keeps_their_logs(tmp_path):
    """SMOKE=1: the session script's own flow (parts, limits, logs, JSON) at toy size on a CPU."""
    import json
    import os
    import subprocess

    env = {**os.environ, "SMOKE": "1", "PARTS": "teachers", "OUT": str(tmp_path), "PYTHON": sys.executable}
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_session.sh"), "200"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "=== teachers: exit 0" in p.stdout and "=== single" not in p.stdout and "=== resume" not in p.stdout
    assert json.loads((tmp_path / "gpu_check_teachers.json").read_text())["ok"]
    assert (tmp_path / "teachers.log").exists() and (tmp_path / "env.txt").exists()


def test_host_sync_count_counts_the_sync_warnings_of_each_step(monkeypatch):
    """On a GPU the bench counts synchronising CUDA calls per train_step from
    torch.cuda.set_sync_debug_mode's warnings; here the warnings are simulated (CI has no GPU). A
    warning raised inside torch is traced back to the project line that called into torch."""
    import warnings

    import bench.gpu_trainer as gt

    modes = []
    monkeypatch.setattr(gt.torch.cuda, "set_sync_debug_mode", modes.append)
    inside_torch: dict = {"warnings": warnings}  # a function whose code lives in torch's file
    exec(compile("def synchronize():\n    warnings.warn('called a synchronizing CUDA operation')\n",
                 "/site-packages/torch/cuda/__init__.py", "exec"), inside_torch)

    def step(*args, **kwargs):
        warnings.warn("called a synchronizing CUDA operation")
        inside_torch["synchronize"]()
        warnings.warn("something else")

    monkeypatch.setattr(gt, "train_step", step)
    per_step, where = gt.host_syncs_per_step(None, None, {}, None, torch.device("cuda"), steps=3)
    line = step.__code__.co_firstlineno + 1
    assert per_step == 2.0
    assert where == (f"tests/test_gpu_bench_tools.py:{line} (x3); "
                     f"/site-packages/torch/cuda/__init__.py:2 from tests/test_gpu_bench_tools.py:{line + 1} (x3)")
    assert modes == ["warn", "default"]  # restored after


def test_the_handover_benches_run_both_hand_overs(tmp_path):
    """bench_trainer's side-by-side figures for packed batches against one segment per tensor run (toy
    sizes; the figures themselves are make bench's)."""
    import math

    from bench.bench_trainer import handover_ms_per_batch, main_thread_ms_lost_per_batch, packed_against_per_tensor
    from trainer.config import TrainConfig
    from trainer.data.text import load_tokenizer
    from trainer.toydata import write_corpus

    regions, labels = write_corpus(tmp_path, 40, num_shards=2)
    cfg = TrainConfig(regions=str(regions), labels=str(labels), out=str(tmp_path / "out"), batch_size=8, shuffle_buffer=8, max_text_len=16)
    tok = load_tokenizer("minilm")
    for measure in (handover_ms_per_batch, main_thread_ms_lost_per_batch):
        packed, per_tensor = packed_against_per_tensor(measure, cfg, tok, rounds=1)
        assert math.isfinite(packed) and math.isfinite(per_tensor) and packed < 1000 and per_tensor < 1000


def _gpu_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_reuses_a_corpus_written_to_the_end_and_rewrites_any_other(tmp_path, capsys):
    """On a lent GPU machine each session call would otherwise spend 40 s rewriting the same corpus."""
    gpu_check = _gpu_check_module()
    args = ["--smoke", "--compile-only", "--skip-bench", "--out", str(tmp_path)]
    assert gpu_check.main(args) == 0
    marker = tmp_path / "corpus" / "COMPLETE"
    shard = sorted((tmp_path / "corpus" / "labels").iterdir())[0]
    os.utime(shard, ns=(1, 1))  # a stamp no write of today's can leave
    assert gpu_check.main(args) == 0
    assert shard.stat().st_mtime_ns == 1  # reused
    marker.unlink()  # a write that was cut off (the part's time limit) leaves no marker
    assert gpu_check.main(args) == 0
    assert marker.is_file() and shard.stat().st_mtime_ns != 1  # written again


def test_gpu_check_refuses_an_unknown_stream_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        _gpu_check_module().main(["--smoke", "--streams", "single,tripple", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "--streams 'single,tripple': give single, dual or single,dual" in capsys.readouterr().err
