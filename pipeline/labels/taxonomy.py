"""Versioned topic taxonomies: labels, their parents and their seed Commons categories.

A taxonomy is data (``pipeline/labels/taxonomies/<version>.yaml``). Label order in the
file is the order of every multi-hot vector and probability column downstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

TAXONOMY_DIR = Path(__file__).parent / "taxonomies"


class TaxonomyError(ValueError):
    pass


@dataclass(frozen=True)
class Label:
    name: str
    parent: str | None
    seeds: tuple[str, ...]


def slug(name: str) -> str:
    """'Maps & Flags' -> 'maps_flags': safe as a column or metric name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class Taxonomy:
    version: str
    labels: tuple[Label, ...]

    @classmethod
    def load(cls, version_or_path: str) -> "Taxonomy":
        path = Path(version_or_path)
        if path.suffix not in (".yaml", ".yml"):  # a version name such as "v1.3"
            path = TAXONOMY_DIR / f"{version_or_path}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in TAXONOMY_DIR.glob("*.yaml"))
            raise TaxonomyError(f"taxonomy {version_or_path!r} not found (known: {', '.join(known)})")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            labels = tuple(
                Label(str(d["name"]), d.get("parent"), tuple(str(s) for s in d.get("seeds") or ()))
                for d in data["labels"]
            )
        except (KeyError, TypeError) as e:
            raise TaxonomyError(f"{path}: every label needs a name, a parent (or null) and seeds: {e}") from e
        taxonomy = cls(str(data.get("version", path.stem)), labels)
        taxonomy.validate(str(path))
        return taxonomy

    def validate(self, where: str = "taxonomy") -> None:
        names = [label.name for label in self.labels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise TaxonomyError(f"{where}: duplicate label(s) {dupes}")
        for label in self.labels:
            if label.parent is not None and label.parent not in names:
                raise TaxonomyError(f"{where}: label {label.name!r} has unknown parent {label.parent!r}")
        for label in self.labels:  # no cycles in the parent chain
            seen, cur = set(), label.name
            while cur is not None:
                if cur in seen:
                    raise TaxonomyError(f"{where}: parent cycle through {cur!r}")
                seen.add(cur)
                cur = self.by_name[cur].parent
        slugs = [slug(n) for n in names]
        if len(set(slugs)) != len(slugs):
            raise TaxonomyError(f"{where}: two labels share a column name: {slugs}")

    @cached_property
    def by_name(self) -> dict[str, Label]:
        return {label.name: label for label in self.labels}

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]

    @property
    def slugs(self) -> list[str]:
        return [slug(n) for n in self.names]

    def ancestors(self, name: str) -> list[str]:
        """The label itself and all its ancestors, nearest first."""
        out = []
        cur = name
        while cur is not None:
            out.append(cur)
            cur = self.by_name[cur].parent
        return out

    def descendants(self, name: str) -> list[str]:
        return [n for n in self.names if name in self.ancestors(n)]

    def seed_labels(self, hierarchical: bool = False) -> dict[str, list[str]]:
        """Seed category title -> the labels reaching it gives, in taxonomy order.

        Flat: the labels that name the seed. Hierarchical: those and all their
        ancestors (reaching ``Plantae`` gives Plants, Nature and STEM), which is
        the same as a label's seeds including all its descendants' seeds.
        """
        out: dict[str, set[str]] = {}
        for label in self.labels:
            for seed in label.seeds:
                out.setdefault(seed, set()).update(
                    self.ancestors(label.name) if hierarchical else [label.name]
                )
        order = {n: i for i, n in enumerate(self.names)}
        return {seed: sorted(labels, key=order.__getitem__) for seed, labels in out.items()}

    def with_ancestors(self, labels) -> list[str]:
        """Close a label set under ancestors, in taxonomy order."""
        closed = {a for name in labels for a in self.ancestors(name)}
        return [n for n in self.names if n in closed]

    def multi_hot(self, labels) -> list[int]:
        present = set(labels)
        return [1 if n in present else 0 for n in self.names]

    def ancestor_matrix(self):
        """R[i, j] = 1 when label j is label i or one of its descendants (C-HMCNN's constraint matrix)."""
        import numpy as np

        n = len(self.names)
        index = {name: i for i, name in enumerate(self.names)}
        r = np.zeros((n, n), dtype="float32")
        for name in self.names:
            for anc in self.ancestors(name):
                r[index[anc], index[name]] = 1.0
        return r
