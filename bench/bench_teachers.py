"""Teacher throughput: the Hugging Face teachers' whole predict path (decode → pre-process → batched
forward → per-phrase boxes), images/s and phrases/s at forward batch 1, 8 and 32, and the share of the
wall time the GPU is busy (target ≥ 70%: decoding and tokenising must not starve it). The teacher is
called as the stage calls it: 16 images a call, the next call's images prefetched (decoded meanwhile).
Beside each teacher's rows, on any machine: decoding + its real-size image processor on 640×480 JPEGs,
ms per image and images/s with the stage's decode threads (:func:`preprocess_rate`), the most images/s
the host can feed.

On CUDA: the real-size architectures built from their default configs with random weights (timing needs
the architecture, not the weights): Grounding DINO (Swin-T, 800×1333) and OWLv2 (base/16, 960²), fp16
autocast, on 640×480 JPEGs with the synthetic corpus's captions. GPU busy = the device time of all CUDA
kernels (torch.profiler) over the wall time of the same run; the profiler's overhead only lowers it.
Without CUDA (and with ``--smoke``): the tiny test architectures on the CPU, batch 1 and 8, a few
seconds; the real-size run is skipped (too slow on a CPU to mean anything).

Run with ``python -m bench.run teachers`` or ``python -m bench.bench_teachers [--smoke] [--images N]``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _tiny_builders():
    sys.path.insert(0, str(ROOT / "tests"))
    from hf_tiny import save_tiny_grounding_dino, save_tiny_owlv2

    return {"grounding_dino": save_tiny_grounding_dino, "owlv2": save_tiny_owlv2}


def save_real_size(name: str, out: Path) -> Path:
    """The default config of each architecture, random weights, with an offline tokenizer covering the
    corpus words (ids inside the real vocabulary size) and the default image processor."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from hf_tiny import WORDS, tiny_vocab

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if name == "grounding_dino":
        from transformers import (BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoImageProcessor,
                                  GroundingDinoProcessor)

        cfg = GroundingDinoConfig()  # Swin-T backbone, BERT-base text encoder, 900 queries, max_text_len 256
        vocab = tiny_vocab()
        vocab += [f"[unused{i}]" for i in range(len(vocab), cfg.text_config.vocab_size)]
        tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
        GroundingDinoForObjectDetection(cfg).eval().save_pretrained(out)
        GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tok).save_pretrained(out)
    else:
        from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

        cfg = Owlv2Config(vision_config={"image_size": 960})  # ViT-B/16 at 960² as owlv2-base-patch16 (the bare default is 768)
        vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
        for w in WORDS:
            vocab.setdefault(w + "</w>", len(vocab))
        for c in sorted(set("".join(WORDS))):
            vocab.setdefault(c, len(vocab))
            vocab.setdefault(c + "</w>", len(vocab))
        merges = []
        for w in WORDS:
            cur = list(w[:-1]) + [w[-1] + "</w>"]
            while len(cur) > 1:
                merges.append((cur[0], cur[1]))
                vocab.setdefault(cur[0] + cur[1], len(vocab))
                cur = [cur[0] + cur[1]] + cur[2:]
        tok = CLIPTokenizer(vocab=vocab, merges=list(dict.fromkeys(merges)))
        Owlv2ForObjectDetection(cfg).eval().save_pretrained(out)
        Owlv2Processor(image_processor=Owlv2ImageProcessor(), tokenizer=tok).save_pretrained(out)
    return out


def make_inputs(root: Path, num_images: int, size: tuple[int, int] | None) -> list:
    """Synthetic corpus captions/phrases; images re-encoded as JPEG at ``size`` (decoding cost like a web corpus)."""
    from PIL import Image

    from pipelines.formats.flickr30k import Flickr30kGroundTruth
    from pipelines.synthetic import generate
    from pipelines.teachers import TeacherInput
    from schemas.records import Phrase

    generate(root, num_images=num_images, seed=0, captions_per_image=5)
    gt = Flickr30kGroundTruth(root / "flickr30k")
    out = []
    for png in sorted((root / "images").glob("*.png")):
        image_id = png.stem
        with Image.open(png) as im:
            im = im.convert("RGB")
            if size:
                im = im.resize(size)
            path = root / "images" / f"{image_id}.jpg"
            im.save(path, quality=90)
            w, h = im.size
        for k, s in enumerate(gt.image(image_id)[0]):
            phrases = [Phrase(e.text, e.start, e.end) for e in s.phrases]
            out.append(TeacherInput(f"{image_id}#{k}", image_id, s.text, phrases, w, h, np.zeros((0, 4), np.float32), image_path=str(path)))
    return out


