"""The data-study report: one self-contained HTML page (figures and thumbnails inlined) from
``pipeline.study.tables``'s tables, in the thesis's order, plus the same figures as PNG files.

Sections: summary; the dataset (Table 3.1); label distributions (Figures 3.4 / 5.1); model quality
(Table 5.1, per label); frequency against AUC(PR) (Figure 5.2); precision-recall curves (Figure
5.3); label co-occurrence; images per label (Figures 5.4 to 5.10); found by the model, missed by
the graph; topics per article; what changed since the previous dump; downloads and splits.
"""

from __future__ import annotations

import base64
import html
import io
import math

import pandas as pd

from pipeline.labels.traversal import BASELINE

SECTIONS = ("summary", "dataset", "distribution", "quality", "frequency", "pr-curves", "cooccurrence",
            "examples", "missed", "articles", "changes", "labeler", "words", "downloads")
CSS = """
body{font-family:system-ui,sans-serif;max-width:1180px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:2px 7px}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f4f4}
figure{margin:1em 0}figcaption{font-size:.9em;color:#444;max-width:900px}
img.fig{max-width:100%;height:auto}.summary{background:#f6f8fa;padding:.8em 1.2em;border-radius:6px}
.grid{display:flex;flex-wrap:wrap;gap:8px}.tile{width:150px;font-size:.75em}
.tile img{width:150px;height:150px;object-fit:cover;display:block;background:#eee}
.extra{color:#b00;font-weight:bold}.none{color:#777;font-style:italic}
"""


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) or "–"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "–" if v is None else str(v)


def table(df: pd.DataFrame, index: bool = False) -> str:
    """An HTML table of a small DataFrame, numbers right-aligned."""
    if index:
        df = df.reset_index()
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(f'<td class="{"n" if num else ""}">{html.escape(_fmt(v))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def figure(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="fig-{name}"><img class="fig" alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


# ---------------------------------------------------------------- figures


def distribution_figure(dist: pd.DataFrame, title: str) -> bytes:
    import numpy as np

    plt = _plt()
    cols = [c for c in ("graph_flat", "graph_hier", "predicted_flat", "predicted_hier") if c in dist]
    fig, ax = plt.subplots(figsize=(12, 5))
    x = np.arange(len(dist))
    width = 0.8 / len(cols)
    for i, c in enumerate(cols):
        ax.bar(x + i * width, dist[c], width, label=c.replace("_", " "))
    ax.set_xticks(x + width * (len(cols) - 1) / 2, dist["label"], rotation=70, ha="right", fontsize=8)
    ax.set_ylabel("images")
    ax.set_yscale("symlog")
    ax.set_title(title)
    ax.legend()
    return _png(fig)


def cardinality_figure(per_image: pd.DataFrame) -> bytes:
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(per_image))
    width = 0.8 / len(per_image.columns)
    for i, c in enumerate(per_image.columns):
        ax.bar(x + i * width, per_image[c], width, label=c.replace("_", " "))
    ax.set_xticks(x + width * (len(per_image.columns) - 1) / 2, per_image.index)
    ax.set_xlabel("labels per image")
    ax.set_ylabel("images")
    ax.legend()
    return _png(fig)


def frequency_figure(fva: pd.DataFrame) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    ok = fva[fva["auc_pr"].notna() & (fva["train_images"] > 0)]
    ax.scatter(ok["train_images"], ok["auc_pr"], c=["#c0392b" if o else "#2c7fb8" for o in ok["outlier"]])
    for r in ok.itertuples():
        if r.outlier:
            ax.annotate(r.label, (r.train_images, r.auc_pr), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("train images with the label (log scale)")
    ax.set_ylabel("test AUC(PR)")
    ax.set_ylim(0, 1.02)
    return _png(fig)


def pr_figure(curves: pd.DataFrame, quality: pd.DataFrame) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 6.5))
    q = quality.set_index("label")
    cmap = plt.get_cmap("tab20")
    for i, (label, pts) in enumerate(curves.groupby("label", sort=False)):
        ap, lift = q.loc[label, "auc_pr"], q.loc[label, "auc_pr_lift"]
        ax.plot(pts["recall"], pts["precision"], lw=1.2, color=cmap(i % 20),
                linestyle="-" if i < 20 else "--", label=f"{label} (AP {ap:.2f}, {lift:.1f}× chance)")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _png(fig)


def cooccurrence_figure(matrix: pd.DataFrame) -> bytes:
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 8))
    diag = np.diag(matrix.to_numpy()).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(diag[:, None] > 0, matrix.to_numpy() / diag[:, None], 0.0)
    im = ax.imshow(share, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(matrix)), matrix.columns, rotation=80, fontsize=7)
    ax.set_yticks(range(len(matrix)), matrix.index, fontsize=7)
    fig.colorbar(im, ax=ax, label="share of the row label's images that also have the column label")
    return _png(fig)


