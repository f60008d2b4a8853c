"""Teachers: Flickr30k parsing, oracle, simulated (errors + calibration), tag similarity, registry."""
import numpy as np
import pytest

from label_fixtures import make_corpus
from pipelines.formats.flickr30k import Flickr30kError, Flickr30kGroundTruth, parse_sentence, read_annotation
from pipelines.teachers import REGISTRY, TeacherInput, build_teacher
from pipelines.teachers.simulated import SimulatedTeacher
from schemas.records import Phrase, TeacherBox, TeacherRecord, teacher_problem


def test_parse_flickr30k_markup_spans():
    s = parse_sentence("[/EN#18/people A man] in [/EN#19/clothing/other an orange hat] smiles")
    assert s.text == "A man in an orange hat smiles"
    assert [(e.entity_id, e.types, s.text[e.start : e.end]) for e in s.phrases] == [
        ("18", ["people"], "A man"),
        ("19", ["clothing", "other"], "an orange hat"),
    ]


def test_read_annotation_inclusive_to_exclusive_and_errors(tmp_path):
    xml = tmp_path / "1.xml"
    xml.write_text(
        "<annotation><size><width>50</width><height>40</height></size>"
        "<object><name>1</name><name>2</name><bndbox><xmin>1</xmin><ymin>6</ymin><xmax>10</xmax><ymax>15</ymax></bndbox></object>"
        "<object><name>3</name><nobndbox>1</nobndbox></object></annotation>"
    )
    (w, h), boxes = read_annotation(xml)
    assert (w, h) == (50, 40) and sorted(boxes) == ["1", "2"]
    np.testing.assert_array_equal(boxes["1"], [[0, 5, 10, 15]])  # 1-based inclusive 1..10 covers pixels 0..9
    bad = tmp_path / "2.xml"
    bad.write_text("<annotation><object>")
    with pytest.raises(Flickr30kError, match="2.xml"):
        read_annotation(bad)
    with pytest.raises(Flickr30kError, match="no such"):
        read_annotation(tmp_path / "3.xml")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), num_images=6)


def _input(corpus, image_id="000000", k=0):
    gt = Flickr30kGroundTruth(corpus["flickr30k"])
    sentences, _ = gt.image(image_id)
    s = sentences[k]
    phrases = [Phrase(e.text, e.start, e.end) for e in s.phrases]
    return TeacherInput(f"{image_id}#{k}", image_id, s.text, phrases, 96, 80, np.zeros((0, 4), np.float32))


def test_oracle_returns_ground_truth_boxes(corpus):
    x = _input(corpus)
    t = build_teacher("oracle", {"flickr30k": str(corpus["flickr30k"])}).load()
    [boxes] = t.predict([x])
    _, gt = read_annotation(corpus["flickr30k"] / "Annotations" / "000000.xml")
    assert sorted(b.phrase_index for b in boxes) == [0, 1]
    np.testing.assert_allclose(boxes[0].box, gt["1"][0])
    assert all(b.score == 1.0 for b in boxes)
    # a caption whose text differs from the Flickr30k sentence gets no ground truth
    x.caption = x.caption.upper()
    assert t.predict([x]) == [[]]


def test_simulated_without_noise_is_the_oracle_and_is_deterministic(corpus):
    x = _input(corpus, "000004", 1)
    root = str(corpus["flickr30k"])
    exact = SimulatedTeacher(flickr30k=root, miss_rate=0, false_rate=0, jitter=0).predict([x])[0]
    oracle = build_teacher("oracle", {"flickr30k": root}).predict([x])[0]
    assert [(b.phrase_index, b.box) for b in exact] == [(b.phrase_index, b.box) for b in oracle]
    noisy = SimulatedTeacher(flickr30k=root, miss_rate=0.3, false_rate=2, jitter=0.2, seed=1)
    a, b = noisy.predict([x, x])
    assert a == b and a == noisy.predict([x])[0]  # seeded per caption, not per batch
    assert a != SimulatedTeacher(flickr30k=root, miss_rate=0.3, false_rate=2, jitter=0.2, seed=2).predict([x])[0]
    assert teacher_problem(TeacherRecord(x.caption_id, x.image_id, "t", len(x.phrases), a)) is None


