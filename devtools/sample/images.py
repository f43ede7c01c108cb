"""Synthetic images whose content depends on their topic labels.

Each label has a fixed style (one of 8 saturated colours x one of 4 patterns:
disc, stripes, checkerboard, triangle), and an image shows one big, jittered
instance of the pattern for each of its (flat) labels over a noisy background.
Unlabeled images get only noise and grey shapes. A small CNN trained at 64x64
for a couple of epochs picks this up, so the training and evaluation stages
have a real signal to measure on the bundled sample.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [
    (230, 25, 25),  # red
    (20, 190, 40),  # green
    (30, 60, 235),  # blue
    (250, 215, 0),  # yellow
    (225, 0, 200),  # magenta
    (0, 205, 225),  # cyan
    (255, 125, 0),  # orange
    (110, 0, 190),  # purple
]
PATTERNS = ("disc", "stripes", "checker", "triangle")


def label_style(index: int) -> tuple[tuple[int, int, int], str]:
    """Label index (taxonomy order) -> (colour, pattern); distinct for up to 32 labels."""
    return COLOURS[index % len(COLOURS)], PATTERNS[(index // len(COLOURS)) % len(PATTERNS)]


def _box(rng: np.random.Generator, w: int, h: int) -> tuple[int, int, int, int]:
    side = int(min(w, h) * rng.uniform(0.45, 0.7))
    x0 = int(rng.integers(0, max(1, w - side)))
    y0 = int(rng.integers(0, max(1, h - side)))
    return x0, y0, x0 + side, y0 + side


def draw_pattern(draw: ImageDraw.ImageDraw, box, colour, pattern: str, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    side = x1 - x0
    if pattern == "disc":
        draw.ellipse(box, fill=colour, outline=(0, 0, 0), width=max(1, side // 30))
    elif pattern == "stripes":
        period = max(4, side // 6)
        draw.rectangle(box, fill=(15, 15, 15))
        for y in range(y0, y1, period):
            draw.rectangle((x0, y, x1, min(y1, y + period // 2)), fill=colour)
    elif pattern == "checker":
        cell = max(3, side // 4)
        draw.rectangle(box, fill=(245, 245, 245))
        for i, y in enumerate(range(y0, y1, cell)):
            for j, x in enumerate(range(x0, x1, cell)):
                if (i + j) % 2 == 0:
                    draw.rectangle((x, y, min(x1, x + cell), min(y1, y + cell)), fill=colour)
    else:  # triangle
        draw.polygon([(x0 + side // 2, y0), (x1, y1), (x0, y1)], fill=colour, outline=(0, 0, 0))


def render(label_indices, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """An RGB image: noisy background, then one pattern per label (or grey shapes if none)."""
    base = rng.integers(70, 180, size=3).astype(np.int16)
    noise = rng.integers(-45, 46, size=(height, width, 1), dtype=np.int16) + rng.integers(
        -12, 13, size=(height, width, 3), dtype=np.int16
    )
    arr = np.clip(base[None, None, :] + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    if not label_indices:
        for _ in range(int(rng.integers(2, 5))):
            g = int(rng.integers(40, 220))
            x0, y0, x1, y1 = _box(rng, width, height)
            shrink = (x1 - x0) // 3
            if rng.random() < 0.5:
                draw.ellipse((x0, y0, x1 - shrink, y1 - shrink), fill=(g, g, g))
            else:
                draw.rectangle((x0, y0, x1 - shrink, y1), fill=(g, g, g))
    for index in label_indices:
        colour, pattern = label_style(index)
        draw_pattern(draw, _box(rng, width, height), colour, pattern, rng)
    return img


def encode(img: Image.Image, fmt: str, rng: np.random.Generator | None = None) -> bytes:
    """Bytes of ``img`` as JPEG, PNG (RGB, RGBA or palette), GIF or WEBP."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=85)
    elif fmt == "png":
        img.save(buf, "PNG", optimize=False, compress_level=6)
    elif fmt == "png_rgba":
        rgba = img.convert("RGBA")
        alpha = np.full((img.height, img.width), 255, np.uint8)
        alpha[: img.height // 8, :] = 0  # a transparent band, as cut-out PNGs have
        rgba.putalpha(Image.fromarray(alpha, "L"))
        rgba.save(buf, "PNG", compress_level=6)
    elif fmt == "png_palette":
        img.quantize(64, method=Image.Quantize.FASTOCTREE).save(buf, "PNG", compress_level=6)
    elif fmt == "gif":
        img.quantize(128, method=Image.Quantize.FASTOCTREE).save(buf, "GIF")
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=80)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


