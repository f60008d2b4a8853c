"""VCR's object links carried to the encoder: WordPiece alignment of links, objects → region-shard regions by IoU,
collate padding, and the single-stream encoder's linked-region word embeddings (VL-BERT's VCR input)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from schemas.records import RegionRecord
from trainer.tasks.regions import collate_inputs
from trainer.tasks.vcr import GENDER_NEUTRAL_NAMES, VCRExample, choice_pairs, words_and_links
from trainer.tasks.vcr.data import make_examples
from trainer.tasks.vcr.links import object_regions, region_links, tokenize_linked
from trainer.tasks.vcr.metadata import VCRMetadata

OBJECTS = ("person",) * 12 + ("car",)  # person 11 is "Skyler" (two WordPieces), object 12 a car


@pytest.fixture(scope="module")
def tok():
    from trainer.data.text import load_tokenizer

    return load_tokenizer()


def _example(**over) -> VCRExample:
    base = dict(annot_id="val-0", img_fn="m/img.jpg", metadata_fn="m/img.json", objects=OBJECTS,
                question=("Why", "is", (1, 2), "near", (12,), "?"),
                answer_choices=((((11,), "is", "driving", "."),) * 4), rationale_choices=((("Because", "."),) * 4), answer_label=0, rationale_label=0)
    return VCRExample(**{**base, **over})


def _meta(boxes, w=100, h=50) -> VCRMetadata:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return VCRMetadata(b, np.ones(len(b), np.float32), tuple([[]] * len(b)), w, h)


def _rec(boxes, w=100, h=50, d=4) -> RegionRecord:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return RegionRecord("img", w, h, b, np.arange(len(b) * d, dtype=np.float32).reshape(len(b), d))


def test_every_wordpiece_of_a_linked_word_gets_its_link(tok):
    assert GENDER_NEUTRAL_NAMES[11] == "Skyler" and tok.tokenize("Skyler") == ["sky", "##ler"]
    ctx, ch = choice_pairs(_example(), "answer")[0]
    assert ctx[0] == ["Why", "is", "Riley", "and", "Jessie", "near", "car", "?"]
    ids, links = tokenize_linked(tok, ctx, ch, 64)
    tokens = tok.convert_ids_to_tokens(ids.tolist())
    assert tokens == ["[CLS]", "why", "is", "riley", "and", "jessie", "near", "car", "?", "[SEP]", "sky", "##ler", "is", "driving", ".", "[SEP]"]
    assert links.tolist() == [-1, -1, -1, 1, -1, 2, -1, 12, -1, -1, 11, 11, -1, -1, -1, -1]
    assert ids.tolist() == tok(" ".join(ctx[0]), " ".join(ch[0]))["input_ids"]  # the same ids as the tag-word-only text


def test_links_follow_truncation(tok):
    ctx = words_and_links(["Why", "is", [1, 2], "near", [12], "?"], OBJECTS)
    ch = words_and_links([[11], "is", "driving", "."], OBJECTS)
    ids, links = tokenize_linked(tok, ctx, ch, 10)  # longest side first, one token at a time: both sides lose their tails
    tokens = tok.convert_ids_to_tokens(ids.tolist())
    assert len(ids) == len(links) == 10
    assert tokens == ["[CLS]", "why", "is", "riley", "and", "[SEP]", "sky", "##ler", "is", "[SEP]"]
    assert links.tolist() == [-1, -1, -1, 1, -1, -1, 11, 11, -1, -1]
    assert ids.tolist() == tok(" ".join(ctx[0]), " ".join(ch[0]), truncation=True, max_length=10)["input_ids"]


def test_object_to_region_by_iou():
    boxes = [[0, 0, 50, 50], [50, 0, 100, 50], [10, 10, 30, 40]]
    assert object_regions(_meta(boxes), _rec(boxes)).tolist() == [0, 1, 2]  # shards extracted on the metadata boxes: identity
    perm = [2, 0, 1]
    assert object_regions(_meta(boxes), _rec([boxes[i] for i in perm])).tolist() == [1, 2, 0]  # another order
    jittered = [[2, 1, 52, 49], [0, 0, 5, 5]]  # object 0 ~ region 0 (IoU ≈ .88), objects 1 and 2 overlap nothing well
    assert object_regions(_meta(boxes), _rec(jittered)).tolist() == [0, -1, -1]
    assert object_regions(_meta(boxes), _rec(np.array(boxes) * 2, w=200, h=100)).tolist() == [0, 1, 2]  # regions of a 2× image
    assert object_regions(_meta(boxes), _rec(np.zeros((0, 4)))).tolist() == [-1, -1, -1]
    assert region_links(np.array([-1, 2, 0, 1]), np.array([1, -1, 0])).tolist() == [-1, 0, 1, -1]


def test_examples_carry_region_links_and_collate_pads_them(tok):
    e = _example()
    boxes = [[i, 0, i + 1, 1] for i in range(12)] + [[50, 10, 90, 40]]
    meta = {e.metadata_fn: _meta(boxes)}
    rec = _rec([[50, 10, 90, 40], [1, 0, 2, 1]])  # the car is region 0, person 1 region 1, no region for persons 2, 11
    (ex,) = make_examples([e], {"img": rec}, {"img": "img"}, tok, 64, "answer", meta)
    c = ex["choices"][0]
    assert c["links"].tolist() == [-1, -1, -1, 1, -1, -1, -1, 0, -1, -1, -1, -1, -1, -1, -1, -1]
    short = {**c, "input_ids": c["input_ids"][:5], "links": c["links"][:5]}
    batch = collate_inputs([short, c])
    assert batch["links"].shape == batch["input_ids"].shape == (2, 16)
    assert batch["links"][0].tolist() == [-1, -1, -1, 1] + [-1] * 12
    assert "links" not in collate_inputs([{k: v for k, v in c.items() if k != "links"}])
    (plain,) = make_examples([e], {"img": rec}, {"img": "img"}, tok, 64, "answer")
    assert "links" not in plain["choices"][0] and plain["choices"][0]["input_ids"].tolist() == c["input_ids"].tolist()


def _tiny_encoder(kind: str):
    from trainer.config import TrainConfig
    from trainer.models import build_model

    cfg = TrainConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, v_hidden_size=8, dropout=0.0, model=kind, location="5d")
    torch.manual_seed(0)
    return build_model(cfg, feat_dim=6, num_classes=3, vocab_size=30).encoder.eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 30, (2, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    feat = torch.randn(2, 3, 6, generator=g)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.1, 0.2, 0.3, 0.9]]).expand(2, 3, 4).contiguous()
    rmask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    return ids, mask, feat, boxes, rmask


def test_encoder_adds_the_linked_regions_input_embedding():
    enc = _tiny_encoder("single")
    ids, mask, feat, boxes, rmask = _inputs()
    links = torch.tensor([[-1, 2, -1, 0, 2], [1, -1, -1, -1, -1]])
    seen = []
    hook = enc.bert.encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        plain = enc(ids, mask, feat, boxes, rmask)
        again = enc(ids, mask, feat, boxes, rmask, links=None)
        linked = enc(ids, mask, feat, boxes, rmask, links=links)
        word = enc.bert.embeddings(input_ids=ids)
        region = enc.visual(feat, boxes, rmask)[:, 1:]  # each region's input embedding
    hook.remove()
    for a, b in ((plain.text, again.text), (plain.image, again.image), (plain.regions, again.regions)):
        assert torch.equal(a, b)  # links=None: bit-identical
    t = word.shape[1]
    assert torch.equal(seen[0][:, :t], word)
    expect = word.clone()
    for b, p, r in ((0, 1, 2), (0, 3, 0), (0, 4, 2), (1, 0, 1)):
        expect[b, p] = word[b, p] + region[b, r]
    torch.testing.assert_close(seen[2][:, :t], expect, rtol=0, atol=1e-6)
    unlinked = links < 0
    assert torch.equal(seen[2][:, :t][unlinked], word[unlinked]) and torch.equal(seen[2][:, t:], seen[0][:, t:])
    assert not torch.allclose(linked.text, plain.text)


def test_dual_stream_refuses_links_and_pooled_model_passes_them():
    from trainer.tasks.pooled import PooledModel
    from trainer.tasks.vcr import VCRHead

    ids, mask, feat, boxes, rmask = _inputs()
    dual = _tiny_encoder("dual")
    with pytest.raises(ValueError, match="need the single-stream encoder"):
        dual(ids, mask, feat, boxes, rmask, links=torch.full((2, 5), -1))
    single = _tiny_encoder("single")
    model = PooledModel(single, VCRHead(single.text_dim, single.visual_dim, dropout=0.0, num_choices=2)).eval()
    batch = {"input_ids": ids, "text_mask": mask, "feat": feat, "boxes": boxes, "region_mask": rmask}
    links = torch.tensor([[0, 1, 2, -1, -1], [1, 1, -1, -1, -1]])
    with torch.no_grad():
        enc = single(ids, mask, feat, boxes, rmask, links=links)
        want = model.head(enc.text[:, 0], enc.image).float()
        assert torch.equal(model({**batch, "links": links}), want)
        assert not torch.equal(model(batch), want)


def test_metadata_read_once_per_file_and_errors_name_the_question(tmp_path):
    import json

    from trainer.tasks.vcr import VCRError
    from trainer.tasks.vcr.data import read_question_metadata

    e = _example()
    boxes = [[i, 0, i + 1, 1, 0.9] for i in range(len(OBJECTS))]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "img.json").write_text(json.dumps({"boxes": boxes, "segms": [[]] * len(boxes), "width": 100, "height": 50}))
    meta = read_question_metadata([e, _example(annot_id="val-1")], tmp_path)
    assert list(meta) == ["m/img.json"] and meta["m/img.json"].boxes.shape == (len(OBJECTS), 4)
    with pytest.raises(VCRError, match=r"annot_id val-2: metadata_fn 'm/img.json' has 13 boxes but the record lists 2 objects"):
        read_question_metadata([e, _example(annot_id="val-2", objects=("car", "car"), question=("Why", "?"),
                                            answer_choices=((("a",),) * 4))], tmp_path)
    with pytest.raises(VCRError, match=r"annot_id val-0: metadata_fn .*m/img.json: no such file \(--images names"):
        read_question_metadata([e], tmp_path / "elsewhere")


def test_cli_flags():
    from trainer.tasks.vcr.run import parse_args

    base = ["--vcr", "V", "--regions", "R", "--out", "O"]
    assert parse_args(base).links is True and parse_args(base).images == ""
    cfg = parse_args([*base, "--no-links", "--images", "V/imgs"])
    assert cfg.links is False and cfg.images == "V/imgs"
