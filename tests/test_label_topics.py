"""Stage `label`: Spark labels == the recursive oracle, on random graphs and the sample (the real
subgraph is in test_realgraph.py)."""

import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.config import load_settings
from pipeline.errors import StageError
from pipeline.labels.masks import label_sets, seed_masks, with_label_arrays
from pipeline.labels.taxonomy import Taxonomy
from pipeline.labels.traversal import Traversal, parse_labeler
from pipeline.lake.layout import Layout
from spark_jobs import label_topics

TAX = Taxonomy.load("v1.3")
REAL = Path(__file__).parent / "data" / "commons_realgraph"

# Names that make every rule fire: seeds, shared heads at several lengths,
# numbers and months (null heads), the parent-query heads.
NOUNS = ["Maps", "Flags", "Art", "History", "Churches", "Paintings", "Plantae", "Architecture", "Specimens",
         "Births", "Genera", "Portrait painters", "Painters", "Women", "Transport", "Logos"]
MODS = ["Old", "Portrait", "Oil", "1850", "January", "English"]
PLACES = ["France", "Spain"]
SEEDS = [n for n in NOUNS if n in seed_masks(TAX)]


@st.composite
def graphs(draw):
    titles = set()
    for _ in range(draw(st.integers(4, 14))):
        form = draw(st.integers(0, 3))
        noun = draw(st.sampled_from(NOUNS))
        mod = draw(st.sampled_from(MODS))
        place = draw(st.sampled_from(PLACES))
        titles.add([noun, f"{mod} {noun.lower()}", f"{noun} of {place}", f"{mod} {noun.lower()} in {place}"][form])
    titles |= set(draw(st.lists(st.sampled_from(SEEDS), min_size=1, max_size=3)))
    family = draw(st.booleans())  # a "Births" family whose parent queries can close cycles
    if family:  # (and whose "1850 births" and "Births in ..." make the People rule fire)
        titles |= {"Births", "Births of France", "Births of Spain", "Old births in Spain", "1850 births",
                   "Births in France"}
    titles = sorted(titles)
    cats = [(t, draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans()),
             draw(st.one_of(st.none(), st.integers(1, 6)))) for t in titles]
    if family:  # connected, below "Births"
        cats = [(t, h, draw(st.integers(3, 6)) if t.lower().startswith(("births ", "old births")) else
                 (1 if t == "Births" else d)) for t, h, d in cats]
    cats = [(t, h, draw(st.sampled_from([1, 2, None])) if t in SEEDS else d) for t, h, d in cats]  # seeds near the top
    targets = titles + ["Red link", "Maps of Nowhere"]
    edges = draw(st.lists(st.tuples(st.sampled_from(titles), st.sampled_from(targets)), max_size=30))
    # and most categories under a shallower one, so that labels flow down from the seeds
    depth = {t: d for t, _, d in cats}
    for t in titles:
        above = [p for p in titles if depth[p] is not None and depth[t] is not None and depth[p] < depth[t]]
        if above and draw(st.integers(0, 3)):
            edges.append((t, draw(st.sampled_from(above))))
    if family:
        edges += [("Births of France", "Births of Spain"), ("Births of Spain", "Births of France"),
                  ("Old births in Spain", "Births of Spain")]
    return cats, edges


def spark_vs_oracle(spark, cats, edges, heuristics, tail_proposals=0):
    depth_df = spark.createDataFrame(cats, "title string, hidden boolean, depth int")
    edges_df = spark.createDataFrame(edges or [("x", "y")], "child string, parent string")
    if not edges:
        edges_df = edges_df.limit(0)
    got = {r.title: (list(r.labels), list(r.labels_hier))
           for r in label_topics.label_categories(spark, depth_df, edges_df, TAX, heuristics,
                                                  tail_proposals=tail_proposals).collect()}
    oracle = Traversal.build(cats, edges, TAX, heuristics)
    want = {}
    for t, _, _ in cats:
        flat = [n for n in TAX.names if n in oracle.labels(t)]
        want[t] = (flat, TAX.with_ancestors(flat))
    return got, want


# Tail sizes: Spark rounds only (0), rounds then the last categories in one task (4), one task (all).
# (refined-rules adds its rules after either: one tail size is enough.)
# Three graphs per case, 21 in all (each label run costs seconds of Spark jobs even on a tiny graph);
# every run draws new ones.
@pytest.mark.parametrize("heuristics,tail", [("depth", 0), ("headJ+depth", 0), ("headJ+lookahead+depth", 4),
                                             ("refined", 0), ("headJ+depth", 10**6), ("refined", 10**6),
                                             ("refined-rules", 10**6)])
