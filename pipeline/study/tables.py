"""The data study of one run, from its Parquet outputs, as small pandas DataFrames.

Spark does every aggregation; only results of a few dozen rows (per label, per
label pair, the top N of something) reach the driver, so the same calls work
on the full 3.9M images. The tables follow the master thesis behind the product
(Bernat 2023): Table 3.1 (``dataset_metrics``), Figures 3.4 / 5.1
(``label_distribution``), Table 5.1 (``label_quality`` + ``quality_summary``),
Figure 5.2 (``frequency_vs_auc``), Figure 5.3 (``pr_curves``), Figures 5.4 to
5.10 (``examples``), plus ``cooccurrence``, ``missed_by_graph``,
``topics_per_article``, ``compare_runs`` (what changed since the previous dump) and
``compare_labelers`` (what a labeler such as ``refined`` changed against ``headJ+depth``).

In a notebook::

    from pipeline.config import load_settings
    from pipeline.orchestration.spark import get_spark
    from pipeline.study import tables as study

    settings = load_settings({"paths.dump_date": "20260301"})
    run = study.load(get_spark(settings, "notebook"), settings)
    study.dataset_metrics(run)            # Table 3.1
    study.label_quality(run).head()       # per label, on the test split
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from pipeline.labels.taxonomy import Taxonomy, slug
from pipeline.labels.traversal import BASELINE
from pipeline.lake.atomic import exists, read_json, require_input
from pipeline.lake.layout import Layout
from pipeline.orchestration.stages import ORDER

TOP_K = 5
STAGE = "report"


@dataclasses.dataclass
class Run:
    """The outputs of one run (dump date, taxonomy, heuristics) as Spark DataFrames."""

    layout: Layout
    taxonomy: Taxonomy
    images: object  # wit images: one row per English Commons image, graph labels, split, pages
    index: object  # image index: labels, multi-hot targets, where the bytes are in the store
    predictions: object | None  # p_<slug>, predicted; None before infer
    thresholds: list[float] | None  # the predicting model's per-label thresholds
    hierarchical: bool = True  # which graph labels the model was trained on
    summaries: dict = dataclasses.field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return self.taxonomy.names

    @property
    def target(self) -> str:
        return "labels_hier" if self.hierarchical else "labels"


def model_thresholds(settings, model_uri: str, names: list[str]) -> list[float]:
    """The per-label thresholds the model ``model_uri`` predicts with (its thresholds.json artifact)."""
    import json
    import os

    import mlflow

    from pipeline.orchestration import tracking

    tracking.configure(settings)
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri.rstrip('/')}/artifacts/thresholds.json")
    with open(local if os.path.isfile(local) else os.path.join(local, "thresholds.json"), encoding="utf-8") as f:
        thr = json.load(f)
    if list(thr["labels"]) != list(names):
        raise ValueError(f"{model_uri} has thresholds for other labels than taxonomy {names[:3]}...")
    return [float(t) for t in thr["thresholds"]]


def load(spark, settings, with_predictions: bool = True) -> Run:
    """The run of ``settings`` (dump date, taxonomy, heuristics); predictions and thresholds if present."""
    from pyspark.sql import functions as F

    layout = Layout.from_settings(settings)
    taxonomy = Taxonomy.load(settings.label.taxonomy)
    images = spark.read.parquet(require_input(STAGE, layout.wit_images, "WIT images (from the wit stage)"))
    index = spark.read.parquet(require_input(STAGE, layout.image_index, "image index (from the shard stage)"))
    predictions, thresholds = None, None
    if with_predictions and exists(layout.predictions):
        predictions = spark.read.parquet(layout.predictions)
        uris = [r[0] for r in predictions.select("model_uri").where(F.col("model_uri").isNotNull())
                .distinct().limit(2).collect()]
        if len(uris) != 1:
            raise ValueError(f"{layout.predictions} names {len(uris)} models; a study needs exactly one")
        thresholds = model_thresholds(settings, uris[0], taxonomy.names)
    summaries = {s: read_json(layout.summary(s)) for s in ORDER if exists(layout.summary(s))}
    return Run(layout, taxonomy, images, index, predictions, thresholds, settings.train.hierarchical, summaries)


# ---------------------------------------------------------------- Table 3.1


def label_counts(df, column: str, names: list[str]) -> dict[str, int]:
    """Images per label of an array<string> column, every label present (zero included)."""
    from pyspark.sql import functions as F

    found = {r["label"]: r["count"] for r in df.select(F.explode(column).alias("label")).groupBy("label").count()
             .collect()}
    return {n: int(found.get(n, 0)) for n in names}


def _metrics_of(stats: dict) -> dict:
    n, counts = stats["files"], stats["images_per_label"]
    present = [c for c in counts.values() if c > 0]
    return {"images": n, "labels": len(counts), "labels_with_images": len(present),
            "labeled_images": round(n * (1 - stats["unlabeled_share"])),
            "labels_per_image": stats["labels_per_image_mean"], "positive_label_ratio": stats["positive_share"],
            "mean_ir": stats["meanIR"] if present else float("nan"),
            "max_ir": max(present) / min(present) if present else float("nan"),
            "scumble": stats["SCUMBLE"] if stats["SCUMBLE"] is not None else float("nan")}


def dataset_metrics(run: Run, split: str | None = None) -> pd.DataFrame:
    """Thesis Table 3.1, flat and hierarchical graph labels: images, labels, labels per image
    (cardinality), positive-label ratio (density), mean and max imbalance ratio, SCUMBLE.

    IR of a label = images of the most frequent label / its images (labels without images left
    out). SCUMBLE (Charte et al. 2014) over the labels each image has: mean over labeled images of
    1 - geometric mean / arithmetic mean of their IRs (0 for an image with one label).

    >>> study.dataset_metrics(run)  # doctest: +SKIP
                  images  labels  labels_with_images  labeled_images  labels_per_image ...
    flat            2834      31                  31            2590              1.41 ...
    hierarchical    2834      31                  31            2590              2.73 ...
    """
    df = run.images if split is None else run.images.where(run.images.split == split)
    from pipeline.labels.masks import label_stats

    stats = label_stats(df, run.taxonomy, ("labels", "labels_hier"))  # the label stage's statistics, on the images
    rows = {"flat": _metrics_of(stats["labels"]), "hierarchical": _metrics_of(stats["labels_hier"])}
    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------- Figures 3.4 / 5.1


def _ancestor_map(taxonomy: Taxonomy):
    from pyspark.sql import functions as F

    pairs = []
    for name in taxonomy.names:
        above = [a for a in taxonomy.ancestors(name) if a != name]  # ancestors() includes the label itself
        pairs += [F.lit(name), F.array(*[F.lit(a) for a in above]).cast("array<string>")]
    return F.create_map(*pairs)


def most_specific(column, taxonomy: Taxonomy):
    """Spark column: the labels of ``column`` that are no other label's ancestor (flat from hierarchical)."""
    from pyspark.sql import functions as F

    ancestors = _ancestor_map(taxonomy)
    covered = F.flatten(F.transform(column, lambda x: F.coalesce(ancestors[x], F.array().cast("array<string>"))))
    return F.array_except(column, covered)