def test_simulated_scores_are_calibrated(corpus):
    t = SimulatedTeacher(flickr30k=str(corpus["flickr30k"]), miss_rate=0.2, false_rate=0.8, score_noise=0.6)
    rng = np.random.default_rng(0)
    n_true = 200_000
    n_false = int(n_true * t.false_rate / (1 - t.miss_rate))
    z = np.concatenate([rng.normal(1, 0.6, n_true), rng.normal(0, 0.6, n_false)])
    is_true = np.arange(len(z)) < n_true
    s = t.calibrated_score(z)
    for lo in np.arange(0.1, 0.9, 0.2):  # within each score bin, the share of true boxes matches the score
        m = (s >= lo) & (s < lo + 0.1)
        assert abs(is_true[m].mean() - s[m].mean()) < 0.02


def test_simulated_miss_rate_drops_boxes(corpus):
    root = str(corpus["flickr30k"])
    xs = [_input(corpus, f"{i:06d}", k) for i in (0, 2, 4, 5) for k in (0, 1)]
    full = sum(len(b) for b in SimulatedTeacher(flickr30k=root, miss_rate=0, false_rate=0).predict(xs))
    half = sum(len(b) for b in SimulatedTeacher(flickr30k=root, miss_rate=0.5, false_rate=0).predict(xs))
    assert full == 16 and 2 <= half <= 14


@pytest.fixture(scope="module")
def tag_teacher(corpus):
    return build_teacher("tag_similarity", {"objects_vocab": str(corpus["vocab"]), "threshold": 0.5}).load()


def test_tag_similarity_links_phrases_to_regions_of_the_right_class(tag_teacher):
    regions = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    x = TeacherInput("i#0", "i", "a red circle near the blue square", [Phrase("a red circle", 0, 12), Phrase("the blue square", 18, 33)],
                     96, 80, regions, np.array([1, 2, 4]))
    [boxes] = tag_teacher.predict([x])
    by_phrase = {(b.phrase_index, b.box) for b in boxes}
    assert (0, (0.0, 0.0, 10.0, 10.0)) in by_phrase and (1, (20.0, 20.0, 30.0, 30.0)) in by_phrase
    assert (0, (20.0, 20.0, 30.0, 30.0)) not in by_phrase and all(b.box != (40.0, 40.0, 50.0, 50.0) for b in boxes)
    assert all(0.5 <= b.score <= 1.0 for b in boxes)
    x.region_classes = None
    with pytest.raises(ValueError, match="no class distribution"):
        tag_teacher.predict([x])


def test_tag_similarity_top_k_prefers_confident_detections(corpus):
    regions = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 12, 12], [20, 20, 30, 30]], np.float32)
    x = TeacherInput("i#0", "i", "a circle", [Phrase("a circle", 0, 8)], 96, 80, regions, np.array([1, 1, 1, 2]),
                     region_class_conf=np.array([0.3, 0.9, 0.6, 0.9]))
    vocab = str(corpus["vocab"])
    [all_boxes] = build_teacher("tag_similarity", {"objects_vocab": vocab, "top_k": 0}).load().predict([x])
    [top2] = build_teacher("tag_similarity", {"objects_vocab": vocab, "top_k": 2}).load().predict([x])
    assert [b.box[0] for b in all_boxes] == [0.0, 1.0, 2.0]
    assert [b.box[0] for b in top2] == [1.0, 2.0]  # the two most confident circles, in region order


def test_tag_similarity_is_batch_independent(tag_teacher):
    regions = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    mk = lambda t: TeacherInput("i#0", "i", t, [Phrase(t, 0, len(t))], 96, 80, regions, np.array([1, 3]))  # noqa: E731
    xs = [mk("a big circle"), mk("the green triangle"), mk("a circle")]
    together = tag_teacher.predict(xs)
    fresh = build_teacher("tag_similarity", dict(tag_teacher.params, objects_vocab=tag_teacher.objects_vocab)).load()
    alone = [fresh.predict([x])[0] for x in reversed(xs)][::-1]
    assert together == alone