@hsettings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph=graphs())
def test_random_graphs_match_the_oracle(spark, heuristics, tail, graph):
    cats, edges = graph
    got, want = spark_vs_oracle(spark, cats, edges, heuristics, tail)
    assert got == want


def test_handmade_graph_labels(spark):
    cats = [("Churches in Belgium", False, 6), ("Churches by country", False, 5), ("Churches", False, 3),
            ("Architecture", False, 2), ("History", False, 2), ("Hidden", True, 4), ("Plantae", False, None)]
    edges = [("Churches in Belgium", "Churches by country"), ("Churches", "Architecture"),
             ("Churches by country", "History"), ("Churches in Belgium", "Hidden")]
    got, want = spark_vs_oracle(spark, cats, edges, "headJ+depth")
    assert got == want
    assert got["Churches in Belgium"] == (["Architecture"], ["Places", "Architecture"])
    assert got["Plantae"] == ([], [])  # a seed with no depth gives nothing


def test_refined_keeps_only_the_nearest_seeds(spark):
    """No head repeats here, so the depth heuristic proposes both parents: headJ+depth takes a near
    seed's topic and a far one's, refined only the near one; equally near seeds both count."""
    cats = [("Lunar tables", False, 8), ("Astronomical diagrams", False, 7), ("Diagrams", False, 6),
            ("Moon", False, 7), ("Astrology", False, 6), ("Belief", False, 5),
            ("Tide tables", False, 8), ("Maps", False, 6), ("Sea charts", False, 8), ("Transport", False, 6)]
    edges = [("Lunar tables", "Astronomical diagrams"), ("Astronomical diagrams", "Diagrams"),
             ("Lunar tables", "Moon"), ("Moon", "Astrology"), ("Astrology", "Belief"),
             ("Tide tables", "Astronomical diagrams"), ("Tide tables", "Maps"),
             ("Sea charts", "Maps"), ("Sea charts", "Transport"), ("Sea charts", "Moon")]
    got, want = spark_vs_oracle(spark, cats, edges, "refined")
    assert got == want
    classic, _ = spark_vs_oracle(spark, cats, edges, "headJ+depth")
    assert classic["Lunar tables"][0] == ["Diagrams", "Belief"]
    assert got["Lunar tables"][0] == ["Diagrams"]  # Diagrams 2 steps up, Belief 3
    assert got["Tide tables"][0] == ["Maps & Flags"]  # Maps 1 step, Diagrams 2
    assert got["Sea charts"][0] == ["Maps & Flags", "Transportation"]  # both 1 step; Belief 3
    assert got["Moon"] == classic["Moon"] == (["Belief"], ["Culture", "Belief"])


@pytest.mark.parametrize("tail", [0, 10**6])
def test_parent_queries_deeper_and_in_cycles(spark, tail):
    """headJ's Births queries may go deeper and close cycles: Spark takes the oracle's order-free rule,
    in rounds and in the one task that labels the last categories."""
    cats = [("Franklin Delano Roosevelt", False, 7), ("1882 births", False, 7), ("Births", False, 3),
            ("Births in the United States in the 1880s", False, 8), ("Human births", False, 4),
            ("Presidents", False, 6), ("Politics", False, 4),
            ("Births in A", False, 7), ("Births in B", False, 7), ("Births in A by city", False, 8), ("Maps", False, 5)]
    edges = [("Franklin Delano Roosevelt", "1882 births"), ("Franklin Delano Roosevelt", "Presidents"),
             ("Franklin Delano Roosevelt", "Births in the United States in the 1880s"), ("Presidents", "Politics"),
             ("Births in the United States in the 1880s", "Human births"), ("1882 births", "Presidents"),
             ("Births in A", "Births in B"), ("Births in B", "Births in A"), ("Births in A", "Human births"),
             ("Births in A by city", "Births in A"), ("Births in A by city", "Maps")]
    got, want = spark_vs_oracle(spark, cats, edges, "headJ+depth", tail)
    assert got == want
    counts = {}
    depth_df = spark.createDataFrame(cats, "title string, hidden boolean, depth int")
    label_topics.label_categories(spark, depth_df, spark.createDataFrame(edges, "child string, parent string"),
                                  TAX, "headJ+depth", counts, tail).count()
    assert counts["categories_leading_into_cycles"] == 3  # Births in A, Births in B, Births in A by city
    assert (counts["rounds"] > 0) == (tail == 0)
    assert got["Franklin Delano Roosevelt"][0] == ["People", "Politics"]
    assert got["Births in A"][0] == ["People"] and got["Births in B"][0] == []
    assert got["Births in A by city"][0] == ["Maps & Flags"]


