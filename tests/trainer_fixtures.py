"""Test helpers for the trainer: the toy corpus (trainer.toydata), tiny configs, batch splitting, DDP rank."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.toydata import NUM_CLASSES, OBJECTS, write_corpus  # noqa: F401


def tiny_config(regions: Path, labels: Path, out: Path, **overrides):
    """A model and loop small enough for CPU tests (seconds, not minutes)."""
    from trainer.config import TrainConfig

    base = dict(
        regions=str(regions), labels=str(labels), out=str(out), hidden_size=32, num_layers=1, num_heads=2,
        intermediate_size=64, v_hidden_size=32, v_layers=1, co_layers=1, batch_size=8, num_workers=0,
        shuffle_buffer=16, steps=4, warmup_steps=1, log_every=1, ckpt_every=1000, progress=False, dropout=0.0,
        max_text_len=16, lr=1e-3,
    )
    base.update(overrides)
    return TrainConfig(**base)


def grounding_scores(model, cfg, tokenizer):
    """(logits, targets) of every sampled pair of the corpus in ``cfg``, with no masking or swaps."""
    import dataclasses

    import torch

    from trainer.data.chain import make_loader
    ev = dataclasses.replace(cfg, itm_neg_prob=0.0, mlm_prob=0.0, region_mask_prob=0.0, unmatched_phrase_share=1.0, num_workers=0)
    logits, targets = [], []
    model.eval()
    with torch.no_grad():
        for b in make_loader(ev, tokenizer, 0):
            if b["n"]:
                logits.append(model(b)["gnd_logit"][b["pair_mask"]])
                targets.append(b["pair_target"][b["pair_mask"]])
    return torch.cat(logits), torch.cat(targets)


def split_batch(batch: dict, parts: int) -> list[dict]:
    """Row-split a collated batch (same padding), e.g. to give each DDP rank its share."""
    import torch

    n, t = batch["mlm_labels"].shape
    r = batch["region_masked"].shape[1]
    flat = {"mlm_pos": ("mlm_target", t), "mrc_pos": ("mrc_target", r)}  # flat indices: row-split by position
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    out = []
    for a, b in zip(bounds, bounds[1:]):
        part = {k: (v[a:b] if torch.is_tensor(v) or isinstance(v, list) else v) for k, v in batch.items() if k not in flat and k not in ("mlm_target", "mrc_target")}
        for pos, (target, width) in flat.items():
            keep = (batch[pos] >= a * width) & (batch[pos] < b * width)
            part[pos], part[target] = batch[pos][keep] - a * width, batch[target][keep]
        out.append(part)
    return out


def first_batch(cfg, tokenizer) -> dict:
    return nth_batch(cfg, tokenizer, 0)


def rendezvous(tmp_path: Path) -> str:
    """A process group's meeting point for the spawned test ranks: a file, so no port can be taken
    by another process between choosing it and binding it."""
    return f"file://{tmp_path / 'rendezvous'}"


def ddp_worker(rank: int, world: int, init_method: str, cfg, result_path: str) -> None:
    """One rank of the DDP equivalence test: one optimizer step on its rows of the global batch."""
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.nn.parallel import DistributedDataParallel as DDP

    from trainer.models import build_model
    from trainer.data.text import load_tokenizer
    from trainer.runtime.loss_log import stats_dict
    from trainer.runtime.optim import make_optimizer
    from trainer.train import train_step

    torch.set_num_threads(1)
    tok = load_tokenizer(cfg.tokenizer)
    # The global batch is built before joining the group: inside it, the loader would give each
    # rank its own shards (split_by_node), and the test wants one batch split by rows.
    batch = split_batch(first_batch(cfg, tok), world)[rank]
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, batch["feat"].shape[-1], NUM_CLASSES, len(tok))
        opt = make_optimizer(model, cfg)
        result = stats_dict(train_step(DDP(model), opt, [batch], cfg, 0, torch.device("cpu")))
        if rank == 0:
            tensors = {k: v.detach().clone().contiguous() for k, v in model.named_parameters()}
            tensors["__loss__"] = torch.tensor([result["loss"], result["gnd"], result["word"]], dtype=torch.float64)
            save_file(tensors, result_path)
    finally:
        dist.destroy_process_group()


def nth_batch(cfg, tokenizer, n: int) -> dict:
    """The ``n``-th non-empty batch of the loader (epoch 0)."""
    import itertools

    from trainer.data.chain import make_loader
    return next(itertools.islice((b for b in make_loader(cfg, tokenizer, 0) if b["n"]), n, None))


def ddp_batches_worker(rank: int, world: int, init_method: str, cfg, result_path: str) -> None:
    """One rank of the μ-VLA DDP test: one optimizer step on the loader's ``rank``-th batch, DDP built as
    :func:`trainer.train.train` builds it (unused parameters found, since not every part uses every head)."""
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.nn.parallel import DistributedDataParallel as DDP

    from trainer.models import build_model
    from trainer.data.text import load_tokenizer
    from trainer.runtime.loss_log import stats_dict
    from trainer.runtime.optim import make_optimizer
    from trainer.train import train_step

    torch.set_num_threads(1)
    tok = load_tokenizer(cfg.tokenizer)
    batch = nth_batch(cfg, tok, rank)  # before joining the group, as in ddp_worker
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, 16, NUM_CLASSES, len(tok))
        opt = make_optimizer(model, cfg)
        ddp = DDP(model, find_unused_parameters=cfg.method == "mu_vla")
        result = stats_dict(train_step(ddp, opt, [batch], cfg, 0, torch.device("cpu"), active={"region_tag", "region_phrase", "image_sentence"}))
        if rank == 0:
            tensors = {k: v.detach().clone().contiguous() for k, v in model.named_parameters()}
            tensors["__loss__"] = torch.tensor([result["loss"], result["tag_word"], result["r2t"], result["align"]], dtype=torch.float64)
            save_file(tensors, result_path)
    finally:
        dist.destroy_process_group()


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per test: on a shared 2-core box, two threads fighting another process
    for the same cores are several times slower. Import it into a test module to apply it there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def flatten_like_cudnn(model) -> int:
    """Make every LSTM weight a view into one flat buffer per LSTM, as cuDNN's ``flatten_parameters``
    does on CUDA (on CPU it is a no-op); returns how many LSTMs were flattened."""
    import torch

    n = 0
    for lstm in [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]:
        params = list(lstm._flat_weights)
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        offset = 0
        for p in params:
            p.data = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        n += 1
    return n


def ddp_train_worker(rank: int, world: int, port: int, cfg, log_dir: str) -> None:
    """One rank of ``trainer.train.train`` under a gloo group; records every collective it makes."""
    import json
    import os

    import torch
    import torch.distributed as dist

    from trainer import train as train_mod

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    calls = []

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            t = args[0] if args else None
            calls.append({"op": name, "device": str(t.device) if torch.is_tensor(t) else None})
            return fn(*args, **kwargs)
        return wrapped

    dist.all_reduce = spy("all_reduce", dist.all_reduce)
    dist.broadcast = spy("broadcast", dist.broadcast)
    try:
        records = train_mod.train(cfg)
        with open(os.path.join(log_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"calls": calls, "records": records}, f)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
