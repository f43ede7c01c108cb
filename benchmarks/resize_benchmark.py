"""How fast one core turns Commons-like images into shard JPEGs, and how many bytes a thumbnail saves.

Generates realistic 1-4 MP JPEGs and PNGs (noise + gradients + shapes), then
times ``pipeline.features.imaging.resize_to_jpeg`` (decode + EXIF + crop/resize +
encode) in this single process. Prints one JSON object.

    python -m benchmarks.resize_benchmark --images 20 --size 64
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time

import numpy as np
from PIL import Image, ImageDraw

from pipeline.features.imaging import resize_to_jpeg


def synth(rng: np.random.Generator, megapixels: float) -> Image.Image:
    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    h = int(w * 3 / 4)
    y, x = np.mgrid[0:h, 0:w].astype("float32")
    base = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], -1)
    base += rng.normal(0, 18, (h, w, 3))
    img = Image.fromarray(base.clip(0, 255).astype("uint8"), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(25):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(20, w // 3)), y0 + int(rng.integers(20, h // 3))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=color)
    return img


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 88} if fmt == "JPEG" else {"compress_level": 6}))
    return buf.getvalue()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20, help="images per format")
    p.add_argument("--size", type=int, default=64, help="output side (train.image_size)")
    p.add_argument("--thumb", type=int, default=120, help="thumbnail width to compare sizes")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    result = {"python": platform.python_version(), "size": args.size, "formats": {}}
    for fmt in ("JPEG", "PNG"):
        datas, thumbs, pixels = [], [], 0
        for _ in range(args.images):
            img = synth(rng, float(rng.uniform(1.0, 4.0)))
            pixels += img.width * img.height
            datas.append(encode(img, fmt))
            t = img.copy()
            t.thumbnail((args.thumb, args.thumb * 10))  # Wikimedia thumbs are by width
            thumbs.append(encode(t, fmt))
        start = time.perf_counter()
        out_bytes = sum(len(resize_to_jpeg(d, args.size)) for d in datas)
        originals_s = time.perf_counter() - start
        start = time.perf_counter()
        for d in thumbs:
            resize_to_jpeg(d, args.size)
        thumbs_s = time.perf_counter() - start
        result["formats"][fmt.lower()] = {
            "images": len(datas),
            "mean_megapixels": round(pixels / len(datas) / 1e6, 2),
            "originals_images_per_s_per_core": round(len(datas) / originals_s, 2),
            "thumbs_images_per_s_per_core": round(len(thumbs) / thumbs_s, 1),
            "mean_original_bytes": int(np.mean([len(d) for d in datas])),
            f"mean_thumb_{args.thumb}px_bytes": int(np.mean([len(d) for d in thumbs])),
            "thumb_to_original_bytes": round(float(np.sum([len(d) for d in thumbs]) / np.sum([len(d) for d in datas])), 4),
            "mean_output_jpeg_bytes": int(out_bytes / len(datas)),
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
