"""The bundled sample generator: real formats, determinism, and a ground truth that matches its dumps."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
from collections import deque
from urllib.parse import unquote

import pytest
from PIL import Image

from devtools.sample import generator, mysqldump
from devtools.sample.wit import COLUMNS, hash_path, image_url
from pipeline.labels.taxonomy import Taxonomy

IMAGES, CATEGORIES = 200, 300


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sample") / "s")
    summary = generator.generate_sample(out, seed=3, images=IMAGES, categories=CATEGORIES)
    truth = json.load(open(os.path.join(out, "truth.json"), encoding="utf-8"))
    return out, summary, truth


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("legacy") / "s")
    generator.generate_sample(out, seed=3, images=20, categories=CATEGORIES, legacy_schema=True, with_images=False)
    return out


# ---------------------------------------------------------------- a small independent dump reader

_TOKEN = re.compile(r"'((?:[^'\\]|\\.)*)'|(NULL)|(-?[0-9][0-9.eE+-]*)|([(),])", re.S)
_UNESCAPE = {"0": "\0", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), m.group(1)), s, flags=re.S)


def read_dump(path: str):
    """(text, create-table columns, rows) of a mysqldump .sql.gz."""
    text = gzip.open(path, "rb").read().decode("utf-8")
    create = re.search(r"CREATE TABLE `\w+` \((.*?)\n\) ENGINE", text, re.S).group(1)
    columns = re.findall(r"^  `(\w+)`", create, re.M)
    rows = []
    for line in text.splitlines():
        if not line.startswith("INSERT INTO"):
            continue
        body = line[line.index(" VALUES ") + 8 :]
        assert body.endswith(";")
        row = None
        for m in _TOKEN.finditer(body[:-1]):
            s, null, num, punct = m.groups()
            if punct == "(":
                row = []
            elif punct == ")":
                rows.append(tuple(row))
            elif punct == ",":
                continue
            elif null:
                row.append(None)
            elif num is not None:
                row.append(float(num) if "." in num or "e" in num.lower() else int(num))
            else:
                row.append(_unescape(s))
    return text, columns, rows


def dump_path(out, table, date="20260101"):
    return os.path.join(out, "dumps", f"commonswiki-{date}-{table}.sql.gz")


def read_wit(out):
    rows = []
    for name in sorted(os.listdir(os.path.join(out, "wit"))):
        with gzip.open(os.path.join(out, "wit", name), "rt", encoding="utf-8", newline="\n") as f:
            lines = f.read().split("\n")
        assert lines[0].split("\t") == list(COLUMNS)
        assert lines[-1] == ""
        for line in lines[1:-1]:
            fields = line.split("\t")
            assert len(fields) == 17, line
            rows.append(dict(zip(COLUMNS, fields)))
    return rows


def all_files(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


# ---------------------------------------------------------------- mysqldump writer


def test_escape_matches_mysqldump():
    assert mysqldump.escape(None) == "NULL"
    assert mysqldump.escape(42) == "42"
    assert mysqldump.escape(0.5) == "0.5"
    assert mysqldump.escape("O'Brien") == "'O\\'Brien'"
    assert mysqldump.escape('a"b\\c') == "'a\\\"b\\\\c'"
    assert mysqldump.escape("x\ny\rz\0w\x1av\tu") == "'x\\ny\\rz\\0w\\Zv\\tu'"
    assert mysqldump.escape("Zürich") == "'Zürich'"


def test_dump_writer_cuts_extended_inserts_and_writes_trailer(tmp_path):
    path = str(tmp_path / "t.sql.gz")
    with mysqldump.DumpWriter(path, "page_props", mysqldump.CREATE_PAGE_PROPS, max_line_bytes=200) as w:
        for i in range(50):
            w.write((i, "hiddencat", "", None))
    raw = open(path, "rb").read()
    assert raw[4:8] == b"\0\0\0\0" and not raw[3] & 0x08  # gzip: mtime 0, no file name
    text, columns, rows = read_dump(path)
    inserts = [ln for ln in text.splitlines() if ln.startswith("INSERT INTO `page_props` VALUES (")]
    assert len(inserts) > 5 and all(len(ln.encode()) <= 200 for ln in inserts)
    assert rows == [(i, "hiddencat", "", None) for i in range(50)]
    assert columns == ["pp_page", "pp_propname", "pp_value", "pp_sortkey"]
    assert "/*!40000 ALTER TABLE `page_props` ENABLE KEYS */;" in text
    assert text.rstrip().endswith("-- Dump completed on 2026-01-01  0:00:00")
    assert not os.path.exists(path + ".__writing")


# ---------------------------------------------------------------- dumps


def test_current_schema_dumps_have_the_real_columns(sample):
    out, summary, _ = sample
    expected = {
        "page": ["page_id", "page_namespace", "page_title", "page_is_redirect", "page_is_new", "page_random",
                 "page_touched", "page_links_updated", "page_latest", "page_len", "page_content_model", "page_lang"],
        "categorylinks": ["cl_from", "cl_target_id", "cl_sortkey", "cl_sortkey_prefix", "cl_timestamp", "cl_type",
                          "cl_collation_id"],
        "linktarget": ["lt_id", "lt_namespace", "lt_title"],
        "page_props": ["pp_page", "pp_propname", "pp_value", "pp_sortkey"],
        "redirect": ["rd_from", "rd_namespace", "rd_title", "rd_interwiki", "rd_fragment"],
    }
    assert set(summary["dumps"]) == set(expected)
    for table, cols in expected.items():
        text, columns, rows = read_dump(dump_path(out, table))
        assert columns == cols, table
        assert rows and all(len(r) == len(cols) for r in rows), table
        assert text.startswith("-- MySQL dump 10.19")
        assert f"/*!40000 ALTER TABLE `{table}` ENABLE KEYS */;" in text


def test_legacy_schema(legacy):
    assert not os.path.exists(dump_path(legacy, "linktarget"))
    text, columns, rows = read_dump(dump_path(legacy, "categorylinks"))
    assert columns == ["cl_from", "cl_to", "cl_sortkey", "cl_sortkey_prefix", "cl_timestamp", "cl_collation",
                       "cl_type"]
    parents = {r[1] for r in rows}
    assert {"Birds_of_Kenya", "Topics", "O'Brien_family", "Back\\slash_tests"} <= parents
    assert all(" " not in p for p in parents)
    assert {r[5] for r in rows} == {"uppercase"} and {r[6] for r in rows} == {"subcat", "file"}


def test_tricky_titles_are_escaped_in_the_raw_bytes(sample):
    out, _, _ = sample
    page = gzip.open(dump_path(out, "page"), "rb").read()
    assert b"'O\\'Brien_family'" in page
    assert b"'Back\\\\slash_tests'" in page
    assert b"'\\\"Volcanoes\\\"_of_sedimentary_rock'" in page
    assert "'Île-de-France'".encode() in page and "'Ōsaka'".encode() in page
    assert b"'Buildings_in_Washington,_D.C.'" in page and b"'Mercury_(planet)'" in page


def _graph(out):
    """Parse the current-schema dumps into the tables the ingest stage produces."""
    _, _, pages = read_dump(dump_path(out, "page"))
    _, _, links = read_dump(dump_path(out, "categorylinks"))
    _, _, targets = read_dump(dump_path(out, "linktarget"))
    _, _, props = read_dump(dump_path(out, "page_props"))
    _, _, redirects = read_dump(dump_path(out, "redirect"))
    lt = {r[0]: (r[1], r[2].replace("_", " ")) for r in targets}
    by_id = {r[0]: (r[1], r[2].replace("_", " "), r[3]) for r in pages}
    hidden = {by_id[r[0]][1] for r in props if r[1] == "hiddencat"}
    edges, file_links = [], []
    for cl_from, target, *_rest, cl_type, _ in links:
        ns, parent = lt[target]
        assert ns == 14
        child_ns, child, _ = by_id[cl_from]
        (edges if cl_type == "subcat" else file_links).append((child, parent))
        assert child_ns == (14 if cl_type == "subcat" else 6)
    return pages, by_id, edges, file_links, hidden, redirects


def test_dumps_agree_with_truth(sample):
    out, _, truth = sample
    pages, by_id, edges, file_links, hidden, redirects = _graph(out)
    counts = truth["counts"]
    cats = {t for ns, t, _ in by_id.values() if ns == 14}
    files = {t for ns, t, red in by_id.values() if ns == 6 and not red}
    assert len(cats) == counts["categories"] == CATEGORIES
    assert len(files) == counts["files"]
    assert len(edges) == counts["category_edges"] and len(file_links) == counts["file_links"]
    assert len(pages) == len({(r[1], r[2]) for r in pages}), "titles must be unique per namespace"
    assert hidden == set(truth["hidden_categories"]) and len(hidden) == counts["hidden_categories"]
    assert {"CC-BY-SA-4.0", "Media needing categories", "Quality images of Belgium", "Pages with maps"} <= hidden
    # red links: parents with no page, from both subcat and file links
    red = {p for _, p in edges + file_links} - cats
    assert red and red <= set(truth["red_link_categories"])
    # redirects: category and file redirect pages point at existing pages
    kinds = {}
    for rd_from, ns, title, _, _ in redirects:
        assert by_id[rd_from][2] == 1 and by_id[rd_from][0] == ns
        assert title.replace("_", " ") in (cats if ns == 14 else files)
        kinds[ns] = kinds.get(ns, 0) + 1
    assert kinds.get(14) == counts["category_redirects"] and kinds.get(6) == counts["file_redirects"]

    # depth by BFS from CommonsRoot over the parsed edges, then the depth rule, against the truth
    children = {}
    for child, parent in edges:
        children.setdefault(parent, []).append(child)
    depth = {"CommonsRoot": 1}
    queue = deque(["CommonsRoot"])
    while queue:
        p = queue.popleft()
        for c in children.get(p, []):
            if c not in depth:
                depth[c] = depth[p] + 1
                queue.append(c)
    unconnected = cats - set(depth)
    assert unconnected == set(truth["unconnected_categories"]) and len(unconnected) == counts["unconnected_categories"]
    for title, d in truth["depths"].items():
        assert depth.get(title) == d, title

    # labels: the project's plain oracle of the traversal with the `depth` heuristic
    from pipeline.labels.traversal import Traversal

    tax = Taxonomy.load("v1.3")
    oracle = Traversal.build([(t, t in hidden, depth.get(t)) for t in cats], edges, tax, "depth")
    labels = {t: set(oracle.labels(t)) for t in cats}
    for entry in truth["categories"]:
        assert sorted(labels.get(entry["title"], set()), key=tax.names.index) == entry["labels_v1.3"], entry["title"]
    file_cats = {}
    for f, c in file_links:
        file_cats.setdefault(f, set()).add(c)
    for entry in truth["files"]:
        if entry.get("redirect_to"):
            continue
        got = set().union(*[labels.get(c, set()) for c in file_cats.get(entry["title"], ()) if c not in hidden])
        assert sorted(got, key=tax.names.index) == entry["labels_v1.3"], entry["title"]


def test_truth_fixtures(sample):
    _, _, truth = sample
    cats = {c["title"]: c for c in truth["categories"]}
    files = {f["title"]: f for f in truth["files"]}
    assert cats["CommonsRoot"]["depth"] == 1 and cats["Topics"]["depth"] == 2
    birds = files["Lilac-breasted roller (Coracias caudatus) in Kenya.jpg"]
    assert birds["labels_v1.3"] == ["Animals"] and birds["labels_hier_v1.3"] == ["STEM", "Nature", "Animals"]
    # sideways parents do not count: only the shallowest parents give labels
    assert cats["Lemuel Francis Abbott"]["labels_v1.3"] == ["People"]
    assert cats["Churches in Belgium"]["labels_v1.3"] == ["Places", "Belief"]
    assert cats["Churches in Belgium"]["labels_v1.4"] == ["Places", "Society", "Culture"]  # Belief is gone in v1.4
    assert cats["Recursion"]["labels_v1.3"] == ["Mathematics"]  # a self-loop
    for unlabeled in ("Uncategorized upload 2019.jpg", "Hidden only example.jpg", "Castle ruin near Brussels.jpg",
                      "Lost photograph.jpg", "Back\\slash test image.jpg"):
        assert files[unlabeled]["labels_v1.3"] == [], unlabeled
    assert {"Unsorted photographs", "Photographs by Anonymous", "Kasteel van Beersel drawings"} <= set(
        truth["unconnected_categories"]
    )
    assert len([c for c in truth["categories"] if c["labels_v1.3"]]) >= 10


# ---------------------------------------------------------------- WIT


def test_wit_rows(sample):
    out, summary, truth = sample
    assert [os.path.basename(p) for p in summary["wit"]] == [
        "wit_v1.train.all-00000-of-00010.tsv.gz", "wit_v1.train.all-00001-of-00010.tsv.gz"]
    rows = read_wit(out)
    assert len(rows) == truth["counts"]["wit_rows"]
    en_commons_raster = {
        r["image_url"] for r in rows
        if r["language"] == "en" and "/wikipedia/commons/" in r["image_url"] and r["mime_type"] != "image/svg+xml"
    }
    assert len(en_commons_raster) == IMAGES == truth["counts"]["wit_en_commons_raster_unique"]
    assert {"image/jpeg", "image/png", "image/gif", "image/webp", "image/svg+xml"} <= {r["mime_type"] for r in rows}
    assert len({r["language"] for r in rows}) >= 3
    assert any(r["image_url"].startswith("https://upload.wikimedia.org/wikipedia/en/") for r in rows)
    assert any(r["caption_reference_description"] == "" for r in rows)
    assert any(r["caption_reference_description"] for r in rows)
    per_url = {}
    for r in rows:
        per_url.setdefault(r["image_url"], []).append(r)
    gaasbeek = per_url[image_url("Kasteel van Gaasbeek 2019.jpg")]
    assert len(gaasbeek) == 4 and {r["language"] for r in gaasbeek} == {"en", "fr", "nl"}
    assert image_url("Zebra Samburu 2010.jpg") in per_url  # a redirect title: follow it to the file
    for r in rows:
        assert r["original_width"].isdigit() and r["original_height"].isdigit()
        assert r["is_main_image"] in ("true", "false")
        assert r["page_url"].startswith(f"https://{r['language']}.wikipedia.org/wiki/")


def test_image_urls_use_mediawiki_hash_paths():
    title = "O'Brien family reunion, 1962.jpg"
    key = "O'Brien_family_reunion,_1962.jpg"
    h = hashlib.md5(key.encode()).hexdigest()
    url = image_url(title)
    assert url == f"https://upload.wikimedia.org/wikipedia/commons/{h[0]}/{h[:2]}/O%27Brien_family_reunion,_1962.jpg"
    assert unquote(url.rsplit("/", 1)[1]) == key


# ---------------------------------------------------------------- images


def test_images_exist_for_commons_rows_with_bad_ones(sample):
    out, _, truth = sample
    rows = read_wit(out)
    root = os.path.join(out, "images", "wikipedia", "commons")
    deleted = {image_url(t) for t in truth["wit_special"]["deleted"]}
    checked = 0
    for r in rows:
        if "/wikipedia/commons/" not in r["image_url"] or r["image_url"] in deleted:
            continue
        rel = unquote(r["image_url"].split("/wikipedia/commons/", 1)[1])
        path = os.path.join(root, rel)
        assert os.path.isfile(path), rel
        if r["mime_type"] in ("image/jpeg", "image/png") and checked < 60:
            data = open(path, "rb").read()
            title = rel.rsplit("/", 1)[1].replace("_", " ")
            if title in truth["wit_special"]["broken"]:
                continue
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                assert (img.width, img.height) == (int(r["original_width"]), int(r["original_height"]))
                assert img.width != img.height and 200 <= img.width <= 400
            checked += 1
    for d in deleted:
        assert not os.path.exists(os.path.join(root, unquote(d.split("/wikipedia/commons/", 1)[1])))

    def load(title):
        return open(os.path.join(root, *hash_path(title).split("/")), "rb").read()

    assert load("Empty upload.jpg") == b""
    assert load("Error page saved as image.jpg").startswith(b"<!DOCTYPE html>")
    with pytest.raises(OSError):
        Image.open(io.BytesIO(load("Truncated scan of a map of France.jpg"))).load()
    assert Image.open(io.BytesIO(load("Tiny icon 8px.jpg"))).size == (8, 8)
    assert Image.open(io.BytesIO(load("Mercury (planet) by MESSENGER.png"))).mode == "RGBA"
    assert load("Zebra Samburu 2010.jpg") == load("Grevy's zebra in Samburu.jpg")


def test_image_content_follows_labels(sample):
    """A labeled image shows its label's colour far more than an unlabeled one does."""
    out, _, truth = sample
    root = os.path.join(out, "images", "wikipedia", "commons")
    style = truth["image_styles_v1.3"]

    def share(title, colour):
        img = Image.open(os.path.join(root, *hash_path(title).split("/"))).convert("RGB")
        px = list(img.getdata())
        return sum(all(abs(a - b) < 40 for a, b in zip(p, colour)) for p in px) / len(px)

    animals = tuple(style["Animals"]["colour"])
    assert share("Lilac-breasted roller (Coracias caudatus) in Kenya.jpg", animals) > 0.05
    assert share("Uncategorized upload 2019.jpg", animals) < 0.01
    assert len({(s["pattern"], tuple(s["colour"])) for s in style.values()}) == len(style)


