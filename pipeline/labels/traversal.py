"""The published traversal heuristics as a small, plain recursive oracle.

``spark_jobs/label_topics.py`` computes the same labels over the whole graph
without recursion; this module states the rules once, directly, on dicts in
memory, so tests (and benchmarks) can check the Spark job against it. It is
not meant for the full graph.

A category's labels (flat: a seed gives only its own labels):
  * not in the graph (red link) or no depth (not connected to the root): none;
  * a seed category: its taxonomy labels, and the walk stops there;
  * hidden, or its head is a number, a month, "Century", "Categories" or
    "Category": none;
  * otherwise the heuristics, in the configured order, each propose
    categories to query; the labels are the union of theirs, and the first
    heuristic that gives a non-empty set wins.

The ``refined`` labeler proposes as ``headJ+depth`` does but keeps, at every
category, only the labels of the nearest seeds: a category's hops are 0 at a
seed and one more than its nearest labeled proposal otherwise, and its labels
are those of the proposals at that distance (ties: their union). A category
with one near parent and a far one no longer collects the far one's topics at
every step up, so files get fewer, closer topics (``docs/benchmarks.md``: it
agrees better with people than ``headJ+depth``). The ``refined-rules`` labeler
(the default) is ``refined`` plus the taxonomy's label rules
(``pipeline/labels/rules.py``), applied after the walk: ``labels`` and
``file_labels`` include what they add, ``labels_and_hops`` (the walk) never.

Almost every proposal has a strictly smaller depth or is a seed. The one
exception is headJ's parent query for the heads Genera, Specimens,
Antagonists and Births: the depth test applies to the category named by the
head ("Births"), and then the parents carrying the head are queried whatever
their depth, as the original did (its logs on the real subgraph show it).
Such queries can close a cycle, where the original's answer depended on the
order of its walk. Here the rule is order-free: a category from which
proposals lead into a cycle takes labels only from the proposals that do not.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable

from pipeline.labels.heads import is_null_head, traversal_head
from pipeline.labels.rules import LabelRules
from pipeline.labels.taxonomy import Taxonomy

HEURISTICS = ("headJ", "lookahead", "depth")
# Heads for which headJ queries the parent that repeats the head instead of
# the category named by the head ("Genera" names no useful category).
PARENT_HEADS = frozenset({"Genera", "Specimens", "Antagonists", "Births"})


@dataclass(frozen=True)
class Labeler:
    """How a labeler labels: the heuristics it proposes with (in order), whether only the nearest
    seeds count, and whether the taxonomy's label rules (``pipeline/labels/rules.py``) add to it."""

    heuristics: tuple[str, ...]
    nearest: bool = False
    rules: bool = False


# The published traversal every other labeler is compared with.
BASELINE = "headJ+depth"
# Named labelers. Any other spec is heuristics joined with '+', as the original traversal took them.
LABELERS = {
    "refined": Labeler(("headJ", "depth"), nearest=True),
    "refined-rules": Labeler(("headJ", "depth"), nearest=True, rules=True),
}


def parse_heuristics(spec: str) -> list[str]:
    """'headJ+depth' -> ['headJ', 'depth']; an unknown name is a ValueError listing the valid ones."""
    return list(parse_labeler(spec).heuristics)


def parse_labeler(spec) -> Labeler:
    """A labeler spec -> its ``Labeler``: 'headJ+depth' -> Labeler(('headJ', 'depth')); 'refined' ->
    the same with ``nearest``. A list of heuristic names is taken as they are. Unknown names are a
    ValueError listing the valid ones."""
    if isinstance(spec, Labeler):
        return spec
    if not isinstance(spec, str):
        names = [str(h) for h in spec]
    else:
        spec = spec.strip()
        if spec in LABELERS:
            return LABELERS[spec]
        names = [h.strip() for h in spec.split("+")]
    unknown = [h for h in names if h not in HEURISTICS]
    if unknown or not names:
        raise ValueError(
            f"unknown heuristic(s) {unknown} in {spec!r}; valid: {', '.join(HEURISTICS)} (joined with '+'), "
            f"or a labeler: {', '.join(LABELERS)}"
        )
    return Labeler(tuple(names))


