"""Commons file titles, URLs and splits: pure-Python helpers and their Spark twins.

The Python functions and the Spark column expressions must agree byte for byte
(the wit stage builds URLs and splits in Spark, the downloader and the tests in
Python), so both live here side by side.

Upload URLs follow MediaWiki: ``<a>/<ab>/`` are the first 1 and 2 hex digits of
md5(underscored name), and the name is percent-encoded the way ``wfUrlencode``
does it (PHP ``urlencode`` with ``;@$!*(),/~:`` left as they are).
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote, unquote, urlsplit

UPLOAD_BASE = "https://upload.wikimedia.org"
COMMONS_PREFIX = "/wikipedia/commons/"

# The 17 columns of a WIT v1 TSV, read by name.
# The WIT v1 training files, as published (wit_v1.train.all-00000-of-00010.tsv.gz ...).
WIT_GLOB = "wit_v1.train.all-*.tsv.gz"
WIT_COLUMNS = (
    "language",
    "page_url",
    "image_url",
    "page_title",
    "section_title",
    "hierarchical_section_title",
    "caption_reference_description",
    "caption_attribution_description",
    "caption_alt_text_description",
    "mime_type",
    "original_height",
    "original_width",
    "is_main_image",
    "attribution_passes_lang_id",
    "page_changed_recently",
    "context_page_description",
    "context_section_description",
)

# Characters wfUrlencode leaves unescaped beyond [A-Za-z0-9-_.] (and "~", which
# Python's quote keeps anyway).
_MW_SAFE = ";@$!*(),/~:"
# What Spark's url_encode (java.net.URLEncoder) escapes but wfUrlencode does not.
_MW_UNESCAPE = {"%3B": ";", "%40": "@", "%24": "$", "%21": "!", "%28": "(", "%29": ")",
                "%2C": ",", "%2F": "/", "%7E": "~", "%3A": ":"}

SPLITS = ("train", "validation", "threshold", "test")
_SPLIT_SALT = "split:"  # so split buckets do not correlate with image_key order


# ---------------------------------------------------------------- pure Python
def underscored(title: str) -> str:
    return title.replace(" ", "_")


def encode_name(name: str) -> str:
    """Percent-encode an underscored file name as MediaWiki does in upload URLs."""
    return quote(name, safe=_MW_SAFE)


def hash_path(title: str) -> str:
    """``a/ab/`` of a file: md5 of its underscored name."""
    h = hashlib.md5(underscored(title).encode("utf-8")).hexdigest()
    return f"{h[0]}/{h[:2]}/"


def commons_url(title: str, base: str = UPLOAD_BASE) -> str:
    """The original's URL: https://upload.wikimedia.org/wikipedia/commons/<a>/<ab>/<Name>."""
    name = encode_name(underscored(title))
    return f"{base.rstrip('/')}{COMMONS_PREFIX}{hash_path(title)}{name}"


def thumb_name(title: str, width: int) -> str:
    """``<W>px-<Name>``; SVGs render to PNG, TIFFs and paged media (PDF/DjVu) to JPEG."""
    name = underscored(title)
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext == "svg":
        return f"{width}px-{name}.png"
    if ext in ("tif", "tiff"):
        return f"lossy-page1-{width}px-{name}.jpg"
    if ext in ("pdf", "djvu"):
        return f"page1-{width}px-{name}.jpg"
    return f"{width}px-{name}"


def thumb_url(title: str, width: int, base: str = UPLOAD_BASE) -> str:
    """A thumbnail's URL: .../wikipedia/commons/thumb/<a>/<ab>/<Name>/<W>px-<Name>."""
    name = encode_name(underscored(title))
    return (f"{base.rstrip('/')}{COMMONS_PREFIX}thumb/{hash_path(title)}{name}/"
            f"{encode_name(thumb_name(title, width))}")


def is_commons_url(url: str) -> bool:
    return COMMONS_PREFIX in url and "/thumb/" not in url


def title_from_url(url: str) -> str:
    """The file title (spaces, decoded) of an upload URL's last path segment.

    ``+`` stays a plus (it is not a space in a path), matching the Spark twin.
    """
    segment = urlsplit(url).path.rsplit("/", 1)[-1]
    return unquote(segment).replace("_", " ")


def split_bucket(title: str) -> float:
    """A stable number in [0, 1) from the title alone, so an image keeps its split across runs and dumps."""
    h = hashlib.sha1((_SPLIT_SALT + title).encode("utf-8")).hexdigest()
    return int(h[:8], 16) / 2**32


def split_for(title: str, train: float, validation: float, threshold: float) -> str:
    b = split_bucket(title)
    if b < train:
        return "train"
    if b < train + validation:
        return "validation"
    if b < train + validation + threshold:
        return "threshold"
    return "test"


def image_key(title: str) -> str:
    return hashlib.sha1(title.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- Spark twins
def title_from_url_col(url):
    """Spark twin of ``title_from_url`` (null when the percent-encoding is malformed)."""
    from pyspark.sql import functions as F

    segment = F.regexp_extract(url, r"([^/?#]*)(?:[?#].*)?$", 1)
    # URLDecoder turns '+' into a space; protect it first to match unquote().
    decoded = F.try_url_decode(F.replace(segment, F.lit("+"), F.lit("%2B")))
    return F.replace(decoded, F.lit("_"), F.lit(" "))


def encode_name_col(name):
    from pyspark.sql import functions as F

    out = F.url_encode(name)
    for esc, ch in _MW_UNESCAPE.items():
        out = F.replace(out, F.lit(esc), F.lit(ch))
    return out


def commons_url_col(title, base: str = UPLOAD_BASE):
    """Spark twin of ``commons_url``."""
    from pyspark.sql import functions as F

    name = F.replace(title, F.lit(" "), F.lit("_"))
    h = F.md5(name)
    return F.concat(
        F.lit(base.rstrip("/") + COMMONS_PREFIX),
        F.substring(h, 1, 1), F.lit("/"), F.substring(h, 1, 2), F.lit("/"),
        encode_name_col(name),
    )


def split_col(title, train: float, validation: float, threshold: float):
    """Spark twin of ``split_for`` (same salted sha1 bucket)."""
    from pyspark.sql import functions as F

    hex8 = F.substring(F.sha1(F.concat(F.lit(_SPLIT_SALT), title)), 1, 8)
    bucket = F.conv(hex8, 16, 10).cast("double") / float(2**32)
    return (
        F.when(bucket < train, "train")
        .when(bucket < train + validation, "validation")
        .when(bucket < train + validation + threshold, "threshold")
        .otherwise("test")
    )


def image_key_col(title):
    from pyspark.sql import functions as F

    return F.substring(F.sha1(title), 1, 16)
