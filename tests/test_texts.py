"""The one tokenizer for training, batch inference and serving, and the texts the sample writes."""

import random
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.sample import captions
from pipeline.features import texts


def test_categories_and_labels_can_never_be_text_fields():
    for bad in ("categories", "labels", "labels_hier", "Categories"):
        with pytest.raises(ValueError, match="not allowed|labels"):
            texts.parse_fields(f"file_name,{bad}")
    with pytest.raises(ValueError, match="unknown text field"):
        texts.parse_fields("file_name,captions")
    with pytest.raises(ValueError, match="repeat"):
        texts.parse_fields("file_name,file_name")
    assert texts.parse_fields(texts.DEFAULT_FIELDS) == tuple(texts.FIELDS)
    assert not set(texts.FIELDS.values()) & {"labels", "labels_hier", "categories"}


def test_file_names_lose_prefix_extension_and_underscores():
    assert texts.file_name_text("File:Lake_Turkana and its rivers.jpg") == "Lake Turkana and its rivers"
    assert texts.file_name_text("DSCN100123.JPG") == "DSCN100123"
    assert texts.file_name_text("Carte de France \"1789\".png") == "Carte de France \"1789\""
    assert texts.file_name_text(None) == ""


def test_fields_read_lists_arrays_strings_and_missing_values():
    row = {"file_title": "A_b.jpg", "page_titles": np.array(["Alpha", "Beta"]), "section_titles": None,
           "reference_captions": ["  x  ", None, ""], "attribution_captions": "English: y"}
    assert texts.row_texts(row, texts.FIELDS) == ["A b", "Alpha\nBeta", "", "x", "English: y", ""]


def test_words_come_before_trigrams_and_ids_are_crc32_of_the_token():
    assert texts.tokens("Big  owl") == ["w:big", "w:owl", "g:<bi", "g:big", "g:ig>", "g:<ow", "g:owl", "g:wl>"]
    ids = texts.token_ids("Big owl", 101, 3)
    assert ids == [zlib.crc32(t.encode()) % 100 + 1 for t in ("w:big", "w:owl", "g:<bi")]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.text(max_size=40), min_size=3, max_size=3), min_size=1, max_size=6),
       st.integers(2, 5000), st.integers(1, 30))
def test_encoding_is_padded_bounded_and_a_pure_function_of_the_text(rows, vocab, max_tokens):
    ids = texts.encode(rows, vocab, max_tokens)
    assert ids.shape == (len(rows), 3, max_tokens) and ids.dtype == np.int32
    assert ((ids >= 0) & (ids < vocab)).all()
    for i, row in enumerate(rows):
        for j, text in enumerate(row):
            n = min(len(texts.tokens(text)), max_tokens)
            assert (ids[i, j, :n] > 0).all() and (ids[i, j, n:] == 0).all()  # padding only at the end
            assert list(ids[i, j, :n]) == texts.token_ids(text, vocab, max_tokens)
    np.testing.assert_array_equal(texts.has_text(ids), [any(texts.tokens(t)) for t in map(" ".join, rows)])
    np.testing.assert_array_equal(texts.encode(rows, vocab, max_tokens), ids)


def test_an_encoding_round_trips_and_refuses_a_bad_size():
    enc = texts.TextEncoding("page_titles,file_name", 1000, 8)
    assert texts.TextEncoding.from_dict(enc.as_dict()).as_dict() == enc.as_dict()
    assert enc.shape == (2, 8) and enc.columns == ["page_titles", "file_title"]
    with pytest.raises(ValueError):
        texts.TextEncoding("file_name", 1, 8)


def test_sample_texts_follow_the_topics_and_never_a_whole_category_name():
    rng = random.Random(0)
    labels = ["Animals", "Architecture"]
    knobs = captions.TextKnobs(mention=1.0, distractor=0.0, foreign=0.0, camera_name=0.0)
    text = captions.caption(rng, labels, knobs).lower()
    assert any(w in text for w in captions.TOPIC_WORDS["Animals"][0])
    assert any(w in text for w in captions.TOPIC_WORDS["Architecture"][0])
    silent = captions.TextKnobs(mention=0.0, distractor=0.0, camera_name=1.0)
    for _ in range(50):
        quiet = captions.caption(rng, labels, silent).lower()
        assert not any(w.lower() in quiet for lab in labels for w in sum(captions.TOPIC_WORDS[lab], ()))
        assert "100001" in captions.file_name(rng, 100_001, labels, "jpg", silent)  # unique: carries its serial
