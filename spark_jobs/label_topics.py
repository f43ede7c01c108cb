"""Stage ``label``: topic labels for every category and file, by the traversal heuristics.

The rules are those of ``pipeline/labels/traversal.py`` (the recursive oracle). What
each category proposes to query is computed by the oracle's own function
(``candidate_queries``), category by category in Python tasks, after Spark
has joined every edge with what is known of its parent. Instead of
recursing per category this job labels in rounds: each round takes
every category whose proposals (all heuristics, with their rank) are labeled
already, joins them against the labels found so far, and one ``bit_or`` per
(category, heuristic) and one ``min_by`` over the rank pick the first
heuristic with a non-empty result. Nearly every proposal goes to a strictly
smaller depth or to a seed, so the rounds are close to the depth levels (a
few dozen); headJ's parent queries (Births, Genera, ...) may go deeper and
add rounds. Categories whose proposals lead into a cycle never become ready;
a last pass labels them from the proposals that do not. The driver only
loops over rounds; no graph reaches it.

Label sets travel as bit masks (bit i = i-th label in taxonomy order): a union
is ``bit_or``, the hierarchical closure an OR of per-label ancestor masks, and
the arrays are built once at the end, already in taxonomy order.
"""

from __future__ import annotations

import logging
import warnings

from pipeline.config import Settings
from pipeline.errors import StageError
from pipeline.labels import quality as label_quality
from pipeline.labels.heads import NULL_HEADS, P_NUMBER, with_head
from pipeline.labels.masks import check_size, combo_stats, label_sets, labels_to_mask, seed_masks, with_label_arrays
from pipeline.labels.rules import LabelRules
from pipeline.labels.taxonomy import Taxonomy
from pipeline.labels.traversal import parse_labeler
from pipeline.lake.atomic import require_input, write_json, write_spark
from pipeline.lake.layout import Layout

STAGE = "label"
log = logging.getLogger(__name__)

DEPTH_COLUMNS = ("title", "hidden", "depth")
EDGE_COLUMNS = ("child", "parent")
FILE_COLUMNS = ("file_id", "file_title", "category")


class MissingSeedsWarning(UserWarning):
    pass


# ----------------------------------------------------------------- proposals


PROPOSAL_SCHEMA = "child string, child_depth int, target string, rank int, key string"


def propose_in_order(batches, heuristics: list[str]):
    """Every heuristic's proposals, category by category, by the oracle's rules (``traversal.candidate_queries``).

    ``batches``: rows sorted by ``child``; per category one row with
    ``is_self`` (its ``child_depth``, and its head in ``member_head``) and one
    per parent (``member``, ``member_head``, ``member_depth``,
    ``member_is_seed``). A category without its own row is not pending and
    proposes nothing. headJ compares a few heads per category and keeps the
    longest shared suffix; as DataFrame operations that took an explode per
    suffix length and a dozen shuffles. Yields ``PROPOSAL_SCHEMA`` rows, each
    (child, target, rank) once; a ``key`` is the head whose category must lie
    above the child.
    """
    import pyarrow as pa

    from pipeline.labels.traversal import candidate_queries

    schema = pa.schema([("child", pa.string()), ("child_depth", pa.int32()), ("target", pa.string()),
                        ("rank", pa.int32()), ("key", pa.string())])
    names = schema.names

    def propose(out, child, depth, head, parents, depths, seeds, heads):
        if depth is None:  # no row of its own: not pending
            return
        seen = set()
        heads = [head, *heads]
        for rank, h in enumerate(heuristics):
            for target, key in candidate_queries(h, child, depth, parents, depths, seeds, heads):
                if (target, rank) not in seen:
                    seen.add((target, rank))
                    for name, value in zip(names, (child, depth, target, rank, key)):
                        out[name].append(value)

    group = None
    for batch in batches:
        out = {name: [] for name in names}
        cols = batch.to_pydict()
        for child, is_self, depth, member, head, m_depth, m_seed in zip(
                cols["child"], cols["is_self"], cols["child_depth"], cols["member"], cols["member_head"],
                cols["member_depth"], cols["member_is_seed"]):
            if group is None or group[0] != child:
                if group is not None:
                    propose(out, *group)
                group = [child, None, None, [], [], [], []]
                members = set()
            if is_self:
                group[1], group[2] = depth, head
            elif member not in members:  # a parent listed twice counts once, as in the oracle
                members.add(member)
                group[3].append(member)
                group[4].append(m_depth)
                group[5].append(bool(m_seed))
                group[6].append(head)
        yield pa.RecordBatch.from_pydict(out, schema=schema)
    if group is not None:
        out = {name: [] for name in names}
        propose(out, *group)
        yield pa.RecordBatch.from_pydict(out, schema=schema)