def render_svg(label_indices, width: int, height: int, rng: np.random.Generator) -> bytes:
    """A small SVG (rect, circle, polygon only: what the local server can rasterise)."""
    g = int(rng.integers(150, 230))
    parts = [
        f'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="rgb({g},{g},{g})"/>',
    ]
    for index in label_indices:
        (r, gg, b), pattern = label_style(index)
        x0, y0, x1, y1 = _box(rng, width, height)
        side = x1 - x0
        fill = f"rgb({r},{gg},{b})"
        if pattern == "disc":
            parts.append(f'<circle cx="{x0 + side // 2}" cy="{y0 + side // 2}" r="{side // 2}" fill="{fill}"/>')
        elif pattern == "triangle":
            parts.append(f'<polygon points="{x0 + side // 2},{y0} {x1},{y1} {x0},{y1}" fill="{fill}"/>')
        elif pattern == "stripes":
            parts.append(f'<rect x="{x0}" y="{y0}" width="{side}" height="{side}" fill="rgb(15,15,15)"/>')
            period = max(4, side // 6)
            for y in range(y0, y1, period):
                parts.append(f'<rect x="{x0}" y="{y}" width="{side}" height="{period // 2}" fill="{fill}"/>')
        else:
            cell = max(3, side // 4)
            parts.append(f'<rect x="{x0}" y="{y0}" width="{side}" height="{side}" fill="rgb(245,245,245)"/>')
            for i, y in enumerate(range(y0, y1, cell)):
                for j, x in enumerate(range(x0, x1, cell)):
                    if (i + j) % 2 == 0:
                        parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}"/>')
    parts.append("</svg>\n")
    return "\n".join(parts).encode("utf-8")


def rasterize_svg(data: bytes, width: int | None = None) -> Image.Image:
    """Rasterise the SVG subset ``render_svg`` writes (rect, circle, polygon with rgb() fills)."""
    import re
    import xml.etree.ElementTree as ET

    root = ET.fromstring(data)
    w = float(root.get("width", "0").rstrip("px") or 0)
    h = float(root.get("height", "0").rstrip("px") or 0)
    if w <= 0 or h <= 0:
        raise ValueError("SVG without width/height")
    scale = (width / w) if width else 1.0
    out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    img = Image.new("RGB", (out_w, out_h), (255, 255, 255))
    draw = ImageDraw.Draw(img)

    def colour(el):
        m = re.fullmatch(r"rgb\((\d+),(\d+),(\d+)\)", (el.get("fill") or "").replace(" ", ""))
        return tuple(int(v) for v in m.groups()) if m else (0, 0, 0)

    def f(el, name):
        return float(el.get(name, "0")) * scale

    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "rect":
            x, y = f(el, "x"), f(el, "y")
            draw.rectangle((x, y, x + f(el, "width"), y + f(el, "height")), fill=colour(el))
        elif tag == "circle":
            cx, cy, r = f(el, "cx"), f(el, "cy"), f(el, "r")
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour(el))
        elif tag == "polygon":
            pts = [tuple(float(v) * scale for v in p.split(",")) for p in el.get("points", "").split()]
            if len(pts) >= 3:
                draw.polygon(pts, fill=colour(el))
    return img
