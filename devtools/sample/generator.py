"""The bundled sample: Commons SQL dumps, WIT TSVs and the images they reference.

``generate_sample`` writes, under ``out/``:

- ``dumps/commonswiki-<date>-{page,categorylinks,linktarget,page_props,redirect}.sql.gz``
  in the real mysqldump format (``legacy_schema``: categorylinks with ``cl_to``
  and no linktarget dump);
- ``wit/wit_v1.train.all-0000N-of-00010.tsv.gz`` (the first of WIT's ten files) with the real 17 columns;
- ``images/wikipedia/commons/<a>/<ab>/<Name>``: the originals the WIT rows
  point at, drawn so their content depends on their topic labels;
- ``truth.json``: facts the tests assert on (fixture labels, depths, hidden and
  unconnected categories, counts).

The category graph is a hand-written core (CommonsRoot, Topics, every seed of
taxonomies v1.3 and v1.4, and fixtures for each tricky case: cycles, a
self-loop, red links, redirects, unconnected components, hidden categories,
quotes and backslashes in titles) plus generated categories with Commons-style
names. Every generated category takes its parents among categories created
before it, so its depth (BFS from CommonsRoot, CommonsRoot = 1) and its labels
(the depth rule: a seed gives its own labels; any other category gets the
union of the labels of its parents one level shallower) are known the moment
it is created. The only edges to later categories are deliberate cycle edges
A -> B where B's sole parent is A, which change no depth. So the ground truth
comes out of a single streaming pass with a few small arrays per category, and
a million categories fit in bounded memory.

Everything is drawn from ``random.Random(seed)`` (and per-image numpy
generators keyed by the seed), gzip headers carry mtime 0 and no name: the same
arguments give byte-identical files.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import random
import shutil
import time
from array import array
from collections import deque
from datetime import date, timedelta

import numpy as np

from devtools.sample import captions
from devtools.sample import images as imgs
from devtools.sample import mysqldump as md
from devtools.sample import names as nm
from devtools.sample.wit import WitWriter, hash_path, image_url, page_url
from pipeline.labels.heads import is_null_head, traversal_head
from pipeline.labels.taxonomy import Taxonomy

TAXONOMIES = ("v1.3", "v1.4")
IMAGE_TAXONOMY = "v1.3"  # the labels the pictures are drawn from
ROOT = "CommonsRoot"
CAT_BASE_ID = 1000
WINDOW = 256  # categories whose link rows wait in memory (for cycle edges to later ones)
TEMPLATES_NS10 = ["Information", "Self", "Category redirect", "Hiddencat", "Location", "Artwork", "Taken on"]
LICENSES = nm.LICENSES

# (title, parents, flags): "h" hidden, "r=<target>" a hard redirect to another category.
# Parents that are not in this list and not generated are red links (no page).
FIXTURE_CATEGORIES: list[tuple[str, list[str], str]] = [
    ("CommonsRoot", [], ""),
    ("Topics", ["CommonsRoot"], ""),
    ("Commons maintenance", ["CommonsRoot"], ""),
    ("Hidden categories", ["Commons maintenance"], "h"),
    ("License tags", ["Hidden categories"], "h"),
    *[(lic, ["License tags"], "h") for lic in LICENSES],
    ("Quality images", ["Hidden categories"], "h"),
    ("Quality images of Belgium", ["Quality images"], "h"),
    ("Media needing categories", ["Hidden categories"], "h"),
    ("Pages with maps", ["Hidden categories"], "h"),
    ("Uploaded with UploadWizard", ["Hidden categories"], "h"),
    ("Files by user", ["Hidden categories"], "h"),
    # the seeds of v1.3 and v1.4 and the non-seed categories that hold them
    ("Science", ["Topics"], ""),
    ("STEM", ["Science"], ""),
    ("Nature", ["Topics", "STEM"], ""),
    ("Life", ["Nature"], ""),
    ("Organisms", ["Life"], ""),
    ("Plantae", ["Organisms", "Nature"], ""),
    ("Animalia", ["Organisms", "Nature"], ""),
    ("Paleontology", ["Science"], ""),
    ("Geology", ["Science", "Nature"], ""),
    ("Fossils", ["Paleontology", "Geology"], ""),
    ("Mathematics", ["Science", "STEM"], ""),
    ("Chemistry", ["Science"], ""),
    ("Astronomy", ["Science"], ""),
    ("Medicine", ["Science"], ""),
    ("Society", ["Topics"], ""),
    ("Health", ["Society", "Medicine"], ""),
    ("Technology", ["STEM", "Topics"], ""),
    ("Graphics", ["Topics"], ""),
    ("Diagrams", ["Graphics", "STEM"], ""),
    ("Culture", ["Topics"], ""),
    ("History", ["Topics", "Culture"], ""),
    ("Places", ["Topics"], ""),
    ("Architecture", ["Places", "Culture"], ""),
    ("Monuments and memorials", ["Places", "History"], ""),
    ("Landscapes", ["Nature", "Places"], ""),
    ("Maps", ["Places", "Graphics"], ""),
    ("Symbols", ["Topics"], ""),
    ("Flags", ["Symbols"], ""),
    ("Logos", ["Symbols", "Graphics"], ""),
    ("People", ["Society"], ""),
    ("People by year of birth", ["People"], ""),
    ("Human births", ["People by year of birth"], ""),
    ("Sports", ["Society"], ""),
    ("Politics", ["Society"], ""),
    ("Events", ["Topics"], ""),
    ("Transport", ["Society", "Technology"], ""),
    ("Art", ["Culture"], ""),
    ("Music", ["Culture", "Art"], ""),
    ("Literature", ["Culture"], ""),
    ("Food", ["Culture"], ""),
    ("Belief", ["Culture", "Society"], ""),
    ("Objects", ["Topics"], ""),
    ("Colors", ["Topics"], ""),
    # places
    ("Countries", ["Places"], ""),
    ("Countries of Europe", ["Countries"], ""),
    ("Countries of Africa", ["Countries"], ""),
    ("Countries of Asia", ["Countries"], ""),
    ("Countries of South America", ["Countries"], ""),
    ("Belgium", ["Countries of Europe"], ""),
    ("France", ["Countries of Europe"], ""),
    ("Spain", ["Countries of Europe"], ""),
    ("England", ["Countries of Europe"], ""),
    ("Germany", ["Countries of Europe"], ""),
    ("Switzerland", ["Countries of Europe"], ""),
    ("Kenya", ["Countries of Africa"], ""),
    ("Japan", ["Countries of Asia"], ""),
    ("Brazil", ["Countries of South America"], ""),
    ("Cities in England", ["England"], ""),
    ("London", ["Cities in England"], ""),
    ("Cities in Germany", ["Germany"], ""),
    ("Berlin", ["Cities in Germany"], ""),
    ("Cities in Switzerland", ["Switzerland"], ""),
    ("Zürich", ["Cities in Switzerland"], ""),
    ("Regions of France", ["France"], ""),
    ("Île-de-France", ["Regions of France"], ""),
    ("Cities in Brazil", ["Brazil"], ""),
    ("São Paulo", ["Cities in Brazil"], ""),
    ("Cities in Japan", ["Japan"], ""),
    ("Ōsaka", ["Cities in Japan"], ""),
    # animals
    ("Birds", ["Animalia"], ""),
    ("Birds by country", ["Birds"], ""),
    ("Fauna of Kenya", ["Kenya", "Animalia"], ""),
    ("Birds of Kenya", ["Birds by country", "Fauna of Kenya"], ""),
    ("Birds of kenya", [], "r=Birds of Kenya"),
    # architecture
    ("Castles and chateaux", ["Architecture"], ""),
    ("Castles in Belgium", ["Castles and chateaux", "Belgium"], ""),
    ("Kasteel van Gaasbeek", ["Castles in Belgium"], ""),
    ("Buildings by function", ["Architecture"], ""),
    ("Churches", ["Buildings by function"], ""),
    ("Churches by country", ["Churches"], ""),
    ("Christianity", ["Belief"], ""),
    ("Christianity in Belgium", ["Christianity", "Belgium"], ""),
    ("Churches in Belgium", ["Churches by country", "Belgium", "Christianity in Belgium"], ""),
    ("Buildings in the United States", ["Architecture"], ""),
    ("Buildings in Washington, D.C.", ["Buildings in the United States"], ""),
    # art and people
    ("Painters", ["Art", "People"], ""),
    ("Portrait painters", ["Painters"], ""),
    ("Portrait painters from England", ["Portrait painters", "England"], ""),
    ("19th-century portrait painters", ["Portrait painters"], ""),
    ("Deaths in London", ["People", "London"], ""),
    ("Lemuel Francis Abbott", ["Portrait painters from England", "19th-century portrait painters", "Deaths in London"], ""),
    ("Paintings", ["Art"], ""),
    ("Portrait paintings", ["Paintings"], ""),
    ("Portrait paintings by Lemuel Francis Abbott", ["Lemuel Francis Abbott", "Portrait paintings"], ""),
    ("Paintings by artist", ["Paintings"], ""),
    ("Paintings by Jean-Baptiste-Camille Corot", ["Paintings by artist"], ""),
    ("Families", ["People"], ""),
    ("O'Brien family", ["Families"], ""),
    # history and events
    ("20th century", ["History"], ""),
    ("1960s", ["20th century"], ""),
    ("1962", ["1960s"], ""),
    ("1962 in Berlin", ["1962", "Berlin"], ""),
    ("January 1962", ["1962"], ""),
    ("1962 events", ["Events", "1962"], ""),
    # maps, flags, science
    ("Maps by country", ["Maps"], ""),
    ("Maps of France", ["Maps by country", "France"], ""),
    ("Flags by country", ["Flags"], ""),
    ("Flags of Spain", ["Flags by country", "Spain"], ""),
    ("Volcanoes", ["Geology", "Landscapes"], ""),
    ('"Volcanoes" of sedimentary rock', ["Volcanoes"], ""),
    ("Planets of the Solar System", ["Astronomy"], ""),
    ("Mercury (planet)", ["Planets of the Solar System"], ""),
    ("Recursion", ["Recursion", "Mathematics"], ""),  # a self-loop
    # a cycle reachable from the root: Water in Kenya <-> Rivers of Kenya
    ("Rivers of Africa", ["Landscapes"], ""),
    ("Water in Kenya", ["Kenya", "Rivers of Kenya"], ""),
    ("Rivers of Kenya", ["Water in Kenya", "Rivers of Africa"], ""),
    # no label: a non-seed branch, with a backslash in the title
    ("Back\\slash tests", ["Objects"], ""),
    # not connected to CommonsRoot: a cycle on its own, an orphan, a child of a red link
    ("Photographs by Anonymous", ["Unsorted photographs"], ""),
    ("Unsorted photographs", ["Photographs by Anonymous"], ""),
    ("Kasteel van Beersel drawings", [], ""),
    ("Sculptures by the Unknown Master", ["Sculptors of the Unknown School"], ""),
]
FIXTURE_RED_LINKS = ["Sculptors of the Unknown School", "Unidentified castles in Belgium"]

# Fixture files: (title, categories, format, wit) where wit is a list of (language, page title)
# rows (empty: not in WIT). format "redirect=<target>" makes a file redirect page.
FIXTURE_FILES: list[tuple[str, list[str], str, list[tuple[str, str]]]] = [
    ("Kasteel van Gaasbeek 2019.jpg", ["Kasteel van Gaasbeek", "Quality images of Belgium", "CC-BY-SA-4.0"], "jpeg",
     [("en", "Gaasbeek Castle"), ("en", "Lennik"), ("fr", "Château de Gaasbeek"), ("nl", "Kasteel van Gaasbeek")]),
    ("Lilac-breasted roller (Coracias caudatus) in Kenya.jpg", ["Birds of Kenya", "CC-BY-4.0"], "jpeg",
     [("en", "Lilac-breasted roller"), ("de", "Gabelracke")]),
    ("Lemuel Francis Abbott - Portrait of Horatio Nelson.jpg",
     ["Portrait paintings by Lemuel Francis Abbott", "PD-old-100"], "jpeg",
     [("en", "Horatio Nelson, 1st Viscount Nelson"), ("en", "Lemuel Francis Abbott")]),
    ("O'Brien family reunion, 1962.jpg", ["O'Brien family", "1962 in Berlin"], "jpeg", [("en", "O'Brien")]),
    ('Carte de France "1789".png', ["Maps of France", "Pages with maps"], "png_palette", [("en", "Provinces of France")]),
    ("Back\\slash test image.jpg", ["Back\\slash tests"], "jpeg", [("en", "Backslash")]),
    ("Uncategorized upload 2019.jpg", [], "jpeg", [("en", "Photography")]),
    ("Hidden only example.jpg", ["CC0", "Media needing categories"], "jpeg", [("en", "Example")]),
    ("Castle ruin near Brussels.jpg", ["Unidentified castles in Belgium"], "jpeg", [("en", "Brussels")]),
    ("Lost photograph.jpg", ["Unsorted photographs"], "jpeg", [("en", "Photograph")]),
    ("Flag of Spain (1785–1873, 1875–1931).svg", ["Flags of Spain"], "svg", [("en", "Flag of Spain")]),
    ("Churches of Belgium – Sint-Baafskathedraal, Gent.jpg", ["Churches in Belgium", "CC-BY-SA-3.0"], "jpeg",
     [("en", "St Bavo's Cathedral, Ghent")]),
    ("Lake Turkana and its rivers.jpg", ["Water in Kenya"], "jpeg", [("en", "Lake Turkana")]),
    ("Mercury (planet) by MESSENGER.png", ["Mercury (planet)"], "png_rgba", [("en", "Mercury (planet)")]),
    ("Recursive drawing.gif", ["Recursion"], "gif", [("en", "Recursion")]),
    ("Zürich Hauptbahnhof at night.webp", ["Zürich"], "webp", [("en", "Zürich Hauptbahnhof")]),
    ("Paysage de Corot.jpg", ["Paintings by Jean-Baptiste-Camille Corot", '"Volcanoes" of sedimentary rock'], "jpeg",
     [("fr", "Jean-Baptiste Camille Corot")]),  # only on a French page: not an English image
    ("Grevy's zebra in Samburu.jpg", ["Fauna of Kenya", "CC-BY-SA-4.0"], "jpeg", []),
    ("Zebra Samburu 2010.jpg", [], "redirect=Grevy's zebra in Samburu.jpg", [("en", "Grévy's zebra")]),
    # broken originals, so the downloader's error paths run
    ("Truncated scan of a map of France.jpg", ["Maps of France"], "truncated", [("en", "Map")]),
    ("Error page saved as image.jpg", ["Castles in Belgium"], "html", [("en", "Castle")]),
    ("Empty upload.jpg", ["Birds of Kenya"], "empty", [("en", "Bird")]),
    ("Tiny icon 8px.jpg", ["Flags of Spain"], "tiny", [("en", "Icon")]),
]
# WIT rows whose images are not Commons files with pages: a deleted file (the mirror 404s) and
# images uploaded to the English Wikipedia itself.
DELETED_WIT = [("Deleted file from 2015.jpg", "en", "Deleted things")]
ENWIKI_WIT = [("Album cover of The Example Band.jpg", "image/jpeg"), ("Logo of Example FC.png", "image/png")]

MIME = {
    "jpeg": "image/jpeg", "png": "image/png", "png_rgba": "image/png", "png_palette": "image/png",
    "gif": "image/gif", "webp": "image/webp", "svg": "image/svg+xml",
    "truncated": "image/jpeg", "html": "image/jpeg", "empty": "image/jpeg", "tiny": "image/jpeg",
}
SECTIONS = ["", "", "History", "Gallery", "Description", "Geography", "Biography", "Distribution", "Architecture"]
LANGS = ["fr", "de", "es", "nl", "it", "ja", "pl"]
HTML_ERROR = (
    b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Wikimedia Error</title></head>\n"
    b"<body><h1>Error</h1><p>Our servers are currently under maintenance or experiencing a technical "
    b"problem. Please try again in a few minutes.</p></body></html>\n"
)

CAT_REDIRECT_EVERY, CAT_REDIRECT_AT = 293, 17
FILE_REDIRECT_EVERY, FILE_REDIRECT_AT = 211, 7
REVISED_EVERY = 10  # in a later dump (revision > 0), every 10th generated English image is recategorized


def _null_head(title: str) -> bool:
    """The traversal gives no labels to a category whose head is a number, a month, Century..."""
    return is_null_head(traversal_head(title))


def _mask_labels(mask: int, names: list[str]) -> list[str]:
    return [n for i, n in enumerate(names) if mask >> i & 1]


class _Sample:
    def __init__(self, out, seed, images, categories, legacy_schema, dump_date, with_images, wit_files,
                 revision=0, text_knobs: captions.TextKnobs | None = None):
        self.out, self.seed, self.n_images, self.legacy = out, seed, images, legacy_schema
        self.dump_date, self.with_images, self.wit_files = dump_date, with_images, max(1, wit_files)
        self.rng = random.Random(seed)
        # The generated files' words (names, articles, captions) have their own generator, so the
        # rest of the sample is drawn as before they were written from the topics.
        self.text_rng = random.Random(f"{seed}-texts")
        self.text_knobs = text_knobs or captions.TextKnobs()
        # A later dump of the same wiki: every REVISED_EVERY-th generated file moved to other categories,
        # and ADDED_PER_REVISION new images (with WIT rows) per revision. Its own generator, so
        # everything else is drawn exactly as in revision 0.
        self.dump_revision = revision
        self.rev_rng = random.Random(f"{seed}-revision-{revision}")
        self.n_added = revision * max(5, images // 20)
        self.revised_files: list[str] = []
        self.added_files: list[str] = []
        self.tax = {v: Taxonomy.load(v) for v in TAXONOMIES}
        self.seed_masks = {}
        for v, tax in self.tax.items():
            index = {n: i for i, n in enumerate(tax.names)}
            self.seed_masks[v] = {
                s: sum(1 << index[n] for n in labels) for s, labels in tax.seed_labels(False).items()
            }
        d = date(int(dump_date[:4]), int(dump_date[4:6]), int(dump_date[6:8]))
        self.touched = (d - timedelta(days=1)).strftime("%Y%m%d") + "000000"
        self.ts_base = calendar.timegm((2008, 1, 1, 0, 0, 0, 0, 0, 0))
        self.ts_span = calendar.timegm((d.year - 1, 12, 31, 0, 0, 0, 0, 0, 0)) - self.ts_base
        self.revision = 600_000_000

        # templates
        patterns = sorted({p for ps in nm.BRANCH_TEMPLATES.values() for p in ps})
        self.templates = [nm.Template(p) for p in patterns]
        tid = {p: i for i, p in enumerate(patterns)}
        self.counters = [0] * len(self.templates)
        self.branch_tids = {b: [tid[p] for p in ps] for b, ps in nm.BRANCH_TEMPLATES.items()}
        self.branch_unbounded = {
            b: [t for t in ts if self.templates[t].size is None] for b, ts in self.branch_tids.items()
        }
        assert all(self.branch_unbounded.values()), "every branch needs an unbounded template"
        self.fixture_names = {t for t, _, _ in FIXTURE_CATEGORIES} | set(FIXTURE_RED_LINKS)

        # sizes known up front (AUTO_INCREMENT values, id ranges)
        self.n_fix = len(FIXTURE_CATEGORIES)
        self.n_cats = max(categories, self.n_fix)
        self.n_gen = self.n_cats - self.n_fix
        self.red_names = list(FIXTURE_RED_LINKS)
        for _ in range(max(2, categories // 400)):
            self.red_names.append(self._new_name("_redlink")[2])
        self.lt_red0 = len(TEMPLATES_NS10) + 1
        self.lt_cat0 = self.lt_red0 + len(self.red_names)

        fix_en_raster = sum(
            1 for _, _, fmt, rows in FIXTURE_FILES
            if rows and any(lang == "en" for lang, _ in rows) and fmt not in ("svg",)
        ) + len(DELETED_WIT)
        self.n_gen_raster = max(0, images - fix_en_raster)
        self.n_gen_svg = max(1, images // 50) if images else 0
        self.n_gen_nonen = max(1, images // 25) if images else 0
        self.n_gen_wit = self.n_gen_raster + self.n_gen_svg + self.n_gen_nonen
        self.n_gen_files = max(self.n_gen_wit, int(categories * 1.7) - len(FIXTURE_FILES))
        n_gen_redirects = sum(1 for j in range(self.n_gen_files) if j % FILE_REDIRECT_EVERY == FILE_REDIRECT_AT)
        self.file_id0 = CAT_BASE_ID + self.n_cats
        self.n_pages = self.n_cats + len(FIXTURE_FILES) + self.n_gen_files + n_gen_redirects + self.n_added

        # per-category state (index c = creation order; page id = CAT_BASE_ID + c)
        self.depth = array("b")  # 0: not reachable from CommonsRoot
        self.masks = {v: array("q") for v in TAXONOMIES}
        self.tmpl = array("h")  # -1 fixture, -2 redirect (ctr = target), >= 0 template id
        self.ctr = array("q")
        self.branch = array("b")
        self.flags = bytearray()  # 1 hidden, 2 redirect
        self.branch_names = [b for b in nm.BRANCH_TEMPLATES if b != "_redlink"]
        self.branch_index = {b: i for i, b in enumerate(self.branch_names)}
        self.pools: dict[str, array] = {b: array("l") for b in self.branch_names}
        self.normal_branches = [b for b in self.branch_names if not b.startswith("_")]
        self.counts = {
            "category_edges": 0, "file_links": 0, "hidden_categories": 0, "category_redirects": 0,
            "unconnected_categories": 0, "files": 0, "file_redirects": 0, "red_link_categories": len(self.red_names),
        }
        self.hidden_titles: list[str] = []
        self.unconnected_titles: list[str] = []
        self.keep_lists = self.n_cats <= 20000

    # ---------------------------------------------------------------- names
    def _new_name(self, branch: str) -> tuple[int, int, str]:
        tids = self.branch_tids[branch]
        for _ in range(6):
            t = tids[self.rng.randrange(len(tids))]
            tpl = self.templates[t]
            if tpl.size is not None and self.counters[t] >= tpl.size:
                continue
            k = self.counters[t]
            self.counters[t] += 1
            name = tpl.name(k)
            if name not in self.fixture_names:
                return t, k, name
        unb = self.branch_unbounded[branch]
        t = unb[self.rng.randrange(len(unb))]
        while True:
            k = self.counters[t]
            self.counters[t] += 1
            name = self.templates[t].name(k)
            if name not in self.fixture_names:
                return t, k, name

    def cat_title(self, c: int) -> str:
        t = self.tmpl[c]
        if t >= 0:
            return self.templates[t].name(self.ctr[c])
        if t == -1:
            return FIXTURE_CATEGORIES[c][0]
        target = self.cat_title(self.ctr[c])
        return target[0] + target[1:].lower()  # a case variant, as most category redirects are

    # ---------------------------------------------------------------- rows
    def _ts(self, rng: random.Random | None = None) -> str:
        rng = rng or self.rng
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.ts_base + rng.randrange(self.ts_span)))

    def _page(self, page_id: int, ns: int, title: str, redirect: bool, length: int) -> None:
        self.revision += 1
        self.w_page.write((
            page_id, ns, nm.underscored(title), 1 if redirect else 0, 0, round(self.rng.random(), 12),
            self.touched, self.touched, self.revision, length, "wikitext", None,
        ))

    def _links(self, page_id: int, title: str, parents: list, cl_type: str, rng=None) -> None:
        """categorylinks rows of one page, in primary-key order. parents: category index or -(red + 1)."""
        sortkey = title.upper()[:230]
        if self.legacy:
            rows = []
            for p in parents:
                to = nm.underscored(self.cat_title(p) if p >= 0 else self.red_names[-p - 1])
                rows.append((to.encode("utf-8"), to))
            rows.sort()
            for _, to in rows:
                self.w_links.write((page_id, to, sortkey, "", self._ts(rng), "uppercase", cl_type))
        else:
            for lt in sorted(self.lt_cat0 + p if p >= 0 else self.lt_red0 + (-p - 1) for p in parents):
                self.w_links.write((page_id, lt, sortkey, "", self._ts(rng), cl_type, 0))
        self.counts["category_edges" if cl_type == "subcat" else "file_links"] += len(parents)

    # ---------------------------------------------------------------- categories
    def _add_category(self, depth: int, masks: dict, tmpl: int, ctr: int, branch: str, flags: int) -> int:
        c = len(self.depth)
        self.depth.append(depth)
        for v in TAXONOMIES:
            self.masks[v].append(masks[v])
        self.tmpl.append(tmpl)
        self.ctr.append(ctr)
        self.branch.append(self.branch_index.get(branch, -1))
        self.flags.append(flags)
        return c

    def _derive(self, parents: list[int]) -> tuple[int, dict]:
        """Depth and labels from parents created earlier (the depth rule)."""
        ds = [self.depth[p] for p in parents if p >= 0 and self.depth[p] > 0]
        if not ds:
            return 0, {v: 0 for v in TAXONOMIES}
        d = min(ds)
        masks = {}
        for v in TAXONOMIES:
            m = 0
            for p in parents:
                if p >= 0 and self.depth[p] == d:
                    m |= self.masks[v][p]
            masks[v] = m
        return d + 1, masks

    def _write_category_page(self, c: int, title: str, redirect_target: int | None = None) -> None:
        page_id = CAT_BASE_ID + c
        hidden = self.flags[c] & 1
        self._page(page_id, 14, title, redirect_target is not None, 40 + self.rng.randrange(300))
        if hidden:
            self.w_props.write((page_id, "hiddencat", "", None))
            self.counts["hidden_categories"] += 1
            if self.keep_lists or c < self.n_fix:
                self.hidden_titles.append(title)
        if self.rng.random() < 0.05:
            self.w_props.write((page_id, "wikibase_item", f"Q{5_000_000 + c}", None))
        if redirect_target is not None:
            self.w_redirect.write((page_id, 14, nm.underscored(self.cat_title(redirect_target)), "", ""))
            self.counts["category_redirects"] += 1
        if self.w_lt is not None:
            self.w_lt.write((self.lt_cat0 + c, 14, nm.underscored(title)))
        if self.depth[c] == 0 and c != 0:
            self.counts["unconnected_categories"] += 1
            if self.keep_lists or c < self.n_fix:
                self.unconnected_titles.append(title)

    def _fixture_categories(self) -> None:
        index = {t: i for i, (t, _, _) in enumerate(FIXTURE_CATEGORIES)}
        red = {t: i for i, t in enumerate(self.red_names)}
        parents = [[index[p] if p in index else -(red[p] + 1) for p in ps] for _, ps, _ in FIXTURE_CATEGORIES]
        # BFS from the root over parent -> child edges
        children: dict[int, list[int]] = {}
        for c, ps in enumerate(parents):
            for p in ps:
                if p >= 0:
                    children.setdefault(p, []).append(c)
        depth = [0] * self.n_fix
        depth[0] = 1
        queue = deque([0])
        while queue:
            p = queue.popleft()
            for c in children.get(p, []):
                if not depth[c]:
                    depth[c] = depth[p] + 1
                    queue.append(c)
        masks = {v: [0] * self.n_fix for v in TAXONOMIES}
        for c in sorted(range(self.n_fix), key=lambda c: (depth[c] == 0, depth[c])):
            title = FIXTURE_CATEGORIES[c][0]
            for v in TAXONOMIES:
                if title in self.seed_masks[v]:
                    masks[v][c] = self.seed_masks[v][title]
                elif depth[c] and "h" not in FIXTURE_CATEGORIES[c][2].split(",") and not _null_head(title):
                    for p in parents[c]:
                        if p >= 0 and depth[p] and depth[p] == depth[c] - 1:
                            masks[v][c] |= masks[v][p]
        branch_of_seed = {b: index[b] for b in self.normal_branches}
        for c, (title, _, flags) in enumerate(FIXTURE_CATEGORIES):
            f = (1 if "h" in flags.split(",") else 0) | (2 if flags.startswith("r=") else 0)
            self._add_category(depth[c], {v: masks[v][c] for v in TAXONOMIES}, -1, 0, "", f)
        for b, c in branch_of_seed.items():
            self.pools[b].append(c)
        self.pools["_orphan"].extend([index["Unsorted photographs"], index["Kasteel van Beersel drawings"]])
        self.hidden_parents = {
            "Quality images": index["Quality images"], "Media needing": index["Media needing categories"],
            "Files by": index["Files by user"], "Uploaded with": index["Uploaded with UploadWizard"],
            "Pages with maps": index["Pages with maps"],
        }
        self.fixture_index = index
        for c, (title, _, flags) in enumerate(FIXTURE_CATEGORIES):
            target = index[flags[2:]] if flags.startswith("r=") else None
            self._write_category_page(c, title, target)
            if parents[c]:
                self._links(CAT_BASE_ID + c, title, parents[c], "subcat")

    def _generated_categories(self) -> None:
        rng = self.rng
        window: deque = deque()  # (c, title, parents) waiting for their link rows
        hidden_pool = self.pools["_hidden"]
        for j in range(self.n_gen):
            c = self.n_fix + j
            prev = c - 1
            if (
                j % CAT_REDIRECT_EVERY == CAT_REDIRECT_AT and j > 0 and self.tmpl[prev] >= 0
                and not self.flags[prev]
            ):
                title = self.cat_title(prev)
                variant = title[0] + title[1:].lower()
                if variant != title and variant not in self.fixture_names:
                    self._add_category(0, {v: 0 for v in TAXONOMIES}, -2, prev, "", 2)
                    self._write_category_page(c, variant, prev)
                    continue
            r = rng.random()
            if r < 0.03:
                branch = "_hidden"
            elif r < 0.05:
                branch = "_orphan"
            else:
                branch = self.normal_branches[rng.randrange(len(self.normal_branches))]
            t, k, title = self._new_name(branch)
            pool = self.pools[branch]
            flags = 0
            forward_from = None
            if branch == "_hidden":
                flags = 1
                head = next((p for h, p in self.hidden_parents.items() if title.startswith(h)), None)
                parents = [head if head is not None else self.fixture_index["Hidden categories"]]
                if hidden_pool and rng.random() < 0.3:
                    parents.append(hidden_pool[rng.randrange(len(hidden_pool))])
            elif branch == "_orphan":
                u = rng.random()
                if u < 0.3:
                    parents = []
                elif u < 0.4:
                    parents = [-(rng.randrange(len(self.red_names)) + 1)]
                else:
                    parents = [pool[rng.randrange(len(pool))] for _ in range(1 + (rng.random() < 0.3))]
            elif (
                window and rng.random() < 0.004
                and not self.branch_names[self.branch[window[-1][0]]].startswith("_")
            ):
                # a cycle: this category's only parent is a recent one, which also gets it as a parent
                forward_from = window[-1]
                parents = [forward_from[0]]
                branch = self.branch_names[self.branch[forward_from[0]]]
                pool = self.pools[branch]
            else:
                k_par = rng.choices((1, 2, 3, 4), (0.1, 0.2, 0.3, 0.4))[0]
                parents = [pool[rng.randrange(len(pool))]]
                for _ in range(k_par - 1):
                    u = rng.random()
                    if u < 0.82:
                        parents.append(pool[rng.randrange(len(pool))])
                    elif u < 0.95:
                        other = self.pools[self.normal_branches[rng.randrange(len(self.normal_branches))]]
                        parents.append(other[rng.randrange(len(other))])
                    elif u < 0.975:
                        parents.append(-(rng.randrange(len(self.red_names)) + 1))
                    else:
                        orphans = self.pools["_orphan"]
                        parents.append(orphans[rng.randrange(len(orphans))])
            parents = list(dict.fromkeys(parents))
            depth, masks = self._derive(parents)
            if branch == "_hidden" or _null_head(title):
                masks = {v: 0 for v in TAXONOMIES}
            c2 = self._add_category(depth, masks, t, k, branch, flags)
            assert c2 == c
            pool.append(c)
            self._write_category_page(c, title)
            if forward_from is not None:
                forward_from[2].append(c)
            window.append((c, title, parents))
            if len(window) > WINDOW:
                self._flush_window(window.popleft())
        while window:
            self._flush_window(window.popleft())

    def _flush_window(self, item) -> None:
        c, title, parents = item
        if parents:
            self._links(CAT_BASE_ID + c, title, parents, "subcat")

    # ---------------------------------------------------------------- files
    def _pick_file_categories(self, rng: random.Random | None = None) -> list[int]:
        rng = rng or self.rng
        out: list[int] = []
        u = rng.random()
        if u < 0.02:
            return out  # uncategorized
        if u >= 0.05 and self.n_gen:
            k = rng.choices((1, 2, 3, 4), (0.4, 0.3, 0.2, 0.1))[0]
            first = None
            for _ in range(k):
                if first is not None and rng.random() < 0.85 and self.branch[first] >= 0:
                    pool = self.pools[self.branch_names[self.branch[first]]]
                    c = pool[rng.randrange(len(pool))]
                else:
                    c = self.n_fix + rng.randrange(self.n_gen)
                if self.flags[c] or c in out:
                    continue
                out.append(c)
                first = c if first is None else first
            if rng.random() < 0.01:
                out.append(-(rng.randrange(len(self.red_names)) + 1))
        # hidden ones: a licence for most files, maintenance categories for some
        if rng.random() < 0.85:
            out.append(self.fixture_index[LICENSES[rng.randrange(len(LICENSES))]])
        hidden = self.pools["_hidden"]
        if (rng.random() < 0.08 or u < 0.05) and hidden:
            c = hidden[rng.randrange(len(hidden))]
            if c not in out:
                out.append(c)
        return out

    def _file_labels(self, cats: list[int], version: str) -> int:
        m = 0
        for c in cats:
            if c >= 0 and not self.flags[c] & 1:
                m |= self.masks[version][c]
        return m

    def _file_name(self, serial: int, cats: list[int], fmt: str) -> str:
        rng = self.rng
        ext = {"jpeg": "jpg", "svg": "svg", "gif": "gif", "webp": "webp"}.get(fmt, "png")
        topical = [c for c in cats if c >= 0 and not self.flags[c]]
        if not topical or rng.random() < 0.08:
            if fmt == "jpeg":
                return f"IMG {serial:07d}.JPG"
            return f"Unnamed upload {serial}.{ext}"
        rng.randrange(3)  # the draw an older name form took, so everything after stays the same
        labels = _mask_labels(self._file_labels(cats, IMAGE_TAXONOMY), self.tax[IMAGE_TAXONOMY].names)
        return captions.file_name(self.text_rng, serial, labels, ext, self.text_knobs)

    def _image_bytes(self, key: tuple, fmt: str, labels: int) -> tuple[bytes, int, int]:
        rng = np.random.default_rng([self.seed % 2**32, *key])
        w, h = self._dims(rng)
        names = self.tax[IMAGE_TAXONOMY].names
        idx = [i for i in range(len(names)) if labels >> i & 1]
        if fmt == "svg":
            return imgs.render_svg(idx, w, h, rng), w, h
        if fmt == "tiny":
            return imgs.encode(imgs.render(idx, 8, 8, rng), "jpeg"), 8, 8
        if fmt == "empty":
            return b"", w, h
        if fmt == "html":
            return HTML_ERROR, w, h
        img = imgs.render(idx, w, h, rng)
        if fmt == "truncated":
            data = imgs.encode(img, "jpeg")
            return data[: len(data) * 3 // 5], w, h
        return imgs.encode(img, fmt), w, h

    def _save_image(self, title: str, data: bytes) -> None:
        if not self.with_images:
            return
        path = os.path.join(self.images_root, "wikipedia", "commons", *hash_path(title).split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.images_written += 1

    def _wit(self, title: str, wiki: str, mime: str, w: int, h: int, pages: list[tuple[str, str]], context: str,
             part: int | None = None, labels: list[str] | None = None):
        """WIT rows of one image, one per page. With ``labels`` (generated files) the texts are drawn from
        the topics (``captions``); without (the hand-written fixtures) they repeat the file's name."""
        rng, trng, knobs = self.rng, self.text_rng, self.text_knobs
        url = image_url(title, wiki)
        stem = title.rsplit(".", 1)[0]
        for i, (lang, page_title) in enumerate(pages):
            section = SECTIONS[rng.randrange(len(SECTIONS))]
            u = rng.random()
            no_attribution, no_alt = rng.random() < 0.2, rng.random() < 0.85
            if labels is None:
                ref = "" if u < 0.55 else (f'"{stem}"\tas seen\nin {page_title}' if u < 0.6 else f"{stem}.")
                attribution = "" if no_attribution else f"English: {stem}, photographed for\tthe article on {page_title}."
                alt = "" if no_alt else stem
            else:
                section = captions.section(trng)
                ref = "" if u < 0.55 else captions.caption(trng, labels, knobs)
                attribution = "" if no_attribution else captions.attribution(trng, labels, knobs)
                alt = "" if no_alt else captions.alt_text(trng, labels, knobs)
                context = page_title
            self.wit.write(rng.randrange(self.wit_files) if part is None else part, {
                "language": lang,
                "page_url": page_url(page_title, lang),
                "image_url": url,
                "page_title": page_title,
                "section_title": section,
                "hierarchical_section_title": f"{page_title} / {section}" if section else page_title,
                "caption_reference_description": ref,
                "caption_attribution_description": attribution,
                "caption_alt_text_description": alt,
                "mime_type": mime,
                "original_height": h,
                "original_width": w,
                "is_main_image": i == 0 and rng.random() < 0.5,
                "attribution_passes_lang_id": lang == "en" and bool(attribution),
                "page_changed_recently": "true" if rng.random() < 0.3 else "",
                "context_page_description": f"{page_title} is an article about {context}.",
                "context_section_description": f"{section or page_title}: more about {context}.",
            })
            self.wit_rows += 1
            if lang == "en" and wiki == "commons" and mime != "image/svg+xml":
                self.en_raster.add(url)

    def _file_page(self, title: str, cats: list[int], relinked: list[int] | None = None) -> int:
        """The file's page and its category links: ``cats``, or ``relinked`` in a later revision."""
        page_id = self.next_file_id
        self.next_file_id += 1
        self._page(page_id, 6, title, False, 400 + self.rng.randrange(400))
        if relinked is not None:
            for _ in cats:  # the timestamps the first dump's links drew, so what follows stays the same
                self.rng.randrange(self.ts_span)
            if relinked:
                self._links(page_id, title, relinked, "file", self.rev_rng)
        elif cats:
            self._links(page_id, title, cats, "file")
        self.counts["files"] += 1
        return page_id

    def _file_redirect(self, title: str, target: str) -> None:
        page_id = self.next_file_id
        self.next_file_id += 1
        self._page(page_id, 6, title, True, 40 + len(target))
        self.w_redirect.write((page_id, 6, nm.underscored(target), "", ""))
        self.counts["file_redirects"] += 1

    def _fixture_files(self) -> list[dict]:
        index = self.fixture_index
        red = {t: i for i, t in enumerate(self.red_names)}
        facts = []
        labels_of = {}
        for n, (title, cat_titles, fmt, pages) in enumerate(FIXTURE_FILES):
            cats = [index[t] if t in index else -(red[t] + 1) for t in cat_titles]
            if fmt.startswith("redirect="):
                target = fmt.split("=", 1)[1]
                self._file_redirect(title, target)
                masks, data, w, h, mime, _ = labels_of[target]
                self._save_image(title, data)
                self._wit(title, "commons", mime, w, h, pages, title)
                self._count_label(labels_of[target][5])
                facts.append({"title": title, "redirect_to": target, "categories": [], **masks})
                continue
            self._file_page(title, cats)
            masks = {v: self._file_labels(cats, v) for v in TAXONOMIES}
            data, w, h = self._image_bytes((8, n), fmt, masks[IMAGE_TAXONOMY])
            mime = MIME[fmt]
            named = {}
            for v in TAXONOMIES:
                names = self.tax[v].names
                flat = _mask_labels(masks[v], names)
                named[f"labels_{v}"] = flat
                named[f"labels_hier_{v}"] = self.tax[v].with_ancestors(flat)
            labels_of[title] = (named, data, w, h, mime, masks[IMAGE_TAXONOMY])
            self._save_image(title, data)
            if pages:
                self._wit(title, "commons", mime, w, h, pages, cat_titles[0] if cat_titles else title)
                if fmt not in ("svg",) and any(lang == "en" for lang, _ in pages):
                    self._count_label(masks[IMAGE_TAXONOMY])
            facts.append({
                "title": title, "categories": cat_titles, "format": fmt, "mime_type": mime,
                "width": w, "height": h, "in_wit": bool(pages), **named,
            })
        for title, lang, page in DELETED_WIT:
            self._wit(title, "commons", "image/jpeg", 320, 240, [(lang, page)], "a deleted file")
        for title, mime in ENWIKI_WIT:
            self._wit(title, "en", mime, 300, 300, [("en", title.rsplit(".", 1)[0])], "a non-free image")
        return facts

    def _count_label(self, mask: int) -> None:
        names = self.tax[IMAGE_TAXONOMY].names
        if not mask:
            self.unlabeled_images += 1
        n = bin(mask).count("1")
        self.cardinality[n] = self.cardinality.get(n, 0) + 1
        for i, n in enumerate(names):
            if mask >> i & 1:
                self.label_counts[n] = self.label_counts.get(n, 0) + 1

    def _generated_files(self) -> None:
        rng = self.rng
        for j in range(self.n_gen_files):
            serial = 100_000 + j
            if j < self.n_gen_raster:
                fmt = rng.choices(("jpeg", "png", "png_rgba", "png_palette", "gif", "webp"),
                                  (0.84, 0.06, 0.02, 0.02, 0.03, 0.03))[0]
                wit_kind = "en"
            elif j < self.n_gen_raster + self.n_gen_svg:
                fmt, wit_kind = "svg", "en"
            elif j < self.n_gen_wit:
                fmt, wit_kind = "jpeg", "other"
            else:
                fmt, wit_kind = ("jpeg", None)
            cats = self._pick_file_categories()
            title = self._file_name(serial, cats, fmt)
            relinked = None
            if self.dump_revision and wit_kind == "en" and j % REVISED_EVERY == 0:
                relinked = self._pick_file_categories(self.rev_rng)  # recategorized since the first dump
                self.revised_files.append(title)
            self._file_page(title, cats, relinked)
            redirect = None
            if j % FILE_REDIRECT_EVERY == FILE_REDIRECT_AT:
                redirect = f"DSC{serial:07d}.JPG"
                self._file_redirect(redirect, title)
            if wit_kind is None:
                continue
            mask = self._file_labels(cats, IMAGE_TAXONOMY)
            data, w, h = self._image_bytes((7, j), fmt, mask) if self.with_images else (b"", *self._dims((7, j)))
            self._save_image(title, data)
            shown = title
            if redirect is not None and wit_kind == "en":
                self._save_image(redirect, data)
                shown = redirect  # WIT names the file by its old title: the pipeline must follow the redirect
            labels = _mask_labels(mask, self.tax[IMAGE_TAXONOMY].names)
            subject = captions.page_title(self.text_rng, labels, self.text_knobs)
            if wit_kind == "en":
                pages = [("en", subject)]
                for _ in range(rng.choices((0, 1, 2), (0.7, 0.2, 0.1))[0]):
                    if self.n_gen:
                        rng.randrange(self.n_gen)  # the draw an older page choice took
                    pages.append(("en", captions.page_title(self.text_rng, labels, self.text_knobs)))
                if rng.random() < 0.15:
                    pages.append((LANGS[rng.randrange(len(LANGS))], subject))
                pages = list(dict.fromkeys(pages))
                if fmt != "svg":
                    self._count_label(mask)
            else:
                pages = [(LANGS[rng.randrange(len(LANGS))], subject)]
            self._wit(shown, "commons", MIME[fmt], w, h, pages, subject, labels=labels)
        for k in range(self.n_added):  # uploaded since the first dump; drawn after everything else
            j = self.n_gen_files + k
            cats = self._pick_file_categories()
            for _ in range(10):  # categorized, so that the new dump labels every new image
                if any(c >= 0 and not self.flags[c] for c in cats):
                    break
                cats = self._pick_file_categories()
            title = self._file_name(100_000 + j, cats, "jpeg")
            self._file_page(title, cats)
            mask = self._file_labels(cats, IMAGE_TAXONOMY)
            data, w, h = self._image_bytes((7, j), "jpeg", mask) if self.with_images else (b"", *self._dims((7, j)))
            self._save_image(title, data)
            labels = _mask_labels(mask, self.tax[IMAGE_TAXONOMY].names)
            subject = captions.page_title(self.text_rng, labels, self.text_knobs)
            self._count_label(mask)
            self._wit(title, "commons", MIME["jpeg"], w, h, [("en", subject)], subject, part=self.wit_files,
                      labels=labels)
            self.added_files.append(title)

    def _dims(self, key) -> tuple[int, int]:
        """Width and height, the first draws of the image's own generator (same with or without pixels)."""
        rng = key if isinstance(key, np.random.Generator) else np.random.default_rng([self.seed % 2**32, *key])
        w = int(rng.integers(200, 401))
        h = int(w * rng.uniform(0.6, 1.35))
        return w, (h + 1 if h == w else h)

    # ---------------------------------------------------------------- run
    def run(self) -> dict:
        out = self.out
        dumps = os.path.join(out, "dumps")
        prefix = os.path.join(dumps, f"commonswiki-{self.dump_date}-")
        self.images_root = os.path.join(out, "images")
        auto_page = CAT_BASE_ID + self.n_pages
        self.w_page = md.DumpWriter(prefix + "page.sql.gz", "page",
                                    md.CREATE_PAGE.format(auto_increment=auto_page), self.dump_date)
        self.w_links = md.DumpWriter(
            prefix + "categorylinks.sql.gz", "categorylinks",
            md.CREATE_CATEGORYLINKS_LEGACY if self.legacy else md.CREATE_CATEGORYLINKS_CURRENT, self.dump_date)
        self.w_lt = None if self.legacy else md.DumpWriter(
            prefix + "linktarget.sql.gz", "linktarget",
            md.CREATE_LINKTARGET.format(auto_increment=self.lt_cat0 + self.n_cats), self.dump_date)
        self.w_props = md.DumpWriter(prefix + "page_props.sql.gz", "page_props", md.CREATE_PAGE_PROPS, self.dump_date)
        self.w_redirect = md.DumpWriter(prefix + "redirect.sql.gz", "redirect", md.CREATE_REDIRECT, self.dump_date)
        # a later dump's new images arrive in a further WIT file: published files never change
        self.wit = WitWriter(os.path.join(out, "wit"), self.wit_files + (1 if self.n_added else 0))
        self.wit_rows = 0
        self.en_raster: set[str] = set()
        self.label_counts: dict[str, int] = {}
        self.unlabeled_images = 0
        self.cardinality: dict[int, int] = {}
        self.images_written = 0
        if self.w_lt is not None:
            for i, t in enumerate(TEMPLATES_NS10):
                self.w_lt.write((1 + i, 10, t))
            for i, t in enumerate(self.red_names):
                self.w_lt.write((self.lt_red0 + i, 14, nm.underscored(t)))
        self._fixture_categories()
        self._generated_categories()
        self.next_file_id = self.file_id0
        file_facts = self._fixture_files()
        self._generated_files()
        writers = [self.w_page, self.w_links, self.w_props, self.w_redirect] + ([self.w_lt] if self.w_lt else [])
        paths = {w.table: w.close() for w in writers}
        wit_paths = self.wit.close()
        truth = self._truth(file_facts)
        with open(os.path.join(out, "truth.json"), "w", encoding="utf-8") as f:
            json.dump(truth, f, indent=1, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        return {"dumps": paths, "wit": wit_paths, "images": self.images_root if self.with_images else None,
                "truth": os.path.join(out, "truth.json"), "counts": truth["counts"]}

    def _truth(self, file_facts: list[dict]) -> dict:
        cats = []
        for c, (title, parents, flags) in enumerate(FIXTURE_CATEGORIES):
            entry = {"title": title, "depth": self.depth[c] or None, "hidden": bool(self.flags[c] & 1),
                     "redirect_to": flags[2:] if flags.startswith("r=") else None, "parents": parents}
            for v in TAXONOMIES:
                flat = _mask_labels(self.masks[v][c], self.tax[v].names)
                entry[f"labels_{v}"] = flat
                entry[f"labels_hier_{v}"] = self.tax[v].with_ancestors(flat)
            cats.append(entry)
        counts = dict(self.counts)
        counts.update({
            "categories": self.n_cats, "wit_rows": self.wit_rows, "wit_files": self.wit_files,
            "wit_en_commons_raster_unique": len(self.en_raster), "images_written": self.images_written,
            "wit_en_commons_raster_unlabeled": self.unlabeled_images,
        })
        return {
            "seed": self.seed, "dump_date": self.dump_date, "legacy_schema": self.legacy,
            "revision": {"number": self.dump_revision, "recategorized_files": self.revised_files,
                         "added_files": self.added_files},
            "rule": "depth: CommonsRoot = 1, BFS over subcat links; labels: a seed gives its own labels, "
                    "any other category the union of the labels of its parents with depth one less; "
                    "a file the union over its non-hidden categories",
            "counts": counts,
            "categories": cats,
            "files": file_facts,
            "depths": {e["title"]: e["depth"] for e in cats},
            "hidden_categories": sorted(self.hidden_titles),
            "hidden_categories_complete": self.keep_lists,
            "unconnected_categories": sorted(self.unconnected_titles),
            "unconnected_categories_complete": self.keep_lists,
            "red_link_categories": self.red_names,
            "wit_special": {
                "deleted": [t for t, _, _ in DELETED_WIT],
                "enwiki_hosted": [t for t, _ in ENWIKI_WIT],
                "redirect_titles": {t: f.split("=", 1)[1] for t, _, f, _ in FIXTURE_FILES if f.startswith("redirect=")},
                "broken": {t: f for t, _, f, _ in FIXTURE_FILES if f in ("truncated", "html", "empty", "tiny")},
            },
            "image_label_counts_v1.3": dict(sorted(self.label_counts.items())),
            "image_labels_per_image_v1.3": {str(k): v for k, v in sorted(self.cardinality.items())},
            "image_styles_v1.3": {
                n: {"colour": list(imgs.label_style(i)[0]), "pattern": imgs.label_style(i)[1]}
                for i, n in enumerate(self.tax[IMAGE_TAXONOMY].names)
            },
        }


def generate_sample(
    out: str,
    seed: int = 0,
    images: int = 3000,
    categories: int = 2000,
    legacy_schema: bool = False,
    dump_date: str = "20260101",
    with_images: bool = True,
    wit_files: int = 2,
    revision: int = 0,
    text_knobs: captions.TextKnobs | None = None,
) -> dict:
    """Write the sample under ``out`` (replacing what was there, atomically) and return a summary.

    ``text_knobs``: how much the generated files' names and captions say about
    their topics (``devtools.sample.captions``).

    ``revision`` > 0 writes a later dump of the same wiki: the same categories
    and images, with some files recategorized and new images uploaded (listed
    in truth.json's ``revision``).
    """
    if not (len(dump_date) == 8 and dump_date.isdigit()):
        raise ValueError(f"dump_date must look like YYYYMMDD, not {dump_date!r}")
    out = out.rstrip("/") or "."
    tmp = f"{out}.__tmp-sample"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        summary = _Sample(tmp, seed, images, categories, legacy_schema, dump_date, with_images, wit_files,
                          revision, text_knobs).run()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(out):
        old = f"{out}.__old-sample"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        os.replace(tmp, out)

    def fix(p):
        return None if p is None else os.path.join(out, os.path.relpath(p, tmp))

    summary["dumps"] = {k: fix(v) for k, v in summary["dumps"].items()}
    summary["wit"] = [fix(p) for p in summary["wit"]]
    summary["images"] = fix(summary["images"])
    summary["truth"] = fix(summary["truth"])
    summary["out"] = out
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", default="data/sample", help="output directory (replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=3000, help="unique English Commons raster images in WIT")
    parser.add_argument("--categories", type=int, default=2000)
    parser.add_argument("--legacy-schema", action="store_true", help="categorylinks with cl_to, no linktarget")
    parser.add_argument("--dump-date", default="20260101")
    parser.add_argument("--no-images", dest="with_images", action="store_false", help="skip writing image files")
    parser.add_argument("--wit-files", type=int, default=2)
    parser.add_argument("--revision", type=int, default=0,
                        help="a later dump: some files recategorized, some images added")
    return parser


def main(args) -> dict:
    return generate_sample(
        out=args.out, seed=args.seed, images=args.images, categories=args.categories,
        legacy_schema=args.legacy_schema, dump_date=args.dump_date, with_images=args.with_images,
        wit_files=args.wit_files, revision=args.revision,
    )


if __name__ == "__main__":
    print(json.dumps(main(add_arguments(argparse.ArgumentParser(prog="devtools.sample.generator")).parse_args())))
