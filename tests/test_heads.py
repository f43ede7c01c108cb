"""Lexical heads: examples, accuracy on the parser-labelled dev set, Spark == Python."""

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.labels.heads import _alt, find_head, is_null_head, one_word, traversal_head, with_head

DEV = Path(__file__).parent / "data" / "heads_dev.tsv"


def load_dev() -> pd.DataFrame:
    return pd.read_csv(DEV, sep="\t", keep_default_na=False, quoting=3, dtype=str)


def normalise_gold(head: str) -> str:
    """The parser split hyphens into tokens ("11th - century"); compare with the hyphen joined."""
    return head.replace(" - ", "-")


@pytest.mark.parametrize(
    "name, head",
    [
        ("Portrait painters from England", "Portrait painters"),
        ("18th-century painters from Great Britain", "18th-century painters"),
        ("Deaths in London", "Deaths"),
        ("Lemuel Francis Abbott", "Lemuel francis abbott"),
        ("Maps of France", "Maps"),
        ("Flags of Spain", "Flags"),
        ("Churches in Belgium", "Churches"),
        ("Monuments and memorials in Oise", "Memorials"),
        ("Mass (physical property)", "Mass"),
        ("Ponce, Puerto Rico by decade", "Ponce"),
        ("Bridges completed in 1851", "Bridges"),
        ("1440 establishments in England", "Establishments"),
        ("Religious tower buildings", "Tower buildings"),
        ("Native Americans of New Mexico", "Native americans"),
        ("Men's health", "'s"),
        ("Leichtathletik Gala Linz 2018", "Leichtathletik gala linz"),
        ("Maps_of_France", "Maps"),
        ("1834", "1834"),
        ("Speed limit road signs in Pennsylvania", "Speed limit road signs"),  # -eed is not -ed
        ("Official portraits of presidents of the United States", "Portraits"),
        ("61-year-old deaths", "Deaths"),
        ("Low-floor vehicles", "Low-floor vehicles"),  # a hyphenated noun compound stays
    ],
)
def test_examples(name, head):
    assert find_head(name) == head


def test_one_word_and_null_heads():
    assert one_word("Portrait painters") == "Painters"
    assert one_word("18th-century painters") == "Painters"
    assert one_word("Deaths") == "Deaths"
    assert is_null_head("1834") and is_null_head("January") and is_null_head("Categories")
    assert not is_null_head("1880s") and not is_null_head("Maps")
    assert is_null_head(find_head("May 2010 in Chicago"))


def test_heads_are_capitalized_form():
    for name in load_dev().category.head(500):
        h = find_head(name)
        assert h == h.capitalize() and h.strip() == h and h


def test_dev_set_accuracy(report_metric, record_property):
    dev = load_dev()
    assert len(dev) == 5000
    # as the traversal uses them: the parser's exact strings, spaced hyphens included
    exact = sum(traversal_head(c) == h for c, h in zip(dev.category, dev["head"])) / len(dev)
    # the words only: hyphens joined on both sides
    words = sum(find_head(c) == normalise_gold(h) for c, h in zip(dev.category, dev["head"])) / len(dev)
    record_property("heads_dev_accuracy", exact)
    report_metric("heads: exact-match accuracy on tests/data/heads_dev.tsv (5000 names, parser's token form)", f"{exact:.4f}")
    report_metric("heads: accuracy with hyphens joined (5000 names)", f"{words:.4f}")
    assert exact >= 0.91 and words >= 0.91


def test_traversal_head_spaces_hyphens_as_the_parser_did():
    assert traversal_head("19th-century houses in Hertfordshire") == "19th - century houses"
    assert traversal_head("English-language signage") == "English - language signage"
    assert traversal_head("Anti-capitalism") == "Anti-capitalism"  # a prefix stays joined
    assert traversal_head("2013-10-23") == "2013-10-23"  # and so do number ranges
    assert find_head("19th-century houses in Hertfordshire") == "19th-century houses"
    # a leading year is not part of the noun run, even before a name
    assert find_head("2012 Summer Olympics medal winners") == "Summer olympics medal winners"
    assert is_null_head(find_head("1962 in Berlin"))


def test_spark_heads_equal_python(spark):
    names = list(load_dev().category) + ["Maps__of  France", "...", "(14) x", "Boys' schools by country", "",
                                    "SPEED limit signs", "Breed standards", "Official residences", "61-YEAR-OLD deaths"]
    df = spark.createDataFrame([(n,) for n in names], "name string")
    df = with_head(with_head(df, "name", "h"), "name", "t", spaced_hyphens=True)
    got = {r.name: (r.h, r.t) for r in df.collect()}
    diff = [(n, got[n], find_head(n), traversal_head(n)) for n in names
            if got[n] != (find_head(n), traversal_head(n))]
    assert diff == []


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.text(alphabet="ab-c ", min_size=1, max_size=5), min_size=1, max_size=12),
       probes=st.lists(st.text(alphabet="ab-c ", max_size=6), max_size=20))
def test_trie_alternation_matches_exactly_the_words(words, probes):
    """The trie-shaped alternation the head rules use accepts the same strings as a flat one."""
    import re

    trie = re.compile("(?:" + _alt(words) + ")")
    flat = re.compile("(?:" + "|".join(re.escape(w) for w in words) + ")")
    for s in probes + words + [w[:-1] for w in words] + [w + "a" for w in words]:
        assert bool(trie.fullmatch(s)) == bool(flat.fullmatch(s)), s
