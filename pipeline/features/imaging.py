"""Images, decoded defensively: what the store keeps, and what the model sees.

``store_image`` checks a fetched image and returns the bytes the image store
keeps; ``preprocess`` turns stored bytes into the model's input (the one
preprocessing for training, inference and serving). Failures raise
``ImageError`` with a ``status`` that goes into the store manifest as is
(``decode_error``, ``too_small``, ``unsupported_format``, ``too_large``), so a
bad image is recorded, never silently dropped.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = {"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO"}
WHITE = (255, 255, 255)


class ImageError(Exception):
    def __init__(self, status: str, message: str):
        self.status, self.message = status, message
        super().__init__(f"{status}: {message}")


def _to_rgb(img: Image.Image) -> Image.Image:
    """CMYK, palette, alpha (composited on white), 16-bit and grayscale -> 8-bit RGB."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grayscale: scale to 8 bits (convert("L") would clip at 255).
        arr = np.asarray(img).astype("uint32")
        img = Image.fromarray((arr >> 8 if arr.max() > 255 else arr).clip(0, 255).astype("uint8"), "L")
        mode = "L"
    if mode == "F":
        img = img.convert("L")
        mode = "L"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, WHITE)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return img


def _open(data: bytes, min_side: int, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Decode ``data`` into an 8-bit RGB image with EXIF orientation applied, or raise ImageError.

    The pixel count is checked from the header before any decode
    (decompression bombs). With ``draft_size``, JPEGs decode at a reduced DCT
    scale (1/2, 1/4, 1/8) still covering ``draft_size`` x ``draft_size``.
    """
    if not data:
        raise ImageError("decode_error", "empty input")
    head = data[:256].lstrip().lower()
    if head.startswith(b"<?xml") or head.startswith(b"<svg"):
        raise ImageError("unsupported_format", "SVG/XML source (fetch a rendered thumbnail instead)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageError("too_large", str(e)) from e
    except UnidentifiedImageError as e:
        raise ImageError("decode_error", "not a recognised image") from e
    except Exception as e:  # noqa: BLE001 - Pillow raises many types on corrupt headers
        raise ImageError("decode_error", f"{type(e).__name__}: {e}") from e
    try:
        if img.format not in SUPPORTED_FORMATS:
            raise ImageError("unsupported_format", f"format {img.format}")
        w, h = img.size
        if w * h > max_pixels:
            raise ImageError("too_large", f"{w}x{h} = {w * h} pixels > {max_pixels}")
        if min(w, h) < min_side:
            raise ImageError("too_small", f"{w}x{h}: a side is below {min_side}px")
        fmt = img.format
        if draft_size and fmt in ("JPEG", "MPO"):
            img.draft("RGB", (draft_size, draft_size))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img.load()
        except Exception as e:  # noqa: BLE001 - truncated/corrupt data
            raise ImageError("decode_error", f"{type(e).__name__}: {e}") from e
        try:
            img = ImageOps.exif_transpose(img) or img
        except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the image
            pass
        out = _to_rgb(img)
        out.format = fmt
        return out
    except ImageError:
        img.close()
        raise
    except Exception as e:  # noqa: BLE001
        img.close()
        raise ImageError("decode_error", f"{type(e).__name__}: {e}") from e


def _square(img: Image.Image, size: int) -> Image.Image:
    """Center-crop to a square and resize to ``size`` x ``size``.

    Crop, not pad: the classifier sees the middle of a non-square image at full
    resolution rather than a letterboxed smaller copy (the edges lost are
    usually background).
    """
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side),
                      reducing_gap=3.0)


def preprocess(data: bytes, size: int, min_side: int = 1, max_pixels: int = 64_000_000) -> np.ndarray:
    """Image bytes -> uint8 (size, size, 3): decode, RGB, center crop, resize.

    The one preprocessing of the product: the training loader, batch inference
    and the MLflow pyfunc all call it, so what the model sees in training is
    what it sees in serving.
    """
    img = _open(data, min_side, max_pixels, draft_size=size)
    try:
        return np.asarray(_square(img, size), dtype="uint8")
    finally:
        img.close()


def preprocess_array(x: np.ndarray, size: int) -> np.ndarray:
    """uint8 images N x H x W x 3 of any size -> N x size x size x 3, as ``preprocess`` would."""
    if x.shape[1:3] == (size, size):
        return x
    return np.stack([np.asarray(_square(Image.fromarray(im), size), dtype="uint8") for im in x])


STORE_EXT = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp"}


def store_image(data: bytes, max_width: int, min_side: int = 16, max_pixels: int = 64_000_000,
                quality: int = 90) -> tuple[bytes, str, int, int]:
    """Check a fetched image and return what the image store keeps: (bytes, extension, width, height).

    A thumbnail (no wider than ``max_width``, in a web format) is kept byte
    for byte as fetched; a wider source (an original) or another format is
    re-encoded once as a JPEG ``max_width`` wide, so the store stays small.
    """
    img = _open(data, min_side, max_pixels)
    try:
        w, h = img.size
        ext = STORE_EXT.get(img.format or "")
        if ext and w <= max_width:
            return data, ext, w, h
        if w > max_width:
            img = img.resize((max_width, max(1, round(h * max_width / w))), Image.Resampling.BICUBIC,
                             reducing_gap=3.0)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        return buf.getvalue(), "jpg", img.size[0], img.size[1]
    finally:
        img.close()


def resize_to_jpeg(
    data: bytes,
    size: int,
    quality: int = 90,
    min_side: int = 16,
    max_pixels: int = 64_000_000,
) -> bytes:
    """``preprocess`` encoded as a JPEG once (for benchmarks and external tools)."""
    img = _open(data, min_side, max_pixels, draft_size=size)
    try:
        buf = io.BytesIO()
        _square(img, size).save(buf, format="JPEG", quality=quality)
        return buf.getvalue()
    finally:
        img.close()
