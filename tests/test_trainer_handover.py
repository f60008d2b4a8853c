"""Loader workers hand each batch over as one shared-memory buffer (trainer.data.pack): the training loop
gets the batch it would have got in process, every tensor a view of that one buffer."""
from __future__ import annotations

from unittest import mock

import pytest
import torch

from mu_vla_fixtures import write_retrieval
from trainer.data.pack import ALIGN, LAYOUT, PACKED, Handover, pack, unpack
from trainer.data.stream import BatchStream
from trainer.data.text import load_tokenizer
from trainer_fixtures import one_thread  # noqa: F401  (autouse: one torch thread per test)
from trainer_fixtures import tiny_config, write_corpus


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("handover")
    regions, labels = write_corpus(root / "c", num_images=24, num_shards=2)
    return root, regions, labels, write_retrieval(regions, root / "retrieval")


def assert_same(a, b, where="batch"):
    assert type(a) is type(b), where
    if torch.is_tensor(a):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    else:
        assert a == b, where


def a_batch() -> dict:
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(3, 5, generator=g)
    return {
        "input_ids": torch.randint(0, 30_000, (4, 7), generator=g),
        "text_mask": torch.rand(4, 7, generator=g) < 0.5,
        "feat": torch.randn(4, 3, 16, generator=g).half(),
        "boxes": torch.rand(4, 3, 4, generator=g)[:, :, [2, 0, 3, 1]],  # not contiguous
        "mrc_target": torch.zeros(0, 1601),  # no masked region in the batch
        "pair_width": 3, "uids": ["a", "b", "c", "d"], "n": 4, "skips": {"bad": 1},
        "part": {"feat": shared, "ids": torch.arange(5, dtype=torch.int32), "name": "region_tag"},
        "other": {"feat": shared},  # one tensor in two parts (μ-VLA shares features between parts)
    }


def test_unpack_gives_back_every_tensor_and_value_from_one_shared_buffer():
    batch = a_batch()
    packed = pack(batch)
    buf = packed[PACKED]
    assert buf.is_shared() and buf.dtype == torch.uint8
    assert not any(torch.is_tensor(v) for k, v in packed.items() if k != PACKED)
    assert all(not torch.is_tensor(v) for v in packed["part"].values())
    got = unpack(packed)
    assert_same(got, batch)
    views = [got["input_ids"], got["text_mask"], got["feat"], got["boxes"], got["part"]["feat"], got["part"]["ids"]]
    for v in views:
        assert v.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()
        assert (v.data_ptr() - buf.data_ptr()) % ALIGN == 0
    assert got["part"]["feat"].data_ptr() == got["other"]["feat"].data_ptr()  # copied once
    assert buf.numel() < sum(v.numel() * v.element_size() for v in views) + len(views) * ALIGN


def test_a_batch_without_tensors_passes_as_it_is():
    end = {"n": 0, "skips": {"x": 2}, "end": True}
    assert pack(end) is end and unpack(end) is end


def test_a_packed_batch_survives_the_dataloaders_pin_memory_walk():
    """The DataLoader's pin thread rebuilds the batch (dicts, lists, tuples) with pinned tensors; this
    machine has no GPU to pin for, so pinning is a copy here."""
    from torch.utils.data._utils.pin_memory import pin_memory

    batch = a_batch()
    with mock.patch.object(torch.Tensor, "pin_memory", lambda t, *a, **k: t.clone()):
        pinned = pin_memory(pack(batch))
    assert pinned[LAYOUT] == pack(batch)[LAYOUT]
    assert_same(unpack(pinned), batch)


def test_handover_keeps_the_last_buffers_alive_in_the_worker():
    hand = Handover(keep=2)
    bufs = [hand(a_batch())[PACKED] for _ in range(3)]
    assert [b.data_ptr() for b in hand.kept] == [b.data_ptr() for b in bufs[1:]]
    assert hand({"n": 0, "skips": {}})["n"] == 0 and len(hand.kept) == 2


@pytest.mark.parametrize("method", ["ssga", "mu_vla"])
def test_batches_through_a_worker_equal_the_in_process_ones_in_one_segment(corpus, tok, method):
    root, regions, labels, retrieval = corpus

    def first(workers: int, n: int = 3) -> list[dict]:
        cfg = tiny_config(regions, labels, root / "out", method=method, retrieval=str(retrieval), num_workers=workers)
        stream = BatchStream(cfg, tok)
        try:
            return [stream.next() for _ in range(n)]
        finally:
            stream.close()

    def tensors(b: dict) -> list[torch.Tensor]:
        return [v for v in b.values() if torch.is_tensor(v)] + [t for v in b.values() if isinstance(v, dict) for t in tensors(v)]

    here, there = first(0), first(1)
    for a, b in zip(here, there):
        assert_same(b, a)
        assert len(tensors(b)) > 10
        assert len({t.untyped_storage().data_ptr() for t in tensors(b)}) == 1  # one segment a batch
        assert len({t.untyped_storage().data_ptr() for t in tensors(a)}) > 1


def test_a_shared_memory_mount_too_small_for_the_workers_batches_is_named_with_the_fix(tmp_path, caplog):
    from trainer.data.stream import check_shared_memory

    total = __import__("shutil").disk_usage(tmp_path).total
    assert check_shared_memory(total // 100, 2, str(tmp_path))  # 2 workers x 6 batches of 1 %: fits
    with caplog.at_level("WARNING", logger="trainer.data.stream"):
        assert not check_shared_memory(total // 4, 2, str(tmp_path))
    assert "--ipc=host or --shm-size=" in caplog.text and "lower --num-workers or --batch-size" in caplog.text
    assert check_shared_memory(10**12, 2, str(tmp_path / "missing"))  # no such mount: nothing to say
