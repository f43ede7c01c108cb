"""The plain recursive oracle: each published rule on a small hand-made graph."""

import pytest

from pipeline.labels.taxonomy import Taxonomy, TaxonomyError
from pipeline.labels.traversal import HEURISTICS, Traversal, parse_heuristics, shortened_matches

TAX = Taxonomy.load("v1.3")


def build(cats, edges, heuristics="headJ+depth"):
    """cats: {title: depth or (depth, hidden)}"""
    rows = [(t, v[1], v[0]) if isinstance(v, tuple) else (t, False, v) for t, v in cats.items()]
    return Traversal.build(rows, edges, TAX, heuristics)


def test_red_links_unconnected_and_seeds():
    tr = build({"Maps": 3, "Old maps": None}, [("Old maps", "Maps")])
    assert tr.labels("No such category") == frozenset()
    assert tr.labels("Old maps") == frozenset()  # no depth
    assert tr.labels("Maps") == {"Maps & Flags"}


def test_seed_stops_the_walk_and_hidden_and_null_heads():
    cats = {"Maps": 5, "Art": 2, "Hidden maps": (6, True), "1850": 6, "January in Paris": 6, "Town maps": 6}
    edges = [("Maps", "Art"), ("Hidden maps", "Maps"), ("1850", "Maps"), ("January in Paris", "Maps"), ("Town maps", "Maps")]
    tr = build(cats, edges, "depth")
    assert tr.labels("Maps") == {"Maps & Flags"}  # not Art: a seed stops there
    assert tr.labels("Hidden maps") == frozenset()
    assert tr.labels("1850") == frozenset()
    assert tr.labels("January in Paris") == frozenset()
    assert tr.labels("Town maps") == {"Maps & Flags"}


def test_depth_takes_only_strictly_shallower_parents():
    cats = {"Art": 2, "History": 4, "Paintings": 5, "Painting stuff": 5, "Deep thing": 6}
    edges = [("Deep thing", "Paintings"), ("Deep thing", "Art"), ("Paintings", "History"), ("Paintings", "Painting stuff"),
             ("Painting stuff", "Art"), ("Deep thing", "Red link")]
    tr = build(cats, edges, "depth")
    assert tr.labels("Paintings") == {"History"}  # "Painting stuff" has the same depth: not queried
    assert tr.labels("Deep thing") == {"History", "Art"}


def test_headj_jumps_to_the_category_named_by_the_shared_head():
    # "Churches in Belgium" and its parent "Churches by country" share the head
    # "Churches": query the category "Churches" (depth 3 < 6), not the parent.
    cats = {"Churches in Belgium": 6, "Churches by country": 5, "Churches": 3, "Architecture": 2, "History": 2,
            "Belgium": 4}
    edges = [("Churches in Belgium", "Churches by country"), ("Churches in Belgium", "Belgium"),
             ("Churches", "Architecture"), ("Churches by country", "History"), ("Belgium", "History")]
    tr = build(cats, edges, "headJ+depth")
    assert tr.labels("Churches in Belgium") == {"Architecture"}
    # depth alone goes through both parents
    assert build(cats, edges, "depth").labels("Churches in Belgium") == {"History"}


def test_headj_falls_back_to_depth_when_empty_and_skips_deeper_heads():
    cats = {"Old maps of Spain": 6, "Maps by age": 5, "Maps": 7, "Art": 2}
    edges = [("Old maps of Spain", "Maps by age"), ("Maps by age", "Art")]
    tr = build(cats, edges, "headJ+depth")
    # head "Maps" shared, but the category "Maps" is deeper: headJ proposes nothing
    assert tr.propose("headJ", "Old maps of Spain") == []
    assert tr.labels("Old maps of Spain") == {"Art"}


def test_shortening_drops_first_words_of_the_longest_heads():
    repeated, short = shortened_matches(["Portrait painters", "English portrait painters", "People"])
    assert repeated == {"Portrait painters"}
    repeated, short = shortened_matches(["Oil paintings", "Paintings", "Art"])
    assert repeated == {"Paintings"} and short == ["Paintings", "Paintings", "Art"]
    assert shortened_matches(["Maps", "Art"]) == (set(), ["Maps", "Art"])
    # two parents sharing a head also count (the original's duplicates() over the whole list)
    assert shortened_matches(["Bridges", "Towers", "Towers"])[0] == {"Towers"}