def label_distribution(run: Run) -> pd.DataFrame:
    """Figures 3.4 / 5.1: images per label, graph labels and predictions, flat and hierarchical.

    >>> study.label_distribution(run).sort_values("graph_hier").tail(3)  # doctest: +SKIP
    """
    from pyspark.sql import functions as F

    out = pd.DataFrame({"label": run.names})
    out["graph_flat"] = out["label"].map(label_counts(run.images, "labels", run.names))
    out["graph_hier"] = out["label"].map(label_counts(run.images, "labels_hier", run.names))
    if run.predictions is not None:
        predicted = run.predictions.where(F.col("predicted").isNotNull())
        out["predicted_hier"] = out["label"].map(label_counts(predicted, "predicted", run.names))
        flat = predicted.select(most_specific(F.col("predicted"), run.taxonomy).alias("flat"))
        out["predicted_flat"] = out["label"].map(label_counts(flat, "flat", run.names))
    return out


def labels_per_image(run: Run) -> pd.DataFrame:
    """How many images have k graph labels (flat and hierarchical) and k predicted labels."""
    from pyspark.sql import functions as F

    parts = []
    for name, df, col in [("graph_flat", run.images, "labels"), ("graph_hier", run.images, "labels_hier")] + (
            [("predicted", run.predictions.where(F.col("predicted").isNotNull()), "predicted")]
            if run.predictions is not None else []):
        counts = df.select(F.size(col).alias("k")).groupBy("k").count().toPandas()
        parts.append(counts.set_index("k")["count"].rename(name))
    return pd.concat(parts, axis=1).fillna(0).astype(int).sort_index()


