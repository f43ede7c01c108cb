"""Rules beyond ``refined``, scored against people on the development files (issue 20).

Each rule adds to or filters the plain oracle's file labels (``pipeline/labels/traversal.py``) on the real
subgraph; ``pipeline.labels.quality`` scores them against ``dev_human.parquet`` as the product's
``label-quality`` command does (micro F1, and its spread over the same 5 folds). Two of them (Diagrams
for drawings with STEM, People from births/deaths parents) held on a held-out set and are in the
product as the ``refined-rules`` labeler, whose rules are data (``pipeline/labels/taxonomies/rules``); its
row here is the product's oracle with those files, and must equal "refined + both (births/deaths)".

    python benchmarks/label_rules.py [--graph ../shared/commons_realgraph]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from label_fidelity import load_graph  # noqa: E402

from pipeline.labels.quality import fold_of, fold_spread, read_human_labels, score  # noqa: E402
from pipeline.labels.taxonomy import Taxonomy  # noqa: E402
from pipeline.labels.traversal import Traversal  # noqa: E402

DRAWING_FORMATS = {"png", "svg", "gif"}
# Parents that mark a category as one person's (Commons' infobox categories).
BIRTHS_DEATHS = r"^\d{3,4} (births|deaths)$|^(Births|Deaths) in "
PERSON_PARENTS = {
    "births/deaths": re.compile(BIRTHS_DEATHS),
    "births/deaths, people/men/women by name": re.compile(BIRTHS_DEATHS + r"|^(People|Men|Women)( of .*)? by name$"),
    "births/deaths, any 'by name'": re.compile(BIRTHS_DEATHS + r"| by name$"),
}
YEAR = re.compile(r"(?<!\d)(1\d\d\d)(?!\d)")
CENTURY = re.compile(r"(\d+)(?:st|nd|rd|th)[- ]century", re.I)


class Rules:
    """The candidate rules over one taxonomy's oracle labels of the development files."""

    def __init__(self, graph, taxonomy: Taxonomy, files: pd.DataFrame):
        categories, edges, _ = graph
        self.parents: dict[str, list[str]] = {}
        for child, parent in edges:
            self.parents.setdefault(child, []).append(parent)
        self.taxonomy, self.files = taxonomy, files
        self.oracle = {h: Traversal.build(categories, edges, taxonomy, h)
                       for h in ("headJ+depth", "refined", "refined-rules")}

    def labels(self, labeler: str, row) -> set[str]:
        return set(self.taxonomy.with_ancestors(self.oracle[labeler].file_labels(row.categories)))

    def drawing(self, row) -> bool:
        return row.title.rsplit(".", 1)[-1].lower() in DRAWING_FORMATS

    def person(self, row, pattern) -> bool:
        return any(pattern.search(p) for c in row.categories for p in self.parents.get(c, ()))

    def predict(self, diagrams=False, people=None, history_before=None) -> dict[int, list[str]]:
        """``refined`` plus: Diagrams for a drawing format with a STEM label; People for a category with a
        parent matching ``people``; History for a category naming a year up to ``history_before``."""
        out = {}
        for row in self.files.itertuples():
            labels = self.labels("refined", row)
            if diagrams and self.drawing(row) and "STEM" in labels and "Diagrams" in self.taxonomy.names:
                labels.add("Diagrams")
            if people is not None and self.person(row, people):
                labels.add("People")
            if history_before and any(old(c, history_before) for c in row.categories):
                labels.add("History")
            out[int(row.id)] = self.taxonomy.with_ancestors(labels)
        return out

    def candidates(self, row) -> dict[str, list[float]]:
        """Per topic either labeler (or a rule) gives the file: the features a learned filter sees."""
        cats = list(row.categories)
        per = {h: [set(self.taxonomy.with_ancestors(self.oracle[h].labels(c))) for c in cats]
               for h in ("headJ+depth", "refined")}
        hops = [self.oracle["refined"].labels_and_hops(c)[1] for c in cats]
        labeled = max(1, sum(bool(s) for s in per["headJ+depth"]))
        drawing, person = self.drawing(row), self.person(row, PERSON_PARENTS["births/deaths"])
        topics = set().union(*per["headJ+depth"], *per["refined"])
        if drawing and "STEM" in topics and "Diagrams" in self.taxonomy.names:
            topics.add("Diagrams")
        if person:
            topics.add("People")
        out = {}
        for t in topics:
            wide, near = (sum(t in s for s in per[h]) for h in ("headJ+depth", "refined"))
            near_hops = [h for s, h in zip(per["refined"], hops) if t in s and h is not None]
            ruled = (t == "Diagrams" and drawing) or (t == "People" and person)
            out[t] = [wide, near, wide / labeled, near / labeled, float(near > 0), min(near_hops, default=9),
                      float(self.taxonomy.by_name[t].parent is None), labeled, float(drawing), float(ruled)]
        return out


