"""The alignment methods wired into the loop (``--method``): each wired loss on a hand-built batch equals
the value computed by hand (or by POT), the μ-VLA batch builder links phrases to the right regions, each
method over-fits one batch through the real train step, and a μ-VLA run logs its curriculum and
resumes exactly."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mu_vla_fixtures import write_retrieval
from trainer.data.text import load_tokenizer
from trainer.losses import TERMS, batch_parts, loss_counts, part_counts, part_sums, weights, word_mask
from trainer.models import build_model
from trainer.runtime.loss_log import stats_dict
from trainer.runtime.optim import make_optimizer
from trainer.toydata import OBJECTS
from trainer.train import train, train_step
from trainer_fixtures import one_thread  # noqa: F401  (autouse: one torch thread per test)
from trainer_fixtures import NUM_CLASSES, ddp_batches_worker, first_batch, nth_batch, rendezvous, tiny_config, write_corpus

CPU = torch.device("cpu")
T = {t: i for i, t in enumerate(TERMS)}
METHODS = ("none", "ssga", "partial_ot", "ssga+partial_ot", "mu_vla")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    regions, labels = write_corpus(root / "c", num_images=24, num_shards=4)
    return root, regions, labels, write_retrieval(regions, root / "retrieval")


def _cfg(corpus, out, method, **kw):
    root, regions, labels, retrieval = corpus
    return tiny_config(regions, labels, out, method=method, retrieval=str(retrieval), **kw)


# ---------------------------------------------------------------------------------------------
# Hand-built batches


def test_weights_select_each_methods_terms():
    from trainer.config import TrainConfig

    on = {m: {t for t, w in zip(TERMS, weights(TrainConfig(method=m, retrieval="x")).tolist()) if w} for m in METHODS}
    base = {"word", "img", "align", "tag_word", "mrfr", "r2t"}  # μ-VLA's terms only ever have items in μ-VLA batches
    assert on["none"] == base and on["ssga"] == base | {"gnd"} and on["partial_ot"] == base | {"pot"}
    assert on["ssga+partial_ot"] == base | {"gnd", "pot"} and on["mu_vla"] == base


def test_partial_ot_term_of_a_paired_batch_equals_pot():
    ot = pytest.importorskip("ot")
    from trainer.config import TrainConfig

    cfg = TrainConfig(method="partial_ot", pot_mass=0.6, pot_reg=0.1, pot_iters=300)
    g = torch.Generator().manual_seed(1)
    text_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]]).bool()
    region_mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]]).bool()
    part = {"text_mask": text_mask, "region_mask": region_mask, "itm_label": torch.tensor([1.0, 1.0, 0.0]),
            "mlm_target": torch.zeros(0, dtype=torch.long), "mrc_target": torch.zeros(0, 4), "pair_target": torch.zeros(3, 1),
            "pair_mask": torch.zeros(3, 1, dtype=torch.bool), "mlm_labels": torch.full((3, 6), -100), "region_masked": torch.zeros(3, 3, dtype=torch.bool)}
    out = {"token_states": torch.randn(3, 6, 8, generator=g), "region_states": torch.randn(3, 3, 8, generator=g),
           "mlm_logits": torch.zeros(0, 5), "region_logits": torch.zeros(0, 4), "itm_logit": torch.zeros(3), "gnd_logit": torch.zeros(3, 1)}
    # Words: [CLS] and the closing [SEP] are not words.
    assert word_mask(part).tolist() == [[0, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0]]
    total = 0.0
    for i in (0, 1):  # the mismatched pair (itm 0) is not aligned
        words = out["token_states"][i][word_mask(part)[i]]
        regs = out["region_states"][i][region_mask[i]]
        c = (1 - torch.nn.functional.normalize(words, dim=-1) @ torch.nn.functional.normalize(regs, dim=-1).T).double().numpy()
        plan = ot.partial.entropic_partial_wasserstein(np.full(len(words), 1 / len(words)), np.full(len(regs), 1 / len(regs)), c,
                                                       reg=0.1, m=0.6, numItermax=300)
        total += float((plan * c).sum())
    sums, counts = part_sums("paired", out, part, cfg), part_counts("paired", part, cfg)
    assert counts[T["pot"]].item() == 2 and sums[T["pot"]].item() == pytest.approx(total, abs=1e-5)
    assert part_counts("paired", part, TrainConfig(method="ssga"))[T["pot"]] == 0  # off unless the method asks


def test_mu_vla_parts_by_hand():
    from trainer.config import TrainConfig

    cfg = TrainConfig(method="mu_vla", retrieval="x", mu_itm_warmup_epochs=1)
    # region–tag: 2 masked tag tokens over a 3-word vocabulary, 1 masked region (2 classes, 2-d features)
    logits = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    rt = {"mlm_labels": torch.tensor([[-100, 2, 0]]), "mlm_target": torch.tensor([2, 0]), "region_masked": torch.tensor([[True, False]]),
          "mrc_pos": torch.tensor([0]), "mrc_target": torch.tensor([[0.25, 0.75]]), "mrfr_target": torch.tensor([[1.0, -1.0]]),
          "itm_label": torch.ones(1)}
    out = {"mlm_logits": logits, "region_logits": torch.tensor([[0.0, math.log(3.0)]]), "region_feat_pred": torch.tensor([[0.0, 1.0]]),
           "itm_logit": torch.zeros(1)}
    s, c = part_sums("region_tag", out, rt, cfg), part_counts("region_tag", rt, cfg)
    lse = math.log(1 + math.e + math.e ** 2)
    assert s[T["tag_word"]].item() == pytest.approx((lse - 2) + math.log(3), abs=1e-6) and c[T["tag_word"]] == 2
    assert s[T["img"]].item() == pytest.approx(0.0, abs=1e-6) and c[T["img"]] == 1  # predicted = target (1:3)
    assert s[T["mrfr"]].item() == pytest.approx((1 + 4) / 2) and c[T["mrfr"]] == 1
    # region–phrase: two linked phrases; the first's tokens are {1, 2}, the second's {0}
    rp = {"r2t_pos": torch.tensor([3, 5]), "r2t_tokens": torch.tensor([[1, 2], [0, -100]]), "itm_label": torch.ones(2),
          "mlm_labels": torch.full((2, 2), -100), "region_masked": torch.zeros(2, 3, dtype=torch.bool)}
    out = {"r2t_logits": torch.tensor([[0.0, 0.0, math.log(2.0)], [0.0, 0.0, 0.0]]), "itm_logit": torch.zeros(2)}
    s, c = part_sums("region_phrase", out, rp, cfg), part_counts("region_phrase", rp, cfg)
    p = [1 / 4, 1 / 4, 2 / 4]
    assert s[T["r2t"]].item() == pytest.approx(-(math.log(p[1]) + math.log(p[2])) / 2 + math.log(3)) and c[T["r2t"]] == 2
    # image–sentence: ITM unweighted in epoch 0, weighted by sigmoid(own logit) on positives afterwards
    its = {"itm_label": torch.tensor([1.0, 0.0]), "mlm_target": torch.zeros(0, dtype=torch.long), "mlm_labels": torch.full((2, 3), -100),
           "region_masked": torch.zeros(2, 2, dtype=torch.bool)}
    out = {"itm_logit": torch.tensor([2.0, 1.0]), "mlm_logits": torch.zeros(0, 3)}
    bce = [math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(1.0))]
    assert part_sums("image_sentence", out, {**its, "epoch": 0}, cfg)[T["align"]].item() == pytest.approx(sum(bce), abs=1e-6)
    w = 1 / (1 + math.exp(-2.0))
    assert part_sums("image_sentence", out, {**its, "epoch": 1}, cfg)[T["align"]].item() == pytest.approx(w * bce[0] + bce[1], abs=1e-6)
    assert part_counts("image_sentence", its, cfg)[T["align"]] == 2  # the mean stays over pairs


def test_mu_vla_batch_links_phrases_to_regions_of_their_object(corpus, tok):
    cfg = _cfg(corpus, corpus[0] / "unused", "mu_vla", region_mask_prob=0.3)
    b = first_batch(cfg, tok)
    assert b["mu_vla"] and [k for k, _ in batch_parts(b)] == ["region_tag", "region_phrase", "image_sentence"]
    rt, rp, its = b["region_tag"], b["region_phrase"], b["image_sentence"]
    # MRFR targets are the features before zeroing, in mrc_pos order; the masked inputs are zero.
    assert len(rt["mrfr_target"]) == len(rt["mrc_pos"]) > 0
    assert (rt["feat"].reshape(-1, rt["feat"].shape[-1])[rt["mrc_pos"]] == 0).all()
    assert (its["feat"].reshape(-1, its["feat"].shape[-1])[rt["mrc_pos"]].float() - rt["mrfr_target"]).abs().max() < 1e-2
    # Each linked phrase is one toy phrase ("a dog", "the red cat"). When the image has a region of the
    # object it names, the phrase is linked to such a region (the toy phrase embedding is its object's
    # vector + noise); the sentences are unpaired, so otherwise it goes to the most similar other tag.
    from trainer.data import unpaired as U
    from trainer.data.read import SkipCounter
    from trainer.data.shard_set import region_shards

    src = U.decode_unpaired(U.zip_retrieval_shards(region_shards(cfg.regions)[:1], cfg.retrieval, SkipCounter()), SkipCounter())
    src = U.sentence_negatives(U.pick_sentence(U.to_images(src, cfg.max_regions), cfg.seed, 0), 4, 0.5, cfg.seed, 0)
    word_of = {tok.convert_tokens_to_ids(w): w for w in OBJECTS}
    present = 0
    for view in U.views(src, cfg, tok, 0):
        ex = view["region_phrase"]
        cls = [OBJECTS[c] for c in np.argmax(ex["cls"][:, 1:], 1)]
        for region, toks in ex["r2t"]:
            named = [word_of[t] for t in toks if t in word_of]
            assert len(named) == 1
            if named[0] in cls:
                assert cls[region] == named[0], (named, cls[region])
                present += 1
            assert (ex["feat"][region] == 0).all()  # the linked region is masked
    assert present > 3


@pytest.mark.parametrize("method", METHODS)
def test_overfitting_one_batch_lowers_each_methods_losses(corpus, tok, tmp_path, method):
    cfg = _cfg(corpus, tmp_path, method, lr=3e-3, warmup_steps=1, steps=1000, mu_image_sentence_at=0)
    batch = first_batch(cfg, tok)
    torch.manual_seed(0)
    net = build_model(cfg, 16, NUM_CLASSES, len(tok))
    counts = loss_counts(batch, cfg)
    trained = {t for t, c, w in zip(TERMS, counts.tolist(), weights(cfg).tolist()) if c > 0 and w > 0}
    expect = {"none": {"word", "img", "align"}, "ssga": {"word", "img", "align", "gnd"}, "partial_ot": {"word", "img", "align", "pot"},
              "ssga+partial_ot": {"word", "img", "align", "gnd", "pot"}, "mu_vla": {"word", "img", "align", "tag_word", "mrfr", "r2t"}}[method]
    assert trained == expect
    opt = make_optimizer(net, cfg)
    hist = [stats_dict(train_step(net, opt, [batch], cfg, i, CPU)) for i in range(30)]
    assert hist[-1]["loss"] < 0.6 * hist[0]["loss"], [round(h["loss"], 3) for h in hist]
    for t in expect - {"align"}:  # ITM on 8 examples can sit near ln 2 for a while; every other term must fall
        assert hist[-1][t] < 0.8 * hist[0][t], (t, [round(h[t], 3) for h in hist])


@pytest.mark.slow
def test_mu_vla_run_logs_the_curriculum_and_resumes_exactly(corpus, tmp_path):
    kw = dict(steps=7, num_workers=2, dropout=0.1, ckpt_every=100, mu_region_phrase_at=2, mu_image_sentence_at=4)
    straight = train(_cfg(corpus, tmp_path / "straight", "mu_vla", **kw))
    assert [r["objectives"] for r in straight] == [["region_tag"]] * 2 + [["region_tag", "region_phrase"]] * 2 + [list(("region_tag", "region_phrase", "image_sentence"))] * 3
    assert {r["step"]: r["curriculum_switch"] for r in straight if "curriculum_switch" in r} == {1: ["region_tag"], 3: ["region_phrase"], 5: ["image_sentence"]}
    assert all(r["r2t"] == 0 and r["align"] == 0 for r in straight[:2]) and all(r["r2t"] > 0 for r in straight[2:])
    assert all(r["align"] == 0 for r in straight[:4]) and all(r["align"] > 0 for r in straight[4:])
    first = train(_cfg(corpus, tmp_path / "resumed", "mu_vla", stop_at=3, **kw))
    rest = train(_cfg(corpus, tmp_path / "resumed", "mu_vla", **kw))
    assert [r["step"] for r in first + rest] == list(range(1, 8))
    for a, b in zip(straight, first + rest):
        assert a.get("curriculum_switch") == b.get("curriculum_switch")
        for key in ("loss", *TERMS):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (a["step"], key)
    logged = [json.loads(x) for x in (tmp_path / "resumed" / "losses.jsonl").read_text().splitlines()]
    assert [r.get("curriculum_switch") for r in logged] == [r.get("curriculum_switch") for r in straight]
    final = "ckpt-00000007/model.safetensors"
    assert (tmp_path / "straight" / final).read_bytes() == (tmp_path / "resumed" / final).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mu_vla", "ssga+partial_ot"])
def test_compiled_run_matches_eager(corpus, tmp_path, method):
    """On CUDA the model is compiled by default (dynamic sizes): μ-VLA's three batch kinds and the
    partial-OT term must give eager's losses through the compiled model too (``eager`` backend: the
    same tracing as inductor, without its code generation)."""
    import torch

    kw = dict(steps=6, num_workers=1, ckpt_every=100, mu_region_phrase_at=2, mu_image_sentence_at=4)
    plain = train(_cfg(corpus, tmp_path / "eager", method, **kw))
    torch._dynamo.reset()
    compiled = train(_cfg(corpus, tmp_path / "compiled", method, compile="on", compile_backend="eager", **kw))
    torch._dynamo.reset()
    for a, b in zip(plain, compiled, strict=True):
        for key in ("loss", *TERMS):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)


@pytest.mark.slow
def test_partial_ot_run_resumes_exactly(corpus, tmp_path):
    kw = dict(steps=4, num_workers=1, dropout=0.1, ckpt_every=100)
    straight = train(_cfg(corpus, tmp_path / "a", "ssga+partial_ot", **kw))
    first = train(_cfg(corpus, tmp_path / "b", "ssga+partial_ot", stop_at=2, **kw))
    rest = train(_cfg(corpus, tmp_path / "b", "ssga+partial_ot", **kw))
    assert all(r["pot"] > 0 for r in straight)
    for a, b in zip(straight, first + rest):
        for key in ("loss", *TERMS):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (a["step"], key)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mu_vla_on_two_gloo_ranks_matches_one_process_accumulating_both_batches(corpus, tmp_path):
    """Each rank runs three forward/backward passes (region–tag, region–phrase, image–sentence), the first
    two under ``no_sync``, with unused parameters found: the step equals one process accumulating
    both ranks' batches (train_step's promise: n ranks × B/n = k micro-batches × B/k)."""
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    cfg = _cfg(corpus, tmp_path / "ddp", "mu_vla", dropout=0.0)
    out = tmp_path / "rank0.safetensors"
    mp.start_processes(ddp_batches_worker, args=(2, rendezvous(tmp_path), cfg, str(out)), nprocs=2, join=True, start_method="spawn")
    got = load_file(str(out))

    tok = load_tokenizer(cfg.tokenizer)
    batches = [nth_batch(cfg, tok, 0), nth_batch(cfg, tok, 1)]
    assert all(b["mu_vla"] for b in batches) and not torch.equal(batches[0]["region_tag"]["feat"], batches[1]["region_tag"]["feat"])
    torch.manual_seed(cfg.seed)
    net = build_model(cfg, 16, NUM_CLASSES, len(tok))
    res = stats_dict(train_step(net, make_optimizer(net, cfg), batches, cfg, 0, CPU, active={"region_tag", "region_phrase", "image_sentence"}))
    assert all(res[k] > 0 for k in ("tag_word", "r2t", "align"))
    for i, key in enumerate(("loss", "tag_word", "r2t", "align")):
        assert got["__loss__"][i].item() == pytest.approx(res[key], rel=1e-5), key
    for name, p in net.named_parameters():
        torch.testing.assert_close(got[name], p.detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_user_mistakes_are_one_line(corpus, tmp_path):
    from trainer.config import parse_args

    with pytest.raises(ValueError, match="--retrieval"):
        parse_args(["--method", "mu_vla"])
    with pytest.raises(ValueError, match="method must be one of"):
        parse_args(["--method", "uniter"])
    with pytest.raises(ValueError, match="mu_region_phrase_at"):
        parse_args(["--method", "mu_vla", "--retrieval", "r", "--mu-region-phrase-at", "5", "--mu-image-sentence-at", "2"])
    with pytest.raises(ValueError, match="pot_mass"):
        parse_args(["--method", "partial_ot", "--pot-mass", "0"])


def test_old_or_broken_retrieval_samples_are_named(corpus, tmp_path):
    from schemas.retrieval import Retrieved, decode_retrieved, encode_retrieved
    from schemas.shards import ShardError, write_shard
    from trainer.data import unpaired as U
    from trainer.data.read import DataError, SkipCounter
    from trainer.data.shard_set import region_shards

    _, regions, _, _ = corpus
    shard = region_shards(regions)[0]
    from schemas.shards import iter_shard

    key = next(iter_shard(shard))[0]
    old = Retrieved("x", ["dog"], np.array([1]), np.array([0.5], np.float32), ["a dog"])  # no phrases: an older stage's output
    write_shard(tmp_path / "retrieval-000000.tar", {key: encode_retrieved(old)})
    with pytest.raises(DataError, match="re-run python -m pipelines.retrieval"):
        list(U.decode_unpaired(U.zip_retrieval_shards([shard], str(tmp_path), SkipCounter()), SkipCounter()))
    bad = Retrieved("x", ["dog"], np.array([1]), np.array([0.5], np.float32), ["a dog"], phrases=[[[0, 40]]],
                    tag_emb=np.ones((1, 4)), region_tag=np.zeros(2, np.int16), phrase_emb=np.ones((1, 4)))
    with pytest.raises(ShardError, match="outside its sentence"):
        decode_retrieved(encode_retrieved(bad), "r.tar:k")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mu_vla_compiled_ddp_matches_eager_ddp(corpus, tmp_path):
    """μ-VLA on a GPU node: torchrun, DDP with unused parameters found (its early stages leave heads
    idle), and torch.compile over the DDP module (the CUDA default). Same losses as eager DDP."""
    import json
    import socket

    import torch.multiprocessing as mp

    from trainer_fixtures import ddp_train_worker

    losses = {}
    for mode in ("off", "on"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cfg = _cfg(corpus, tmp_path / mode, "mu_vla", steps=5, batch_size=4, num_workers=1, dropout=0.0, compile=mode,
                   compile_backend="eager", mu_region_phrase_at=2, mu_image_sentence_at=3)
        (tmp_path / f"log-{mode}").mkdir()
        mp.start_processes(ddp_train_worker, args=(2, port, cfg, str(tmp_path / f"log-{mode}")), nprocs=2, join=True, start_method="spawn")
        losses[mode] = [r["loss"] for r in json.loads((tmp_path / f"log-{mode}" / "rank0.json").read_text())["records"]]
    assert len(losses["on"]) == 5 and losses["on"] == pytest.approx(losses["off"], rel=1e-5)