# ---------------------------------------------------------------- Table 5.1, Figures 5.2 and 5.3


def _scored(run: Run, split: str):
    """(image_key, j, y, p) for the labeled, predicted images of ``split``: one row per image and label."""
    from pyspark.sql import functions as F

    if run.predictions is None:
        raise ValueError("this run has no predictions yet (run `infer`)")
    slugs = [slug(n) for n in run.names]
    preds = run.predictions.where((F.col("split") == split) & F.col("labeled") & F.col(f"p_{slugs[0]}").isNotNull())
    target = "multi_hot_hier" if run.hierarchical else "multi_hot"
    joined = preds.select("image_key", F.array(*[F.col(f"p_{s}") for s in slugs]).alias("p")).join(
        run.index.select("image_key", target), "image_key")
    return joined.select("image_key", F.posexplode("p").alias("j", "p"), target).select(
        "image_key", "j", "p", F.element_at(target, F.col("j") + 1).cast("int").alias("y"))


def _curve(scored):
    """Per label and distinct score, descending: the cumulative true positives and predictions."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    steps = scored.groupBy("j", "p").agg(F.sum("y").alias("pos"), F.count("*").alias("n"))
    w = Window.partitionBy("j").orderBy(F.col("p").desc()).rowsBetween(Window.unboundedPreceding, 0)
    return steps.withColumn("tp", F.sum("pos").over(w)).withColumn("k", F.sum("n").over(w))


def label_quality(run: Run, split: str = "test") -> pd.DataFrame:
    """Per label on ``split``: support, prevalence, AUC(PR) (average precision, as scikit-learn's
    ``average_precision_score``), and precision / recall at 0.5 and at the model's thresholds.

    >>> study.label_quality(run)[["label", "support", "auc_pr"]].head()  # doctest: +SKIP
    """
    from pyspark.sql import functions as F

    scored = _scored(run, split).cache()
    # (Spark column names are case-insensitive: the score is p, so the counts get longer names.)
    totals = scored.groupBy("j").agg(F.sum("y").alias("n_pos"), F.count("*").alias("n_all"))
    ap = (_curve(scored).join(totals, "j")
          .groupBy("j").agg(F.sum(F.when(F.col("n_pos") > 0,
                                         F.col("pos") / F.col("n_pos") * F.col("tp") / F.col("k"))).alias("auc_pr")))
    thr = run.thresholds or [0.5] * len(run.names)
    thr_col = F.element_at(F.array(*[F.lit(float(t)) for t in thr]), F.col("j") + 1)
    hits = scored.groupBy("j").agg(
        *[F.sum(((F.col("p") >= cut) & (F.col("y") == 1)).cast("int")).alias(f"tp_{name}") for name, cut in
          (("05", F.lit(0.5)), ("thr", thr_col))],
        *[F.sum((F.col("p") >= cut).cast("int")).alias(f"pp_{name}") for name, cut in
          (("05", F.lit(0.5)), ("thr", thr_col))])
    table = totals.join(ap, "j").join(hits, "j").toPandas().sort_values("j")
    scored.unpersist()
    out = pd.DataFrame({"label": [run.names[j] for j in table["j"]]})
    out["support"] = table["n_pos"].astype(int).to_numpy()
    out["prevalence"] = (table["n_pos"] / table["n_all"]).to_numpy()
    out["auc_pr"] = [a if p > 0 else float("nan") for a, p in zip(table["auc_pr"], table["n_pos"])]
    out["auc_pr_lift"] = out["auc_pr"] / out["prevalence"]
    out["threshold"] = [thr[j] for j in table["j"]]
    for name in ("05", "thr"):
        tp, pp = table[f"tp_{name}"].to_numpy(), table[f"pp_{name}"].to_numpy()
        out[f"precision_{name}"] = [t / q if q else 0.0 for t, q in zip(tp, pp)]
        out[f"recall_{name}"] = [t / p if p else 0.0 for t, p in zip(tp, table["n_pos"])]
    missing = [n for n in run.names if n not in set(out["label"])]
    if missing:  # no image of this split: every label still gets a row
        out = pd.concat([out, pd.DataFrame({"label": missing, "support": 0})], ignore_index=True)
    return out.set_index("label").loc[run.names].reset_index()


def train_frequency(run: Run) -> pd.Series:
    """Images per graph label (the model's target labels) in the train split."""
    df = run.images.where(run.images.split == "train")
    return pd.Series(label_counts(df, run.target, run.names), name="train_images")


def quality_summary(quality: pd.DataFrame, train_images: pd.Series, k: int = TOP_K) -> pd.DataFrame:
    """Table 5.1: macro AUC(PR), precision and recall over all labels, the k most frequent in train,
    and the rest; at 0.5 and at the per-label thresholds (labels without test support left out)."""
    top = set(train_images.sort_values(ascending=False, kind="mergesort").index[:k])
    groups = {"all labels": quality, f"top {k}": quality[quality["label"].isin(top)],
              "rest": quality[~quality["label"].isin(top)]}
    rows = {}
    for name, g in groups.items():
        g = g[g["support"] > 0]
        rows[name] = {"labels": len(g), "auc_pr": g["auc_pr"].mean(),
                      "precision_05": g["precision_05"].mean(), "recall_05": g["recall_05"].mean(),
                      "precision_thr": g["precision_thr"].mean(), "recall_thr": g["recall_thr"].mean()}
    return pd.DataFrame.from_dict(rows, orient="index")


def frequency_vs_auc(quality: pd.DataFrame, train_images: pd.Series, z: float = 1.5) -> pd.DataFrame:
    """Figure 5.2: train frequency against AUC(PR); ``outlier`` marks labels whose AUC(PR) is more than
    ``z`` standard deviations off the least-squares line over log10(frequency)."""
    import numpy as np

    out = quality[["label", "auc_pr", "support"]].copy()
    out["train_images"] = out["label"].map(train_images).fillna(0).astype(int)
    ok = out["auc_pr"].notna() & (out["train_images"] > 0)
    out["residual"] = float("nan")
    out["outlier"] = False
    if ok.sum() >= 3:
        x, y = np.log10(out.loc[ok, "train_images"].to_numpy(float)), out.loc[ok, "auc_pr"].to_numpy(float)
        slope, intercept = np.polyfit(x, y, 1)
        res = y - (slope * x + intercept)
        out.loc[ok, "residual"] = res
        sd = res.std()
        out.loc[ok, "outlier"] = np.abs(res) > z * sd if sd > 0 else False
    return out


def pr_curves(run: Run, split: str = "test", points: int = 100) -> pd.DataFrame:
    """Figure 5.3: precision-recall points per label (at most ``points`` per label), from the same
    cumulative counts as ``label_quality``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    scored = _scored(run, split)
    totals = scored.groupBy("j").agg(F.sum("y").alias("n_pos"))
    curve = _curve(scored).join(totals.where("n_pos > 0"), "j")
    w = Window.partitionBy("j").orderBy(F.col("p").desc())
    curve = curve.withColumn("i", F.row_number().over(w)).withColumn("m", F.count("*").over(Window.partitionBy("j")))
    step = F.greatest(F.lit(1), F.ceil(F.col("m") / points))
    picked = curve.where(((F.col("i") - 1) % step == 0) | (F.col("i") == F.col("m"))).select(
        "j", (F.col("tp") / F.col("n_pos")).alias("recall"), (F.col("tp") / F.col("k")).alias("precision"),
        F.col("p").alias("threshold")).toPandas()
    picked["label"] = [run.names[j] for j in picked["j"]]
    return picked.sort_values(["j", "recall", "threshold"], ascending=[True, True, False])[
        ["label", "recall", "precision", "threshold"]].reset_index(drop=True)


# ---------------------------------------------------------------- co-occurrence, examples, misses


def cooccurrence(run: Run, column: str = "labels") -> pd.DataFrame:
    """Images having both labels, label by label (the diagonal: images with the label)."""
    from pyspark.sql import functions as F

    pairs = (run.images.select("image_key", F.explode(column).alias("a"))
             .join(run.images.select("image_key", F.explode(column).alias("b")), "image_key")
             .groupBy("a", "b").count().toPandas())
    matrix = pd.DataFrame(0, index=run.names, columns=run.names)
    for a, b, c in pairs.itertuples(index=False):
        matrix.loc[a, b] = int(c)
    return matrix


def _candidates(run: Run, missed_only: bool, per_label: int, min_probability: float | None):
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if run.predictions is None:
        raise ValueError("this run has no predictions yet (run `infer`)")
    slugs = [slug(n) for n in run.names]
    thr = run.thresholds or [0.5] * len(run.names)
    cut = F.element_at(F.array(*[F.lit(float(max(t, min_probability or 0.0))) for t in thr]), F.col("j") + 1)
    names = F.array(*[F.lit(n) for n in run.names])
    rows = (run.predictions.where(F.col(f"p_{slugs[0]}").isNotNull())
            .select("image_key", "file_title", "predicted",
                    F.posexplode(F.array(*[F.col(f"p_{s}") for s in slugs])).alias("j", "probability"))
            .where(F.col("probability") >= cut)
            .join(run.images.select("image_key", F.col(run.target).alias("graph_labels")), "image_key")
            .withColumn("label", F.element_at(names, F.col("j") + 1)))
    if missed_only:
        rows = rows.where(~F.array_contains(F.coalesce("graph_labels", F.array().cast("array<string>")),
                                            F.col("label")))
    w = Window.partitionBy("j").orderBy(F.col("probability").desc(), F.col("image_key"))
    top = rows.withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= per_label)
    top = top.join(run.index.select("image_key", "shard", "offset", "size"), "image_key", "left")
    out = top.select("label", "rank", "image_key", "file_title", "probability", "graph_labels", "predicted",
                     "shard", "offset", "size").toPandas()
    for col in ("predicted", "graph_labels"):  # numpy arrays from Arrow: plain lists
        out[col] = [list(v) if v is not None else [] for v in out[col]]
    out["found_not_in_graph"] = [sorted(set(p) - set(g)) for p, g in zip(out["predicted"], out["graph_labels"])]
    order = {n: i for i, n in enumerate(run.names)}
    return out.sort_values(["label", "rank"], key=lambda s: s.map(order) if s.name == "label" else s) \
        .reset_index(drop=True)


def examples(run: Run, per_label: int = 6) -> pd.DataFrame:
    """Figures 5.4 to 5.10: per label, the images the model predicts it for with the highest
    probability (ties by image_key: the same images every time), with their graph labels,
    predicted labels, and those predicted but not in the graph (``found_not_in_graph``)."""
    return _candidates(run, False, per_label, None)


def missed_by_graph(run: Run, per_label: int = 10, min_probability: float = 0.5) -> pd.DataFrame:
    """Per label, images the model predicts it for (probability at least the label's threshold and
    ``min_probability``) although their graph labels lack it: what the category graph missed, or
    what the model gets wrong; the highest probabilities first."""
    return _candidates(run, True, per_label, min_probability)


def topics_per_article(run: Run, limit: int = 20, min_images: int = 2) -> tuple[pd.DataFrame, dict]:
    """The predicted topic distribution of each WIT article's images (mean probability per topic),
    the visual counterpart of the article's topics. Returns the ``limit`` articles with most images
    (at least ``min_images``), with ``topics`` (labels whose mean probability is >= 0.5), and a summary
    over all articles: how many, images per article, and the share whose images cover one topic or none."""
    from pyspark.sql import functions as F

    if run.predictions is None:
        raise ValueError("this run has no predictions yet (run `infer`)")
    slugs = [slug(n) for n in run.names]
    pages = (run.images.select("image_key", F.explode("page_titles").alias("page"))
             .join(run.predictions.where(F.col(f"p_{slugs[0]}").isNotNull())
                   .select("image_key", *[f"p_{s}" for s in slugs]), "image_key")
             .groupBy("page").agg(F.count("*").alias("images"), *[F.avg(f"p_{s}").alias(f"p_{s}") for s in slugs]))
    pages = pages.withColumn("n_topics", sum((F.col(f"p_{s}") >= 0.5).cast("int") for s in slugs)).cache()
    stats = pages.agg(F.count("*").alias("articles"), F.avg("images").alias("images_per_article"),
                      F.avg((F.col("n_topics") <= 1).cast("double")).alias("share_one_topic_or_none"),
                      F.avg(F.when(F.col("images") >= min_images, (F.col("n_topics") <= 1).cast("double")))
                      .alias(f"share_one_topic_or_none_{min_images}plus")).first().asDict()
    top = pages.where(F.col("images") >= min_images).orderBy(F.col("images").desc(), "page").limit(limit).toPandas()
    pages.unpersist()
    top["topics"] = [[n for n, s in zip(run.names, slugs) if row[f"p_{s}"] >= 0.5] for _, row in top.iterrows()]
    return top[["page", "images", "n_topics", "topics", *[f"p_{s}" for s in slugs]]], \
        {k: (float(v) if v is not None else None) for k, v in stats.items()}


# ---------------------------------------------------------------- run over run


def previous_dump(settings) -> str | None:
    """The newest earlier dump date of the same taxonomy and heuristics in the data lake, if any."""
    import fsspec

    from pipeline.lake.layout import DUMP_DATE_RE, join

    layout = Layout.from_settings(settings)
    fs, root = fsspec.core.url_to_fs(layout.data_root)
    dates = []
    for path in fs.glob(join(root, "*")):
        date = path.rstrip("/").rsplit("/", 1)[-1]
        if DUMP_DATE_RE.match(date) and date < layout.dump_date and \
                fs.exists(join(root, date, "wit", layout.label_key, "images")):
            dates.append(date)
    return max(dates) if dates else None


def labels_changed(old: str = "old", new: str = "new"):
    """Whether two label arrays differ as sets (a Column)."""
    from pyspark.sql import functions as F

    return (F.size(F.array_except(new, old)) + F.size(F.array_except(old, new))) > 0


def gained_and_lost(both, names: list[str]) -> pd.DataFrame:
    """Per label, the rows of ``both`` (arrays ``old``, ``new``) that gained it and that lost it."""
    from pyspark.sql import functions as F

    def per_label(a: str, b: str) -> dict:
        rows = both.select(F.explode(F.array_except(a, b)).alias("label")).groupBy("label").count().collect()
        return {r["label"]: int(r["count"]) for r in rows}

    gained, lost = per_label("new", "old"), per_label("old", "new")
    return pd.DataFrame({"label": names, "gained": [gained.get(n, 0) for n in names],
                         "lost": [lost.get(n, 0) for n in names]})


def compare_runs(previous: Run, current: Run, examples: int = 10) -> dict:
    """What changed since the previous dump: per label, images that gained or lost it (graph labels;
    added and dropped images included), images added and dropped, images whose labels changed
    (count and examples), and the champion decision."""
    from pyspark.sql import functions as F

    col = current.target
    old = previous.images.select("image_key", "file_title", F.col(col).alias("old"))
    new = current.images.select("image_key", "file_title", F.col(col).alias("new"))
    both = old.join(new.drop("file_title"), "image_key", "full_outer")
    empty = F.array().cast("array<string>")
    both = both.select("image_key", "file_title", F.coalesce("old", empty).alias("old"),
                       F.coalesce("new", empty).alias("new"),
                       F.col("old").isNull().alias("added"), F.col("new").isNull().alias("dropped"))
    per_label = gained_and_lost(both, current.names)
    changed = both.where(~F.col("added") & ~F.col("dropped") & labels_changed())
    counts = both.agg(F.sum(F.col("added").cast("int")).alias("added"),
                      F.sum(F.col("dropped").cast("int")).alias("dropped")).first()
    sample = changed.orderBy("image_key").limit(examples).toPandas()
    train = current.summaries.get("train", {})
    return {
        "previous_dump": previous.layout.dump_date,
        "images_added": int(counts["added"] or 0),
        "images_dropped": int(counts["dropped"] or 0),
        "images_relabeled": changed.count(),
        "relabeled_examples": sample,
        "per_label": per_label,
        "champion": {k: train.get(k) for k in ("model_version", "test_macro_auc_pr", "champion_version",
                                              "champion_auc_pr", "promoted", "promotion_reason")},
    }


def model_comparison(settings, run: Run) -> pd.DataFrame | None:
    """Per label, test AUC(PR) of the model this run trained and of the champion it was compared
    with, both on the run's test split (from the training run's MLflow metrics); None when this run
    trained no model or there was no champion to compare with."""
    from pipeline.orchestration import tracking

    train = run.summaries.get("train", {})
    if not train.get("run_id") or train.get("champion_auc_pr") is None:
        return None
    metrics = tracking.client(settings).get_run(train["run_id"]).data.metrics
    rows = [{"label": n, "challenger_auc_pr": metrics.get(f"test_ap_{slug(n)}", float("nan")),
             "champion_auc_pr": metrics.get(f"champion_test_ap_{slug(n)}", float("nan"))} for n in run.names]
    out = pd.DataFrame(rows)
    out["difference"] = out["challenger_auc_pr"] - out["champion_auc_pr"]
    return out


INPUT_MODES = ("image", "text", "image+text")


def input_comparison(settings, run: Run) -> dict | None:
    """What the words add: per label, test AUC(PR) of the latest image-only, text-only and image+text
    models of this dump, taxonomy and heuristics, trained on the same test split (MLflow runs of the
    train stage with the same test fingerprint). None unless this run trained a model and at least
    two modes were trained on its split."""
    from pipeline.orchestration import tracking

    train = run.summaries.get("train", {})
    if not train.get("run_id") or not train.get("test_fingerprint"):
        return None
    client = tracking.client(settings)
    experiment = client.get_run(train["run_id"]).info.experiment_id
    query = (f"tags.stage = 'train' AND tags.test_fingerprint = '{train['test_fingerprint']}' "
             f"AND tags.dump_date = '{settings.paths.dump_date}' AND tags.taxonomy = '{run.taxonomy.version}' "
             f"AND tags.heuristics = '{settings.label.heuristics}' AND attributes.status = 'FINISHED'")
    latest = {}
    for r in client.search_runs([experiment], query, order_by=["attributes.start_time DESC"], max_results=200):
        latest.setdefault(r.data.tags.get("model_inputs", "image"), r)  # runs from before texts read images
    modes = [m for m in INPUT_MODES if m in latest]
    if len(modes) < 2:
        return None
    table = pd.DataFrame({"label": run.names})
    for m in modes:
        table[m] = [latest[m].data.metrics.get(f"test_ap_{slug(n)}", float("nan")) for n in run.names]
    if "image" in modes and "image+text" in modes:
        table["words_add"] = table["image+text"] - table["image"]
    macro = {m: latest[m].data.metrics.get("test_macro_auc_pr", float("nan")) for m in modes}
    both = latest.get("image+text")
    extra = {}
    if both is not None:
        extra = {k: both.data.metrics.get(f"test_{k}") for k in
                 ("images_without_text", "macro_auc_pr_images_without_text", "macro_auc_pr_text_removed",
                  "macro_auc_pr_image_removed")}
    return {"per_label": table, "macro": macro, "runs": {m: latest[m].info.run_id for m in modes},
            "image_text": extra}


def finite(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# ---------------------------------------------------------------- labeler against labeler


def baseline_layout(layout: Layout, baseline: str = BASELINE) -> Layout | None:
    """The same dump and taxonomy labeled by ``baseline``, when this run used another labeler and the
    baseline's file labels are in the lake."""
    if layout.heuristics.strip() == baseline:
        return None
    other = dataclasses.replace(layout, heuristics=baseline)
    return other if exists(other.labels("file_labels")) else None


