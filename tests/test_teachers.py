"""Teachers: Flickr30k parsing, oracle, simulated (errors + calibration), tag similarity, registry."""
import numpy as np
import pytest

from label_fixtures import make_corpus
from pipelines.flickr30k import Flickr30kError, Flickr30kGroundTruth, parse_sentence, read_annotation
from pipelines.teachers import REGISTRY, TeacherInput, build_teacher
from pipelines.teachers.simulated import SimulatedTeacher
from schemas.records import Phrase, TeacherRecord, teacher_problem


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
        "<object><name>1</name><name>2</name><bndbox><xmin>0</xmin><ymin>5</ymin><xmax>9</xmax><ymax>14</ymax></bndbox></object>"
        "<object><name>3</name><nobndbox>1</nobndbox></object></annotation>"
    )
    (w, h), boxes = read_annotation(xml)
    assert (w, h) == (50, 40) and sorted(boxes) == ["1", "2"]
    np.testing.assert_array_equal(boxes["1"], [[0, 5, 10, 15]])  # inclusive 0..9 covers 10 pixels
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
    assert t.predict(list(reversed(xs)))[::-1] == preds  # batch order does not matter
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
    assert t.predict(list(reversed(xs)))[::-1] == preds
    cut = float(np.median([b.score for b in preds[0]]))
    strict = build_teacher("owlv2", {"model_dir": str(model_dir), "box_threshold": cut, "top_k": 2}).predict(xs[:1])[0]
    assert strict == [b for b in preds[0] if b.score >= cut]  # the threshold filters, and nothing else changes