def test_unknown_heuristic(spark):
    df = spark.createDataFrame([("A", False, 1)], "title string, hidden boolean, depth int")
    with pytest.raises(ValueError, match="valid: headJ, lookahead, depth .* or a labeler: refined, refined-rules"):
        label_topics.label_categories(spark, df, df.selectExpr("title as child", "title as parent"), TAX, "headX")


def settings_for(root, dumps=REAL / "current", **extra):
    over = {"spark.master": "local[2]", "spark.shuffle_partitions": "4", "paths.dumps_dir": str(dumps),
            "paths.dump_date": "20220220", "paths.data_root": str(root), "paths.state_dir": str(root / "state")}
    over.update(extra)
    return load_settings(over)


def test_missing_inputs_are_a_stage_error(tmp_path):
    with pytest.raises(StageError) as e:
        label_topics.run(settings_for(tmp_path))
    assert e.value.stage == "label" and "category_depth" in e.value.path


def test_run_on_tiny_tables_warns_about_missing_seeds(spark, tmp_path):
    s = settings_for(tmp_path)
    layout = Layout.from_settings(s)
    spark.createDataFrame([(1, "CommonsRoot", False, False, 1), (2, "Maps", False, False, 2), (3, "Old maps", False, False, 3)],
                          "page_id long, title string, hidden boolean, is_redirect boolean, depth int"
                          ).write.parquet(layout.category_depth)
    spark.createDataFrame([(2, "Maps", "CommonsRoot"), (3, "Old maps", "Maps")], "child_id long, child string, parent string"
                          ).write.parquet(layout.ingest("category_edges"))
    spark.createDataFrame([(10, "A.jpg", "Old maps"), (11, "B.jpg", "Red link"), (10, "A.jpg", "CommonsRoot")],
                          "file_id long, file_title string, category string").write.parquet(layout.ingest("file_links"))
    with pytest.warns(label_topics.MissingSeedsWarning, match="Plantae"):
        summary = label_topics.run(s)
    assert "Plantae" in summary["missing_seeds"] and "Maps" not in summary["missing_seeds"]
    files = {r.file_title: (list(r.labels), list(r.labels_hier)) for r in spark.read.parquet(summary["file_labels"]).collect()}
    assert files == {"A.jpg": (["Maps & Flags"], ["Places", "Maps & Flags"]), "B.jpg": ([], [])}
    stats = json.loads(Path(summary["stats"]).read_text())
    assert stats["flat"]["files"] == 2 and stats["flat"]["unlabeled_share"] == 0.5
    assert stats["flat"]["images_per_label"]["Maps & Flags"] == 1
    assert stats["hierarchical"]["images_per_label"]["Places"] == 1
    assert stats["flat"]["meanIR"] == 1.0 and stats["flat"]["SCUMBLE"] == 0.0
    assert stats["hierarchical"]["labels_per_image_mean"] == 1.0
    assert stats["categories"] == 3 and stats["categories_labeled"] == 2  # Maps and Old maps
    assert "Plantae" in stats["missing_seeds"]


# ----------------------------------------------------------------- bundled sample


@pytest.fixture(scope="module")
def sample_tables(spark, tmp_path_factory):
    """A small generated sample, ingested and graphed once: {depth, edges, links: (Parquet path, pandas)}."""
    from devtools.sample.generator import generate_sample
    from spark_jobs import category_graph, ingest_dumps

    root = tmp_path_factory.mktemp("sample")
    out = root / "sample"
    generate_sample(str(out), seed=7, images=50, categories=600, with_images=False)
    s = settings_for(root / "lake", dumps=out / "dumps", **{"paths.dump_date": "20260101"})
    ingest_dumps.run(s)
    category_graph.run(s)
    layout = Layout.from_settings(s)
    return {name: (path, pd.read_parquet(path)) for name, path in
            [("depth", layout.category_depth), ("edges", layout.ingest("category_edges")),
             ("links", layout.ingest("file_links"))]}


