"""Label sets as bit masks in Spark columns, and the label statistics computed on them.

Bit i is the i-th label in taxonomy order: a union is ``bit_or``, the hierarchical closure an OR of
per-label ancestor masks, and arrays of names are built only at the end, already in taxonomy order.
The ``label`` stage labels the graph with them; its statistics and the study's dataset metrics (one
definition of cardinality, imbalance and SCUMBLE) are one aggregation over a table's masks.
"""

from __future__ import annotations

from pipeline.labels.taxonomy import Taxonomy


def check_size(taxonomy: Taxonomy) -> None:
    if len(taxonomy.names) > 63:
        raise ValueError(f"taxonomy {taxonomy.version} has {len(taxonomy.names)} labels; label masks hold at most 63")


def ancestor_masks(taxonomy: Taxonomy) -> list[int]:
    index = {n: i for i, n in enumerate(taxonomy.names)}
    return [sum(1 << index[a] for a in taxonomy.ancestors(n)) for n in taxonomy.names]


def seed_masks(taxonomy: Taxonomy) -> dict[str, int]:
    index = {n: i for i, n in enumerate(taxonomy.names)}
    return {seed: sum(1 << index[n] for n in labels) for seed, labels in taxonomy.seed_labels(hierarchical=False).items()}


def long_lit(value: int):
    from pyspark.sql import functions as F

    return F.lit(value).cast("long")


def per_bit(mask_col, n: int, value):
    """``value(bit_set, i)`` for each of the mask's ``n`` low bits, as an array.

    The mask is evaluated once per row, as ``array_repeat``'s argument: a lambda
    that named the mask column itself would let Spark inline the expression that
    computes it into the lambda (CollapseProject), which then ran once per label
    (seven times slower for label arrays and their hierarchical closure).
    """
    from pyspark.sql import functions as F

    def bit_set(m, i):
        return F.call_function("shiftright", m, i).bitwiseAND(long_lit(1)) != 0

    return F.transform(F.array_repeat(mask_col, n), lambda m, i: value(bit_set(m, i), i))


def mask_to_labels(mask_col, taxonomy: Taxonomy):
    """A label mask -> the label names, in taxonomy order.

    One lambda over the taxonomy's labels: a flat array of one ``when`` per
    label takes Spark seconds to compile for every query, which small runs
    (and the tests) pay many times over.
    """
    from pyspark.sql import functions as F

    names = F.array(*[F.lit(n) for n in taxonomy.names])
    return F.array_compact(per_bit(mask_col, len(taxonomy.names), lambda is_set, i: F.when(is_set, F.get(names, i))))


def labels_to_mask(labels_col, taxonomy: Taxonomy):
    """Label names -> a mask (unknown names are ignored).

    A fold over the (few) labels of each row, not over all labels of the taxonomy.
    """
    from pyspark.sql import functions as F

    bits = F.create_map(*[x for i, n in enumerate(taxonomy.names) for x in (F.lit(n), long_lit(1 << i))])
    return F.aggregate(
        F.coalesce(labels_col, F.array().cast("array<string>")), long_lit(0),
        lambda acc, label: acc.bitwiseOR(F.coalesce(F.element_at(bits, label), long_lit(0))),
    )


def hier_mask(mask_col, taxonomy: Taxonomy):
    """Close a label mask under ancestors: the OR of its labels' ancestor masks."""
    from pyspark.sql import functions as F

    ancestors = F.array(*[long_lit(a) for a in ancestor_masks(taxonomy)])
    own = per_bit(mask_col, len(taxonomy.names),
                  lambda is_set, i: F.when(is_set, F.get(ancestors, i)).otherwise(long_lit(0)))
    return F.aggregate(own, long_lit(0), lambda acc, a: acc.bitwiseOR(a))


def label_sets(df, taxonomy: Taxonomy, mask: str = "mask"):
    """One row per distinct label set of ``df``: ``mask, rows, mask_hier, labels, labels_hier``.

    Spark runs higher-order functions interpreted, so building the arrays row by
    row cost about 4 s per million rows; a table holds few distinct sets
    (20,073 among the 1M categories of the label benchmark), so they are built
    once per set. ``rows`` (rows of ``df`` with that set) is what
    ``combo_stats`` counts.
    """
    from pyspark.sql import functions as F

    sets = df.groupBy(F.col(mask).alias("mask")).agg(F.count(F.lit(1)).alias("rows"))
    sets = sets.withColumn("mask_hier", hier_mask(F.col("mask"), taxonomy))
    return sets.withColumn("labels", mask_to_labels(F.col("mask"), taxonomy)).withColumn(
        "labels_hier", mask_to_labels(F.col("mask_hier"), taxonomy))