def test_fingerprints_name_params_and_weights(corpus, tmp_path):
    vocab = str(corpus["vocab"])
    a = build_teacher("tag_similarity", {"objects_vocab": vocab, "threshold": 0.5})
    b = build_teacher("tag_similarity", {"objects_vocab": vocab, "threshold": "0.6"})
    assert a.fingerprint.startswith("tag_similarity-") and a.fingerprint != b.fingerprint
    other = tmp_path / "vocab.txt"
    other.write_text("circle\nsquare\n")
    assert build_teacher("tag_similarity", {"objects_vocab": str(other), "threshold": 0.5}).fingerprint != a.fingerprint
    assert a.describe()["weights_digest"]
    with pytest.raises(ValueError, match="unknown teacher"):
        build_teacher("nope", {})
    with pytest.raises(ValueError, match="objects_vocab"):
        build_teacher("tag_similarity", {})
    assert {"tag_similarity", "oracle", "simulated"} <= set(REGISTRY)


# ---------------------------------------------------------------------------------------------
# Hugging Face teachers: tiny random models saved to tmp_path and loaded back from the directory


@pytest.fixture(scope="module")
def tiny_gdino(tmp_path_factory):
    from hf_tiny import save_tiny_grounding_dino

    return save_tiny_grounding_dino(tmp_path_factory.mktemp("gdino"))


@pytest.fixture(scope="module")
def generated_images(tmp_path_factory):
    from pipelines.synthetic import generate

    root = tmp_path_factory.mktemp("gen")
    generate(root, num_images=3, seed=0)
    return root


def _gen_inputs(root):
    from PIL import Image

    gt = Flickr30kGroundTruth(root / "flickr30k")
    out = []
    for image_id in ("000000", "000001", "000002"):
        path = root / "images" / f"{image_id}.png"
        with Image.open(path) as im:
            w, h = im.size  # the detector frame is the image's own size here
        for k, s in enumerate(gt.image(image_id)[0]):
            phrases = [Phrase(e.text, e.start, e.end) for e in s.phrases]
            out.append(TeacherInput(f"{image_id}#{k}", image_id, s.text, phrases, w, h, np.zeros((0, 4), np.float32), image_path=str(path)))
    return out


def test_grounding_dino_loads_from_local_dir_and_gives_per_phrase_boxes(tiny_gdino, generated_images):
    from pipelines.teachers.hf_grounding_dino import prompt_of

    assert prompt_of(["A red circle", "the square."]) == "a red circle. the square."
    t = build_teacher("grounding_dino", {"model_dir": str(tiny_gdino), "box_threshold": 0.0, "top_k": 2})
    assert t.fingerprint.startswith("grounding_dino-") and t.describe()["weights_digest"]
    t.load()
    xs = _gen_inputs(generated_images)
    preds = t.predict(xs)
    for x, boxes in zip(xs, preds):
        # every phrase gets its top-2 queries (threshold 0): the token → phrase map covered all phrases
        assert sorted({b.phrase_index for b in boxes}) == list(range(len(x.phrases)))
        assert all(sum(b.phrase_index == p for b in boxes) <= 2 for p in range(len(x.phrases)))
        assert teacher_problem(TeacherRecord(x.caption_id, x.image_id, "t", len(x.phrases), boxes)) is None
        assert all(0 <= b.box[0] < b.box[2] <= x.image_w and 0 <= b.box[1] < b.box[3] <= x.image_h and 0 <= b.score <= 1 for b in boxes)
    assert t.predict(list(reversed(xs)))[::-1] == preds  # batch order does not matter (same-size images only here)
    strict = build_teacher("grounding_dino", {"model_dir": str(tiny_gdino), "box_threshold": 1.0}).load()
    assert strict.predict(xs[:1]) == [[]]
    xs[0].image_path = str(generated_images / "nope.png")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        t.predict(xs[:1])


def test_grounding_dino_refuses_dirs_without_safetensors(tmp_path):
    with pytest.raises(FileNotFoundError, match="safetensors"):
        build_teacher("grounding_dino", {"model_dir": str(tmp_path)}).fingerprint


