"""Label pipeline benchmark: Beam against the bare compute floor, worker scaling, per-stage throughput.

On a synthetic corpus (default 2,000 images, 2 captions each; ``SSGA_BENCH_LABEL_IMAGES`` overrides),
with the offline default teacher (tag similarity):

(a) wall time of the Beam label pipeline (DirectRunner: in-process, and multi-processing with 1 worker) over the bare
    compute floor: the same spaCy, teacher, IoU and shard-writing calls in one plain Python loop;
(b) speed-up of 2 workers over 1;
(c) captions/s and phrases/s of each stage, timed inside the bare loop (Beam fuses stages, so their
    share of its wall time cannot be split), plus the end-to-end rates of each Beam run;
(d) the same pipeline on the Dask runner (:mod:`pipelines.runners.dask`) against a ``dask.distributed``
    LocalCluster of 1 and of 2 worker processes (one thread each), beside the DirectRunner: wall time of
    the run (the cluster is started before the clock, as a standing cluster would be; its start-up is
    reported apart) and whether its label shards are byte-identical to the DirectRunner's.

Run with ``python -m bench.run labels`` or ``python -m bench.bench_labels``.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipelines.formats.captions import read_captions
from pipelines.stages.stage_io import read_region_shard, region_shards
from pipelines.label_pipeline import LabelConfig, run_labels
from pipelines.stages.labels import image_labels
from pipelines.stages.phrases import PhraseExtractor
from pipelines.regions import run_regions
from pipelines.synthetic import generate
from pipelines.teachers import TeacherInput, build_teacher
from schemas.records import PhraseRecord, TeacherRecord
from schemas.shards import LABEL_PREFIX, encode_labels, shard_name, write_shard

NUM_IMAGES = int(os.environ.get("SSGA_BENCH_LABEL_IMAGES", "2000"))
NUM_SHARDS = 8
SEED = 0


def _workers(n: int) -> list[str]:
    return ["--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={n}"]


def dask_runs(cfg, workers: tuple[int, ...] = (1, 2)) -> dict[int, dict]:
    """The label pipeline on the Dask runner, one fresh LocalCluster of ``n`` worker processes per run."""
    from dask.distributed import LocalCluster

    out = {}
    for n in workers:
        t0 = time.perf_counter()
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR) as cluster:
            start = time.perf_counter() - t0
            t0 = time.perf_counter()
            m = run_labels(cfg(f"dask{n}"), ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"])
            out[n] = {"wall_s": time.perf_counter() - t0, "cluster_start_s": start, "dir": Path(m["labels"]["dir"])}
    return out


def bare_loop(cfg: LabelConfig, out: Path) -> dict[str, float]:
    """The floor: every call the pipeline makes for real work, in one process, no Beam. Seconds per stage."""
    t: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    extractor = PhraseExtractor(cfg.phrases).load()
    teacher = build_teacher(cfg.teacher, cfg.teacher_args).load()
    teacher_fp = teacher.fingerprint
    t["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    captions = [v for tag, v in read_captions(cfg.captions) if tag == "caption"]
    phrases = []
    for i in range(0, len(captions), 512):
        batch = captions[i : i + 512]
        phrases += [PhraseRecord(c.caption_id, c.image_id, c.text, p) for c, p in zip(batch, extractor.extract([c.text for c in batch])) if p]
    t["phrases"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    regions = {image_id: r for item in region_shards(cfg.regions) for image_id, r in read_region_shard(item)}
    t["read_regions"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    by_image = defaultdict(list)
    for rec in phrases:
        r = regions.get(rec.image_id)
        if r is None:
            continue
        x = TeacherInput(rec.caption_id, rec.image_id, rec.caption, rec.phrases, r.image_w, r.image_h, r.boxes, r.classes, "", r.class_conf)
        boxes = teacher.predict([x])[0]
        by_image[rec.image_id].append((rec, TeacherRecord(rec.caption_id, rec.image_id, teacher_fp, len(rec.phrases), boxes)))
    t["teacher"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    shards: dict[int, dict] = defaultdict(dict)
    for image_id, r in regions.items():
        lab = image_labels(r, by_image.get(image_id, []), cfg.iou_threshold, teacher_fp)
        shards[r.shard][r.key] = encode_labels(lab)
    for k, samples in shards.items():
        write_shard(out / shard_name(LABEL_PREFIX, k), samples)
    t["match_labels"] = time.perf_counter() - t0
    t["num_captions"] = len(captions)
    t["num_phrases"] = sum(len(p.phrases) for p in phrases)
    return dict(t)


def main() -> dict:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="ssga-bench-labels-") as tmp:
        tmp = Path(tmp)
        generate(tmp / "sample", num_images=NUM_IMAGES, seed=SEED)
        run_regions(npz_dir=tmp / "sample" / "regions_npz", out_dir=tmp / "regions", num_shards=NUM_SHARDS)

        def cfg(out: str) -> LabelConfig:
            return LabelConfig(captions=str(tmp / "sample" / "captions.tsv"), regions=str(tmp / "regions"), out=str(tmp / out),
                               teacher="tag_similarity", teacher_args={"objects_vocab": str(tmp / "sample" / "objects_vocab.txt")})

        t0 = time.perf_counter()
        floor = bare_loop(cfg("bare"), tmp / "bare")
        floor_s = time.perf_counter() - t0

        wall, dirs = {}, {}
        t0 = time.perf_counter()
        run_labels(cfg("inproc"), ["--runner=DirectRunner", "--direct_running_mode=in_memory"])
        wall_in_process = time.perf_counter() - t0
        for n in (1, 2):
            t0 = time.perf_counter()
            m = run_labels(cfg(f"beam{n}"), _workers(n))
            wall[n] = time.perf_counter() - t0
            dirs[n] = Path(m["labels"]["dir"])  # OUT/labels/<fingerprint>
        dask = dask_runs(cfg)
        shards = sorted(dirs[2].glob("labels-*.tar"))
        assert shards, f"{dirs[2]}: no label shards"
        identical = all((dirs[1] / p.name).read_bytes() == p.read_bytes() for p in shards)
        dask_same = {n: sorted(p.name for p in d["dir"].glob("labels-*.tar")) == [p.name for p in shards]
                     and all((d["dir"] / p.name).read_bytes() == p.read_bytes() for p in shards) for n, d in dask.items()}
        bare_same = all((tmp / "bare" / p.name).read_bytes() == p.read_bytes() for p in sorted(dirs[1].glob("labels-*.tar")))

    caps, phr = floor["num_captions"], floor["num_phrases"]
    per_stage = {
        s: {"seconds": round(floor[s], 2), "captions_per_s": round(caps / floor[s], 1), "phrases_per_s": round(phr / floor[s], 1)}
        for s in ("phrases", "teacher", "match_labels")
    }
    return {
        "num_images": NUM_IMAGES,
        "num_captions": caps,
        "num_phrases": phr,
        "teacher": "tag_similarity",
        "cpu_count": os.cpu_count(),
        "bare_loop_s": round(floor_s, 2),
        "bare_loop_model_load_s": round(floor["load"], 2),
        "beam_in_process_s": round(wall_in_process, 2),
        "beam_1_worker_s": round(wall[1], 2),
        "beam_2_workers_s": round(wall[2], 2),
        "a_ratio_beam_in_process_over_bare": round(wall_in_process / floor_s, 3),
        "a_ratio_beam1_over_bare": round(wall[1] / floor_s, 3),
        "a_ratio_beam2_over_bare": round(wall[2] / floor_s, 3),
        "a_target": "<= 1.25",
        "b_speedup_2_over_1": round(wall[1] / wall[2], 3),
        "b_target": ">= 1.6",
        "c_per_stage_bare": per_stage,
        "c_beam_end_to_end": {f"{n}_workers": {"captions_per_s": round(caps / wall[n], 1), "phrases_per_s": round(phr / wall[n], 1)} for n in (1, 2)},
        "d_dask": {
            f"{n}_workers": {
                "wall_s": round(d["wall_s"], 2),
                "cluster_start_s": round(d["cluster_start_s"], 2),
                "ratio_over_bare": round(d["wall_s"] / floor_s, 3),
                "ratio_over_direct_same_workers": round(d["wall_s"] / wall[n], 3),
                "captions_per_s": round(caps / d["wall_s"], 1),
                "label_shards_identical_to_direct": dask_same[n],
            }
            for n, d in dask.items()
        },
        "d_dask_speedup_2_over_1": round(dask[1]["wall_s"] / dask[2]["wall_s"], 3),
        "label_shards_identical_1_vs_2_workers": identical,
        "label_shards_identical_beam_vs_bare": bare_same,
        "counts_labels": m["labels"]["counts"],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
