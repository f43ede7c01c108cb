"""Stage `report`: the data-study report, one self-contained HTML page, logged to MLflow.

Spark aggregates the label, shard and prediction tables; only the per-label
counts (a few dozen rows) reach the driver, where matplotlib draws them.
"""

from __future__ import annotations

import base64
import html
import io

from pipeline.atomic import output_path, read_json, exists
from pipeline.errors import require_input
from pipeline.layout import Layout, join
from pipeline.spark import get_spark
from pipeline.taxonomy import Taxonomy

STAGE = "report"


def label_counts(df, column: str, names: list[str]) -> dict[str, int]:
    """Images per label for an array<string> column, every label present (zero included)."""
    from pyspark.sql import functions as F

    rows = df.select(F.explode(column).alias("label")).groupBy("label").count().collect()
    found = {r["label"]: r["count"] for r in rows}
    return {n: int(found.get(n, 0)) for n in names}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def distribution_plot(series: dict[str, dict[str, int]], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(next(iter(series.values())))
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(series)
    x = np.arange(len(names))
    for i, (label, counts) in enumerate(series.items()):
        ax.bar(x + i * width, [counts[n] for n in names], width, label=label)
    ax.set_xticks(x + width * (len(series) - 1) / 2, names, rotation=70, ha="right", fontsize=8)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    return fig


def histogram_plot(counts: dict[int, int], title: str, xlabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    keys = sorted(counts)
    ax.bar(keys, [counts[k] for k in keys])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_title(title)
    return fig


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def run(settings) -> dict:
    from pyspark.sql import functions as F

    import mlflow

    from pipeline import tracking

    layout = Layout.from_settings(settings)
    taxonomy = Taxonomy.load(settings.label.taxonomy)
    names = taxonomy.names
    images_path = require_input(STAGE, layout.wit_images, "WIT images")
    index_path = require_input(STAGE, layout.image_index, "image index (from the shard stage)")
    predictions_path = require_input(STAGE, layout.predictions, "predictions")

    spark = get_spark(settings, STAGE)
    images = spark.read.parquet(images_path)
    predictions = spark.read.parquet(predictions_path)
    manifest = spark.read.parquet(index_path)

    graph_hier = label_counts(images, "labels_hier", names)
    graph_flat = label_counts(images, "labels", names)
    predicted = label_counts(predictions, "predicted", names)
    n_images = images.count()
    n_labeled = images.where("labeled").count()
    per_image = {
        int(r["n"]): int(r["count"])
        for r in images.select(F.size("labels_hier").alias("n")).groupBy("n").count().collect()
    }
    splits = {r["split"]: int(r["count"]) for r in images.groupBy("split").count().collect()}
    statuses = {r["status"]: int(r["count"]) for r in manifest.groupBy("status").count().collect()}
    stats_path = layout.labels("stats.json")
    label_stats = read_json(stats_path) if exists(stats_path) else {}

    figures = {
        "label_distribution": distribution_plot(
            {"graph labels (hierarchical)": graph_hier, "graph labels (flat)": graph_flat,
             "model predictions": predicted},
            f"Images per label, taxonomy {taxonomy.version}, {layout.heuristics}",
        ),
        "labels_per_image": histogram_plot(per_image, "Labels per image (hierarchical)", "labels"),
    }
    encoded = {name: _png(fig) for name, fig in figures.items()}
    summary = {
        "images": n_images,
        "labeled_images": n_labeled,
        "unlabeled_share": round(1 - n_labeled / n_images, 4) if n_images else None,
        "splits": splits,
        "download_status": statuses,
    }
    per_label = [
        {"label": n, "graph (hier.)": graph_hier[n], "graph (flat)": graph_flat[n], "predicted": predicted[n]}
        for n in names
    ]
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>wiki-image-topics data study {layout.dump_date}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style></head><body>
<h1>Data study: dump {html.escape(layout.dump_date)}, taxonomy {html.escape(taxonomy.version)},
heuristics {html.escape(layout.heuristics)}</h1>
<h2>Summary</h2>{_table([{k: v for k, v in summary.items() if not isinstance(v, dict)}])}
<h3>Splits</h3>{_table([splits])}
<h3>Download status</h3>{_table([statuses])}
<h2>Label distribution</h2><img alt="label distribution" src="data:image/png;base64,{encoded['label_distribution']}">
{_table(per_label)}
<h2>Labels per image</h2><img alt="labels per image" src="data:image/png;base64,{encoded['labels_per_image']}">
<h2>Label statistics of the whole graph labeling</h2><pre>{html.escape(str(label_stats))}</pre>
</body></html>
"""
    report_path = join(layout.reports, "report.html")
    with output_path(report_path) as tmp:
        import fsspec

        with fsspec.open(tmp, "w", encoding="utf-8") as f:
            f.write(page)

    tracking.configure(settings)
    tags = {"stage": STAGE, "dump_date": layout.dump_date, "taxonomy": taxonomy.version,
            "heuristics": layout.heuristics}
    with tracking.start_run(run_name=f"report-{layout.dump_date}", tags=tags, settings=settings) as run:
        mlflow.log_metrics({"images": n_images, "labeled_images": n_labeled})
        mlflow.log_text(page, "report/report.html")
        for name, fig in figures.items():
            mlflow.log_figure(fig, f"report/{name}.png")
        mlflow.log_dict({"summary": summary, "per_label": per_label}, "report/summary.json")
    return {"report": report_path, "mlflow_run_id": run.info.run_id, **summary}
