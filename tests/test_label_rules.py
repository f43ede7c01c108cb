"""The label rules of refined-rules (pipeline/labels/rules.py): each fires where it should and nowhere
else, Spark's expressions agree with the oracle's Python on the same cases, and a bad rules file is
a clear error."""

from __future__ import annotations

import pytest

from pipeline.labels import rules as label_rules
from pipeline.labels.rules import LabelRules, file_format
from pipeline.labels.taxonomy import Taxonomy, TaxonomyError

V13, V14 = Taxonomy.load("v1.3"), Taxonomy.load("v1.4")

# (parent title, whether it marks a person's category)
PARENTS = [
    ("1879 births", True), ("1955 deaths", True), ("879 births", True), ("Births in Vienna", True),
    ("Deaths in Paris", True),
    ("Births", False), ("Human births", False), ("1879 births in Vienna", False), ("18th-century births", False),
    ("People born in 1879", False), ("births in Vienna", False), ("12345 births", False), ("79 births", False),
    ("1879 Births", False), ("Births in", False), ("Births by year", False), ("Einstein family", False),
]
# (file title, flat labels from its categories, whether the Diagrams rule fires)
FILES = [
    ("Carnot cycle.svg", ["Chemistry"], True), ("Orbit.PNG", ["Space"], True), ("Sine.gif", ["Mathematics"], True),
    ("Plant cell.png", ["Plants"], True),  # Plants -> Nature -> STEM
    ("Circuit.svg", ["STEM"], True), ("Already.svg", ["Diagrams"], True),
    ("Carnot cycle.jpg", ["Chemistry"], False), ("Orbit.jpeg", ["Space"], False), ("Scan.tif", ["Mathematics"], False),
    ("Flag of Spain.svg", ["Maps & Flags"], False), ("Logo.png", ["Logos & Symbols"], False),
    ("Nothing.svg", [], False), ("png", ["Chemistry"], True), ("Diagram of a png.jpg", ["Chemistry"], False),
]


def test_both_versions_have_the_two_rules():
    for tax in (V13, V14):
        rules = LabelRules.load(tax)
        assert [r.label for r in rules.parent_rules] == ["People"]
        assert [(r.label, r.formats, r.requires) for r in rules.format_rules] == [
            ("Diagrams", ("png", "svg", "gif"), "STEM")]


@pytest.mark.parametrize("parent,person", PARENTS)
def test_the_people_rule_fires_on_a_persons_category_only(parent, person):
    rules = LabelRules.load(V13)
    assert rules.category_labels([parent]) == ({"People"} if person else set())
    assert rules.category_labels(["Physicists", parent, "Nobel laureates"]) == ({"People"} if person else set())
    assert rules.category_labels([]) == set()


@pytest.mark.parametrize("title,labels,fires", FILES)
def test_the_diagrams_rule_fires_on_drawings_with_a_stem_topic_only(title, labels, fires):
    rules = LabelRules.load(V13)
    assert rules.file_labels(title, labels) == ({"Diagrams"} if fires else set())


def test_file_format():
    assert file_format("A.b.SVG") == "svg" and file_format("Tar.tar.gz") == "gz" and file_format("png") == "png"


def test_spark_fires_exactly_where_the_oracle_does(spark):
    """The same cases through the Spark expressions the label stage uses."""
    from pyspark.sql import functions as F

    from pipeline.labels.masks import labels_to_mask

    rules = LabelRules.load(V13)
    people = rules.bit("People")
    edges = spark.createDataFrame([(f"c{i}", p) for i, (p, _) in enumerate(PARENTS)] + [("c0", "Physicists")],
                                  "child string, parent string")
    got = {r.title: r.rule_mask for r in rules.category_rule_masks(edges).collect()}
    assert got == {f"c{i}": people for i, (_, person) in enumerate(PARENTS) if person}

    files = spark.createDataFrame([(t, ls) for t, ls, _ in FILES], "file_title string, labels array<string>")
    files = files.withColumn("mask", labels_to_mask(F.col("labels"), V13))
    got = {r.file_title: r.m for r in files.select("file_title", rules.file_rule_mask(
        F.col("file_title"), F.col("mask")).alias("m")).collect()}
    assert got == {t: rules.bit("Diagrams") if fires else 0 for t, _, fires in FILES}


# ------------------------------------------------------------------ bad rules files


def write_rules(tmp_path, monkeypatch, text: str):
    monkeypatch.setattr(label_rules, "RULES_DIR", tmp_path)
    (tmp_path / "v1.3.yaml").write_text(text, encoding="utf-8")


@pytest.mark.parametrize("text,message", [
    ("rules:\n  - {label: Peoples, parent_patterns: ['^x$']}\n", "no label 'Peoples'"),
    ("rules:\n  - {label: Diagrams, formats: [png], requires: Science}\n", "no label 'Science'"),
    ("rules:\n  - {label: People, parent_patterns: ['(births']}\n", "bad pattern"),
    ("rules:\n  - {label: Diagrams, formats: [png]}\n", "needs a label and either parent_patterns"),
    ("version: v1.4\nrules: []\n", "rules of version 'v1.4', not 'v1.3'"),
])
def test_a_bad_rules_file_is_a_clear_error(tmp_path, monkeypatch, text, message):
    write_rules(tmp_path, monkeypatch, text)
    with pytest.raises(TaxonomyError, match=message) as e:
        LabelRules.load(V13)
    assert str(tmp_path / "v1.3.yaml") in str(e.value)


def test_a_taxonomy_without_rules_cannot_use_refined_rules(tmp_path, monkeypatch):
    from pipeline.labels.traversal import Traversal

    monkeypatch.setattr(label_rules, "RULES_DIR", tmp_path)
    with pytest.raises(TaxonomyError, match="taxonomy v1.3 has no label rules"):
        Traversal.build([], [], V13, "refined-rules")
    Traversal.build([], [], V13, "refined")  # the others need none


def test_the_rules_file_is_part_of_the_label_fingerprint(tmp_path, monkeypatch):
    """Editing the rules reruns label (and, through its record, everything below it) for refined-rules
    only; refined's fingerprint does not read them."""
    import dataclasses

    from pipeline.config import load_settings
    from pipeline.orchestration import lineage

    s = load_settings({"paths.data_root": str(tmp_path), "paths.dump_date": "20220220",
                       "label.heuristics": "refined-rules"})
    refined = dataclasses.replace(s, label=dataclasses.replace(s.label, heuristics="refined"))
    before, plain = lineage.inputs(s, "label"), lineage.inputs(refined, "label")
    assert before["label_rules_sha256"] == LabelRules.sha256("v1.3") and "label_rules_sha256" not in plain
    write_rules(tmp_path, monkeypatch, "version: v1.3\nrules: []\n")
    assert lineage.inputs(s, "label")["label_rules_sha256"] != before["label_rules_sha256"]
    assert lineage.inputs(refined, "label") == plain