def shortened_matches(heads: list[str]) -> tuple[set[str], list[str]]:
    """Head matching with shortening, as the original ``_head_matching``.

    ``heads[0]`` is the category's head, the rest its parents' heads. While no
    head occurs twice and some head has more than one word, the first word of
    every longest head is dropped (and the rest capitalised). Returns the
    heads that occur more than once at the end, and the shortened heads.
    """
    heads = list(heads)
    while True:
        seen: set[str] = set()
        repeated: set[str] = set()
        for h in heads:
            if h in seen:
                repeated.add(h)
            seen.add(h)
        if repeated:
            return repeated, heads
        longest = max(len(h.split()) for h in heads)
        if longest <= 1:
            return set(), heads
        heads = [" ".join(h.split()[1:]).capitalize() if len(h.split()) == longest else h for h in heads]


def head_queries(title: str, parents: list[str], heads: list[str]) -> list[tuple[str, str]]:
    """headJ's queries before the depth test: (repeated head, category to query) pairs.

    ``heads``: the category's head, then its parents' heads in ``parents``' order.
    A repeated head names the category to query, except the ``PARENT_HEADS``
    (Births, Genera, ...), where every parent carrying the head is queried
    whatever its depth (the original took the repeating one in the dump's
    parent order; this does not depend on an order). The depth test applies
    to the head's category in both cases.
    """
    repeated, short = shortened_matches(heads)
    out = []
    for h in sorted(repeated):
        if h in PARENT_HEADS:
            out += [(h, p) for p, ph in zip(parents, short[1:]) if ph == h and p != title]
        else:
            out.append((h, h))
    return out


def candidate_queries(heuristic: str, title: str, depth: int, parents: list[str], parent_depths: list | None,
                      parent_is_seed: list[bool] | None, heads: list[str] | None) -> list[tuple[str, str | None]]:
    """One heuristic's queries from a category and what is known of its parents: (category, key) pairs.

    A pair with a ``key`` (headJ) counts only if the category named ``key``
    lies above this one (a smaller depth); the caller checks that, as the key
    need not be a parent. Each heuristic reads only its own list:
    ``parent_depths`` (depth), ``parent_is_seed`` (lookahead), ``heads``
    (headJ: this category's head, then its parents'). The Spark stage and the
    oracle both propose through here.
    """
    if heuristic == "depth":
        return [(p, None) for p, d in zip(parents, parent_depths) if d is not None and d < depth]
    if heuristic == "lookahead":
        return [(p, None) for p, seed in zip(parents, parent_is_seed) if seed]
    if heuristic == "headJ":
        return [(target, key) for key, target in head_queries(title, parents, heads)]
    raise ValueError(f"unknown heuristic {heuristic!r}; valid: {', '.join(HEURISTICS)}")


