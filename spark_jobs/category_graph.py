"""Stage ``graph``: depth of every category = shortest distance from the root.

Breadth-first search as Spark joins, so the graph never goes to the driver:
each level joins the frontier with the edges (parent -> child), anti-joins the
result against the visited set, and stops when the frontier is empty (so
cycles end the search instead of looping). Lineage is cut every level with
``localCheckpoint`` so ~31 levels stay a flat plan. The root has depth 1;
unreachable categories keep a null depth.
"""

from __future__ import annotations

import logging
from functools import reduce

from pipeline.config import Settings
from pipeline.errors import StageError
from pipeline.lake import atomic
from pipeline.lake.atomic import require_input
from pipeline.lake.layout import Layout

STAGE = "graph"
log = logging.getLogger(__name__)


def bfs_levels(spark, edges_df, root: str, max_levels: int = 10_000):
    """(title, depth) for every title reachable from ``root`` over ``edges_df``
    (columns ``child``, ``parent``: child categories lie one level below parents).

    Returns (DataFrame, levels) where levels lists the size of each frontier.
    """
    from pyspark.sql import functions as F

    edges = (edges_df.select(F.col("parent").alias("title"), F.col("child").alias("next"))
             .where(F.col("title").isNotNull() & F.col("next").isNotNull()).distinct()
             .localCheckpoint(eager=True))
    frontier = spark.createDataFrame([(root, 1)], "title string, depth int").localCheckpoint(eager=True)
    # Each level is checkpointed on its own; the visited set is their union, a
    # flat plan of at most ~max-depth scans (no growing lineage, no re-checkpoint).
    parts = [frontier]
    levels = [1]
    depth = 1
    while depth < max_levels:
        visited = reduce(lambda a, b: a.unionByName(b), parts)
        nxt = (frontier.join(edges, "title").select(F.col("next").alias("title")).distinct()
               .join(visited, "title", "left_anti")
               .withColumn("depth", F.lit(depth + 1))
               .localCheckpoint(eager=True))
        n = nxt.count()
        if n == 0:
            break
        depth += 1
        levels.append(n)
        parts.append(nxt)
        frontier = nxt
        log.info("graph: depth %d has %d categories", depth, n)
    visited = reduce(lambda a, b: a.unionByName(b), parts)
    return visited, levels


def compute_depth(spark, categories_df, edges_df, root: str):
    """Categories (page_id, title, hidden, is_redirect) with ``depth int`` added
    (root = 1, null = not reachable from ``root``)."""
    from pyspark.sql import functions as F

    depths, _ = bfs_levels(spark, edges_df, root)
    return (categories_df.join(depths, "title", "left")
            .select("page_id", "title", "hidden", "is_redirect", F.col("depth").cast("int").alias("depth")))


def run(settings: Settings) -> dict:
    from pyspark.sql import functions as F

    from pipeline.orchestration.spark import get_spark

    layout = Layout.from_settings(settings)
    cats_path = require_input(STAGE, layout.ingest("categories"), "ingest categories")
    edges_path = require_input(STAGE, layout.ingest("category_edges"), "ingest category_edges")
    spark = get_spark(settings, "graph")
    categories = spark.read.parquet(cats_path)
    edges = spark.read.parquet(edges_path)
    root = settings.label.root
    if categories.filter(F.col("title") == root).limit(1).count() == 0:
        raise StageError(STAGE, cats_path, f"root category {root!r} (label.root) is not among the categories")
    depths, levels = bfs_levels(spark, edges, root)
    out = (categories.join(depths, "title", "left")
           .select("page_id", "title", "hidden", "is_redirect", F.col("depth").cast("int").alias("depth")))
    parts = settings.spark.shuffle_partitions
    path = atomic.write_spark(out.repartition(parts, "page_id").sortWithinPartitions("page_id", "title"),
                              layout.category_depth)
    written = spark.read.parquet(path)
    total = written.count()
    reachable = written.filter(F.col("depth").isNotNull()).count()
    return {
        "stage": STAGE,
        "dump_date": layout.dump_date,
        "root": root,
        "outputs": {"category_depth": path},
        "categories": total,
        "reachable": reachable,
        "unreachable": total - reachable,
        "max_depth": len(levels),
        # reachable titles per depth, from 1 (includes red-link titles only if they have a page)
        "depth_histogram": {str(i + 1): n for i, n in enumerate(levels)},
    }
