"""GPU check of the Hugging Face teachers: run once on a machine with a CUDA device, unchanged.

1. correctness on CUDA: the tiny test models give the same boxes on ``device=cuda`` as on the CPU
   (fp32, to float tolerance), ``precision=fp16`` autocast gives boxes for the same phrases with scores
   within 0.05, and the model really sits on the GPU;
2. the shared model: the teacher stage's RunInference handler shares one copy across processes
   (``large_model``) for a CUDA teacher, and a DirectRunner pipeline with it completes;
3. throughput: ``bench.bench_teachers`` at real size (Grounding DINO Swin-T, OWLv2 base/16; random
   weights), batch 1/8/32, images/s, phrases/s and GPU-busy share (target ≥ 0.70).

Writes ``$OUT/gpu_check_teachers.json`` (or ``./gpu_check_teachers.json``) and prints it; exits 1 if a
correctness check fails. ``--smoke`` runs the same code on the CPU with the tiny models (no GPU needed).

    python scripts/gpu_check_teachers.py            # on the GPU machine
    python scripts/gpu_check_teachers.py --smoke    # anywhere
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def close(a, b, atol) -> bool:
    if [[x.phrase_index for x in r] for r in a] != [[x.phrase_index for x in r] for r in b]:
        return False
    return all(np.allclose([x.score for x in ra], [x.score for x in rb], atol=atol) for ra, rb in zip(a, b))


def best_scores_close(a, b, atol) -> bool:
    """Half precision moves near-tied boxes around: compare each phrase's best score, and require that
    (nearly) every phrase that has a box in one has one in the other."""
    best = lambda r: {x.phrase_index: max(y.score for y in r if y.phrase_index == x.phrase_index) for x in r}  # noqa: E731
    pairs = [(best(ra), best(rb)) for ra, rb in zip(a, b)]
    both = [(da[k], db[k]) for da, db in pairs for k in da.keys() & db.keys()]
    either = sum(len(da.keys() | db.keys()) for da, db in pairs)
    return bool(both) and len(both) >= 0.9 * either and all(abs(x - y) <= atol for x, y in both)


def check_devices(device: str, tmp: Path) -> dict:
    import torch

    from bench.bench_teachers import make_inputs
    from hf_tiny import save_tiny_grounding_dino, save_tiny_owlv2
    from pipelines.teachers import build_teacher

    xs = make_inputs(tmp / "corpus", 4, None)
    out = {}
    for name, save in (("grounding_dino", save_tiny_grounding_dino), ("owlv2", save_tiny_owlv2)):
        md = str(save(tmp / name))
        base = {"model_dir": md, "box_threshold": 0.0, "top_k": 2}
        cpu = build_teacher(name, {**base, "device": "cpu"}).load().predict(xs)
        dev = build_teacher(name, {**base, "device": device})
        dev.load()
        on = next(dev.model.parameters()).device.type
        t0 = time.perf_counter()
        same = dev.predict(xs)
        half_precision = "fp16" if device.startswith("cuda") else "bf16"
        half = build_teacher(name, {**base, "device": device, "precision": half_precision}).load().predict(xs)
        out[name] = {
            "model_device": on, "fp32_matches_cpu": close(cpu, same, 1e-3), "predict_s": round(time.perf_counter() - t0, 3),
            f"{half_precision}_same_phrases_scores_within_0.05": best_scores_close(cpu, half, 0.05),
            "auto_device": str(build_teacher(name, {"model_dir": md}).load().device),
        }
        out[name]["ok"] = (on == device.split(":")[0] and out[name]["fp32_matches_cpu"] and out[name][f"{half_precision}_same_phrases_scores_within_0.05"])
        if device.startswith("cuda"):
            out[name]["ok"] &= out[name]["auto_device"].startswith("cuda")
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def check_shared_stage(device: str, tmp: Path) -> dict:
    """The stage handler shares the model for a GPU teacher, and a RunInference pipeline completes with it."""
    try:
        import apache_beam as beam
    except ImportError as e:  # a bare GPU machine: carry Beam's wheels to run this part (the rest needs none)
        return {"skipped": f"apache_beam not importable ({e})", "ok": None}
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.options.pipeline_options import PipelineOptions

    from bench.bench_teachers import make_inputs
    from hf_tiny import save_tiny_grounding_dino
    from pipelines.stages.stage_io import Batch
    from pipelines.stages.teacher import ImageWork, TeacherModelHandler

    md = str(save_tiny_grounding_dino(tmp / "gd_shared"))
    xs = make_inputs(tmp / "corpus_shared", 3, None)
    groups: dict[str, list] = {}
    for x in xs:
        groups.setdefault(x.image_id, []).append(x)
    handler = TeacherModelHandler("grounding_dino", {"model_dir": md, "device": device, "box_threshold": "0"}, images_per_batch=1)  # prefetch hints too
    out_file = tmp / "shared.jsonl"
    opts = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    with beam.Pipeline(options=opts) as p:
        blocks = [Batch(ImageWork(k, [], v) for k, v in sorted(groups.items())[i::2]) for i in range(2)]  # a block per worker
        _ = (p | beam.Create(blocks) | RunInference(handler) | beam.FlatMap(lambda b: [r for w in b for r in w.results])
             | beam.Map(lambda r: json.dumps({"caption": r.input.caption_id, "boxes": None if r.boxes is None else len(r.boxes), "error": r.error}))
             | beam.io.WriteToText(str(out_file), shard_name_template=""))
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    ok = handler.share_model_across_processes() == (device != "cpu") and len(rows) == len(xs) and all(r["boxes"] is not None for r in rows)
    return {"shared": handler.share_model_across_processes(), "captions": len(xs), "results": len(rows),
            "errors": [r["error"] for r in rows if r["error"]], "ok": ok}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU only, tiny models (no GPU needed)")
    ap.add_argument("--images", type=int, default=None, help="images for the throughput run (default 64)")
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args(argv)
    import torch

    from bench import bench_teachers

    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device here: run with --smoke, or on a GPU machine", file=sys.stderr)
        return 2
    device = "cpu" if args.smoke else "cuda"
    report: dict = {"device": device if args.smoke else torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="ssga-gpu-check-") as d:
        report["devices"] = check_devices(device, Path(d))
        try:
            report["shared_stage"] = check_shared_stage(device, Path(d))
        except Exception as e:  # report it, and still measure throughput below
            report["shared_stage"] = {"error": f"{type(e).__name__}: {e}"[:800], "ok": False}
        print(json.dumps({"devices": report["devices"], "shared_stage": report["shared_stage"]}), flush=True)
    if not args.skip_bench:
        report["bench"] = bench_teachers.run(smoke=args.smoke, num_images=args.images)
    ok = all(v["ok"] for v in report["devices"].values()) and report["shared_stage"]["ok"] is not False
    report["ok"] = ok
    text = json.dumps(report, indent=2)
    print(text)
    (Path(os.environ.get("OUT", ".")) / "gpu_check_teachers.json").write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