# ---------------------------------------------------------------- determinism and CLI


def test_same_seed_same_bytes_other_seed_differs(sample, tmp_path):
    out, _, _ = sample
    again = str(tmp_path / "again")
    generator.generate_sample(again, seed=3, images=IMAGES, categories=CATEGORIES)
    a, b = all_files(out), all_files(again)
    assert a.keys() == b.keys() and len(a) > IMAGES
    assert [k for k in a if a[k] != b[k]] == []
    other = str(tmp_path / "other")
    generator.generate_sample(other, seed=4, images=IMAGES, categories=CATEGORIES, with_images=False)
    c = all_files(other)
    for table in ("page", "categorylinks"):
        rel = os.path.join("dumps", f"commonswiki-20260101-{table}.sql.gz")
        assert a[rel] != c[rel]


def test_cli_arguments(tmp_path):
    parser = generator.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args([
        "--out", str(tmp_path / "cli"), "--seed", "1", "--images", "0", "--categories", "200", "--legacy-schema",
        "--dump-date", "20220220", "--no-images", "--wit-files", "3",
    ])
    summary = generator.main(args)
    assert set(summary["dumps"]) == {"page", "categorylinks", "page_props", "redirect"}
    assert all(os.path.basename(p).startswith("commonswiki-20220220-") for p in summary["dumps"].values())
    assert len(summary["wit"]) == 3 and summary["images"] is None
    assert not os.path.exists(tmp_path / "cli" / "images")
    json.dumps(summary)
