"""The local upload.wikimedia.org mirror, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from devtools.sample import generator, server
from devtools.sample.wit import hash_path, image_url


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mirror") / "s")
    generator.generate_sample(out, seed=1, images=30, categories=300)
    root = os.path.join(out, "images")
    base, stop = server.serve(root)
    yield base, root
    stop()


def fetch(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def local(base, title):
    return image_url(title).replace("https://upload.wikimedia.org", base)


def thumb(base, title, width):
    a, ab, key = hash_path(title).split("/")
    from urllib.parse import quote

    name = quote(key)
    suffix = ".png" if key.lower().endswith(".svg") else ""
    return f"{base}/wikipedia/commons/thumb/{a}/{ab}/{name}/{width}px-{name}{suffix}"


def test_serves_originals_with_headers(mirror):
    base, root = mirror
    assert base.startswith("http://127.0.0.1:")
    title = "O'Brien family reunion, 1962.jpg"
    status, headers, body = fetch(local(base, title))
    assert status == 200
    assert body == open(os.path.join(root, "wikipedia", "commons", *hash_path(title).split("/")), "rb").read()
    assert headers["Content-Type"] == "image/jpeg" and int(headers["Content-Length"]) == len(body)
    status, headers, body = fetch(local(base, "Zürich Hauptbahnhof at night.webp"))
    assert status == 200 and headers["Content-Type"] == "image/webp"
    status, headers, body = fetch(local(base, "Flag of Spain (1785–1873, 1875–1931).svg"))
    assert status == 200 and headers["Content-Type"] == "image/svg+xml" and body.startswith(b"<?xml")
    status, headers, body = fetch(local(base, title), method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_thumbnails_have_the_requested_width(mirror):
    base, _ = mirror
    title = "Kasteel van Gaasbeek 2019.jpg"
    _, _, original = fetch(local(base, title))
    ow, oh = Image.open(io.BytesIO(original)).size
    for width in (64, 128):
        status, headers, body = fetch(thumb(base, title, width))
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert int(headers["Content-Length"]) == len(body)
        img = Image.open(io.BytesIO(body))
        assert img.format == "JPEG" and img.width == width
        assert abs(img.height - oh * width / ow) <= 1
    # the cached second answer is the same
    assert fetch(thumb(base, title, 64))[2] == fetch(thumb(base, title, 64))[2]
    # PNG with alpha stays PNG
    status, headers, body = fetch(thumb(base, "Mercury (planet) by MESSENGER.png", 100))
    assert status == 200 and headers["Content-Type"] == "image/png" and Image.open(io.BytesIO(body)).width == 100
    # SVG sources give PNG thumbnails
    status, headers, body = fetch(thumb(base, "Flag of Spain (1785–1873, 1875–1931).svg", 120))
    img = Image.open(io.BytesIO(body))
    assert status == 200 and headers["Content-Type"] == "image/png" and img.format == "PNG" and img.width == 120
    # wider than the original: the original itself
    assert fetch(thumb(base, title, 2000))[2] == original


def test_bad_sources_pass_through(mirror):
    base, _ = mirror
    status, _, body = fetch(thumb(base, "Empty upload.jpg", 128))
    assert status == 200 and body == b""
    status, _, body = fetch(thumb(base, "Error page saved as image.jpg", 128))
    assert status == 200 and body.startswith(b"<!DOCTYPE html>")
    status, _, body = fetch(thumb(base, "Tiny icon 8px.jpg", 128))
    assert status == 200 and Image.open(io.BytesIO(body)).size == (8, 8)


def test_404s(mirror):
    base, _ = mirror
    assert fetch(local(base, "Deleted file from 2015.jpg"))[0] == 404
    assert fetch(local(base, "Never uploaded.jpg"))[0] == 404
    assert fetch(thumb(base, "Never uploaded.jpg", 64))[0] == 404
    assert fetch(f"{base}/wikipedia/en/a/ab/Album_cover_of_The_Example_Band.jpg")[0] == 404
    assert fetch(f"{base}/wikipedia/commons/../../../../etc/passwd")[0] == 404
    assert fetch(f"{base}/wikipedia/commons/%2e%2e/%2e%2e/x/y")[0] == 404
    good = thumb(base, "Kasteel van Gaasbeek 2019.jpg", 64)
    assert fetch(good.replace("64px-Kasteel", "64px-Other"))[0] == 404  # thumb name must match the file
    assert fetch(good.replace("/64px-", "/0px-"))[0] == 404
    assert fetch(good.replace("/64px-", "/abcpx-"))[0] == 404
    assert fetch(f"{base}/")[0] == 404


def test_concurrent_requests(mirror):
    base, _ = mirror
    urls = [thumb(base, t, w) for t in ("Kasteel van Gaasbeek 2019.jpg", "Recursive drawing.gif") for w in (32, 48, 64)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(fetch, urls * 3))
    assert all(status == 200 for status, _, _ in results)
    assert [Image.open(io.BytesIO(b)).width for _, _, b in results[:6]] == [32, 48, 64] * 2


def test_render_draws_files_that_are_not_on_disk(tmp_path):
    """With render on, any file name gets an image drawn from its name: the same bytes each time, at the
    requested thumbnail width, in its extension's format; without it, the same request is a 404."""
    base, stop = server.serve(str(tmp_path), render=True)
    plain, stop_plain = server.serve(str(tmp_path))
    try:
        for title, fmt in [("Nowhere 1.jpg", "JPEG"), ("Nowhere 2.png", "PNG")]:
            path = f"/wikipedia/commons/thumb/{hash_path(title)}/120px-{hash_path(title).rsplit('/', 1)[1]}"
            status, headers, body = fetch(base + path)
            assert status == 200 and headers["Content-Type"] == Image.MIME[fmt]
            img = Image.open(io.BytesIO(body))
            assert img.format == fmt and img.width == 120
            assert fetch(base + path)[2] == body
            assert fetch(plain + path)[0] == 404
        one, two = (fetch(local(base, t))[2] for t in ("Nowhere 3.jpg", "Nowhere 4.jpg"))
        assert one != two and Image.open(io.BytesIO(one)).width >= 800
    finally:
        stop()
        stop_plain()