def compare_labelers(spark, layout: Layout, baseline: Layout, taxonomy: Taxonomy) -> dict:
    """What this run's labeler changed against ``baseline``'s on the same dump: per topic, files that
    gained or lost it (hierarchical labels), files whose labels changed, topics per file in each."""
    from pyspark.sql import functions as F

    def file_labels(lay: Layout, name: str):
        return spark.read.parquet(lay.labels("file_labels")).select("file_id", F.col("labels_hier").alias(name))

    both = file_labels(baseline, "old").join(file_labels(layout, "new"), "file_id", "full_outer")
    empty = F.array().cast("array<string>")
    both = both.select(F.coalesce("old", empty).alias("old"), F.coalesce("new", empty).alias("new"))
    before = label_counts(both, "old", taxonomy.names)
    after = label_counts(both, "new", taxonomy.names)
    per_label = pd.DataFrame({"label": taxonomy.names})
    per_label["files_before"] = per_label["label"].map(before).astype(int)
    per_label["files_after"] = per_label["label"].map(after).astype(int)
    per_label = per_label.merge(gained_and_lost(both, taxonomy.names), on="label")
    row = both.agg(
        F.count(F.lit(1)).alias("files"),
        F.sum(labels_changed().cast("int")).alias("changed"),
        F.avg(F.size("old")).alias("before"), F.avg(F.size("new")).alias("after"),
        F.sum((F.size("old") > 0).cast("int")).alias("labeled_before"),
        F.sum((F.size("new") > 0).cast("int")).alias("labeled_after"),
    ).first()
    return {
        "labeler": layout.heuristics, "baseline": baseline.heuristics, "files": int(row["files"] or 0),
        "files_changed": int(row["changed"] or 0),
        "topics_per_file_before": float(row["before"] or 0.0), "topics_per_file_after": float(row["after"] or 0.0),
        "files_labeled_before": int(row["labeled_before"] or 0), "files_labeled_after": int(row["labeled_after"] or 0),
        "per_label": per_label,
    }
