"""Where every table lives in the data lake, keyed by dump date.

One place that knows the paths, so stages exchange only a ``Layout`` (or the
paths it gives) and never data. Labels and everything built on them are also
keyed by taxonomy version and heuristics, so several labelings of one dump can
coexist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.config import PathsConfig, Settings
from pipeline.errors import StageError

TABLES = ("page", "categorylinks", "linktarget", "page_props", "redirect")
# The tables every categorylinks layout needs; ingest checks linktarget itself.
REQUIRED_DUMPS = ("page", "categorylinks", "page_props")
LATEST = "latest"
DUMP_DATE_RE = re.compile(r"^[0-9]{8}$")
SPLITS = ("train", "validation", "threshold", "test")


def join(*parts: str) -> str:
    """Join path parts with '/', keeping URL schemes such as s3:// intact."""
    head, *rest = parts
    return "/".join([head.rstrip("/")] + [p.strip("/") for p in rest])


def complete_dump_dates(dumps_dir: str, wiki: str = "commonswiki") -> list[str]:
    """Dump dates (YYYYMMDD, ascending) for which every table of REQUIRED_DUMPS is in dumps_dir.

    Wikimedia publishes a dump's tables over several days, so a date only
    counts once all of them are there.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(dumps_dir)
    name = re.compile(rf"^{re.escape(wiki)}-([0-9]{{8}})-([a-z_]+)\.sql\.gz$")
    tables: dict[str, set[str]] = {}
    for path in fs.glob(join(root, f"{wiki}-*.sql.gz")):
        m = name.match(path.rsplit("/", 1)[-1])
        if m:
            tables.setdefault(m.group(1), set()).add(m.group(2))
    return sorted(d for d, have in tables.items() if set(REQUIRED_DUMPS) <= have)


def resolve_dump_date(paths: PathsConfig, on_or_before: str | None = None) -> str:
    """The configured dump date; ``latest`` means the newest complete dump in ``dumps_dir``
    (not after ``on_or_before``, YYYYMMDD, when given).

    A nightly run resolves it once (the DAG's first task) and pins the result
    for all its stages, so a dump that lands mid-run cannot mix two dates.
    """
    date = paths.dump_date.strip()
    if date == LATEST:
        dates = [d for d in complete_dump_dates(paths.dumps_dir, paths.wiki) if not on_or_before or d <= on_or_before]
        if not dates:
            bound = f" on or before {on_or_before}" if on_or_before else ""
            raise StageError("resolve", paths.dumps_dir,
                             f"no complete {paths.wiki} dump ({', '.join(REQUIRED_DUMPS)}){bound} to take as {LATEST!r}")
        return dates[-1]
    if not DUMP_DATE_RE.match(date):
        raise StageError("resolve", paths.dumps_dir, f"dump date {date!r} is neither YYYYMMDD nor {LATEST!r}")
    return date


@dataclass(frozen=True)
class Layout:
    data_root: str
    dump_date: str
    dumps_dir: str
    wit_dir: str
    taxonomy: str
    heuristics: str
    wiki: str = "commonswiki"

    @classmethod
    def from_settings(cls, s: Settings) -> "Layout":
        return cls(
            data_root=s.paths.data_root,
            dump_date=resolve_dump_date(s.paths),
            dumps_dir=s.paths.dumps_dir,
            wit_dir=s.paths.wit_dir,
            wiki=s.paths.wiki,
            taxonomy=s.label.taxonomy,
            heuristics=s.label.heuristics,
        )

    # inputs
    def dump(self, table: str) -> str:
        return join(self.dumps_dir, f"{self.wiki}-{self.dump_date}-{table}.sql.gz")

    # outputs
    @property
    def root(self) -> str:
        return join(self.data_root, self.dump_date)

    def ingest(self, table: str) -> str:
        """categories, category_edges, file_links, file_redirects, rejects."""
        return join(self.root, "ingest", table)

    @property
    def ingest_staging(self) -> str:
        return join(self.root, "_staging", "ingest")

    @property
    def category_depth(self) -> str:
        return join(self.root, "graph", "category_depth")

    @property
    def label_key(self) -> str:
        return f"{self.taxonomy}/{self.heuristics}"

    def labels(self, table: str) -> str:
        """category_labels, file_labels, stats.json."""
        return join(self.root, "labels", self.label_key, table)

    @property
    def wit_images(self) -> str:
        return join(self.root, "wit", self.label_key, "images")

    @property
    def wit_rejects(self) -> str:
        return join(self.root, "wit", self.label_key, "rejects")

    @property
    def image_index(self) -> str:
        """The run's images joined with the image store: labels, split, where the bytes are."""
        return join(self.root, "image_index", self.label_key)

    @property
    def predictions(self) -> str:
        return join(self.root, "predictions", self.label_key)

    def summary(self, stage: str) -> str:
        """The JSON summary a stage leaves behind (what the DAG passes on, kept for users)."""
        return join(self.root, "_summaries", self.label_key, f"{stage}.json")

    @property
    def reports(self) -> str:
        return join(self.root, "reports", self.label_key)
