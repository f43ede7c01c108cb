"""The wit stage on a hand-written WIT fixture, and the URL/title/split helpers."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_settings
from pipeline.errors import StageError
from pipeline.inputs.wit import WIT_COLUMNS, commons_url, image_key, split_for, thumb_url, title_from_url
from pipeline.lake.layout import Layout

BASE = "https://upload.wikimedia.org/wikipedia/"


def row(title=None, url=None, lang="en", page="P", ref="", attr="", alt="", mime="image/jpeg", w="400", h="300"):
    return {
        "language": lang,
        "page_url": f"https://{lang}.wikipedia.org/wiki/{page}",
        "image_url": url or commons_url(title),
        "page_title": page,
        "section_title": "",
        "hierarchical_section_title": page,
        "caption_reference_description": ref,
        "caption_attribution_description": attr,
        "caption_alt_text_description": alt,
        "mime_type": mime,
        "original_height": h,
        "original_width": w,
        "is_main_image": "true",
        "attribution_passes_lang_id": "true",
        "page_changed_recently": "true",
        "context_page_description": 'Some "quoted" context',
        "context_section_description": "Section context",
    }


def write_tsv(path, columns, rows):
    """rows: dicts, or raw strings written as-is (malformed lines)."""
    lines = ["\t".join(columns)]
    for r in rows:
        lines.append(r if isinstance(r, str) else "\t".join(r[c] for c in columns))
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


FILE1 = [
    row("Foo bar.jpg", page="Alpha", ref="A foo", attr="English: foo"),
    row("Foo bar.jpg", page="Beta", ref="A foo", alt="alt foo"),
    row("Foo bar.jpg", lang="fr", page="Gamma"),
    row(url=BASE + "en/1/12/Local.jpg", page="Local"),
    row(url=BASE + "commons/thumb/1/12/Thumb.jpg/100px-Thumb.jpg", page="Th"),
    row("Drawing.svg", mime="image/svg+xml", page="Svg"),
    row("Anim.gif", mime="image/gif", page="Gif"),
    row("Old name.jpg", page="Delta"),
    row("New name.jpg", page="Epsilon", ref='He said "hi'),
    "en\tbroken\trow\twith\tfive",  # line 11: wrong column count
    row(url=BASE + "commons/a/ab/Caf%C3%A9_%28Paris%29.png", mime="image/png", page="Paris", w="1000.0"),
]
FILE2 = [  # columns in another order: read by name
    row("Foo bar.jpg", page="Zeta"),
    "\t".join(["x"] * 18),  # line 3: one column too many
    row("Empty labels.jpg", page="Eta", alt="  "),
]


def make_inputs(tmp_path, with_redirects=True, with_labels=True):
    wit_dir = tmp_path / "wit"
    wit_dir.mkdir(parents=True)
    write_tsv(wit_dir / "wit_v1.train.all-00000-of-00002.tsv.gz", WIT_COLUMNS, FILE1)
    write_tsv(wit_dir / "wit_v1.train.all-00001-of-00002.tsv.gz", list(reversed(WIT_COLUMNS)), FILE2)
    settings = load_settings(
        {
            "paths.data_root": str(tmp_path / "lake"),
            "paths.wit_dir": str(wit_dir),
            "paths.state_dir": str(tmp_path / "state"),
            "spark.master": "local[2]",
            "spark.shuffle_partitions": "4",
            "spark.max_reject_share": "0.5",
        },
        environ={},
    )
    layout = Layout.from_settings(settings)
    if with_redirects:
        d = layout.ingest("file_redirects")
        os.makedirs(d)
        pq.write_table(
            pa.table({"title": ["Old name.jpg", "Unrelated.jpg"], "target": ["New name.jpg", "Other.jpg"]}),
            f"{d}/part-0.parquet",
        )
    if with_labels:
        d = layout.labels("file_labels")
        os.makedirs(d)
        pq.write_table(
            pa.table(
                {
                    "file_id": pa.array([1, 2, 3, 4], pa.int64()),
                    "file_title": ["Foo bar.jpg", "New name.jpg", "Empty labels.jpg", "Old name.jpg"],
                    "labels": [["Plants"], ["Maps & Flags"], [], ["Art"]],
                    "labels_hier": [["STEM", "Nature", "Plants"], ["Places", "Maps & Flags"], [], ["Culture", "Art"]],
                }
            ),
            f"{d}/part-0.parquet",
        )
    return settings, layout


def test_helpers():
    title = "Café (Paris).png"
    url = commons_url(title)
    assert url.startswith("https://upload.wikimedia.org/wikipedia/commons/")
    assert url.endswith("/Caf%C3%A9_(Paris).png")
    a, ab = url.split("/")[-3:-1]
    assert ab.startswith(a) and len(ab) == 2
    assert title_from_url(url) == title
    assert title_from_url(BASE + "commons/a/ab/C%2B%2B_1+1.jpg") == "C++ 1+1.jpg"
    t = thumb_url("Foo bar.jpg", 128)
    assert "/commons/thumb/" in t and t.endswith("/Foo_bar.jpg/128px-Foo_bar.jpg")
    assert thumb_url("Map of x.svg", 64).endswith("/Map_of_x.svg/64px-Map_of_x.svg.png")
    # known MediaWiki hash path (md5("Example.jpg") starts with a9)
    assert commons_url("Example.jpg") == "https://upload.wikimedia.org/wikipedia/commons/a/a9/Example.jpg"
    assert image_key("Foo bar.jpg") == image_key("Foo bar.jpg") and len(image_key("x")) == 16
    counts = {}
    for i in range(2000):
        s = split_for(f"File {i}.jpg", 0.7, 0.1, 0.1)
        counts[s] = counts.get(s, 0) + 1
    assert 1250 < counts["train"] < 1550 and counts["test"] > 120


def test_wit_stage(spark, tmp_path):
    from spark_jobs import wit_images

    settings, layout = make_inputs(tmp_path)
    summary = wit_images.run(settings)
    assert summary["input_rows"] == 14
    assert summary["rejected_rows"] == {"malformed": 2, "bad_url": 0}
    assert summary["removed_rows"] == {"language": 1, "not_commons": 2, "mime_type": 2}
    assert summary["kept_rows"] == 7
    assert summary["redirected_rows"] == 1
    assert summary["images"] == 4 and summary["labeled"] == 2 and summary["unlabeled"] == 2

    df = spark.read.parquet(layout.wit_images)
    assert [f.name for f in df.schema.fields] == [
        "image_key", "file_title", "image_url", "mime_type", "original_width", "original_height",
        "page_titles", "section_titles", "reference_captions", "attribution_captions", "alt_captions", "n_rows",
        "labeled", "labels", "labels_hier", "split",
    ]
    rows = {r["file_title"]: r.asDict() for r in df.collect()}
    assert set(rows) == {"Foo bar.jpg", "New name.jpg", "Café (Paris).png", "Empty labels.jpg"}
    foo = rows["Foo bar.jpg"]
    assert foo["n_rows"] == 3
    assert foo["page_titles"] == ["Alpha", "Beta", "Zeta"]
    assert foo["reference_captions"] == ["A foo"]
    assert foo["attribution_captions"] == ["English: foo"]
    assert foo["alt_captions"] == ["alt foo"]
    assert foo["labeled"] and foo["labels"] == ["Plants"] and foo["labels_hier"] == ["STEM", "Nature", "Plants"]
    assert (foo["original_width"], foo["original_height"], foo["mime_type"]) == (400, 300, "image/jpeg")
    new = rows["New name.jpg"]
    assert new["n_rows"] == 2 and new["page_titles"] == ["Delta", "Epsilon"]
    assert new["reference_captions"] == ['He said "hi']  # quotes kept verbatim
    assert new["labels"] == ["Maps & Flags"]
    cafe = rows["Café (Paris).png"]
    assert cafe["image_url"] == commons_url("Café (Paris).png")
    assert cafe["original_width"] == 1000 and cafe["labeled"] is False and cafe["labels"] == []
    empty = rows["Empty labels.jpg"]
    assert empty["labeled"] is False and empty["alt_captions"] == []
    for title, r in rows.items():
        assert r["image_key"] == image_key(title)
        assert r["image_url"] == commons_url(title)
        assert r["split"] == split_for(title, 0.7, 0.1, 0.1)

    rejects = sorted((r["file"].rsplit("/", 1)[-1], r["line"], r["reason"]) for r in
                     spark.read.parquet(layout.wit_rejects).collect())
    assert rejects == [
        ("wit_v1.train.all-00000-of-00002.tsv.gz", 11, "malformed"),
        ("wit_v1.train.all-00001-of-00002.tsv.gz", 3, "malformed"),
    ]

    # a re-run gives the same rows (and so the same splits)
    before = sorted(tuple(map(str, r)) for r in df.collect())
    wit_images.run(settings)
    after = sorted(tuple(map(str, r)) for r in spark.read.parquet(layout.wit_images).collect())
    assert before == after

    # above the reject share the stage fails, naming the file and line
    settings.spark.max_reject_share = 0.01
    with pytest.raises(StageError) as e:
        wit_images.run(settings)
    assert "wit_v1.train.all-00000-of-00002.tsv.gz" in str(e.value) and "line 11" in str(e.value)


def test_missing_column_and_inputs(tmp_path):
    from spark_jobs import wit_images

    settings, layout = make_inputs(tmp_path)
    bad = tmp_path / "wit" / "wit_v1.train.all-00002-of-00003.tsv.gz"
    cols = [c for c in WIT_COLUMNS if c != "mime_type"]
    write_tsv(bad, cols, [])
    # header check happens before any Spark job
    from pipeline.orchestration.spark import get_spark  # noqa: F401  (run() would start Spark; the check comes first)

    with pytest.raises(StageError) as e:
        wit_images.read_wit(None, wit_images.input_files(settings))
    assert "mime_type" in str(e.value) and bad.name in str(e.value)

    s2, _ = make_inputs(tmp_path / "b", with_redirects=False)
    with pytest.raises(StageError, match="file_redirects"):
        wit_images.run(s2)
    s3, _ = make_inputs(tmp_path / "c", with_labels=False)
    with pytest.raises(StageError, match="file_labels"):
        wit_images.run(s3)
    s4 = load_settings({"paths.wit_dir": str(tmp_path / "nowhere")}, environ={})
    with pytest.raises(StageError, match="no WIT TSV"):
        wit_images.run(s4)


def test_a_wit_file_cut_mid_file_fails_the_stage_naming_it_and_the_byte(tmp_path):
    """What an interrupted download leaves: the gzip ends before its end-of-stream marker."""
    from pipeline.inputs.fetch import wit_file_problem
    from spark_jobs import wit_images

    settings, layout = make_inputs(tmp_path)
    path = sorted((tmp_path / "wit").glob("wit_v1.train.all-*.tsv.gz"))[0]
    data = path.read_bytes()
    assert wit_file_problem(str(path)) is None  # complete, though never recorded by fetch
    path.write_bytes(data[: len(data) * 3 // 5])
    with pytest.raises(StageError) as e:
        wit_images.run(settings)
    assert e.value.stage == "wit" and e.value.path == str(path)
    assert f"ends at byte {len(data) * 3 // 5}" in e.value.message
    assert not Path(layout.wit_images).exists()