def test_owlv2_loads_from_local_dir_and_gives_per_phrase_boxes(tmp_path, generated_images):
    from hf_tiny import save_tiny_owlv2

    model_dir = save_tiny_owlv2(tmp_path / "owlv2")
    t = build_teacher("owlv2", {"model_dir": str(model_dir), "box_threshold": 0.0, "top_k": 2}).load()
    assert t.fingerprint.startswith("owlv2-")
    xs = _gen_inputs(generated_images)
    preds = t.predict(xs)
    for x, boxes in zip(xs, preds):
        # top-2 per phrase; a box lying in OWLv2's square padding collapses when clipped to the image and is dropped
        assert all(sum(b.phrase_index == p for b in boxes) <= 2 for p in range(len(x.phrases)))
        assert {b.phrase_index for b in boxes} <= set(range(len(x.phrases)))
        assert teacher_problem(TeacherRecord(x.caption_id, x.image_id, "t", len(x.phrases), boxes)) is None
        assert all(0 <= b.box[0] < b.box[2] <= x.image_w and 0 <= b.box[1] < b.box[3] <= x.image_h for b in boxes)
    _assert_close(t.predict(list(reversed(xs)))[::-1], preds)  # batch companions change only float rounding
    cut = float(np.median([b.score for b in preds[0]]))
    strict = build_teacher("owlv2", {"model_dir": str(model_dir), "box_threshold": cut, "top_k": 2}).predict(xs[:1])[0]
    assert strict == [b for b in preds[0] if b.score >= cut]  # the threshold filters, and nothing else changes


def _assert_close(a, b, atol=1e-4):
    """Same boxes for the same phrases, numbers equal up to float rounding."""
    assert [[bx.phrase_index for bx in r] for r in a] == [[bx.phrase_index for bx in r] for r in b]
    for ra, rb in zip(a, b):
        np.testing.assert_allclose([bx.box for bx in ra] or np.zeros((0, 4)), [bx.box for bx in rb] or np.zeros((0, 4)), atol=atol * 100)
        np.testing.assert_allclose([bx.score for bx in ra], [bx.score for bx in rb], atol=atol)


@pytest.fixture(scope="module")
def tiny_owlv2(tmp_path_factory):
    from hf_tiny import save_tiny_owlv2

    return save_tiny_owlv2(tmp_path_factory.mktemp("owlv2"))


@pytest.fixture(params=["grounding_dino", "owlv2"])
def hf_teacher(request, tiny_gdino, tiny_owlv2):
    """(name, model_dir) of each tiny Hugging Face teacher."""
    return request.param, str(tiny_gdino if request.param == "grounding_dino" else tiny_owlv2)


def _image_inputs(root, image_id):
    return [x for x in _gen_inputs(root) if x.image_id == image_id]


def _reference(teacher, xs, top_k, threshold):
    """The same image through the processor's own pre- and post-processing: per prompt, the phrase's
    logits alone (the rest masked to -inf) → ``post_process_*`` → the phrase's top_k boxes above the threshold."""
    import torch
    from PIL import Image
    from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps

    image = Image.open(xs[0].image_path).convert("RGB")
    H, W = image.size[1], image.size[0]
    texts = list(dict.fromkeys(teacher.phrase_text(p.text) for x in xs for p in x.phrases))
    per_text = {}
    for prompt in teacher.pack(texts):
        if teacher.name == "grounding_dino":
            inputs = teacher.processor(images=image, text=prompt.text[0], return_tensors="pt")
            with torch.inference_mode():
                out = teacher.model(**inputs)
            groups = build_label_maps(out.logits, inputs["input_ids"])[0].bool()  # the library's token → phrase map
            assert len(groups) == len(prompt.texts)
        else:
            inputs = teacher.processor(text=[prompt.text], images=image, return_tensors="pt", padding="max_length", truncation=True,
                                       max_length=teacher.model.config.text_config.max_position_embeddings)
            with torch.inference_mode():
                out = teacher.model(**inputs)
            groups = torch.eye(out.logits.shape[-1], dtype=torch.bool)[: len(prompt.texts)]
        for j, mask in zip(prompt.texts, groups):
            masked = type(out)(**{**out, "logits": out.logits.masked_fill(~mask, float("-inf"))})
            if teacher.name == "grounding_dino":
                r = teacher.processor.post_process_grounded_object_detection(masked, inputs["input_ids"], threshold=0.0, target_sizes=[(H, W)])[0]
            else:
                r = teacher.processor.image_processor.post_process_object_detection(masked, threshold=0.0, target_sizes=[(H, W)])[0]
            per_text[j] = (r["scores"].numpy(), r["boxes"].numpy())
    out = []
    for x in xs:
        boxes = []
        for p, ph in enumerate(x.phrases):
            scores, bx = per_text[texts.index(teacher.phrase_text(ph.text))]
            bx = bx.copy()
            bx[:, [0, 2]] = bx[:, [0, 2]].clip(0, W)
            bx[:, [1, 3]] = bx[:, [1, 3]].clip(0, H)
            for q in np.argsort(-scores, kind="stable")[:top_k]:
                if scores[q] >= threshold and bx[q, 2] > bx[q, 0] and bx[q, 3] > bx[q, 1]:
                    boxes.append(TeacherBox(p, tuple(map(float, bx[q])), float(scores[q])))
        out.append(boxes)
    return out


