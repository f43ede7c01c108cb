"""Rules that add topics people see in an image and the category traversal never gives.

People label an image by looking at it: a drawing of a scientific subject is a diagram, a portrait
of someone is about people. The categories often say so only indirectly (a file in "Albert
Einstein", whose parent is "1879 births"), and the traversal, which follows categories upwards to
seeds, never reaches Diagrams or People from there. These rules add them after the traversal; they
never feed back into it, so no other category's labels change. Measured against people in
``benchmarks/label_rules.py`` and docs/benchmarks.md (development files and a held-out set).

The rules are data, one file per taxonomy version (``pipeline/labels/taxonomies/rules/<version>.yaml``),
so a taxonomy version can change them. Two kinds:

* a *parent* rule gives its label to a category one of whose parents matches one of its patterns
  (a person's category has a "NNNN births" parent), and through it to the category's files;
* a *format* rule gives its label to a file whose title ends in one of its formats (png, svg, gif:
  drawings) when the file's labels, hierarchically, already hold ``requires`` (STEM).

The patterns are regular expressions that Python's ``re`` (the oracle) and Java's
``java.util.regex`` (Spark's ``rlike``) read the same way: search semantics, ASCII classes such as
``[0-9]`` rather than ``\\d`` (see ``pipeline/labels/heads.py``). The ``refined-rules`` labeler
(``pipeline/labels/traversal.py``) is ``refined`` plus these rules.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.labels.taxonomy import TAXONOMY_DIR, Taxonomy, TaxonomyError

RULES_DIR = TAXONOMY_DIR / "rules"


@dataclass(frozen=True)
class ParentRule:
    label: str
    patterns: tuple[str, ...]

    @property
    def regex(self) -> str:
        """All patterns as one expression (any of them)."""
        return "|".join(f"(?:{p})" for p in self.patterns)


@dataclass(frozen=True)
class FormatRule:
    label: str
    formats: tuple[str, ...]  # lower case, no dot
    requires: str


def file_format(title: str) -> str:
    """'Flag of Spain.SVG' -> 'svg': the text after the last dot, lower case (a title without one: all of it)."""
    return title.rsplit(".", 1)[-1].lower()


@dataclass(frozen=True)
class LabelRules:
    taxonomy: Taxonomy
    parent_rules: tuple[ParentRule, ...]
    format_rules: tuple[FormatRule, ...]

    @classmethod
    def path_for(cls, version: str) -> Path:
        return RULES_DIR / f"{version}.yaml"

    @classmethod
    def load(cls, taxonomy: Taxonomy) -> "LabelRules":
        """The rules of ``taxonomy``'s version; a missing file or a rule the taxonomy cannot give is a TaxonomyError."""
        path = cls.path_for(taxonomy.version)
        if not path.exists():
            known = sorted(p.stem for p in RULES_DIR.glob("*.yaml"))
            raise TaxonomyError(f"taxonomy {taxonomy.version} has no label rules ({path} not found; "
                                f"rules exist for: {', '.join(known) or 'none'})")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if str(data.get("version", taxonomy.version)) != taxonomy.version:
            raise TaxonomyError(f"{path}: rules of version {data['version']!r}, not {taxonomy.version!r}")
        parents, formats = [], []
        for i, rule in enumerate(data.get("rules") or []):
            where = f"{path}, rule {i + 1}"
            try:
                if "parent_patterns" in rule:
                    parsed = ParentRule(str(rule["label"]), tuple(str(p) for p in rule["parent_patterns"]))
                    for p in parsed.patterns:
                        re.compile(p)
                    parents.append(parsed)
                    names = [parsed.label]
                else:
                    parsed = FormatRule(str(rule["label"]), tuple(str(f).lower().lstrip(".") for f in rule["formats"]),
                                        str(rule["requires"]))
                    formats.append(parsed)
                    names = [parsed.label, parsed.requires]
            except (KeyError, TypeError) as e:
                raise TaxonomyError(f"{where}: a rule needs a label and either parent_patterns, or formats and "
                                    f"requires: {e!r}") from e
            except re.error as e:
                raise TaxonomyError(f"{where}: bad pattern: {e}") from e
            unknown = [n for n in names if n not in taxonomy.by_name]
            if unknown:
                raise TaxonomyError(f"{where}: taxonomy {taxonomy.version} has no label {unknown[0]!r}")
        return cls(taxonomy, tuple(parents), tuple(formats))

    @classmethod
    def sha256(cls, version: str) -> str | None:
        """The rules file's hash, for the label stage's fingerprint (None: no rules for this version)."""
        path = cls.path_for(version)
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None

    # --------------------------------------------------------------- the oracle's side

    def category_labels(self, parents) -> set[str]:
        """Labels the parent rules give a category with these parent titles."""
        return {r.label for r in self.parent_rules if any(re.search(r.regex, p) for p in parents)}

    def file_labels(self, title: str, labels) -> set[str]:
        """Labels the format rules give a file titled ``title`` whose categories gave it ``labels``."""
        have = set(self.taxonomy.with_ancestors(labels))
        fmt = file_format(title)
        return {r.label for r in self.format_rules if fmt in r.formats and r.requires in have}

    # --------------------------------------------------------------- Spark's side (the same rules)

    def bit(self, label: str) -> int:
        return 1 << self.taxonomy.names.index(label)

    def category_rule_masks(self, edges_df):
        """``title, rule_mask`` for every category that a parent rule fires on (others: no row)."""
        from pyspark.sql import functions as F

        if not self.parent_rules:
            return edges_df.sparkSession.createDataFrame([], "title string, rule_mask long")
        parent, zero = F.col("parent"), F.lit(0).cast("long")
        mask = zero
        for r in self.parent_rules:
            mask = mask.bitwiseOR(F.when(parent.rlike(r.regex), F.lit(self.bit(r.label)).cast("long")).otherwise(zero))
        any_rule = "|".join(r.regex for r in self.parent_rules)
        return (edges_df.where(parent.rlike(any_rule)).select(F.col("child").alias("title"), mask.alias("m"))
                .groupBy("title").agg(F.expr("bit_or(m)").alias("rule_mask")))

    def file_rule_mask(self, title_col, mask_col):
        """The format rules' bits for a file with this title and (flat) label mask, as a column."""
        from pyspark.sql import functions as F

        zero = F.lit(0).cast("long")
        out = zero
        fmt = F.lower(F.substring_index(title_col, ".", -1))
        for r in self.format_rules:
            # the file holds ``requires`` hierarchically when it holds it or any label below it
            below = sum(self.bit(n) for n in self.taxonomy.descendants(r.requires))
            fires = fmt.isin(list(r.formats)) & (mask_col.bitwiseAND(F.lit(below).cast("long")) != 0)
            out = out.bitwiseOR(F.when(fires, F.lit(self.bit(r.label)).cast("long")).otherwise(zero))
        return out
