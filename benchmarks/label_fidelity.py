"""How faithfully the traversal rules reproduce the original labeling, on the real subgraph.

Two measures, both with the plain recursive rules of ``pipeline/labels/traversal.py``
(the Spark stage equals them; the tests check that):

* dev files: of the 155 files of ``dev_files_v1.3.parquet``, how many get
  exactly the labels the original ``headJ+depth`` traversal gave;
* queried categories: the subgraph was rebuilt from the original traversal's
  logs, so a category has real parent links (not only a ``Zz depth pad``
  parent) exactly when the original queried it. Labeling every file of the
  subgraph and recording which categories get queried shows, over about 25k
  categories, where our rules walk differently.

    python benchmarks/label_fidelity.py [--graph tests/data/commons_realgraph] [--show 20]
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict, deque
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.labels.sqldump import parse_dump
from pipeline.labels.taxonomy import Taxonomy
from pipeline.labels.traversal import Traversal

PAD = "Zz depth pad"


def load_graph(folder: Path):
    """(categories [(title, hidden, depth)], edges [(child, parent)], files {file_id: [category]}) from legacy dumps."""
    prefix = str(folder / "legacy" / "commonswiki-20220220-")
    page = parse_dump(prefix + "page.sql.gz", ["page_id", "page_namespace", "page_title"]).columns
    cats = {i: t.replace("_", " ") for i, ns, t in zip(page["page_id"], page["page_namespace"], page["page_title"])
            if ns == 14}
    props = parse_dump(prefix + "page_props.sql.gz", ["pp_page", "pp_propname"]).columns
    hidden = {cats[i] for i, n in zip(props["pp_page"], props["pp_propname"]) if n == "hiddencat" and i in cats}
    links = parse_dump(prefix + "categorylinks.sql.gz", ["cl_from", "cl_to", "cl_type"]).columns
    edges, children, files = [], defaultdict(list), defaultdict(list)
    for src, to, kind in zip(links["cl_from"], links["cl_to"], links["cl_type"]):
        to = to.replace("_", " ")
        if kind == "subcat":
            edges.append((cats[src], to))
            children[to].append(cats[src])
        elif kind == "file":
            files[src].append(to)
    depth, queue = {"CommonsRoot": 1}, deque(["CommonsRoot"])
    while queue:
        t = queue.popleft()
        for c in children.get(t, ()):
            if c not in depth:
                depth[c] = depth[t] + 1
                queue.append(c)
    return [(t, t in hidden, depth.get(t)) for t in cats.values()], edges, dict(files)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", default=str(ROOT / "tests" / "data" / "commons_realgraph"))
    ap.add_argument("--heuristics", default="headJ+depth")
    ap.add_argument("--show", type=int, default=0, help="print this many differing categories of each kind")
    args = ap.parse_args(argv)
    folder = Path(args.graph)
    taxonomy = Taxonomy.load("v1.3")
    categories, edges, files = load_graph(folder)
    traversal = Traversal.build(categories, edges, taxonomy, args.heuristics)

    queried: set[str] = set()
    labels_and_hops = traversal.labels_and_hops

    def recording(title):
        if title not in traversal._memo and traversal.depth.get(title) is not None and title not in traversal.seeds:
            queried.add(title)
        return labels_and_hops(title)

    traversal.labels_and_hops = recording
    for cats in files.values():
        traversal.file_labels(cats)

    dev = pd.read_parquet(folder / "dev_files_v1.3.parquet")
    exact = sum(
        set(taxonomy.with_ancestors([n for n in taxonomy.names if n in traversal.file_labels(files.get(fid, []))]))
        == set(want)
        for fid, want in zip(dev.id, dev.labels_original)
    )
    expanded = {c for c, p in edges if not p.startswith(PAD)}
    print(f"dev files with exactly the original labels: {exact}/{len(dev)}")
    print(f"categories the original queried: {len(expanded)}; we query: {len(queried)}; "
          f"only the original: {len(expanded - queried)}; only ours: {len(queried - expanded)}")
    if args.show:
        rng = random.Random(0)
        for name, diff in (("only the original", expanded - queried), ("only ours", queried - expanded)):
            print(f"{name}:", rng.sample(sorted(diff), min(args.show, len(diff))))


if __name__ == "__main__":
    main()