@pytest.mark.parametrize("heuristics", ["depth", "headJ+depth", "headJ+lookahead+depth", "refined", "refined-rules"])
def test_sample_spark_equals_oracle(spark, sample_tables, heuristics):
    """On the bundled sample (real dump format, realistic names): every category's and file's labels."""
    (depth_path, depth), (edges_path, edges), (links_path, links) = (
        sample_tables[k] for k in ("depth", "edges", "links"))
    cats = [(t, bool(h), None if pd.isna(d) else int(d)) for t, h, d in zip(depth.title, depth.hidden, depth.depth)]
    oracle = Traversal.build(cats, zip(edges.child, edges.parent), TAX, heuristics)

    depth_df, edges_df, links_df = (spark.read.parquet(p) for p in (depth_path, edges_path, links_path))
    masks = label_topics.category_masks(spark, depth_df, edges_df, TAX, heuristics).localCheckpoint()
    cat_labels = with_label_arrays(masks, label_sets(masks, TAX))
    got_cats = {r.title: (list(r.labels), list(r.labels_hier)) for r in cat_labels.collect()}
    got_files = {r.file_id: (list(r.labels), list(r.labels_hier))
                 for r in label_topics.label_files(links_df, cat_labels, TAX, oracle.rules).collect()}

    def ordered(labels):
        flat = [n for n in TAX.names if n in labels]
        return flat, TAX.with_ancestors(flat)

    want_cats = {t: ordered(oracle.labels(t)) for t, _, _ in cats}
    by_file = links.groupby(["file_id", "file_title"]).category.apply(list)
    want_files = {int(f): ordered(oracle.file_labels(c, title)) for (f, title), c in by_file.items()}
    assert len(got_cats) == len(set(depth.title)) and len(got_files) == links.file_id.nunique()
    assert [t for t in want_cats if got_cats[t] != want_cats[t]] == []
    assert [f for f in want_files if got_files[f] != want_files[f]] == []
    # the comparison is not vacuous: most categories and files are labeled
    assert sum(bool(v[0]) for v in want_cats.values()) > len(want_cats) / 2
    assert sum(bool(v[0]) for v in want_files.values()) > len(want_files) / 2
    if "headJ" in heuristics:  # and the head rule fires on the sample's names
        assert sum(bool(oracle.propose("headJ", t)) for t, _, d in cats if d is not None) >= 10
    if oracle.rules is not None:  # and both label rules fire on the sample
        plain = Traversal.build(cats, zip(edges.child, edges.parent), TAX, "refined")
        added = {label for (f, title), c in by_file.items()
                 for label in oracle.file_labels(c, title) - plain.file_labels(c)}
        assert added == {"People", "Diagrams"}


def test_a_bad_table_of_people_labels_fails_before_any_output(tmp_path):
    """label.human_labels is read first: a table without labels_human stops the stage before Spark
    replaces anything, naming the file."""
    bad = tmp_path / "people.parquet"
    pd.DataFrame({"id": [1]}).to_parquet(bad)
    with pytest.raises(StageError) as e:
        label_topics.run(settings_for(tmp_path, **{"label.human_labels": str(bad)}))
    assert e.value.path == str(bad) and "labels_human" in e.value.message
    assert not (tmp_path / "20220220").exists()


@hsettings(max_examples=50, deadline=None)
@given(graph=graphs(), cuts=st.lists(st.integers(1, 60), max_size=4))
def test_proposals_do_not_depend_on_where_batches_end(graph, cuts):
    """A category's rows may span Arrow batches: the proposals are the oracle's whatever the cuts."""
    import pyarrow as pa

    cats, edges = graph
    oracle = Traversal.build(cats, edges, TAX, "headJ+depth")
    depth = {t: d for t, _, d in cats}
    rows = [{"child": c, "is_self": False, "child_depth": None, "member": p, "member_head": oracle.get_head(p),
             "member_depth": depth.get(p), "member_is_seed": p in oracle.seeds} for c, p in sorted(set(edges))]
    pending = [t for t, _, d in cats if oracle._walks_on(t)]
    rows += [{"child": t, "is_self": True, "child_depth": depth[t], "member": t, "member_head": oracle.get_head(t),
              "member_depth": None, "member_is_seed": None} for t in pending]
    rows.sort(key=lambda r: r["child"])
    table = pa.Table.from_pylist(rows) if rows else None
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    batches = [b for lo, hi in zip(bounds, bounds[1:]) for b in table.slice(lo, hi - lo).to_batches()]
    got = {}
    for batch in label_topics.propose_in_order(batches, ["headJ", "depth"]):
        for r in batch.to_pylist():
            if r["key"] is None or (depth.get(r["key"]) is not None and depth[r["key"]] < r["child_depth"]):
                got.setdefault(r["child"], set()).add((r["rank"], r["target"]))
    want = {t: {(rank, x) for rank, h in enumerate(["headJ", "depth"]) for x in oracle.propose(h, t)} for t in pending}
    assert got == {t: v for t, v in want.items() if v}


