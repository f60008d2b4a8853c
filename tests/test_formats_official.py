"""Our readers agree with the datasets' official parsers (ported in tests/official_parsers.py) on the
files the synthetic generator writes and on hand-written records in the exact published layouts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.formats.flickr30k import Flickr30kError, Flickr30kGroundTruth, read_annotation, read_sentences
from pipelines.synthetic import generate, generate_image
from tests.official_parsers import Refer, get_annotations, get_sentence_data

N = 24
SEED = 5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("official") / "sample"
    generate(out, num_images=N, seed=SEED, feature_dim=16)
    return out


def _official_boxes_exclusive(anno: dict) -> dict[str, np.ndarray]:
    """The official parser's 0-based inclusive boxes in the project's exclusive xyxy."""
    return {k: np.asarray(v, np.float32) + np.array([0, 0, 1, 1], np.float32) for k, v in anno["boxes"].items()}


def _assert_sentences_agree(path: Path) -> int:
    ours, official = read_sentences(path), get_sentence_data(path)
    assert len(ours) == len(official)
    phrases = 0
    for o, ref in zip(ours, official):
        assert o.text == ref["sentence"]
        got = [(p.entity_id, p.text, p.types, len(o.text[: p.start].split())) for p in o.phrases]
        want = [(p["phrase_id"], p["phrase"], p["phrase_type"], p["first_word_index"]) for p in ref["phrases"]]
        assert got == want
        phrases += len(got)
    return phrases


def test_flickr30k_sentences_agree_with_official_parser_on_generated_files(corpus):
    captions = [line.split("\t")[0] for line in (corpus / "captions.tsv").read_text().splitlines()]
    phrases = 0
    for i in range(N):
        path = corpus / f"flickr30k/Sentences/{i:06d}.txt"
        phrases += _assert_sentences_agree(path)
        # The captions file holds the same (tokenised) sentences, so ground truth applies to every caption.
        assert [s.text for s in read_sentences(path)] == captions[2 * i : 2 * i + 2]
    assert phrases > N
    assert "]," not in "".join((corpus / f"flickr30k/Sentences/{i:06d}.txt").read_text() for i in range(N))


def test_flickr30k_boxes_agree_with_official_parser_and_the_scene(corpus):
    for i in range(N):
        path = corpus / f"flickr30k/Annotations/{i:06d}.xml"
        (w, h), ours = read_annotation(path)
        official = get_annotations(path)
        assert (w, h) == (official["width"], official["height"])
        want = _official_boxes_exclusive(official)
        assert sorted(ours) == sorted(want)
        for k in ours:
            np.testing.assert_array_equal(ours[k], want[k])
        # ... and those are the true boxes of the drawn objects.
        scene, _, _ = generate_image(i, N, SEED, 16)
        for e, o in enumerate(scene.objects, start=1):
            np.testing.assert_array_equal(ours[str(e)][0], o.box)


# Hand-written in the published layout of Flickr30k Entities (Sentences/<id>.txt, Annotations/<id>.xml):
# tokenised sentences, several types on one entity, an entity on two boxes, <nobndbox> and <scene> objects.
PUBLISHED_SENTENCES = """\
[/EN#283585/people Two young guys] with [/EN#283587/bodyparts shaggy hair] look at [/EN#283588/bodyparts their hands] while hanging out in [/EN#283589/scene the yard] .
[/EN#283585/people Two young , White males] are outside near [/EN#283590/other many bushes] .
[/EN#283591/people/clothing A man in a blue shirt] stands .
"""
PUBLISHED_XML = """\
<annotation>
	<filename>1000092795.jpg</filename>
	<size>
		<width>333</width>
		<height>500</height>
		<depth>3</depth>
	</size>
	<object>
		<name>283585</name>
		<bndbox>
			<xmin>1</xmin>
			<ymin>148</ymin>
			<xmax>60</xmax>
			<ymax>360</ymax>
		</bndbox>
	</object>
	<object>
		<name>283585</name>
		<bndbox>
			<xmin>96</xmin>
			<ymin>120</ymin>
			<xmax>333</xmax>
			<ymax>500</ymax>
		</bndbox>
	</object>
	<object>
		<name>283587</name>
		<nobndbox>1</nobndbox>
		<scene>0</scene>
	</object>
	<object>
		<name>283589</name>
		<nobndbox>0</nobndbox>
		<scene>1</scene>
	</object>
</annotation>
"""


def test_flickr30k_readers_agree_with_official_parser_on_published_layout(tmp_path):
    (tmp_path / "Sentences").mkdir()
    (tmp_path / "Annotations").mkdir()
    sent, xml = tmp_path / "Sentences/1000092795.txt", tmp_path / "Annotations/1000092795.xml"
    sent.write_text(PUBLISHED_SENTENCES)
    xml.write_text(PUBLISHED_XML)
    assert _assert_sentences_agree(sent) == 7
    (w, h), ours = read_annotation(xml)
    want = _official_boxes_exclusive(get_annotations(xml))
    assert (w, h) == (333, 500) and sorted(ours) == ["283585"]  # no box for the nobndbox / scene entities
    np.testing.assert_array_equal(ours["283585"], want["283585"])
    np.testing.assert_array_equal(ours["283585"][0], [0, 147, 60, 360])  # 1-based (1, 148, 60, 360) → exclusive 0-based
    # Ground truth of a caption phrase: both boxes of the entity.
    sentences, boxes = Flickr30kGroundTruth(tmp_path).image("1000092795")
    text = sentences[0].text
    start = text.index("Two young guys")
    got = Flickr30kGroundTruth.phrase_boxes(text, 0, [(start, start + 14)], sentences, boxes)
    assert got[0].shape == (2, 4)


def test_flickr30k_xml_with_entities_is_refused(tmp_path):
    bomb = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b "bbbbbbbb">]><annotation><filename>&b;</filename></annotation>'
    (tmp_path / "x.xml").write_text(bomb)
    with pytest.raises(Flickr30kError, match="x.xml"):
        read_annotation(tmp_path / "x.xml")