def test_hf_teachers_agree_with_the_processors_post_processing(hf_teacher, generated_images):
    name, model_dir = hf_teacher
    t = build_teacher(name, {"model_dir": model_dir, "box_threshold": 0.2, "top_k": 3}).load()
    for image_id in ("000000", "000002"):
        xs = _image_inputs(generated_images, image_id)
        assert len(xs) >= 2  # all captions of the image: their phrases share the image's prompts
        ours = t.predict(xs)
        assert sum(map(len, ours)) > 0
        _assert_close(ours, _reference(t, xs, 3, 0.2))


def test_grounding_dino_packs_an_images_phrases_into_as_few_prompts_as_fit(tiny_gdino):
    t = build_teacher("grounding_dino", {"model_dir": str(tiny_gdino)}).load()
    texts = [f"a {c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square", "triangle")]
    prompts = t.pack(texts)
    tok = t.processor.tokenizer
    assert [j for p in prompts for j in p.texts] == list(range(len(texts)))  # every phrase once, in order
    lengths = [len(tok(p.text[0])["input_ids"]) for p in prompts]
    assert all(n <= t.model.config.max_text_len for n in lengths)  # max_text_len is 32 in the tiny model
    assert len(prompts) == 2 and lengths[0] + 4 > t.model.config.max_text_len  # greedy: the next phrase would not fit
    for p in prompts:
        text, spans = p.text
        assert [text[a:b] for a, b in spans] == [texts[j] for j in p.texts]


def test_hf_batch_size_changes_only_rounding_and_batch_one_is_exact(hf_teacher, generated_images):
    name, model_dir = hf_teacher
    xs = _gen_inputs(generated_images)
    one = build_teacher(name, {"model_dir": model_dir, "box_threshold": 0.0, "batch_size": 1}).load()
    preds = one.predict(xs)
    assert one.predict(list(reversed(xs)))[::-1] == preds  # one (image, prompt) per forward: bit-exact whatever Beam batches
    many = build_teacher(name, {"model_dir": model_dir, "box_threshold": 0.0, "batch_size": 8}).load()
    _assert_close(many.predict(xs), preds)
    assert many.fingerprint == one.fingerprint  # how fast is not what


def test_hf_teacher_decodes_each_image_once(hf_teacher, generated_images, monkeypatch):
    from pipelines.teachers.hf_common import HFDetectorTeacher

    name, model_dir = hf_teacher
    t = build_teacher(name, {"model_dir": model_dir}).load()
    reads = []
    real = HFDetectorTeacher.read_image
    monkeypatch.setattr(HFDetectorTeacher, "read_image", staticmethod(lambda path, image_id="": reads.append(path) or real(path, image_id)))
    xs = _gen_inputs(generated_images)
    t.predict(xs)
    assert sorted(reads) == sorted({x.image_path for x in xs}) and len(xs) > len(reads)


