"""How well a labeler's file labels agree with people's.

People label an image by looking at it; the graph labels it by where its categories lead. A table of
people's labels (``dev_human.parquet``'s columns: ``taxonomy_version``, ``id`` = file page id,
``labels_human``) is the yardstick: micro and macro precision, recall and F1, topics per image, and
F1 per topic, all on hierarchical labels (a topic comes with its ancestors, as people's do). Only
the table's files are read from a run's labels (a broadcast join), so this runs at any scale.

``python -m pipeline label-quality --dev-labels PATH`` scores the configured labeler beside
``headJ+depth`` on the same files; the ``label`` stage logs its own scores to MLflow when
``label.human_labels`` names such a table.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from pipeline.errors import StageError
from pipeline.labels.scores import counts, prf, prf_summary
from pipeline.labels.taxonomy import Taxonomy
from pipeline.labels.traversal import BASELINE
from pipeline.lake.atomic import require_input

STAGE = "label-quality"
HUMAN_COLUMNS = ("id", "labels_human")


def read_human_labels(path: str, taxonomy: Taxonomy) -> pd.DataFrame:
    """``id, labels_human`` of the table's files for this taxonomy, labels closed under ancestors.

    A label the taxonomy does not have (v1.4's annotators still saw Politics) is dropped: a run can
    only be scored on the labels it can give.
    """
    require_input(STAGE, path, "table of people's labels")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # unreadable Parquet
        raise StageError(STAGE, path, f"cannot read the table of people's labels: {e}") from e
    missing = [c for c in HUMAN_COLUMNS if c not in df.columns]
    if missing:
        raise StageError(STAGE, path, f"people's labels lack column(s) {missing} (has {list(df.columns)})")
    if "taxonomy_version" in df.columns:
        df = df[df["taxonomy_version"] == taxonomy.version]
    if df.empty:
        raise StageError(STAGE, path, f"no files labeled by people under taxonomy {taxonomy.version}")
    if df["id"].duplicated().any():
        dupes = df.loc[df["id"].duplicated(), "id"].head(5).tolist()
        raise StageError(STAGE, path, f"file id(s) {dupes} appear more than once for taxonomy {taxonomy.version}")
    known = set(taxonomy.names)
    labels = [taxonomy.with_ancestors([n for n in (ls if ls is not None else []) if n in known])
              for ls in df["labels_human"]]
    return pd.DataFrame({"id": df["id"].astype("int64").to_numpy(), "labels_human": labels})


def run_file_labels(spark, path: str, ids: pd.DataFrame) -> dict[int, list[str]]:
    """The hierarchical labels a run's ``file_labels`` gives the files of ``ids`` (none: not in the run)."""
    from pyspark.sql import functions as F

    require_input(STAGE, path, "file labels (run the label stage with this labeler first)")
    wanted = spark.createDataFrame(ids[["id"]].rename(columns={"id": "file_id"}))
    rows = (spark.read.parquet(path).join(F.broadcast(wanted), "file_id")
            .select("file_id", "labels_hier").collect())
    return {int(r.file_id): list(r.labels_hier) for r in rows}


def _matrix(label_lists, names) -> np.ndarray:
    index = {n: j for j, n in enumerate(names)}
    y = np.zeros((len(label_lists), len(names)), dtype=bool)
    for i, labels in enumerate(label_lists):
        for n in labels:
            y[i, index[n]] = True
    return y


def score(predicted: dict[int, list[str]], human: pd.DataFrame, taxonomy: Taxonomy) -> dict:
    """Agreement of ``predicted`` (file id -> labels) with people on the files of ``human``.

    A file the labeler did not label counts as labeled with nothing. Macro averages are over the topics
    people gave at least once (a topic nobody chose has no recall to measure).
    """
    names = list(taxonomy.names)
    y = _matrix(human["labels_human"], names)
    q = _matrix([taxonomy.with_ancestors(predicted.get(int(i), [])) for i in human["id"]], names)
    used = y.any(0)
    summary = prf_summary(y, q)
    macro = prf_summary(y[:, used], q[:, used])
    summary.update({k: v for k, v in macro.items() if k.endswith("_macro")})
    p, r, f = prf(*counts(y, q))
    return {
        "files": int(len(human)),
        "files_missing_from_run": int(sum(int(i) not in predicted for i in human["id"])),
        **summary,
        "topics_per_image": float(q.sum(1).mean()),
        "topics_per_image_people": float(y.sum(1).mean()),
        "per_topic": {n: {"support": int(y[:, j].sum()), "predicted": int(q[:, j].sum()), "precision": float(p[j]),
                          "recall": float(r[j]), "f1": float(f[j])} for j, n in enumerate(names)},
    }


def fold_of(file_id: int, folds: int) -> int:
    """A file's fold: fixed by its id, so every labeler and every run splits the files the same way."""
    return zlib.crc32(str(int(file_id)).encode()) % folds


def fold_spread(predicted: dict[int, list[str]], human: pd.DataFrame, taxonomy: Taxonomy, folds: int) -> dict:
    """Micro F1 on each of ``folds`` disjoint parts of the files: how much the figure moves with the files."""
    parts = human["id"].map(lambda i: fold_of(i, folds))
    f1 = [score(predicted, human[parts == k], taxonomy)["f1_micro"] for k in range(folds) if (parts == k).any()]
    return {"folds": len(f1), "f1_micro_per_fold": f1, "f1_micro_mean": float(np.mean(f1)),
            "f1_micro_std": float(np.std(f1, ddof=1)) if len(f1) > 1 else 0.0}


def compare(spark, settings, human_labels: str, labelers: list[str], folds: int = 5) -> dict:
    """Scores of each labeler's file labels of this run (dump date, taxonomy) against the same people."""
    from dataclasses import replace

    from pipeline.lake.layout import Layout

    taxonomy = Taxonomy.load(settings.label.taxonomy)
    human = read_human_labels(human_labels, taxonomy)
    base = Layout.from_settings(settings)
    out = {"dump_date": base.dump_date, "taxonomy": taxonomy.version, "human_labels": human_labels, "labelers": {}}
    per_fold = {}
    for spec in labelers:
        path = replace(base, heuristics=spec).labels("file_labels")
        predicted = run_file_labels(spark, path, human)
        out["labelers"][spec] = {"file_labels": path, **score(predicted, human, taxonomy),
                                 **fold_spread(predicted, human, taxonomy, folds)}
        per_fold[spec] = out["labelers"][spec]["f1_micro_per_fold"]
    if BASELINE in per_fold:
        for spec, f1 in per_fold.items():
            if spec != BASELINE:
                gain = np.subtract(f1, per_fold[BASELINE])
                out["labelers"][spec]["f1_micro_gain_over_baseline_per_fold"] = gain.tolist()
    return out


def format_table(result: dict) -> str:
    """The scores as a plain-text table, one labeler a row, then per-topic F1."""
    specs = list(result["labelers"])
    head = f"{'labeler':<16} {'files':>5} {'P micro':>8} {'R micro':>8} {'F1 micro':>8} {'F1 folds (sd)':>14} " \
           f"{'P macro':>8} {'R macro':>8} {'F1 macro':>8} {'topics/img':>10}"
    lines = [f"taxonomy {result['taxonomy']}, dump {result['dump_date']}, people: {result['human_labels']}", head]
    people = None
    for spec in specs:
        s = result["labelers"][spec]
        people = s["topics_per_image_people"]
        lines.append(f"{spec:<16} {s['files']:>5} {s['precision_micro']:>8.3f} {s['recall_micro']:>8.3f} "
                     f"{s['f1_micro']:>8.3f} {s['f1_micro_mean']:>7.3f} ({s['f1_micro_std']:.3f}) "
                     f"{s['precision_macro']:>8.3f} {s['recall_macro']:>8.3f} {s['f1_macro']:>8.3f} "
                     f"{s['topics_per_image']:>10.2f}")
    lines.append(f"{'people':<16} {'':>5} {'':>8} {'':>8} {'':>8} {'':>14} {'':>8} {'':>8} {'':>8} {people:>10.2f}")
    lines.append("")
    lines.append(f"{'F1 per topic':<26} {'support':>7} " + " ".join(f"{s:>14}" for s in specs))
    for topic in result["labelers"][specs[0]]["per_topic"]:
        row = [result["labelers"][s]["per_topic"][topic] for s in specs]
        if row[0]["support"] or any(x["predicted"] for x in row):
            lines.append(f"{topic:<26} {row[0]['support']:>7} " + " ".join(f"{x['f1']:>14.3f}" for x in row))
    return "\n".join(lines)