@dataclass
class Traversal:
    """Recursive, memoised labeling over an in-memory graph."""

    depth: dict[str, int | None]  # every category page -> its depth (None: not connected)
    hidden: dict[str, bool]
    parents: dict[str, list[str]]  # child -> parent titles (red links included)
    seeds: dict[str, list[str]]  # seed title -> flat labels
    heuristics: list[str]
    head: Callable[[str], str] = traversal_head
    nearest: bool = False  # the refined labeler: only the nearest seeds' labels
    rules: LabelRules | None = None  # added after the traversal (refined-rules)
    _memo: dict[str, tuple[frozenset, int | None]] = field(default_factory=dict, repr=False)
    _heads: dict[str, str] = field(default_factory=dict, repr=False)
    _props: dict[str, list] = field(default_factory=dict, repr=False)
    _cyclic: dict[str, bool] = field(default_factory=dict, repr=False)
    _ruled: dict[str, frozenset] = field(default_factory=dict, repr=False)
    _open: set = field(default_factory=set, repr=False)

    @classmethod
    def build(cls, categories: Iterable[tuple[str, bool, int | None]], edges: Iterable[tuple[str, str]],
              taxonomy: Taxonomy, heuristics: str | list[str], head=traversal_head) -> "Traversal":
        depth, hidden, parents = {}, {}, {}
        for title, is_hidden, d in categories:
            depth[title] = d
            hidden[title] = bool(is_hidden)
        for child, parent in edges:
            parents.setdefault(child, [])
            if parent not in parents[child]:
                parents[child].append(parent)
        labeler = parse_labeler(heuristics)
        rules = LabelRules.load(taxonomy) if labeler.rules else None
        return cls(depth, hidden, parents, taxonomy.seed_labels(hierarchical=False), list(labeler.heuristics), head,
                   labeler.nearest, rules)

    def get_head(self, title: str) -> str:
        if title not in self._heads:
            self._heads[title] = self.head(title)
        return self._heads[title]

    def _depth(self, title: str):
        return self.depth.get(title)

    def propose(self, heuristic: str, title: str) -> list[str]:
        """The categories a heuristic proposes to query next."""
        d = self.depth[title]
        parents = self.parents.get(title, [])
        # only what this heuristic reads, so the oracle does no more work than its rule needs
        depths = [self._depth(p) for p in parents] if heuristic == "depth" else None
        seeds = [p in self.seeds for p in parents] if heuristic == "lookahead" else None
        heads = [self.get_head(t) for t in [title, *parents]] if heuristic == "headJ" else None
        found = candidate_queries(heuristic, title, d, parents, depths, seeds, heads)
        return [target for target, key in found
                if key is None or (self._depth(key) is not None and self._depth(key) < d)]

    def _walks_on(self, title: str) -> bool:
        """Whether the heuristics are tried here (not a red link, unconnected, seed, hidden or null head)."""
        return (self._depth(title) is not None and title not in self.seeds and not self.hidden.get(title)
                and not is_null_head(self.get_head(title)))

    def _proposals(self, title: str) -> list[list[str]]:
        if title not in self._props:
            self._props[title] = [self.propose(h, title) for h in self.heuristics] if self._walks_on(title) else []
        return self._props[title]

    def leads_to_cycle(self, title: str) -> bool:
        """Whether some chain of proposals from this category runs into a cycle."""
        if title in self._cyclic:
            return self._cyclic[title]
        if title in self._open:  # back on the current chain: a cycle
            return True
        self._open.add(title)
        result = False
        for targets in self._proposals(title):
            for t in targets:
                result = self.leads_to_cycle(t) or result
        self._open.discard(title)
        self._cyclic[title] = result
        return result

    def labels(self, title: str) -> frozenset:
        """Flat labels of one category: the traversal's, and the parent rules' (which the traversal never reads)."""
        found = self.labels_and_hops(title)[0]
        if self.rules is not None:
            if title not in self._ruled:  # once per category, not once per file that names it
                self._ruled[title] = frozenset(self.rules.category_labels(self.parents.get(title, ())))
            found |= self._ruled[title]
        return found

    def labels_and_hops(self, title: str) -> tuple[frozenset, int | None]:
        """Flat labels of one category, and the proposal steps to its nearest labeled seed (None: no labels)."""
        if title in self._memo:
            return self._memo[title]
        result: tuple[frozenset, int | None] = (frozenset(), None)  # red link, unconnected, hidden, ...
        if title in self.seeds and self._depth(title) is not None:
            result = (frozenset(self.seeds[title]), 0)
        elif self._walks_on(title):
            cyclic = self.leads_to_cycle(title)
            for targets in self._proposals(title):
                found = [self.labels_and_hops(nxt) for nxt in targets if not (cyclic and self.leads_to_cycle(nxt))]
                found = [(labels, hops) for labels, hops in found if labels]
                if found:
                    hops = min(h for _, h in found)
                    if self.nearest:
                        found = [(labels, h) for labels, h in found if h == hops]
                    result = (frozenset().union(*(labels for labels, _ in found)), hops + 1)
                    break
        self._memo[title] = result
        return result

    def file_labels(self, categories: Iterable[str], title: str | None = None) -> frozenset:
        """Flat labels of a file: its categories' labels, and the format rules' (which need its ``title``)."""
        out: set[str] = set()
        for c in categories:
            out |= self.labels(c)
        if self.rules is not None:
            if title is None:
                raise ValueError("a labeler with format rules needs the file's title")
            out |= self.rules.file_labels(title, out)
        return frozenset(out)


def _raise_recursion_limit() -> None:
    # The walk goes down one depth level per call; Commons depth is < 100,
    # but random test graphs may be deeper.
    if sys.getrecursionlimit() < 10_000:
        sys.setrecursionlimit(10_000)


_raise_recursion_limit()
