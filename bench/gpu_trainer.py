"""The GPU section of bench_trainer: BERT-base single and dual stream, model only and end to end.

``run(tok)`` returns the figures; ``run(tok, smoke=True)`` runs the same code at toy sizes (on CPU
when there is no GPU), so the section is exercised by CI. See bench_trainer's docstring for what
is measured and how FLOPs are counted.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from schemas.shards import decode_labels, iter_shard

from schemas.discovery import list_shards
from trainer.config import TrainConfig
from trainer.losses import loss_sums, weights
from trainer.models import build_model
from trainer.toydata import NUM_CLASSES, write_corpus
from trainer.data.stream import BatchStream
from trainer.runtime.device import to_device
from trainer.runtime.distributed import loader_workers
from trainer.runtime.loss_log import STATS
from trainer.runtime.optim import make_optimizer
from trainer.train import compile_enabled, compile_model, train_step

BERT_BASE = dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, dropout=0.1, bf16=True,
                 lr=1e-4, warmup_steps=1, steps=10_000, max_text_len=36, max_regions=36)
DUAL = dict(model="dual", v_hidden_size=768, v_layers=1, co_layers=6)
SMOKE = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, v_hidden_size=32, co_layers=1)
DATASHEET_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1}  # dense, SXM where it applies
VOCAB, VG_CLASSES = 30522, 1601
TARGETS = {"single_model_b512_samples_per_s": 6000, "end_to_end_over_model_only": 0.9, "dual_model_samples_per_s": 3500}


def flops_per_sample(cfg: TrainConfig, batch: dict, feat_dim: int, num_classes: int, vocab: int) -> float:
    """Forward + backward FLOPs of one training sample, counted on the ``meta`` device."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = torch.device("meta")
    with meta:
        model = build_model(cfg, feat_dim, num_classes, vocab)
    b = {k: v.to(meta) if torch.is_tensor(v) else v for k, v in batch.items()}
    counter = FlopCounterMode(display=False)
    with counter:
        loss_sums(model(b), b).sum().backward()
    return counter.get_total_flops() / b["input_ids"].shape[0]


def analytic_flops(cfg: TrainConfig, text: int, regions: int, masked: float, vocab: int) -> float:
    """``6·N·T + 12·L·H·T² + 6·M·(V·H + H²)`` for the single-stream encoder (T = text + 1 + regions)."""
    h, layers = cfg.hidden_size, cfg.num_layers
    n = layers * (4 * h * h + 2 * h * cfg.intermediate_size)  # attention + feed-forward weights per layer
    t = text + 1 + regions
    return 6 * n * t + 12 * layers * h * t * t + 6 * masked * (vocab * h + h * h)


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed_steps(model, opt, next_batches, cfg, device, steps: int, warmup: int) -> tuple[float, int]:
    """(seconds, examples) over ``steps`` optimizer steps after ``warmup``; the host waits only at the ends.
    The loss weights go to the device once, as ``train()`` does, not once a step."""
    lambdas = weights(cfg).to(device)
    for i in range(warmup):
        train_step(model, opt, next_batches(), cfg, i, device, lambdas)
    _sync(device)
    t0 = time.perf_counter()
    rows = [train_step(model, opt, next_batches(), cfg, warmup + i, device, lambdas) for i in range(steps)]
    _sync(device)
    seconds = time.perf_counter() - t0
    return seconds, int(torch.stack(rows)[:, STATS.index("examples")].sum())


def _model(cfg: TrainConfig, feat_dim: int, num_classes: int, vocab: int, device: torch.device, dynamic: bool = True):
    torch.manual_seed(0)
    model = build_model(cfg, feat_dim, num_classes, vocab).to(device)
    opt = make_optimizer(model, cfg)
    net = compile_model(model, cfg, dynamic) if compile_enabled(cfg, device) else model
    return model, net, opt


def sync_warnings(run) -> tuple[int, str]:
    """Synchronising CUDA calls ``run()`` makes (``torch.cuda.set_sync_debug_mode``: stream syncs and
    blocking copies, such as ``.item()`` or ``.cpu()``), and where they came from: up to three sites,
    first seen first, each as the warning's own line and the innermost project line that led there
    (the warning alone names a line inside torch, which does not say which of our calls it was)."""
    import collections
    import traceback
    import warnings

    root = Path(__file__).resolve().parents[1]
    sites: collections.Counter[str] = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" not in str(message):
            return
        ours = [f for f in traceback.extract_stack()[:-1]
                if f.filename.startswith(str(root)) and not f.filename.startswith(str(root / "bench"))]
        site = f"{filename}:{lineno}"
        if ours:
            origin = f"{Path(ours[-1].filename).relative_to(root)}:{ours[-1].lineno}"
            site = origin if ours[-1].filename == filename else f"{site} from {origin}"
        sites[site] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record  # restored when the block ends
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum(sites.values()), "; ".join(f"{site} (x{n})" for site, n in list(sites.items())[:3])