def union_seconds(intervals_us: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals given in microseconds: kernels that overlap (two
    streams) count once, gaps not at all."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals_us):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total / 1e6


def kernel_intervals(events) -> list[tuple[float, float]]:
    """[start, end) in µs of every GPU kernel among a profile's events (copies and memsets left out:
    the measure is whether the compute units are fed)."""
    from torch.autograd import DeviceType

    return [(e.time_range.start, e.time_range.end) for e in events
            if e.device_type == DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset"))]


IMAGES_PER_CALL = 16  # the teacher stage's default images_per_batch


def predict_as_the_stage_does(teacher, xs: list, images_per_call: int = IMAGES_PER_CALL) -> None:
    """``predict`` on ``images_per_call`` images at a time, each call preceded by ``prefetch`` of the next
    call's images: the teacher stage's RunInference handler (``TeacherModelHandler._run_block``)."""
    by_image: dict[str, list] = {}
    for x in xs:
        by_image.setdefault(x.image_path, []).append(x)
    images = list(by_image.values())
    calls = [[x for group in images[k : k + images_per_call] for x in group] for k in range(0, len(images), images_per_call)]
    for n, call in enumerate(calls):
        if n + 1 < len(calls):
            teacher.prefetch(calls[n + 1])
        teacher.predict(call)


def gpu_busy_share(teacher, xs) -> float | None:
    """Time some kernel runs on the GPU over the wall time of one profiled predict pass.

    The union of the kernels' own intervals, not a sum of ``key_averages()`` rows: those rows hold an
    operator's kernels twice (under the operator and under the kernel's own name), which reported
    shares above 1 on the first GPU run."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if teacher.device.type != "cuda":
        return None
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        predict_as_the_stage_does(teacher, xs)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    return round(union_seconds(kernel_intervals(prof.events())) / wall, 3)


def preprocess_rate(name: str, paths: list[str], size: tuple[int, int] = (640, 480)) -> dict[str, Any]:
    """What the teacher's decode pool does per image, with the real-size image processor (its default
    config: Grounding DINO 800×1333, OWLv2 960²) on ``size`` JPEGs: milliseconds on one thread, and
    images/s with the stage's default ``decode_threads`` at once (one torch thread each, as the stage
    runs). No device can be fed faster than this: beside a row's images/s it says whether decoding and
    pre-processing starve the GPU."""
    import torch
    from PIL import Image
    from transformers import GroundingDinoImageProcessor, Owlv2ImageProcessor

    from pipelines.teachers.hf_common import HFDetectorTeacher

    processor = GroundingDinoImageProcessor() if name == "grounding_dino" else Owlv2ImageProcessor()
    jpegs = []
    with tempfile.TemporaryDirectory(prefix="ssga-preprocess-") as d:
        for k, path in enumerate(paths):
            with Image.open(path) as im:
                im.convert("RGB").resize(size).save(Path(d) / f"{k}.jpg", quality=90)
            jpegs.append(str(Path(d) / f"{k}.jpg"))

        def one(path: str) -> None:
            processor(images=HFDetectorTeacher.read_image(path), return_tensors="pt")

        threads, torch_threads = HFDetectorTeacher.PARAMS["decode_threads"].default, torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one(jpegs[0])  # warm-up
            t0 = time.perf_counter()
            for path in jpegs:
                one(path)
            single = (time.perf_counter() - t0) / len(jpegs)
            with ThreadPoolExecutor(threads) as pool:
                t0 = time.perf_counter()
                list(pool.map(one, jpegs * 2))
                pooled = 2 * len(jpegs) / (time.perf_counter() - t0)
        finally:
            torch.set_num_threads(torch_threads)
    row = {"image": f"{size[0]}x{size[1]} JPEG", "ms_per_image_1_thread": round(single * 1000, 1),
           f"images_per_s_{threads}_threads": round(pooled, 1)}
    print(f"[teacher bench] {name} decode + pre-process: {json.dumps(row)}", flush=True)
    return row


def measure(name: str, model_dir: Path, xs: list, batch_sizes: tuple[int, ...], device: str, precision: str, repeats: int) -> dict[str, Any]:
    import torch

    from pipelines.teachers import build_teacher

    rows = {}
    phrases = sum(len(x.phrases) for x in xs)
    images = len({x.image_path for x in xs})
    for b in batch_sizes:
        t = build_teacher(name, {"model_dir": str(model_dir), "device": device, "precision": precision, "batch_size": b,
                                 "torch_threads": 1 if device == "cpu" else 4}).load()
        t.predict(xs[: max(1, len(xs) // 4)])  # warm-up: kernels, allocator, decode pool
        sync = torch.cuda.synchronize if t.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            predict_as_the_stage_does(t, xs)
        sync()
        wall = (time.perf_counter() - t0) / repeats
        rows[f"batch_{b}"] = {"images_per_s": round(images / wall, 2), "phrases_per_s": round(phrases / wall, 1),
                              "gpu_busy_share": gpu_busy_share(t, xs)}
        # Ours: none (results come back through events, inputs through pinned memory); Hugging Face's
        # Grounding DINO makes a few blocking copies inside its forward (first_sync_at says where),
        # each waiting only for its own batch's stream.
        if t.device.type == "cuda":
            from bench.gpu_trainer import sync_warnings

            n, where = sync_warnings(lambda: predict_as_the_stage_does(t, xs))
            rows[f"batch_{b}"].update(host_syncs_per_image=round(n / images, 2), first_sync_at=where)
        # Each row as it comes: a machine taken back mid-bench keeps the rows already measured in the log.
        print(f"[teacher bench] {name} batch {b}: {json.dumps(rows[f'batch_{b}'])}", flush=True)
        del t
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {"images": images, "captions": len(xs), "phrases": phrases, **rows}


def run(smoke: bool, num_images: int | None = None) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available() and not smoke
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                              "mode": "real-size, random weights, fp16 autocast" if cuda else "tiny architectures (smoke), CPU fp32"}
    with tempfile.TemporaryDirectory(prefix="ssga-bench-teachers-") as d:
        d = Path(d)
        xs = make_inputs(d / "corpus", num_images or (64 if cuda else 20), (640, 480) if cuda else None)  # CPU: two calls, one prefetch
        paths = sorted({x.image_path for x in xs})[:16]
        for name in ("grounding_dino", "owlv2"):
            pre = preprocess_rate(name, paths)
            if cuda:
                model_dir = save_real_size(name, d / name)
                # The stage's batch sizes first; batch 1 (the slowest, a reference point) last.
                result[name] = measure(name, model_dir, xs, (8, 32, 1), "cuda", "fp16", repeats=1)
            else:
                model_dir = _tiny_builders()[name](d / name)
                result[name] = measure(name, model_dir, xs, (1, 8), "cpu", "fp32", repeats=1)
            result[name]["preprocess"] = pre
    if not cuda:
        result["real_size"] = "skipped: no CUDA device (real-size teachers on a CPU are too slow to mean anything)"
    else:
        busy = [r["gpu_busy_share"] for n in ("grounding_dino", "owlv2") for k, r in result[n].items() if k.startswith("batch_")]
        result["target_gpu_busy_0.70_met_at_best_batch"] = {n: max(r["gpu_busy_share"] for k, r in result[n].items() if k.startswith("batch_")) >= 0.7
                                                           for n in ("grounding_dino", "owlv2")}
        result["gpu_busy_min"] = min(busy)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny architectures on the CPU even when CUDA is present")
    ap.add_argument("--images", type=int, default=None, help="images in the measured set (default 64 on CUDA, 20 on CPU)")
    args = ap.parse_args([] if argv is None else argv)
    return run(args.smoke, args.images)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
