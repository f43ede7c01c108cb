"""Stage `report`: the data study of the run (``pipeline.study.tables``) as one self-contained HTML page
(``pipeline.study.report``), with its figures as PNG artifacts on an MLflow run.

Spark aggregates every table; only results of a few dozen rows, the top images per label and their
thumbnails (read by offset from the image store) reach the driver. With an earlier dump of the
same taxonomy and heuristics in the data lake, the report says what changed since.
"""

from __future__ import annotations

import dataclasses

from pipeline.inputs.store import close_handles, store_root
from pipeline.lake.atomic import output_path
from pipeline.lake.layout import join
from pipeline.orchestration.spark import get_spark
from pipeline.study import report
from pipeline.study import tables as study

STAGE = "report"


def study_parts(spark, settings) -> tuple[study.Run, dict]:
    """Every table of the study for the run of ``settings``, and the previous run's comparison."""
    from pyspark.sql import functions as F

    run = study.load(spark, settings)
    parts = {
        "dataset": study.dataset_metrics(run),
        "distribution": study.label_distribution(run),
        "labels_per_image": study.labels_per_image(run),
        "cooccurrence": study.cooccurrence(run),
        "statuses": run.index.groupBy("status").count().orderBy(F.col("count").desc()).toPandas(),
        "splits": run.images.groupBy("split").count().orderBy("split").toPandas(),
    }
    if run.predictions is not None:
        quality = study.label_quality(run)
        train = study.train_frequency(run)
        parts.update(quality=quality, quality_summary=study.quality_summary(quality, train),
                     frequency=study.frequency_vs_auc(quality, train), pr_curves=study.pr_curves(run),
                     examples=study.examples(run), missed=study.missed_by_graph(run),
                     articles=study.topics_per_article(run))
    parts["inputs"] = study.input_comparison(settings, run)
    baseline = study.baseline_layout(run.layout)
    if baseline is not None:
        parts["labelers"] = study.compare_labelers(spark, run.layout, baseline, run.taxonomy)
    previous = study.previous_dump(settings)
    if previous:
        before = dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, dump_date=previous))
        parts["changes"] = study.compare_runs(study.load(spark, before, with_predictions=False), run)
        parts["comparison"] = study.model_comparison(settings, run)
    return run, parts


def run(settings) -> dict:
    from pipeline.orchestration import tracking

    spark = get_spark(settings, STAGE)
    study_run, parts = study_parts(spark, settings)
    try:
        page, figures = report.build(study_run, parts, store_root(settings))
    finally:
        close_handles()
    layout = study_run.layout
    report_path = join(layout.reports, "report.html")
    with output_path(report_path) as tmp:
        import fsspec

        with fsspec.open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
    lines = report.summary_lines(study_run, parts.get("quality_summary"), parts.get("changes"))
    tracking.configure(settings)
    tags = {"stage": STAGE, "dump_date": layout.dump_date, "taxonomy": study_run.taxonomy.version,
            "heuristics": layout.heuristics}
    macro = parts["quality_summary"].loc["all labels", "auc_pr"] if "quality_summary" in parts else None
    with tracking.start_run(run_name=f"report-{layout.dump_date}", tags=tags, settings=settings) as active:
        import mlflow

        tracking.log_metrics({"images": int(parts["dataset"].loc["flat", "images"]),
                              "labeled_images": int(parts["dataset"].loc["flat", "labeled_images"]),
                              "scumble_hier": float(parts["dataset"].loc["hierarchical", "scumble"]),
                              "mean_ir_hier": float(parts["dataset"].loc["hierarchical", "mean_ir"]),
                              **({"test_macro_auc_pr": float(macro)} if macro is not None else {})})
        mlflow.log_text(page, "report/report.html")
        for name, png in figures.items():
            tracking.log_bytes_artifact(png, f"{name}.png", "report")
    changes = parts.get("changes")
    return {
        "report": report_path,
        "mlflow_run_id": active.info.run_id,
        "summary_lines": lines,
        "sections": list(report.SECTIONS),
        "figures": sorted(figures),
        "previous_dump": changes["previous_dump"] if changes else None,
        "images": int(parts["dataset"].loc["flat", "images"]),
        "test_macro_auc_pr": study.finite(macro),
    }