def old(title: str, year: int) -> bool:
    return (any(int(y) <= year for y in YEAR.findall(title))
            or any(int(c) <= year // 100 for c in CENTURY.findall(title)))


def learned_filter(rules: Rules, human: pd.DataFrame, folds: int = 5) -> dict[int, list[str]]:
    """Out-of-fold labels of a logistic regression per (file, candidate topic), its threshold the one
    that maximises micro F1 on the training folds."""
    from sklearn.linear_model import LogisticRegression

    truth = dict(zip(human["id"], human["labels_human"]))
    cands = {int(r.id): rules.candidates(r) for r in rules.files.itertuples()}
    fold = {i: fold_of(i, folds) for i in cands}
    out = {}
    for k in range(folds):
        train = [i for i in cands if fold[i] != k]
        pairs = [(i, t) for i in train for t in cands[i]]
        x = np.array([cands[i][t] for i, t in pairs])
        y = np.array([t in truth[i] for i, t in pairs])
        model = LogisticRegression(max_iter=2000).fit(x, y)
        p = dict(zip(pairs, model.predict_proba(x)[:, 1]))
        sub = human[human["id"].isin(train)]

        def keep(ids, probs, th):
            return {i: rules.taxonomy.with_ancestors([t for t in cands[i] if probs[(i, t)] >= th]) for i in ids}

        best = max(np.arange(0.1, 0.7, 0.02), key=lambda th: score(keep(train, p, th), sub, rules.taxonomy)["f1_micro"])
        test = [i for i in cands if fold[i] == k]
        tp = [(i, t) for i in test for t in cands[i]]
        if tp:
            q = dict(zip(tp, model.predict_proba(np.array([cands[i][t] for i, t in tp]))[:, 1]))
            out.update(keep(test, q, best))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", default=str(ROOT / "tests" / "data" / "commons_realgraph"))
    args = ap.parse_args(argv)
    folder = Path(args.graph)
    graph = load_graph(folder)
    table = pd.read_parquet(folder / "dev_human.parquet")
    print(f"{'taxonomy':<8} {'rule':<64} {'P':>6} {'R':>6} {'F1':>6} {'folds mean (sd)':>16}")
    for version in ("v1.3", "v1.4"):
        taxonomy = Taxonomy.load(version)
        human = read_human_labels(str(folder / "dev_human.parquet"), taxonomy)
        rules = Rules(graph, taxonomy, table[table["taxonomy_version"] == version])
        runs = {
            "headJ+depth": {int(r.id): sorted(rules.labels("headJ+depth", r)) for r in rules.files.itertuples()},
            "refined": rules.predict(),
            "refined + Diagrams for drawings with STEM": rules.predict(diagrams=True),
        }
        for name, pattern in PERSON_PARENTS.items():
            runs[f"refined + People ({name})"] = rules.predict(people=pattern)
            runs[f"refined + both ({name})"] = rules.predict(diagrams=True, people=pattern)
        for year in (1850, 1900, 1945):
            runs[f"refined + both (births/deaths) + History <= {year}"] = rules.predict(
                diagrams=True, people=PERSON_PARENTS["births/deaths"], history_before=year)
        runs["refined-rules (the product's oracle and rules files)"] = {
            int(r.id): rules.taxonomy.with_ancestors(rules.oracle["refined-rules"].file_labels(r.categories, r.title))
            for r in rules.files.itertuples()}
        runs["learned filter of both labelers' topics (5-fold)"] = learned_filter(rules, human)
        for name, predicted in runs.items():
            s, f = score(predicted, human, taxonomy), fold_spread(predicted, human, taxonomy, 5)
            print(f"{version:<8} {name:<64} {s['precision_micro']:>6.3f} {s['recall_micro']:>6.3f} "
                  f"{s['f1_micro']:>6.3f} {f['f1_micro_mean']:>9.3f} ({f['f1_micro_std']:.3f})")


if __name__ == "__main__":
    main()