@st.composite
def remaining_proposals(draw):
    """The one task's input: proposals among a few categories (cycles included), some targets labeled already."""
    cats = [f"c{i}" for i in range(draw(st.integers(1, 8)))]
    known = {f"s{i}": (draw(st.integers(1, 31)), draw(st.integers(0, 2))) for i in range(draw(st.integers(0, 4)))}
    targets = cats + list(known) + ["unlabeled"]
    found = draw(st.lists(st.tuples(st.sampled_from(cats), st.sampled_from(targets), st.integers(0, 2)),
                          unique=True, max_size=30))
    return found, known


def labeled_by_the_rule(proposals, known, nearest):
    """title -> (mask, hops, in_cycle), straight from finish_in_order's rule: a category is labeled once
    every category among its targets is, from its first rank with a labeled target; the categories
    left over lead into a cycle and take what the others found."""
    cats = {c for c, _, _ in proposals}
    waits_on = {c: {t for cc, t, _ in proposals if cc == c and t in cats} for c in cats}
    labels, done, out = dict(known), set(), {}

    def resolve(c):
        found = {}
        for cc, t, rank in proposals:
            if cc == c and t in labels:
                found.setdefault(rank, []).append(labels[t])
        if not found:
            return None
        best = found[min(found)]
        hops = min(h for _, h in best)
        mask = 0
        for m, h in best:
            mask |= m if h == hops or not nearest else 0
        return mask, hops + 1

    while ready := [c for c in cats - done if waits_on[c] <= done]:
        results = {c: resolve(c) for c in ready}
        for c, result in results.items():
            done.add(c)
            if result:
                labels[c], out[c] = result, (*result, False)
    for c in cats - done:
        result = resolve(c)
        out[c] = (*(result or (None, None)), True)
    return out


@hsettings(max_examples=300, deadline=None)
@given(found=remaining_proposals(), nearest=st.booleans(), cuts=st.lists(st.integers(1, 30), max_size=3))
def test_the_one_task_follows_its_rule(found, nearest, cuts):
    """finish_in_order (vectorised, by levels) == its rule stated category by category, in any batches."""
    import pyarrow as pa

    proposals, known = found
    rows = [{"child": c, "target": t, "rank": r, "mask": known.get(t, (None, None))[0],
             "hops": known.get(t, (None, None))[1]} for c, t, r in proposals]
    schema = pa.schema([("child", pa.string()), ("target", pa.string()), ("rank", pa.int32()), ("mask", pa.int64()),
                        ("hops", pa.int32())])
    table = pa.Table.from_pylist(rows, schema=schema)
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    batches = [b for lo, hi in zip(bounds, bounds[1:]) for b in table.slice(lo, hi - lo).to_batches()]
    got = {r["title"]: (r["mask"], r["hops"], r["in_cycle"])
           for batch in label_topics.finish_in_order(iter(batches), nearest) for r in batch.to_pylist()}
    assert got == labeled_by_the_rule(proposals, known, nearest)


@hsettings(max_examples=200, deadline=None)
@given(graph=graphs(), labeler=st.sampled_from(["depth", "headJ+depth", "headJ+lookahead+depth", "refined"]),
       cuts=st.lists(st.integers(1, 40), max_size=3))
def test_the_one_task_labels_as_the_oracle(graph, labeler, cuts):
    """finish_in_order, given the oracle's proposals with the seeds' labels, in any batches, labels every
    category the heuristics walk on as the oracle does, cycles of proposals included."""
    import pyarrow as pa

    cats, edges = graph
    oracle = Traversal.build(cats, edges, TAX, labeler)
    labeler = parse_labeler(labeler)
    heuristics, nearest = labeler.heuristics, labeler.nearest
    seeds = {t: m for t, m in seed_masks(TAX).items() if t in {c for c, _, d in cats if d is not None}}
    pending = [t for t, _, _ in cats if oracle._walks_on(t)]
    rows = [{"child": t, "target": x, "rank": rank, "mask": seeds.get(x), "hops": 0 if x in seeds else None}
            for t in pending for rank, h in enumerate(heuristics) for x in dict.fromkeys(oracle.propose(h, t))]
    schema = pa.schema([("child", pa.string()), ("target", pa.string()), ("rank", pa.int32()), ("mask", pa.int64()),
                        ("hops", pa.int32())])
    table = pa.Table.from_pylist(rows, schema=schema)
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    batches = [b for lo, hi in zip(bounds, bounds[1:]) for b in table.slice(lo, hi - lo).to_batches()]
    got = {}
    for batch in label_topics.finish_in_order(iter(batches), nearest):
        for r in batch.to_pylist():
            got[r["title"]] = [n for i, n in enumerate(TAX.names) if (r["mask"] or 0) >> i & 1]
    assert {t: got.get(t, []) for t in pending} == {t: [n for n in TAX.names if n in oracle.labels(t)] for t in pending}
