"""Any downloaded image -> one small square RGB JPEG, fast and defensively.

Failures raise ``ImageError`` with a ``status`` that goes into the shard
manifest as is (``decode_error``, ``too_small``, ``unsupported_format``,
``too_large``), so a bad image is recorded, never silently dropped.
"""

from __future__ import annotations

import io
import warnings

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
        import numpy as np

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


def resize_to_jpeg(
    data: bytes,
    size: int,
    quality: int = 90,
    min_side: int = 16,
    max_pixels: int = 64_000_000,
) -> bytes:
    """Decode ``data``, center-crop to a square, resize to ``size`` x ``size``, encode JPEG once.

    Crop, not pad: the classifier sees the middle of a non-square image at full
    resolution rather than a letterboxed smaller copy (the edges lost are
    usually background). JPEGs decode at a reduced DCT scale (``draft``) no
    smaller than ``size``; EXIF orientation is applied; the pixel count is
    checked from the header before any decode (decompression bombs).
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
        if img.format in ("JPEG", "MPO"):
            # Decode at 1/2, 1/4 or 1/8 scale when the result still covers size x size.
            img.draft("RGB", (size, size))
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
        img = _to_rgb(img)
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        out = img.resize(
            (size, size),
            Image.Resampling.BICUBIC,
            box=(left, top, left + side, top + side),
            reducing_gap=3.0,
        )
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=quality)
        return buf.getvalue()
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ImageError("decode_error", f"{type(e).__name__}: {e}") from e
    finally:
        img.close()