def test_parent_heads_query_the_parent():
    cats = {"Rosa specimens": 6, "Plant specimens": 5, "Specimens": 2, "Plantae": 3}
    edges = [("Rosa specimens", "Plant specimens"), ("Plant specimens", "Plantae")]
    tr = build(cats, edges, "headJ+depth")
    assert tr.propose("headJ", "Rosa specimens") == ["Plant specimens"]  # not the category "Specimens"
    assert tr.labels("Rosa specimens") == {"Plants"}
    # the depth test is on the category named by the head: without "Specimens" above it, nothing is proposed
    assert build({**cats, "Specimens": 7}, edges).propose("headJ", "Rosa specimens") == []


def test_parent_heads_query_a_deeper_parent():
    # as the original did: "Births in the United States in the 1880s" (depth 8)
    # was queried from "Franklin Delano Roosevelt" (depth 7)
    cats = {"Franklin Delano Roosevelt": 7, "1882 births": 7, "Births in the United States in the 1880s": 8,
            "Births": 6, "Human births": 5, "Presidents": 6, "Politics": 4}
    edges = [("Franklin Delano Roosevelt", "1882 births"),
             ("Franklin Delano Roosevelt", "Births in the United States in the 1880s"),
             ("Franklin Delano Roosevelt", "Presidents"), ("Presidents", "Politics"),
             ("Births in the United States in the 1880s", "Human births"), ("1882 births", "Presidents")]
    tr = build(cats, edges, "headJ+depth")
    assert set(tr.propose("headJ", "Franklin Delano Roosevelt")) == {
        "1882 births", "Births in the United States in the 1880s"}
    assert tr.labels("Franklin Delano Roosevelt") == {"People", "Politics"}
    assert build(cats, edges, "depth").labels("Franklin Delano Roosevelt") == {"Politics"}


def test_a_cycle_of_parent_queries_gives_labels_only_from_outside_it():
    # "Births in A" and "Births in B" are each other's parent: each one's headJ
    # query goes to the other. Entering the cycle from either side gives the
    # same answer: only the proposals that leave the cycle count.
    cats = {"Births in A": 7, "Births in B": 7, "Births": 3, "Human births": 4, "Births in A by city": 8,
            "Maps": 5}
    edges = [("Births in A", "Births in B"), ("Births in B", "Births in A"), ("Births in A", "Human births"),
             ("Births in A by city", "Births in A"), ("Births in A by city", "Maps")]
    for order in (["Births in A", "Births in B", "Births in A by city"], ["Births in A by city", "Births in B"]):
        tr = build(cats, edges, "headJ+depth")
        got = {t: tr.labels(t) for t in order}
        assert tr.leads_to_cycle("Births in A") and tr.leads_to_cycle("Births in A by city")
        assert tr.labels("Births in A") == {"People"}  # from "Human births", outside the cycle
        assert tr.labels("Births in B") == frozenset()  # its only proposal is in the cycle
        # its headJ proposal leads into the cycle, so depth's "Maps" wins
        assert got["Births in A by city"] == {"Maps & Flags"}


def test_lookahead_and_order_of_heuristics():
    cats = {"Flag things": 6, "Flags": 8, "Old stuff": 3, "History": 2}
    edges = [("Flag things", "Flags"), ("Flag things", "Old stuff"), ("Old stuff", "History")]
    assert build(cats, edges, "depth").labels("Flag things") == {"History"}
    assert build(cats, edges, "lookahead+depth").labels("Flag things") == {"Maps & Flags"}
    assert build(cats, edges, "depth+lookahead").labels("Flag things") == {"History"}


def test_file_labels_are_the_union():
    tr = build({"Maps": 3, "Art": 2}, [])
    assert tr.file_labels(["Maps", "Art", "Red"]) == {"Maps & Flags", "Art"}


def test_unknown_heuristic_lists_the_valid_ones():
    assert parse_heuristics("headJ+lookahead+depth") == ["headJ", "lookahead", "depth"]
    with pytest.raises(ValueError) as e:
        parse_heuristics("headJ+embedding5")
    for h in HEURISTICS:
        assert h in str(e.value)
    assert "embedding5" in str(e.value)


def test_taxonomy_errors(tmp_path):
    bad_parent = tmp_path / "bad_parent.yaml"
    bad_parent.write_text("version: x\nlabels:\n  - {name: A, parent: Nope, seeds: [A]}\n")
    with pytest.raises(TaxonomyError, match="unknown parent 'Nope'"):
        Taxonomy.load(str(bad_parent))
    dup = tmp_path / "dup.yaml"
    dup.write_text("version: x\nlabels:\n  - {name: A, parent: null, seeds: [A]}\n  - {name: A, parent: null, seeds: [B]}\n")
    with pytest.raises(TaxonomyError, match="duplicate label"):
        Taxonomy.load(str(dup))