# ---------------------------------------------------------------- thumbnails


def thumbnail(store_root: str, shard, offset, size, side: int = 150) -> str | None:
    """A data URI of the stored image, center-cropped to ``side`` (None when it has no bytes)."""
    from pipeline.features.imaging import resize_to_jpeg
    from pipeline.inputs.store import read_payload
    from pipeline.lake.layout import join

    if shard is None or (isinstance(shard, float) and math.isnan(shard)):
        return None
    data = read_payload(join(store_root, shard), int(offset), int(size))
    return "data:image/jpeg;base64," + base64.b64encode(resize_to_jpeg(data, side, quality=85)).decode("ascii")


def image_grid(rows: pd.DataFrame, store_root: str) -> str:
    tiles = []
    for r in rows.itertuples():
        src = thumbnail(store_root, r.shard, r.offset, r.size)
        graph = list(r.graph_labels) if r.graph_labels is not None else []
        extra = set(r.found_not_in_graph)
        predicted = ", ".join(f'<span class="extra">+{html.escape(p)}</span>' if p in extra else html.escape(p)
                              for p in (r.predicted if r.predicted is not None else []))
        img = f'<img alt="{html.escape(r.file_title)}" src="{src}">' if src else '<div class="none">no bytes</div>'
        tiles.append(f'<div class="tile">{img}<div title="{html.escape(r.file_title)}">'
                     f"{html.escape(r.file_title[:40])}</div><div>p = {r.probability:.2f}</div>"
                     f"<div><b>GT:</b> {html.escape(', '.join(graph)) or '–'}</div>"
                     f"<div><b>pred:</b> {predicted or '–'}</div></div>")
    return f'<div class="grid">{"".join(tiles)}</div>'


# ---------------------------------------------------------------- the page


def summary_lines(run, quality_all: pd.DataFrame | None, changes: dict | None) -> list[str]:
    """The three lines at the top of the report (and at the end of `make demo`)."""
    train = run.summaries.get("train", {})
    version = train.get("champion_version") or "?"
    line1 = (f"Dump {run.layout.dump_date}, taxonomy {run.taxonomy.version}, heuristics {run.layout.heuristics}: "
             f"{run.summaries.get('wit', {}).get('images', '?')} images, predictions by model version {version}.")
    if quality_all is not None and len(quality_all):
        macro = quality_all.loc["all labels", "auc_pr"]
        chance = run.summaries.get("train", {}).get("test_mean_prevalence_positive_labels")
        line2 = f"Test macro AUC(PR) {macro:.3f}" + (f" against {chance:.3f} by chance." if chance else ".")
    else:
        line2 = "No predictions to evaluate."
    if changes:
        champ = changes["champion"]
        moved = "moved" if champ.get("promoted") else "stayed"
        line3 = (f"Since dump {changes['previous_dump']}: {changes['images_added']} images added, "
                 f"{changes['images_relabeled']} relabeled; the champion {moved} ({champ.get('promotion_reason')}).")
    else:
        line3 = "First run of this taxonomy and heuristics in the data lake: nothing to compare with."
    return [line1, line2, line3]


def _comparison(comparison: pd.DataFrame | None) -> str:
    if comparison is None:
        return '<p class="none">This run trained no model, or there was no champion to compare it with.</p>'
    return ("<h3>Per label: the new model against the champion, on this run's test split</h3>"
            + table(comparison.round(4)))


def _labeler_section(changes: dict | None, heuristics: str) -> str:
    head = f'<section id="labeler"><h2>11. What the labeler changed against {BASELINE}</h2>'
    if not changes:
        why = (f"This run used {BASELINE}." if heuristics.strip() == BASELINE else
               f"No {BASELINE} labels of this dump in the data lake to compare with "
               f"(python -m pipeline label --heuristics {BASELINE} writes them).")
        return head + f'<p class="none">{html.escape(why)}</p></section>'
    per_label = changes["per_label"]
    return (head + f"<p>{html.escape(changes['labeler'])} against {html.escape(changes['baseline'])} on the same "
            f"dump, every file of the graph ({changes['files']:,}): {changes['files_changed']:,} files got other "
            f"topics; topics per file {changes['topics_per_file_before']:.2f} &rarr; "
            f"{changes['topics_per_file_after']:.2f}; files with a topic {changes['files_labeled_before']:,} &rarr; "
            f"{changes['files_labeled_after']:,}. Per topic (hierarchical), files before and after, and files that "
            "gained or lost it:</p>" + table(per_label[(per_label[["gained", "lost"]].sum(axis=1) > 0)])
            + "</section>")


