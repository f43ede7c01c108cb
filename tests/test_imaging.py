"""resize_to_jpeg on the image kinds Commons actually serves."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.features.imaging import ImageError, resize_to_jpeg


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    img.load()
    return img


def make_inputs():
    rgba = Image.new("RGBA", (120, 80), (0, 0, 255, 0))  # fully transparent blue -> white
    pal = Image.new("P", (90, 90), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.info["transparency"] = 1
    arr16 = (np.linspace(0, 65535, 100 * 70).reshape(70, 100)).astype("uint16")
    return {
        "rgb_jpeg": encode(Image.new("RGB", (300, 200), (10, 200, 10)), "JPEG"),
        "cmyk_jpeg": encode(Image.new("CMYK", (100, 140), (0, 255, 255, 0)), "JPEG"),
        "palette_png": encode(pal, "PNG", transparency=1),
        "rgba_png": encode(rgba, "PNG"),
        "gray16_png": encode(Image.fromarray(arr16), "PNG"),
        "gray_jpeg": encode(Image.new("L", (50, 64), 128), "JPEG"),
        "la_png": encode(Image.new("LA", (40, 40), (0, 255)), "PNG"),
        "gif": encode(Image.new("P", (30, 30)), "GIF"),
    }


@pytest.mark.parametrize("name", list(make_inputs()))
def test_every_kind_becomes_rgb_square(name):
    out = decoded(resize_to_jpeg(make_inputs()[name], 32))
    assert out.mode == "RGB" and out.size == (32, 32)


def test_colors_survive_conversion():
    inputs = make_inputs()
    px = lambda data: decoded(resize_to_jpeg(data, 16)).getpixel((8, 8))  # noqa: E731
    r, g, b = px(inputs["rgba_png"])
    assert min(r, g, b) > 240  # transparent -> composited on white
    r, g, b = px(inputs["cmyk_jpeg"])
    assert r > 200 and g < 60 and b < 60  # C=0 M=Y=255 is red
    r, g, b = px(inputs["gray16_png"])
    assert 90 < r < 170 and abs(r - g) < 8  # mid-gray scaled from 16 bits, not clipped to white


def test_exif_orientation_applied():
    # wide image: top half red, bottom half blue; EXIF 6 = rotate 90 degrees clockwise on display
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    img.paste((0, 0, 255), (0, 50, 300, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decoded(resize_to_jpeg(encode(img, "JPEG", exif=exif.tobytes()), 32))
    left, right = out.getpixel((4, 16)), out.getpixel((28, 16))
    assert left[2] > 200 and left[0] < 60  # bottom (blue) moved to the left
    assert right[0] > 200 and right[2] < 60


def test_center_crop_not_pad():
    img = Image.new("RGB", (300, 100), (0, 0, 0))
    img.paste((255, 255, 255), (100, 0, 200, 100))  # white middle square
    out = decoded(resize_to_jpeg(encode(img, "PNG"), 20))
    assert min(out.getpixel((1, 1))) > 230 and min(out.getpixel((18, 18))) > 230


def test_large_jpeg_uses_draft_and_is_fast():
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 255, (2000, 3000, 3), dtype="uint8"))
    data = encode(big, "JPEG", quality=85)
    out = decoded(resize_to_jpeg(data, 64))
    assert out.size == (64, 64)


@pytest.mark.parametrize(
    "data,status",
    [
        (b"", "decode_error"),
        (b"this is not an image at all", "decode_error"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "unsupported_format"),
    ],
)
def test_bad_inputs(data, status):
    with pytest.raises(ImageError) as e:
        resize_to_jpeg(data, 32)
    assert e.value.status == status


def test_truncated_tiny_unsupported_and_bomb():
    full = encode(Image.effect_noise((200, 200), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageError) as e:
        resize_to_jpeg(full[: len(full) // 2], 32)
    assert e.value.status == "decode_error"
    with pytest.raises(ImageError) as e:
        resize_to_jpeg(encode(Image.new("RGB", (10, 40)), "PNG"), 32)
    assert e.value.status == "too_small"
    with pytest.raises(ImageError) as e:
        resize_to_jpeg(encode(Image.new("RGB", (32, 32)), "ICO"), 32)
    assert e.value.status == "unsupported_format"
    bomb = encode(Image.new("1", (4000, 3000)), "PNG")  # tiny file, 12 MP
    assert len(bomb) < 50_000
    with pytest.raises(ImageError) as e:
        resize_to_jpeg(bomb, 32, max_pixels=10_000_000)
    assert e.value.status == "too_large"