def host_syncs_per_step(net, opt, batch: dict, cfg: TrainConfig, device: torch.device, steps: int = 6) -> tuple[float, str]:
    """Synchronising CUDA calls per ``train_step``, and where they came from (:func:`sync_warnings`).
    0 means the host never waits for the GPU inside a step and can run ahead."""
    n, where = sync_warnings(lambda: [train_step(net, opt, [batch], cfg, i, device) for i in range(steps)])
    return n / steps, where


def model_only(cfg: TrainConfig, device: torch.device, batch_size: int, steps: int, shapes: dict, built: tuple | None = None) -> dict:
    """``built``: (model, net, optimizer) from an earlier call, so a compiled model compiles once for all batch sizes."""
    from bench.bench_trainer import synthetic_batch

    batch = synthetic_batch(batch_size, shapes["text"], shapes["regions"], shapes["feat"], shapes["classes"], 16, shapes["vocab"], device)
    model, net, opt = built or _model(cfg, shapes["feat"], shapes["classes"], shapes["vocab"], device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds, n = _timed_steps(net, opt, lambda: [batch], cfg, device, steps, warmup=3)
    cpu_batch = {k: v.cpu() if torch.is_tensor(v) else v for k, v in batch.items()}
    out = {"samples_per_s": n / seconds, "flops_per_sample": flops_per_sample(cfg, cpu_batch, shapes["feat"], shapes["classes"], shapes["vocab"]),
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["host_syncs_per_step"], out["first_sync_at"] = host_syncs_per_step(net, opt, batch, cfg, device)
    return out


def end_to_end(cfg: TrainConfig, tok, device: torch.device, steps: int, feat_dim: int, built: tuple | None = None) -> dict:
    """The real loader (endless per-worker streams, pinned batches) feeding the real train_step."""
    stream = BatchStream(cfg, tok, pin_memory=device.type == "cuda")
    first = stream.next()
    model, net, opt = built or _model(cfg, feat_dim, NUM_CLASSES, len(tok), device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # A compiled model meets the loader's varying shapes here first (a recompile for a batch with 0 or 1
    # masked regions, say): more warm-up steps keep those compiles out of the timed ones.
    warmup = 12 if compile_enabled(cfg, device) else 3
    calls, waited = 0, 0.0  # waited: main-thread seconds inside stream.next() in the timed steps

    def next_batch() -> list[dict]:
        nonlocal calls, waited
        t = time.perf_counter()
        batch = stream.next()
        calls += 1
        if calls > warmup:
            waited += time.perf_counter() - t
        return [batch]

    try:
        seconds, n = _timed_steps(net, opt, next_batch, cfg, device, steps, warmup=warmup)
    finally:
        stream.close()
    # The same model on one of these batches, already on the device: the loader's true overhead. (The
    # model-only rows use 36-token synthetic text; the corpus's captions are shorter, so a step here
    # costs less and a samples/s ratio against those rows flatters the loader.)
    resident = to_device(first, device)
    own_seconds, own_n = _timed_steps(net, opt, lambda: [resident], cfg, device, steps, warmup=1)
    out = {"samples_per_s": n / seconds, "flops_per_sample": flops_per_sample(cfg, first, feat_dim, NUM_CLASSES, len(tok)),
           "text_tokens": int(first["input_ids"].shape[1]), "regions": int(first["feat"].shape[1]),
           "over_same_batch_model_only": (n / seconds) / (own_n / own_seconds),
           "loader_ms_per_step": 1000 * waited / steps, "step_ms": 1000 * seconds / steps,
           "batch_pinned": float(first["feat"].is_pinned()) if device.type == "cuda" else 0.0}  # 1: copies can be asynchronous
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def profile_model_only(batch_size: int = 512, steps: int = 5, dual: bool = False, rows: int = 25) -> str:
    """torch.profiler table of a few BERT-base model-only steps (CUDA kernels by device time): where a
    step's time goes, to guide the next speed change."""
    from torch.profiler import ProfilerActivity, profile

    from bench.bench_trainer import synthetic_batch

    device = torch.device("cuda")
    cfg = TrainConfig(**{**BERT_BASE, **(DUAL if dual else {})}, batch_size=batch_size)
    batch = synthetic_batch(batch_size, 36, 36, 2048, VG_CLASSES, 16, VOCAB, device)
    _, net, opt = _model(cfg, 2048, VG_CLASSES, VOCAB, device)
    _timed_steps(net, opt, lambda: [batch], cfg, device, 2, warmup=3)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        _timed_steps(net, opt, lambda: [batch], cfg, device, steps, warmup=0)
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70)


def count_examples(labels: Path) -> int:
    return sum(len(decode_labels(m, k).captions) for s in list_shards(labels, "labels") for k, m in iter_shard(s))


def run(tok, smoke: bool = False, corpus: tuple[Path, Path] | None = None, compile: str = "off",
        streams: tuple[str, ...] = ("single", "dual")) -> dict:
    """Every figure of the GPU section, side by side (``smoke``: toy sizes, CPU allowed; ``streams``: a
    subset, for a lease too short for both compiles in one call)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = {**BERT_BASE, **(SMOKE if smoke else {}), "compile": compile}
    # One model per stream serves both modes (a compiled BERT-base takes ~2 minutes to build on an H100),
    # so the model-only batch has the corpus's classes and the tokenizer's vocabulary. The region-class
    # head runs at the masked rows only: 9 classes instead of a detector's 1,601 change 0.1% of the FLOPs.
    shapes = ({"text": 12, "regions": 6, "feat": 16, "classes": NUM_CLASSES, "vocab": len(tok)} if smoke
              else {"text": 36, "regions": 36, "feat": 2048, "classes": NUM_CLASSES, "vocab": len(tok)})
    batches, steps = ((4, 8), 2) if smoke else ((256, 512), 20)
    # As many loader workers as a user's run gets by default (--num-workers auto): the end-to-end rows are what they see.
    workers = 1 if smoke else loader_workers(TrainConfig(), device)
    res: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke)", "torch": torch.__version__,
                 "compile": compile, "targets": TARGETS, "loader_workers": workers}
    if device.type == "cuda":
        res["matmul_bf16_tflops"] = round(matmul_tflops(device), 1)
        name = torch.cuda.get_device_name()
        res["datasheet_bf16_tflops"] = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
    with tempfile.TemporaryDirectory() as tmp:
        if corpus is None:
            images = 40 if smoke else 13_500  # 1-2 captions each: >= 20,000 examples
            corpus = write_corpus(tmp, images, num_shards=4 if smoke else 32, num_regions=shapes["regions"],
                                  feat_dim=shapes["feat"], no_caption_every=0)
        regions, labels = corpus
        res["corpus_examples"] = count_examples(Path(labels))
        for stream in streams:
            built = None  # (model, net, optimizer): one per stream, for both modes and every batch size
            cfg = TrainConfig(**{**base, **(DUAL if stream == "dual" else {}), "regions": str(regions), "labels": str(labels),
                                 "out": str(Path(tmp) / "run"), "num_workers": workers, "progress": False,
                                 **({"v_hidden_size": SMOKE["v_hidden_size"]} if smoke else {})})
            for b in batches:
                for mode in ("model_only", "end_to_end"):
                    c = dataclasses.replace(cfg, batch_size=b, shuffle_buffer=max(cfg.shuffle_buffer, b))
                    key = f"{stream}_{mode}_b{b}"
                    t0 = time.perf_counter()
                    try:
                        built = built or _model(c, shapes["feat"], shapes["classes"], shapes["vocab"], device)
                        r = (model_only(c, device, b, steps, shapes, built) if mode == "model_only"
                             else end_to_end(c, tok, device, steps * 2, shapes["feat"], built))
                    except Exception as e:  # one configuration failing (out of memory, say) must not hide the others' figures
                        res[f"{key}_error"] = f"{type(e).__name__}: {e}"[:500]
                        print(f"[gpu bench] {key}: FAILED {res[f'{key}_error']}", flush=True)
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                        continue
                    res[f"{key}_samples_per_s"] = round(r["samples_per_s"], 1)
                    res[f"{key}_gflop_per_sample"] = round(r["flops_per_sample"] / 1e9, 2)
                    for peak in ("matmul_bf16_tflops", "datasheet_bf16_tflops"):
                        if res.get(peak):
                            res[f"{key}_mfu_vs_{peak.removesuffix('_bf16_tflops')}"] = round(r["samples_per_s"] * r["flops_per_sample"] / (res[peak] * 1e12), 3)
                    for extra in ("peak_mem_gib", "text_tokens", "params_m", "over_same_batch_model_only", "loader_ms_per_step", "step_ms",
                                  "host_syncs_per_step", "batch_pinned"):
                        if extra in r:
                            res[f"{key}_{extra}"] = round(r[extra], 2)
                    if r.get("first_sync_at"):
                        res[f"{key}_first_sync_at"] = r["first_sync_at"]
                    # Every figure of the row as it comes: a machine taken back mid-bench keeps them in the log.
                    row = {k.removeprefix(f"{key}_"): v for k, v in res.items() if k.startswith(f"{key}_")}
                    print(f"[gpu bench] {key}: {res[f'{key}_samples_per_s']} samples/s ({time.perf_counter() - t0:.0f} s) "
                          f"{json.dumps(row)}", flush=True)
                if f"{stream}_end_to_end_b{b}_samples_per_s" in res and f"{stream}_model_only_b{b}_samples_per_s" in res:
                    ratio = f"{stream}_b{b}_end_to_end_over_model_only"
                    res[ratio] = round(res[f"{stream}_end_to_end_b{b}_samples_per_s"] / res[f"{stream}_model_only_b{b}_samples_per_s"], 3)
                    print(f"[gpu bench] {ratio}: {res[ratio]}", flush=True)
        single = TrainConfig(**base)
        res["single_analytic_gflop_per_sample"] = round(analytic_flops(single, shapes["text"], shapes["regions"], 0.15 * shapes["text"], shapes["vocab"]) / 1e9, 2)
    return res