def _words_section(inputs: dict | None) -> str:
    head = '<section id="words"><h2>12. What the words add</h2>'
    if inputs is None:
        return head + ('<p class="none">Only one kind of model (train.inputs) was trained on this test split. '
                       "Train another (image, text, image+text), e.g. with "
                       "<code>python -m devtools demo --compare-inputs</code>, to compare them here.</p></section>")
    per_label = inputs["per_label"]
    macro = ", ".join(f"{m} {v:.4f}" for m, v in inputs["macro"].items())
    out = [head, f"<p>Test macro AUC(PR) on the same test split: {html.escape(macro)}. Each column is the "
                 "latest model of its kind trained on this dump, taxonomy and labeler.</p>"]
    if "words_add" in per_label:
        ranked = per_label.dropna(subset=["words_add"]).sort_values("words_add", ascending=False)
        helps = ", ".join(f"{r.label} ({r.words_add:+.3f})" for r in ranked.head(5).itertuples())
        hurts = ", ".join(f"{r.label} ({r.words_add:+.3f})" for r in ranked.tail(5).iloc[::-1].itertuples()
                          if r.words_add < 0)
        out.append(f"<p>The words help most with: {html.escape(helps or 'none')}. "
                   f"They hurt: {html.escape(hurts or 'no label')}.</p>")
    extra = inputs.get("image_text") or {}
    if extra:
        n = extra.get("images_without_text")
        out.append("<p>The image+text model on the test images that have no text"
                   + (f" ({int(n)})" if n is not None else "") + ": macro AUC(PR) "
                   + _fmt(extra.get("macro_auc_pr_images_without_text")) + "; on every test image with its text "
                   "removed: " + _fmt(extra.get("macro_auc_pr_text_removed")) + "; with its image removed (as for "
                   "an image whose download failed): " + _fmt(extra.get("macro_auc_pr_image_removed")) + ".</p>")
    out.append(table(per_label.round(4)) + "</section>")
    return "".join(out)


