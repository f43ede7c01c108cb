"""Stage ``graph``: BFS depth in Spark vs a plain Python BFS (cycles, unreachable
parts, random graphs); the real Commons subgraph is in test_realgraph.py."""

from __future__ import annotations

from collections import defaultdict, deque

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.config import load_settings
from pipeline.errors import StageError
from pipeline.lake import atomic
from spark_jobs import category_graph

CAT_SCHEMA = "page_id long, title string, hidden boolean, is_redirect boolean"
EDGE_SCHEMA = "child_id long, child string, parent string"


def python_bfs(titles, edges, root):
    children = defaultdict(list)
    for child, parent in edges:
        children[parent].append(child)
    depth = {root: 1} if root in titles else {}
    q = deque(depth)
    while q:
        x = q.popleft()
        for c in children[x]:
            if c not in depth:
                depth[c] = depth[x] + 1
                q.append(c)
    return {t: depth.get(t) for t in titles}


def spark_depths(spark, titles, edges, root):
    ids = {t: i for i, t in enumerate(sorted(titles))}
    cats = spark.createDataFrame([(ids[t], t, False, False) for t in titles], CAT_SCHEMA)
    eds = spark.createDataFrame([(ids.get(c, -1), c, p) for c, p in edges], EDGE_SCHEMA)
    rows = category_graph.compute_depth(spark, cats, eds, root).collect()
    assert len(rows) == len(titles)
    return {r["title"]: r["depth"] for r in rows}


def test_cycles_and_unreachable(spark):
    titles = {"R", "A", "B", "C", "D", "X", "Y"}
    edges = [("A", "R"), ("B", "A"), ("C", "B"), ("A", "C"),  # cycle A -> B -> C -> A
             ("R", "C"),  # back edge to the root
             ("D", "R"), ("C", "D"),  # shorter path to C
             ("Y", "X"), ("X", "Y")]  # unreachable cycle
    got = spark_depths(spark, titles, edges, "R")
    assert got == {"R": 1, "A": 2, "D": 2, "B": 3, "C": 3, "X": None, "Y": None}
    assert got == python_bfs(titles, edges, "R")


@hsettings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(2, 12).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n))))
def test_spark_bfs_equals_python_bfs(spark, graph):
    n, pairs = graph
    titles = {f"C{i}" for i in range(n)}
    edges = [(f"C{c}", f"C{p}") for c, p in pairs]
    assert spark_depths(spark, titles, edges, "C0") == python_bfs(titles, edges, "C0")


def test_missing_root_and_missing_input(spark, tmp_path):
    s = load_settings({"paths.data_root": str(tmp_path), "paths.dump_date": "20990101"})
    with pytest.raises(StageError) as e:
        category_graph.run(s)
    assert e.value.stage == "graph" and e.value.path.endswith("ingest/categories")
    lake = tmp_path / "20990101" / "ingest"
    atomic.write_spark(spark.createDataFrame([(1, "A", False, False)], CAT_SCHEMA), str(lake / "categories"))
    atomic.write_spark(spark.createDataFrame([], EDGE_SCHEMA), str(lake / "category_edges"))
    with pytest.raises(StageError, match="CommonsRoot"):
        category_graph.run(s)