def with_label_arrays(df, sets, mask: str = "mask"):
    """``df`` plus ``labels, labels_hier`` of its ``mask`` column, looked up in ``label_sets(df)``.

    ``sets`` is broadcast: it has one row per label set that occurs, not per row.
    """
    from pyspark.sql import functions as F

    return df.join(F.broadcast(sets.select(F.col("mask").alias(mask), "labels", "labels_hier")), mask, "left")


def label_stats(file_labels_df, taxonomy: Taxonomy, columns=("labels",)) -> dict:
    """Label statistics of each of ``columns`` (label arrays) of a table: ``combo_stats`` of its label combinations."""
    from pyspark.sql import functions as F

    masks = [f"m{j}" for j in range(len(columns))]
    combos = (file_labels_df.select(*[labels_to_mask(F.col(c), taxonomy).alias(m) for c, m in zip(columns, masks)])
              .groupBy(*masks).agg(F.count(F.lit(1)).alias("rows")).localCheckpoint())
    return combo_stats(combos, taxonomy, dict(zip(columns, masks)))


def combo_stats(combos, taxonomy: Taxonomy, columns: dict[str, str]) -> dict:
    """Label statistics from a table of label combinations: mask columns and ``rows`` (files with that combination).

    ``columns`` maps each statistic's name to its mask column.
    Per column: images per label, labels per image (mean), share of positive labels
    (positives / (files x labels)), meanIR (mean over present labels of
    IRLbl = max count / count), SCUMBLE (Charte et al. 2014: mean over
    labeled files of 1 - geometric mean / arithmetic mean of their labels'
    IRLbl), share of files with no label. The statistics are weighted sums
    over the few combinations.
    """
    from pyspark.sql import functions as F

    names = taxonomy.names
    files = F.col("rows")
    aggs = [F.sum(files).alias("n")]
    for m in columns.values():
        aggs += [F.sum(F.when(F.col(m) == 0, files).otherwise(0)).alias(f"{m}_unlabeled"),
                 F.sum(F.bit_count(m) * files).alias(f"{m}_positives")]
        aggs += [F.sum(F.shiftright(m, i).bitwiseAND(F.lit(1)) * files).alias(f"{m}_c{i}") for i in range(len(names))]
    row = combos.agg(*aggs).first()
    n = int(row["n"] or 0)
    out, scumbles = {}, []
    for column, m in columns.items():
        counts = {name: int(row[f"{m}_c{i}"] or 0) for i, name in enumerate(names)}
        present = [c for c in counts.values() if c > 0]
        max_count = max(present) if present else 0
        positives = int(row[f"{m}_positives"] or 0)
        out[column] = {
            "files": n,
            "images_per_label": counts,
            "labels_per_image_mean": positives / n if n else 0.0,
            "positive_share": positives / (n * len(names)) if n else 0.0,
            "meanIR": (sum(max_count / c for c in present) / len(present)) if present else None,
            "labels_absent": [nm for nm in names if counts[nm] == 0],
            "unlabeled_share": (int(row[f"{m}_unlabeled"] or 0) / n) if n else 0.0,
            "SCUMBLE": None,
        }
        if present:
            ir = [max_count / counts[nm] if counts[nm] > 0 else 0.0 for nm in names]
            mask = F.col(m)
            irs = F.array(*[F.lit(x) for x in ir])
            vals = F.array_compact(per_bit(mask, len(names), lambda is_set, i: F.when(is_set, F.get(irs, i))))
            k = F.size(vals)
            log_sum = F.aggregate(vals, F.lit(0.0), lambda a, v: a + F.log(v))
            lin_sum = F.aggregate(vals, F.lit(0.0), lambda a, v: a + v)
            scumble = F.lit(1.0) - F.exp(log_sum / k) / (lin_sum / k)
            # over labeled files only
            scumbles.append((F.sum(F.when(mask != 0, scumble * files)) / F.sum(F.when(mask != 0, files))).alias(column))
    if scumbles:
        for column, value in combos.agg(*scumbles).first().asDict().items():
            out[column]["SCUMBLE"] = float(value) if value is not None else None
    return out
