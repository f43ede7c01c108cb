import pytest

from pipeline.labels.taxonomy import Taxonomy, TaxonomyError


def test_v13_and_v14_ship_exactly():
    v13, v14 = Taxonomy.load("v1.3"), Taxonomy.load("v1.4")
    assert len(v13.names) == 31 and len(v14.names) == 28
    assert v13.by_name["Nature"].parent == "STEM"
    assert v13.by_name["Maps & Flags"].seeds == ("Maps", "Flags")
    assert v13.by_name["People"].seeds == ("People", "Human births")
    assert v13.by_name["Logos & Symbols"].parent is None
    assert "Politics" not in v14.names and "Belief" not in v14.names
    assert v14.by_name["Geology & Fossils"].seeds == ("Geology", "Fossils")
    assert v14.by_name["Geology & Fossils"].parent == "STEM"
    assert set(v13.names) - set(v14.names) == {"Geology", "Fossils", "Politics", "Belief"}


def test_hierarchical_seeds_include_ancestors():
    v13 = Taxonomy.load("v1.3")
    assert v13.seed_labels(hierarchical=True)["Plantae"] == ["STEM", "Nature", "Plants"]
    assert v13.seed_labels(hierarchical=False)["Plantae"] == ["Plants"]
    assert v13.with_ancestors(["Animals", "Art"]) == ["STEM", "Nature", "Animals", "Culture", "Art"]
    r = v13.ancestor_matrix()
    i = v13.names.index
    assert r[i("STEM"), i("Plants")] == 1 and r[i("Plants"), i("STEM")] == 0


def _write(tmp_path, labels):
    import yaml

    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"version": "t", "labels": labels}))
    return str(path)


def test_unknown_parent_and_duplicates_are_clear_errors(tmp_path):
    with pytest.raises(TaxonomyError, match="unknown parent 'Nope'"):
        Taxonomy.load(_write(tmp_path, [{"name": "A", "parent": "Nope", "seeds": ["A"]}]))
    with pytest.raises(TaxonomyError, match="duplicate label"):
        Taxonomy.load(_write(tmp_path, [{"name": "A", "parent": None, "seeds": []}] * 2))
    with pytest.raises(TaxonomyError, match="not found"):
        Taxonomy.load("v9.9")
