"""Captions TSV reader and the spaCy noun-phrase stage."""
import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines.formats.captions import caption_sort_key, image_id_from_url, read_captions
from pipelines.stages.phrases import DEAD, ExtractPhrases, PhraseConfig, PhraseExtractor
from pipelines.stages.stage_io import Batch
from schemas.records import Caption, PhraseRecord, phrases_problem


@pytest.fixture(scope="module")
def extractor():
    return PhraseExtractor().load()


def test_caption_ids_follow_file_order_and_bad_rows_are_dead(tmp_path):
    tsv = tmp_path / "captions.tsv"
    tsv.write_text(
        "a red circle\timages/000001.png\n"
        "a blue square\timages/000002.png\n"
        "\n"
        "no url here\n"
        "\thttp://host/x/000001.png?sig=1\n"  # empty caption: dead, but it still takes index #1
        "a green star\timages/000001.png\n"
        "a\tb\tc\n"
    )
    out = list(read_captions(str(tsv)))
    caps = [v for t, v in out if t == "caption"]
    dead = [v for t, v in out if t == "dead"]
    assert [(c.caption_id, c.text) for c in caps] == [("000001#0", "a red circle"), ("000002#0", "a blue square"), ("000001#2", "a green star")]
    assert [d["record_id"] for d in dead] == [f"{tsv}:4", "000001#1", f"{tsv}:7"]
    assert "2 tab-separated columns" in dead[0]["reason"] and "empty" in dead[1]["reason"]
    assert len(caps) + len(dead) == 6  # every non-blank row accounted for


def test_url_and_sort_helpers():
    assert image_id_from_url("images/000017.png") == "000017"
    assert image_id_from_url("https://a.b/c/d.jpg?x=1") == "d"
    ids = ["x#10", "x#2", "x#0"]
    assert sorted(ids, key=caption_sort_key) == ["x#0", "x#2", "x#10"]


def test_noun_chunks_with_spans_and_filters(extractor):
    text = "a small red circle to the left of a large blue square"
    [phrases] = extractor.extract([text])
    assert [(p.text, p.start, p.end) for p in phrases] == [("a small red circle", 0, 18), ("a large blue square", 34, 53)]
    for p in phrases:
        assert text[p.start : p.end] == p.text
    # pronouns and abstract heads ("top", "the left") are dropped by default, kept on request
    [kept] = PhraseExtractor(PhraseConfig(drop_pronouns=False, drop_abstract_heads=False)).extract(["it is on top of the green triangle"])
    assert [p.text for p in kept] == ["it", "top", "the green triangle"]
    [dropped] = extractor.extract(["it is on top of the green triangle"])
    assert [p.text for p in dropped] == ["the green triangle"]


def test_phrase_cap_and_dead_letter_for_no_phrase():
    ex = PhraseExtractor(PhraseConfig(max_phrases=1))
    caps = [Caption("a#0", "a", "a red circle and a blue square", "images/a.png"), Caption("a#1", "a", "it is there", "images/a.png")]
    out = list(ex.records(caps))
    assert out[0][0] == "phrases" and [p.text for p in out[0][1].phrases] == ["a red circle"]
    assert out[1][0] == DEAD and out[1][1]["record_id"] == "a#1" and "no noun phrase" in out[1][1]["reason"]
    assert phrases_problem(out[0][1]) is None


def test_beam_transform_splits_phrases_and_dead_letters():
    caps = [Caption(f"{i:03d}#0", f"{i:03d}", "a dog chases a ball" if i % 3 else "they are", f"images/{i:03d}.png") for i in range(9)]
    with beam.Pipeline() as p:
        res = p | beam.Create([Batch(caps[:4]), Batch(caps[4:])]) | ExtractPhrases()
        got = res.phrases | "Ids" >> beam.FlatMap(lambda b: [(pu[0].caption_id, tuple(x.text for x in pu[0].phrases), pu[1]) for pu in b])
        assert_that(got, equal_to([(c.caption_id, ("a dog", "a ball"), c.url) for c in caps if int(c.image_id) % 3]), label="phrases")
        assert_that(res[DEAD] | beam.FlatMap(lambda b: [d["record_id"] for d in b]), equal_to([c.caption_id for c in caps if not int(c.image_id) % 3]), label="dead")