def build(run, parts: dict, store_root: str) -> tuple[str, dict[str, bytes]]:
    """(the HTML page, {figure name: PNG bytes}) from the study's tables in ``parts``."""
    figs: dict[str, bytes] = {}
    out = []
    title = (f"Data study: dump {run.layout.dump_date}, taxonomy {run.taxonomy.version}, "
             f"heuristics {run.layout.heuristics}")
    lines = summary_lines(run, parts.get("quality_summary"), parts.get("changes"))
    out.append(f'<section id="summary"><h1>{html.escape(title)}</h1><div class="summary">'
               + "".join(f"<p>{html.escape(ln)}</p>" for ln in lines) + "</div></section>")

    out.append('<section id="dataset"><h2>1. The dataset (Table 3.1)</h2>'
               "<p>Graph labels of the run's English Commons images, flat (the labels the traversal gives) "
               "and hierarchical (with their ancestors). A mean imbalance ratio far above 1 and a SCUMBLE "
               "near 0.1 or more mean rare labels that mostly appear together with frequent ones.</p>"
               + table(parts["dataset"], index=True) + "</section>")

    dist = parts["distribution"]
    figs["label_distribution"] = distribution_figure(dist, "Images per label")
    figs["labels_per_image"] = cardinality_figure(parts["labels_per_image"])
    out.append('<section id="distribution"><h2>2. Label distributions (Figures 3.4 and 5.1)</h2>'
               + figure("label_distribution", figs["label_distribution"],
                        "Images per label (log scale) from the graph and from the model, flat and hierarchical. "
                        "Look for labels the model predicts far more or less often than the graph gives them.")
               + figure("labels_per_image", figs["labels_per_image"],
                        "How many labels an image has: graph labels (flat, hierarchical) and predicted labels.")
               + table(dist) + "</section>")

    quality = parts.get("quality")
    if quality is not None:
        empty = quality[quality["support"] == 0]["label"].tolist()
        note = (f'<p class="none">No test image has these labels, so they are not evaluated: '
                f'{html.escape(", ".join(empty))}.</p>') if empty else ""
        out.append('<section id="quality"><h2>3. Model quality on the test split (Table 5.1)</h2>'
                   "<p>Macro averages over all labels, the five most frequent in train, and the rest, at 0.5 "
                   "and at the model's per-label thresholds. AUC(PR) is the average precision; chance is a "
                   "label's prevalence.</p>" + table(parts["quality_summary"], index=True) + note
                   + table(quality.round(4)) + "</section>")
        fva = parts["frequency"]
        figs["frequency_vs_auc"] = frequency_figure(fva)
        outliers = ", ".join(fva[fva["outlier"]]["label"]) or "none"
        out.append('<section id="frequency"><h2>4. Label frequency against AUC(PR) (Figure 5.2)</h2>'
                   + figure("frequency_vs_auc", figs["frequency_vs_auc"],
                            "Each dot is a label: its train images (log scale) and its test AUC(PR). Red dots "
                            f"are far off the trend line (named): {html.escape(outliers)}.") + "</section>")
        figs["pr_curves"] = pr_figure(parts["pr_curves"], quality)
        out.append('<section id="pr-curves"><h2>5. Precision-recall curves (Figure 5.3)</h2>'
                   + figure("pr_curves", figs["pr_curves"],
                            "One curve per label with test support; the legend gives its AUC(PR) and how many "
                            "times chance (its prevalence) that is. Curves high and to the right are good.")
                   + note + "</section>")
    else:
        for sid, name in (("quality", "3. Model quality"), ("frequency", "4. Label frequency against AUC(PR)"),
                          ("pr-curves", "5. Precision-recall curves")):
            out.append(f'<section id="{sid}"><h2>{name}</h2><p class="none">No predictions yet.</p></section>')

    figs["cooccurrence"] = cooccurrence_figure(parts["cooccurrence"])
    out.append('<section id="cooccurrence"><h2>6. Label co-occurrence</h2>'
               + figure("cooccurrence", figs["cooccurrence"],
                        "Row label's images that also have the column label (flat graph labels). Bright cells off "
                        "the diagonal are labels that travel together.") + "</section>")

    ex = parts.get("examples")
    blocks = []
    if ex is not None:
        for label in run.names:
            rows = ex[ex["label"] == label]
            if rows.empty:
                blocks.append(f'<h3>{html.escape(label)}</h3><p class="none">The model predicts this label for '
                              f"no image.</p>")
            else:
                blocks.append(f"<h3>{html.escape(label)}</h3>" + image_grid(rows, store_root))
    out.append('<section id="examples"><h2>7. Images per label (Figures 5.4 to 5.10)</h2>'
               "<p>For each label, the images the model is most sure of. GT: the graph labels; pred: the "
               'predicted labels, <span class="extra">+red</span> where the graph lacks them.</p>'
               + ("".join(blocks) or '<p class="none">No predictions yet.</p>') + "</section>")

    missed = parts.get("missed")
    if missed is not None and len(missed):
        shown = missed.groupby("label", sort=False).head(4)
        body = "".join(f"<h3>{html.escape(label)}</h3>" + image_grid(rows, store_root)
                       for label, rows in shown.groupby("label", sort=False))
        counts = missed.groupby("label", sort=False).size().rename("candidates (top 10 kept)").reset_index()
        out.append('<section id="missed"><h2>8. Found by the model, missed by the graph</h2>'
                   "<p>Images the model gives a label with high probability although the category graph does "
                   "not: candidates for missing categories, or the model's mistakes.</p>"
                   + table(counts) + body + "</section>")
    else:
        out.append('<section id="missed"><h2>8. Found by the model, missed by the graph</h2>'
                   '<p class="none">No candidate.</p></section>')

    articles = parts.get("articles")
    if articles is not None:
        top, stats = articles
        stats_df = pd.DataFrame([stats])
        out.append('<section id="articles"><h2>9. Topics per article</h2>'
                   "<p>The mean predicted topic probabilities of each WIT article's images: the topics an "
                   "article shows. Articles whose images cover one topic or none are listed in the summary.</p>"
                   + table(stats_df) + table(top[["page", "images", "n_topics", "topics"]]) + "</section>")

    changes = parts.get("changes")
    if changes:
        champ = pd.DataFrame([changes["champion"]])
        ex_rows = changes["relabeled_examples"]
        out.append('<section id="changes"><h2>10. What changed since the previous dump</h2>'
                   f"<p>Compared with dump {html.escape(changes['previous_dump'])}: "
                   f"{changes['images_added']:,} images added, {changes['images_dropped']:,} dropped, "
                   f"{changes['images_relabeled']:,} whose graph labels changed.</p>"
                   + table(changes["per_label"][(changes["per_label"][["gained", "lost"]].sum(axis=1) > 0)])
                   + "<h3>Images whose labels changed (examples)</h3>"
                   + table(ex_rows[["image_key", "file_title", "old", "new"]]) + "<h3>The champion decision</h3>"
                   + table(champ) + _comparison(parts.get("comparison")) + "</section>")
    else:
        out.append('<section id="changes"><h2>10. What changed since the previous dump</h2><p class="none">'
                   "This is the first run of this taxonomy and heuristics in the data lake.</p></section>")

    out.append(_labeler_section(parts.get("labelers"), run.layout.heuristics))
    out.append(_words_section(parts.get("inputs")))
    out.append('<section id="downloads"><h2>13. Downloads and splits</h2>'
               + table(parts["statuses"]) + table(parts["splits"]) + "</section>")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body>{''.join(out)}</body></html>\n")
    return page, figs