def _proposals(cats, edges, heuristics: list[str]):
    """(child, target, rank, child_depth) for every pending category and heuristic (rank = position in the order).

    Spark joins each edge with what is known of its parent and brings each
    category's rows together; the rules run per category in Python.
    """
    from pyspark.sql import functions as F

    parents = edges.join(
        cats.select(F.col("title").alias("parent"), F.col("depth").cast("int").alias("member_depth"),
                    F.col("is_seed").alias("member_is_seed"), F.col("head").alias("member_head"),
                    F.lit(True).alias("known")), "parent", "left",
    ).select("child", F.lit(False).alias("is_self"), F.lit(None).cast("int").alias("child_depth"),
             F.col("parent").alias("member"), "member_head", "member_depth", "member_is_seed", "known")
    if "headJ" in heuristics:  # red-link parents are not in cats: their heads are computed here (null in, null out)
        parents = with_head(parents.withColumn("red_link", F.when(F.col("known").isNull(), F.col("member"))),
                            "red_link", "red_head", spaced_hyphens=True)
        parents = parents.withColumn("member_head", F.coalesce("member_head", "red_head")).drop("red_link", "red_head")
    own = cats.where("status = 'pending'").select(
        F.col("title").alias("child"), F.lit(True).alias("is_self"), F.col("depth").cast("int").alias("child_depth"),
        F.col("title").alias("member"), F.col("head").alias("member_head"),
        F.lit(None).cast("int").alias("member_depth"), F.lit(None).cast("boolean").alias("member_is_seed"))
    # all shuffle partitions, uncoalesced: the tasks are Python-bound and should spread over every core
    tasks = int(cats.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    rows = parents.drop("known").unionByName(own).repartition(tasks, "child").sortWithinPartitions("child")
    # checkpointed: both branches below read it, and would otherwise run the Python tasks twice
    found = rows.mapInArrow(lambda batches: propose_in_order(batches, heuristics), PROPOSAL_SCHEMA).localCheckpoint()
    # a shared head counts only when a category of that name lies above the child
    above = (found.where("key is not null")
             .join(cats.select(F.col("title").alias("key"), F.col("depth").alias("key_depth")), "key")
             .where(F.col("key_depth") < F.col("child_depth")))
    return found.where("key is null").unionByName(above.drop("key_depth")).drop("key")


# ----------------------------------------------------------------- public API


def finish_in_order(batches, nearest: bool):
    """Label the last categories in one task, in dependency (Kahn) order: the rounds' rule, in numpy.

    ``batches``: Arrow record batches of the remaining categories' proposals
    ``child, target, rank`` with the target's ``mask, hops`` when it is labeled
    already; a target that is itself a remaining category is pending (one
    with no proposals is not, as it can take no labels). A category is labeled
    once all its pending targets are: from its first
    rank with a labeled target (with ``nearest``, only that rank's nearest
    targets), as ``resolve`` does. Categories that lead into a cycle of
    proposals are labeled last, from what the others found. Yields one batch:
    ``title, mask, hops, in_cycle`` for every category labeled or in a cycle.

    Titles become integer ids and every category whose pending targets are
    labeled is resolved in one vectorised step, so the task holds a few
    arrays per proposal, not Python objects: on 1.5M proposals 2.7 s and
    0.5 GB, against 15 s and 0.9 GB as dicts and lists, one category at a time.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = pa.schema([("title", pa.string()), ("mask", pa.int64()), ("hops", pa.int32()), ("in_cycle", pa.bool_())])
    batches = [b for b in batches if b.num_rows]
    if not batches:
        yield pa.RecordBatch.from_pylist([], schema=schema)
        return
    table = pa.Table.from_batches(batches)
    names = pc.unique(pa.chunked_array(table["child"].chunks + table["target"].chunks))
    child = pc.index_in(table["child"], value_set=names).to_numpy()
    target = pc.index_in(table["target"], value_set=names).to_numpy()
    rank = table["rank"].to_numpy()
    given = pc.is_valid(table["mask"]).to_numpy(zero_copy_only=False)
    n = len(names)
    labeled = np.zeros(n, bool)
    label_mask = np.zeros(n, np.int64)
    label_hops = np.zeros(n, np.int32)
    labeled[target[given]] = True
    label_mask[target[given]] = pc.fill_null(table["mask"], 0).to_numpy()[given]
    label_hops[target[given]] = pc.fill_null(table["hops"], 0).to_numpy()[given]
    is_category = np.zeros(n, bool)
    is_category[child] = True

    def runs(sorted_ids):
        """Where each id's rows start in rows sorted by id (a CSR index over all ids)."""
        return np.searchsorted(sorted_ids, np.arange(n + 1))

    def rows_of(starts, ids):
        """Positions of the rows of ``ids`` in rows indexed by ``runs``, id after id."""
        counts = starts[ids + 1] - starts[ids]
        return np.repeat(starts[ids] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())

    order = np.lexsort((rank, child))  # proposals by child, then rank
    p_child, p_target, p_rank = child[order], target[order], rank[order]
    p_starts = runs(p_child)
    pending = is_category[target] & ~labeled[target]
    waits = np.bincount(child[pending], minlength=n)
    order = np.argsort(target[pending], kind="stable")  # pending proposals by target
    d_child, d_starts = child[pending][order], runs(target[pending][order])

    def resolve(ids):
        """(ids with a result, mask, hops) from the labels known now, as the rounds' resolve."""
        rows = rows_of(p_starts, ids)
        rows = rows[labeled[p_target[rows]]]
        if not rows.size:
            return rows, rows.astype(np.int64), rows.astype(np.int32)
        who, rk, tg = p_child[rows], p_rank[rows], p_target[rows]
        new_child = np.r_[True, who[1:] != who[:-1]]  # rows are in (child, rank) order
        group = np.cumsum(new_child) - 1
        keep = rk == rk[new_child][group]  # the first rank with a labeled target
        who, group, mask, hops = who[keep], group[keep], label_mask[tg[keep]], label_hops[tg[keep]]
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        nearest_hops = np.minimum.reduceat(hops, starts)
        if nearest:
            mask = np.where(hops == np.repeat(nearest_hops, np.diff(np.r_[starts, len(hops)])), mask, 0)
        return who[starts], np.bitwise_or.reduceat(mask, starts), (nearest_hops + 1).astype(np.int32)

    out = []
    ready = np.flatnonzero(is_category & (waits == 0))
    while ready.size:
        ids, mask, hops = resolve(ready)
        labeled[ids], label_mask[ids], label_hops[ids] = True, mask, hops
        out.append((ids, mask, hops, np.zeros(len(ids), bool), np.ones(len(ids), bool)))
        dependents = d_child[rows_of(d_starts, ready)]
        np.subtract.at(waits, dependents, 1)
        dependents = np.unique(dependents)
        ready = dependents[waits[dependents] == 0]
    stuck = np.flatnonzero(is_category & (waits > 0))
    ids, mask, hops = resolve(stuck)  # all from the same labels, as in the last pass
    has = np.isin(stuck, ids)
    stuck_mask, stuck_hops = np.zeros(len(stuck), np.int64), np.zeros(len(stuck), np.int32)
    stuck_mask[has], stuck_hops[has] = mask, hops  # resolve keeps the order of stuck
    out.append((stuck, stuck_mask, stuck_hops, np.ones(len(stuck), bool), has))
    ids, mask, hops, in_cycle, valid = (np.concatenate(c) for c in zip(*out))
    yield pa.RecordBatch.from_arrays(
        [names.take(pa.array(ids)).cast(pa.string()), pa.array(mask, mask=~valid), pa.array(hops, mask=~valid),
         pa.array(in_cycle)], schema=schema)


def category_masks(spark, depth_df, edges_df, taxonomy: Taxonomy, heuristics, counts: dict | None = None,
                    tail_proposals: int = 0):
    """``title, depth, mask`` for every category of depth_df; flat labels as a mask.

    ``counts``, when given, receives the number of rounds and of categories
    whose proposals lead into a cycle. Each labeled category also carries its
    hops to the nearest seed; the ``refined`` labeler keeps only the labels of
    the proposals at the fewest hops. Once the categories still to label have
    at most ``tail_proposals`` proposals, ``finish_in_order`` labels them in
    one task. A labeler with rules (``refined-rules``) adds what its parent
    rules give (``pipeline.labels.rules``) at the end, unpropagated.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    check_size(taxonomy)
    labeler = parse_labeler(heuristics)
    hs, nearest = list(labeler.heuristics), labeler.nearest
    rules = LabelRules.load(taxonomy) if labeler.rules else None
    seeds = spark.createDataFrame(list(seed_masks(taxonomy).items()), "title string, seed_mask long")
    # heads before the shuffle: after it, Spark coalesces a small graph into one task
    nodes = with_head(depth_df.select("title", F.coalesce(F.col("hidden"), F.lit(False)).alias("hidden"), "depth"),
                      "title", "head", spaced_hyphens=True).dropDuplicates(["title"])
    cats = nodes.join(F.broadcast(seeds), "title", "left")
    null_head = F.col("head").rlike(P_NUMBER) | F.col("head").isin(sorted(NULL_HEADS))
    cats = cats.withColumn("is_seed", F.col("seed_mask").isNotNull()).withColumn(
        "status",
        F.when(F.col("depth").isNull(), "none")
        .when(F.col("is_seed"), "seed")
        .when(F.col("hidden") | null_head, "none")
        .otherwise("pending"),
    ).localCheckpoint()
    edges = edges_df.select("child", "parent").where("child is not null and parent is not null")  # duplicates: see propose_in_order
    props = _proposals(cats, edges, hs).localCheckpoint()

    known = cats.where("status = 'seed' and depth is not null").select(
        "title", F.col("seed_mask").alias("mask"), F.lit(0).alias("hops"))
    known = known.localCheckpoint()
    per_child = props.groupBy("child").agg(F.count(F.lit(1)).alias("n_props"))
    unresolved = (cats.where("status = 'pending'").select("title")
                  .join(per_child.withColumnRenamed("child", "title"), "title", "left")
                  .select("title", F.coalesce("n_props", F.lit(0)).alias("n_props")).localCheckpoint())
    left = unresolved.agg(F.sum("n_props")).first()[0] or 0

    def resolve(children):
        """Labels of these categories from the labels known so far (unknown targets give nothing)."""
        found = (
            props.join(children.select(F.col("title").alias("child")), "child")
            .join(known.select(F.col("title").alias("target"), "mask", "hops"), "target")
        )
        if nearest:
            found = (found.withColumn("nearest", F.min("hops").over(Window.partitionBy("child", "rank")))
                     .where("hops = nearest"))
        return (
            found.groupBy("child", "rank").agg(F.expr("bit_or(mask)").alias("mask"), (F.min("hops") + 1).alias("hops"))
            .groupBy("child").agg(F.min_by(F.struct("mask", "hops"), "rank").alias("best"))
            .select(F.col("child").alias("title"), "best.mask", "best.hops")
        )

    # Rounds: label every category whose proposals are all labeled already.
    # Without parent queries this is depth order, one level per round.
    rounds = 0
    if left > tail_proposals:  # proposals to categories that are themselves still to be labeled
        deps = props.join(unresolved.select(F.col("title").alias("target")), "target").select("child", "target")
        deps = deps.distinct().localCheckpoint()
    while left > tail_proposals:
        blocked = deps.join(unresolved.select(F.col("title").alias("target")), "target").select(
            F.col("child").alias("title"))
        ready = unresolved.join(blocked, "title", "left_anti").localCheckpoint()
        n_ready, ready_props = ready.agg(F.count(F.lit(1)), F.sum("n_props")).first()
        if not n_ready:
            break
        rounds += 1
        left -= ready_props or 0
        known = known.unionByName(resolve(ready)).localCheckpoint()
        unresolved = unresolved.join(ready.select("title"), "title", "left_anti").localCheckpoint()
    if left <= tail_proposals:
        # The rest, in one task: its proposals, with what is known of their targets.
        # Without rounds every proposal is still to resolve and only the seeds are known.
        rest = props if not rounds else props.join(unresolved.select(F.col("title").alias("child")), "child")
        targets = known.select(F.col("title").alias("target"), "mask", "hops")
        rest = (rest.join(targets if rounds else F.broadcast(targets), "target", "left")
                .select("child", "target", "rank", "mask", "hops"))
        done = rest.repartition(1).mapInArrow(
            lambda batches: finish_in_order(batches, nearest),
            "title string, mask long, hops int, in_cycle boolean").localCheckpoint()
        in_cycles = done.where("in_cycle").count()
        known = known.unionByName(done.where("mask is not null").select("title", "mask", "hops")).localCheckpoint()
    else:
        # What is left leads into a cycle of proposals: it takes labels only from
        # the proposals that do not.
        in_cycles = unresolved.count()
        known = known.unionByName(resolve(unresolved)).localCheckpoint()
    log.info("labeled in %d rounds%s; %d categories lead into cycles of proposals", rounds,
             " and one task" if left <= tail_proposals else "", in_cycles)
    if counts is not None:
        counts.update(rounds=rounds, categories_leading_into_cycles=in_cycles)
    out = (cats.select("title", "depth").join(known, "title", "left")
           .select("title", "depth", F.coalesce(F.col("mask"), F.lit(0).cast("long")).alias("mask")))
    if rules is not None:  # after the traversal: what the parent rules add is not propagated
        out = (out.join(rules.category_rule_masks(edges), "title", "left")
               .select("title", "depth", F.col("mask").bitwiseOR(F.coalesce("rule_mask", F.lit(0).cast("long")))
                       .alias("mask")))
    return out


def label_categories(spark, depth_df, edges_df, taxonomy: Taxonomy, heuristics, counts: dict | None = None,
                     tail_proposals: int = 0) -> "DataFrame":
    """Labels of every category: ``title, depth, labels, labels_hier`` (taxonomy order).

    ``depth_df`` needs ``title, hidden, depth``; ``edges_df`` ``child, parent``;
    ``heuristics`` is e.g. ``"headJ+depth"``, ``"refined"`` or a list of names; ``counts``
    (optional) receives ``rounds`` and ``categories_leading_into_cycles``;
    ``tail_proposals``: see ``LabelConfig.tail_proposals`` (0: Spark rounds only).
    """
    masks = category_masks(spark, depth_df, edges_df, taxonomy, heuristics, counts, tail_proposals).localCheckpoint()
    return _with_labels(masks, taxonomy, ["title", "depth"])[0]


def _with_labels(masks, taxonomy: Taxonomy, columns: list[str]):
    """``columns`` of ``masks`` (read twice: pass it checkpointed) with their label arrays, and its label sets."""
    sets = label_sets(masks, taxonomy).localCheckpoint()
    return with_label_arrays(masks, sets).select(*columns, "labels", "labels_hier"), sets


def file_masks(file_links_df, category_labels_df, taxonomy: Taxonomy, rules: LabelRules | None = None) -> "DataFrame":
    """``file_id, file_title, mask`` for every file of file_links: the union of its categories' labels,
    and what the format rules of ``rules`` add to it (from the file's title).

    ``category_labels_df``: ``title, labels`` (the stage's written output: Spark sizes the join from
    its files, and broadcasts it while it is small). A file whose categories give nothing (red links,
    unconnected, unlabeled) has mask 0.
    """
    from pyspark.sql import functions as F

    cat_masks = category_labels_df.select(
        F.col("title").alias("category"), labels_to_mask(F.col("labels"), taxonomy).alias("mask"))
    files = (
        file_links_df.select("file_id", "file_title", "category")
        .join(cat_masks, "category", "left")
        .groupBy("file_id", "file_title")
        .agg(F.expr("bit_or(coalesce(mask, 0L))").alias("mask"))
    )
    if rules is not None and rules.format_rules:
        files = files.select("file_id", "file_title", F.col("mask").bitwiseOR(
            rules.file_rule_mask(F.col("file_title"), F.col("mask"))).alias("mask"))
    return files


def label_files(file_links_df, category_labels_df, taxonomy: Taxonomy, rules: LabelRules | None = None) -> "DataFrame":
    """Labels of every file of file_links: ``file_id, file_title, labels, labels_hier`` (empty arrays: no labels)."""
    files = file_masks(file_links_df, category_labels_df, taxonomy, rules).localCheckpoint()
    return _with_labels(files, taxonomy, ["file_id", "file_title"])[0]


# ----------------------------------------------------------------- stage


def _read(spark, path: str, columns, what: str):
    require_input(STAGE, path, what)
    try:
        df = spark.read.parquet(path)
    except Exception as e:  # unreadable Parquet
        raise StageError(STAGE, path, f"cannot read {what}: {e}") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StageError(STAGE, path, f"{what} lacks column(s) {missing} (has {df.columns})")
    return df


def missing_seeds(depth_df, taxonomy: Taxonomy) -> list[str]:
    """Seed categories of the taxonomy that are not category pages of the graph."""
    from pyspark.sql import functions as F

    seeds = sorted(taxonomy.seed_labels())
    present = {r[0] for r in depth_df.where(F.col("title").isin(seeds)).select("title").collect()}
    return sorted(s for s in taxonomy.seed_labels() if s not in present)


def run(settings: Settings) -> dict:
    from pyspark.sql import functions as F

    from pipeline.orchestration.spark import get_spark

    layout = Layout.from_settings(settings)
    taxonomy = Taxonomy.load(settings.label.taxonomy)
    heuristics = settings.label.heuristics.strip()
    labeler = parse_labeler(heuristics)  # an unknown name, or rules this taxonomy lacks, fail here, before Spark starts
    rules = LabelRules.load(taxonomy) if labeler.rules else None
    human = None
    if settings.label.human_labels:  # a bad table fails here too, before any output is replaced
        human = label_quality.read_human_labels(settings.label.human_labels, taxonomy)
    spark = get_spark(settings, STAGE)
    depth_df = _read(spark, layout.category_depth, DEPTH_COLUMNS, "graph/category_depth")
    edges_df = _read(spark, layout.ingest("category_edges"), EDGE_COLUMNS, "ingest/category_edges")
    links_df = _read(spark, layout.ingest("file_links"), FILE_COLUMNS, "ingest/file_links")

    missing = missing_seeds(depth_df, taxonomy)
    if missing:
        warnings.warn(f"[{STAGE}] taxonomy {taxonomy.version} seed categories not in the graph: {missing}",
                      MissingSeedsWarning, stacklevel=2)
    root_rows = depth_df.where(depth_df.title == settings.label.root).select("depth").collect()
    if not root_rows or root_rows[0][0] is None:
        raise StageError(STAGE, layout.category_depth, f"root category {settings.label.root!r} has no depth")

    counts: dict = {}
    masks = category_masks(spark, depth_df, edges_df, taxonomy, heuristics, counts,
                           settings.label.tail_proposals).localCheckpoint()
    cats, cat_sets = _with_labels(masks, taxonomy, ["title", "depth"])
    cat_path = write_spark(cats.sortWithinPartitions("title"), layout.labels("category_labels"))
    files = file_masks(links_df, spark.read.parquet(cat_path), taxonomy, rules).localCheckpoint()
    files, file_sets = _with_labels(files, taxonomy, ["file_id", "file_title"])
    file_path = write_spark(files.sortWithinPartitions("file_id"), layout.labels("file_labels"))

    per_column = combo_stats(file_sets, taxonomy, {"labels": "mask", "labels_hier": "mask_hier"})
    sizes = cat_sets.agg(F.sum("rows").alias("n"), F.sum(F.when(F.col("mask") != 0, F.col("rows"))).alias("labeled")).first()
    stats = {
        "taxonomy": taxonomy.version,
        "heuristics": heuristics,
        "labels": taxonomy.names,
        "flat": per_column["labels"],
        "hierarchical": per_column["labels_hier"],
        "categories": int(sizes["n"] or 0),
        "categories_labeled": int(sizes["labeled"] or 0),
        **counts,
        "missing_seeds": missing,
    }
    agreement = None
    if human is not None:
        agreement = label_quality.score(label_quality.run_file_labels(spark, file_path, human), human, taxonomy)
        stats["human_agreement"] = {"human_labels": settings.label.human_labels, **agreement}
    stats_path = write_json(layout.labels("stats.json"), stats)
    return {
        "stage": STAGE,
        "category_labels": cat_path,
        "file_labels": file_path,
        "stats": stats_path,
        "categories": stats["categories"],
        "categories_labeled": stats["categories_labeled"],
        "files": stats["flat"]["files"],
        "files_unlabeled_share": stats["flat"]["unlabeled_share"],
        "categories_leading_into_cycles": counts["categories_leading_into_cycles"],
        "missing_seeds": missing,
        # logged as MLflow metrics with the stage's run (per topic: in stats.json)
        **({"human_agreement": {k: v for k, v in agreement.items() if k != "per_topic"}} if agreement else {}),
    }