def test_hf_boxes_are_scaled_to_the_detector_frame_or_refused(hf_teacher, generated_images):
    import copy

    name, model_dir = hf_teacher
    t = build_teacher(name, {"model_dir": model_dir, "box_threshold": 0.0}).load()
    xs = _image_inputs(generated_images, "000001")
    native = t.predict(xs)
    # the detector saw the picture at twice the resolution: same aspect ratio, boxes scaled to its frame
    big = [copy.copy(x) for x in xs]
    for x in big:
        x.image_w, x.image_h = 2 * x.image_w, 2 * x.image_h
    scaled = t.predict(big)
    for a, b in zip(native, scaled):
        np.testing.assert_allclose([bx.box for bx in b], [[2 * v for v in bx.box] for bx in a], rtol=1e-5)
        assert [bx.score for bx in a] == [bx.score for bx in b]
    # a different aspect ratio is a different picture: refused, both sizes named
    w, h = xs[0].image_w, xs[0].image_h
    for x in big:
        x.image_w, x.image_h = w, h + 40
    with pytest.raises(ValueError, match=rf"decodes to {w}x{h} but the regions were detected on a {w}x{h + 40} image"):
        t.predict(big)


def test_hf_device_and_precision(hf_teacher, generated_images):
    import torch

    name, model_dir = hf_teacher
    t = build_teacher(name, {"model_dir": model_dir, "device": "cpu"}).load()
    assert t.device == torch.device("cpu") and next(t.model.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        build_teacher(name, {"model_dir": model_dir, "device": "cpu", "precision": "fp16"})
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device=cuda but this worker has no CUDA device"):
            build_teacher(name, {"model_dir": model_dir, "device": "cuda"}).load()
        assert build_teacher(name, {"model_dir": model_dir}).load().device == torch.device("cpu")  # auto
    xs = _gen_inputs(generated_images)
    fp32 = build_teacher(name, {"model_dir": model_dir, "box_threshold": 0.0, "top_k": 1}).load().predict(xs)
    bf16_teacher = build_teacher(name, {"model_dir": model_dir, "box_threshold": 0.0, "top_k": 1, "precision": "bf16"})
    bf16 = bf16_teacher.load().predict(xs)
    assert [len(r) for r in bf16] == [len(r) for r in fp32]
    assert bf16_teacher.fingerprint != build_teacher(name, {"model_dir": model_dir, "box_threshold": 0.0, "top_k": 1}).fingerprint
    for a, b in zip(fp32, bf16):  # autocast rounds, it does not change what is computed
        assert np.allclose([x.score for x in a], [x.score for x in b], atol=0.05)


# ---------------------------------------------------------------------------------------------
# Parameters: validated by name and range when the teacher is built


def test_misspelt_teacher_parameter_is_refused_with_the_valid_names(corpus):
    root = str(corpus["flickr30k"])
    with pytest.raises(ValueError, match=r"unknown parameter 'miss_rat' \(did you mean 'miss_rate'\?\); valid parameters: "
                                         r"false_rate, flickr30k, jitter, miss_rate, score_noise, seed"):
        build_teacher("simulated", {"flickr30k": root, "miss_rat": "0.3"})
    with pytest.raises(ValueError, match="unknown parameter 'treshold'.*valid parameters: .*threshold"):
        build_teacher("tag_similarity", {"objects_vocab": str(corpus["vocab"]), "treshold": "0.5"})
    with pytest.raises(ValueError, match="unknown parameter 'miss_rate'"):
        build_teacher("oracle", {"flickr30k": root, "miss_rate": "0.3"})  # valid for another teacher, not this one
    with pytest.raises(ValueError, match="unknown parameter 'box_treshold'.*box_threshold"):
        build_teacher("grounding_dino", {"model_dir": "/nowhere", "box_treshold": "0.3"})


def test_out_of_range_teacher_parameter_says_the_valid_range(corpus):
    root = str(corpus["flickr30k"])
    with pytest.raises(ValueError, match=r"miss_rate='1.5' is out of range; valid: \[0, 1\)"):
        build_teacher("simulated", {"flickr30k": root, "miss_rate": "1.5"})
    with pytest.raises(ValueError, match=r"score_noise=0 is out of range; valid: \(0, inf\)"):
        build_teacher("simulated", {"flickr30k": root, "score_noise": 0})
    with pytest.raises(ValueError, match=r"false_rate='lots' is not a valid float \(valid: \[0, inf\)\)"):
        build_teacher("simulated", {"flickr30k": root, "false_rate": "lots"})
    with pytest.raises(ValueError, match=r"seed='1.5' is not a valid int"):
        build_teacher("simulated", {"flickr30k": root, "seed": "1.5"})
    with pytest.raises(ValueError, match=r"threshold='2' is out of range; valid: \[-1, 1\]"):
        build_teacher("tag_similarity", {"objects_vocab": str(corpus["vocab"]), "threshold": "2"})
    with pytest.raises(ValueError, match=r"query='tail' is out of range; valid: one of 'phrase', 'head'"):
        build_teacher("tag_similarity", {"objects_vocab": str(corpus["vocab"]), "query": "tail"})
    with pytest.raises(ValueError, match=r"top_k='-1' is out of range; valid: \[0, inf\)"):
        build_teacher("grounding_dino", {"model_dir": "/nowhere", "top_k": "-1"})
    with pytest.raises(ValueError, match=r"device='gpu' is not a valid value \(valid: 'auto', 'cpu', 'cuda' or 'cuda:N'\)"):
        build_teacher("owlv2", {"model_dir": "/nowhere", "device": "gpu"})
    with pytest.raises(ValueError, match=r"precision='fp8' is out of range; valid: one of 'fp32', 'fp16', 'bf16'"):
        build_teacher("owlv2", {"model_dir": "/nowhere", "precision": "fp8"})
    t = build_teacher("simulated", {"flickr30k": root, "miss_rate": "0.999", "seed": "3"})  # the edges that are valid
    assert (t.miss_rate, t.seed) == (0.999, 3)


def test_teacher_parameter_error_reaches_the_cli_before_any_work(corpus, tmp_path):
    from pipelines.label_pipeline import parse_args
    from pipelines.label_plan import plan_labels

    cfg, _ = parse_args(["--captions", str(corpus["captions"]), "--regions", str(corpus["regions"]), "--out", str(tmp_path / "out"),
                         "--teacher", "simulated", "--flickr30k", str(corpus["flickr30k"]), "--teacher-arg", "miss_rat=0.3"])
    with pytest.raises(ValueError, match="did you mean 'miss_rate'"):
        plan_labels(cfg)
    assert not (tmp_path / "out").exists()  # nothing fingerprinted, nothing made current


def _mixed_shape_inputs(root, tmp_path):
    """The generated images plus a wide copy of one (another pre-processed shape for Grounding DINO)."""
    import copy

    from PIL import Image

    xs = _gen_inputs(root)
    wide = tmp_path / "wide.png"
    with Image.open(xs[0].image_path) as im:
        im.resize((im.size[0] * 2, im.size[1])).save(wide)
    extra = [copy.copy(x) for x in xs if x.image_id == xs[0].image_id]
    for x in extra:
        x.image_id, x.image_path, x.image_w = "wide", str(wide), 2 * x.image_w
        x.caption_id = "wide#" + x.caption_id.split("#")[1]
    return xs[:2] + extra + xs[2:]


def test_hf_forward_batches_stream_and_each_is_read_after_the_next_is_launched(hf_teacher, generated_images, tmp_path, monkeypatch):
    """run() launches a shape's batch as soon as it is full, while later images decode; the batches are
    those of bucketing every (image, prompt) by shape first, and batch j is read back only after batch
    j + 1 was launched (so the device has work queued while the host reads)."""
    name, model_dir = hf_teacher
    t = build_teacher(name, {"model_dir": model_dir, "box_threshold": 0.0, "batch_size": 2}).load()
    xs = _mixed_shape_inputs(generated_images, tmp_path)
    events, real_launch, real_collect = [], t.launch, t.collect

    def launch(items):
        events.append(("launch", [(w.key[0], tuple(p.texts)) for w, p in items], tuple(items[0][0].pixels["pixel_values"].shape)))
        return len(events) - 1, real_launch(items)

    def collect(launched):
        j, inner = launched
        events.append(("collect", j))
        return real_collect(inner)

    monkeypatch.setattr(t, "launch", launch)
    monkeypatch.setattr(t, "collect", collect)
    got = t.predict(xs)
    launches = [i for i, e in enumerate(events) if e[0] == "launch"]
    collects = [e[1] for e in events if e[0] == "collect"]
    assert collects == launches and len(launches) >= 2  # every batch read once, in launch order
    for n, j in enumerate(launches[:-1]):
        assert events.index(("collect", j)) > launches[n + 1]  # read after the next launch
    # the same forward batches as bucketing first: per shape, in order, batch_size at a time
    work, decoding = t.plan(xs)
    items = []
    for w, px in zip(work, decoding):
        w.pixels = px.result()
        items += [(w.key[0], tuple(p.texts), tuple(w.pixels["pixel_values"].shape)) for p in t.pack(w.texts)]
    shapes = list(dict.fromkeys(s for *_, s in items))
    assert len(shapes) > 1 if name == "grounding_dino" else len(shapes) == 1  # OWLv2 pads every image to one square
    expect = []
    for s in shapes:
        same = [it[:2] for it in items if it[2] == s]
        expect += [(same[k : k + 2], s) for k in range(0, len(same), 2)]
    assert sorted(expect) == sorted((e[1], e[2]) for e in events if e[0] == "launch")
    monkeypatch.undo()
    one = build_teacher(name, {"model_dir": model_dir, "box_threshold": 0.0, "batch_size": 2}).load()
    assert got == one.predict(xs)  # results do not depend on the streaming


def test_hf_prefetch_decodes_the_next_batch_ahead_and_changes_nothing(hf_teacher, generated_images, monkeypatch):
    from pipelines.teachers.hf_common import HFDetectorTeacher

    name, model_dir = hf_teacher
    t = build_teacher(name, {"model_dir": model_dir, "box_threshold": 0.0}).load()
    xs = _gen_inputs(generated_images)
    plain = t.predict(xs)
    reads = []
    real = HFDetectorTeacher.read_image
    monkeypatch.setattr(HFDetectorTeacher, "read_image", staticmethod(lambda path, image_id="": reads.append(path) or real(path, image_id)))
    t.prefetch(xs)
    for f in list(t._ahead.values()):
        f.result()  # the decodes run in the pool, before predict is called
    assert sorted(reads) == sorted({x.image_path for x in xs})
    assert t.predict(xs) == plain and len(reads) == len({x.image_path for x in xs})  # predict used them: no second decode
    assert not t._ahead
    rest = [x for x in xs if x.image_id != xs[0].image_id]
    rest_plain = t.predict(rest)
    t.prefetch(xs[:1])  # a hint never followed: a later predict of other images is not confused by it
    assert t.predict(rest) == rest_plain and len(t._ahead) == 1
    bad = [x for x in xs if x.image_id == "000001"]
    for x in bad:
        x.image_w += 40  # another aspect ratio: refused when predict reads the prefetched decode
    t.prefetch(bad)
    with pytest.raises(ValueError, match="decodes to"):
        t.predict(bad)


def test_hf_consecutive_forward_batches_take_the_two_streams_in_turn(hf_teacher, generated_images, monkeypatch):
    """On CUDA each forward batch runs on one of two streams in turn, so a blocking call inside the model
    waits only for its own batch; here (no GPU) the streams are stand-ins and torch.cuda.stream records."""
    import contextlib

    import torch

    name, model_dir = hf_teacher
    t = build_teacher(name, {"model_dir": model_dir, "box_threshold": 0.0, "batch_size": 1}).load()
    xs = _gen_inputs(generated_images)
    plain = t.predict(xs)
    used, launches = [], []
    monkeypatch.setattr(torch.cuda, "stream", lambda s: used.append(s) or contextlib.nullcontext())
    real_launch = t.launch
    monkeypatch.setattr(t, "launch", lambda items: launches.append(len(used)) or real_launch(items))
    t._streams = ["stream 0", "stream 1"]
    assert t.predict(xs) == plain
    assert len(used) == len(launches) >= 3 and launches == list(range(1, len(used) + 1))  # each launch inside its stream
    assert used == ["stream 0", "stream 1"] * (len(used) // 2) + ["stream 0"] * (len(used) % 2)
