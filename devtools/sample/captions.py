"""The sample's texts about its images: as noisy and as often missing as WIT's real ones.

The words follow the image's topics (``TOPIC_WORDS``), never its categories: a
text never contains the title of one of the file's categories, so a text model
trained on the sample learns from words people would write, not from the
labeler's input. How much the texts say is set by ``TextKnobs`` (seeded, so a
sample is the same every time):

- a file name is a camera's serial or a timestamp (``camera_name``), else a
  few words that name each of its topics with chance ``mention``;
- an article is about something else than the image (``off_topic_page``): a
  person, a place, an event, another topic;
- a caption names each of the image's topics with chance ``mention``, a topic
  the image does not have with chance ``distractor``, in another language
  with chance ``foreign``, among names, dates and numbers;
- captions are often missing altogether (the generator's draws: 55% of
  article rows have no reference caption, 20% no attribution, 85% no alt text).

On the default sample the text-only model stays well below perfect
(``docs/benchmarks.md``): words carry some topics the small pictures hide,
and miss others.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# English words and phrases per v1.3 topic, then a few in other languages. None of them is a
# whole category title the generator can make (tests/test_texts.py checks it on the sample).
TOPIC_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "STEM": (("research", "scientific", "experiment", "laboratory bench"), ("recherche", "Forschung")),
    "Diagrams": (("diagram", "schematic", "chart", "labelled drawing"), ("Schaubild", "diagrama")),
    "Mathematics": (("equation", "geometric", "theorem", "polygon"), ("mathématiques", "Gleichung")),
    "Chemistry": (("molecule", "chemical", "reaction", "structural formula"), ("Molekül", "molécula")),
    "Geology": (("rock formation", "mineral", "strata", "basalt"), ("roche", "Gestein")),
    "Space": (("planet", "telescope", "nebula", "orbit"), ("planète", "Sternwarte")),
    "Medicine & Health": (("hospital ward", "surgeon", "clinic", "vaccine"), ("Krankenhaus", "hôpital")),
    "Technology & Engineering": (("machine", "engine", "circuit", "turbine"), ("Maschine", "moteur")),
    "Nature": (("wilderness", "outdoors", "sunset", "meadow"), ("nature sauvage", "Natur")),
    "Plants": (("blossom", "leaves", "botanical", "petals"), ("fleur", "Pflanze")),
    "Animals": (("wildlife", "feathers", "mammal", "fauna"), ("Tier", "animal salvaje")),
    "Fossils": (("fossil", "ammonite", "petrified", "prehistoric bone"), ("Versteinerung", "fósil")),
    "Places": (("town centre", "district", "neighbourhood", "main square"), ("quartier", "Ortsmitte")),
    "Architecture": (("facade", "building", "cathedral", "arches"), ("Gebäude", "église")),
    "Monuments & Memorials": (("memorial", "statue", "monument", "plaque"), ("monument aux morts", "Denkmal")),
    "Landscapes": (("valley", "panorama", "mountain view", "lake shore"), ("Landschaft", "paisaje")),
    "Maps & Flags": (("map", "flag", "atlas", "cartography"), ("carte", "Flagge")),
    "Society": (("community", "gathering", "market day", "volunteers"), ("sociedad", "Gesellschaft")),
    "People": (("portrait", "family photo", "smiling", "posing"), ("portrait de", "retrato")),
    "Sports": (("match", "stadium", "team", "championship"), ("partido", "Spiel")),
    "Politics": (("election", "parliament", "minister", "campaign"), ("Wahl", "élection")),
    "Events": (("festival", "ceremony", "parade", "celebration"), ("fête", "Festumzug")),
    "Transportation": (("locomotive", "railway", "bus stop", "airport"), ("Bahnhof", "gare")),
    "Culture": (("tradition", "folk costume", "heritage", "customs"), ("culture populaire", "Brauchtum")),
    "History": (("historic", "archive photo", "ruins", "medieval"), ("historisch", "histoire")),
    "Art": (("painting", "oil on canvas", "sculpture", "fresco"), ("tableau", "Gemälde")),
    "Music": (("concert", "orchestra", "guitarist", "band"), ("Konzert", "concierto")),
    "Literature": (("novel", "poet", "manuscript", "book cover"), ("roman", "Dichter")),
    "Food": (("dish", "recipe", "cuisine", "dessert"), ("comida", "Gericht")),
    "Belief": (("temple", "prayer", "shrine", "religious"), ("prière", "Andacht")),
    "Logos & Symbols": (("logo", "emblem", "symbol", "insignia"), ("Wappen", "emblème")),
}
GIVEN = ("Anna", "Pieter", "Sofia", "Hiroshi", "Amara", "Lars", "Kwame", "Aiko", "Mateo", "Chiara", "Noor", "Emil")
PLACES = ("the old town", "the harbour", "the north bank", "the village square", "the hills", "the ring road",
          "the east side", "the river mouth", "the airport road", "the upper valley")
FILLER = ("view", "photo", "image", "picture", "detail", "close-up", "seen from", "near", "during", "after",
          "with", "and", "in front of", "at dusk", "in winter", "on a rainy day", "restored", "taken")
CAMERAS = ("Canon EOS 5D", "Nikon D750", "Sony A7 III", "Fujifilm X-T3", "iPhone 8", "Olympus E-M10")
SECTIONS = ("", "", "", "History", "Gallery", "Description", "Geography", "Biography", "Distribution",
            "Architecture", "Early life", "Career", "Reception", "See also")


@dataclass(frozen=True)
class TextKnobs:
    """How much the sample's texts say about their image (see the module docstring)."""

    camera_name: float = 0.45
    mention: float = 0.35
    off_topic_page: float = 0.6
    distractor: float = 0.3
    foreign: float = 0.2


def _word(rng: random.Random, label: str, knobs: TextKnobs) -> str:
    english, other = TOPIC_WORDS[label]
    return rng.choice(other) if rng.random() < knobs.foreign else rng.choice(english)


def person_name(rng: random.Random) -> str:
    return f"{rng.choice(GIVEN)} {chr(65 + rng.randrange(26))}."


def date_text(rng: random.Random) -> str:
    y, m, d = 1900 + rng.randrange(125), 1 + rng.randrange(12), 1 + rng.randrange(28)
    return rng.choice((f"{y}-{m:02d}-{d:02d}", f"{d:02d}.{m:02d}.{y}", f"{y}"))


def _topic_phrase(rng: random.Random, labels, knobs: TextKnobs, others) -> list[str]:
    """Words for some of ``labels`` (each with chance ``mention``) and maybe one distractor topic."""
    words = [_word(rng, lab, knobs) for lab in labels if lab in TOPIC_WORDS and rng.random() < knobs.mention]
    if others and rng.random() < knobs.distractor:
        words.insert(rng.randrange(len(words) + 1), _word(rng, rng.choice(others), knobs))
    return words


def file_name(rng: random.Random, serial: int, labels, ext: str, knobs: TextKnobs = TextKnobs()) -> str:
    """A unique file name (it carries ``serial``): a camera serial, a timestamp, or a few words."""
    if rng.random() < knobs.camera_name:
        y, mo, d = 2005 + rng.randrange(20), 1 + rng.randrange(12), 1 + rng.randrange(28)
        form = rng.randrange(4)
        if form == 0:
            return f"DSCN{serial}.{ext.upper()}"
        if form == 1:  # IMG_20190312_100123.jpg as uploaded: a title has spaces where the name had "_"
            return f"IMG {y}{mo:02d}{d:02d} {serial}.{ext}"
        if form == 2:
            return f"P{serial}.{ext.upper()}"
        return f"{y}-{mo:02d}-{d:02d} {serial % 24:02d}.{serial % 60:02d} ({serial}).{ext}"
    words = _topic_phrase(rng, labels, knobs, list(TOPIC_WORDS))
    if not words or rng.random() < 0.3:
        words.append(rng.choice(PLACES).replace("the ", "").title())
    text = " ".join(w[0].upper() + w[1:] if i == 0 else w for i, w in enumerate(words))
    return f"{text} {serial}.{ext}" if rng.random() < 0.5 else f"{text} ({serial}).{ext}"


def page_title(rng: random.Random, labels, knobs: TextKnobs = TextKnobs()) -> str:
    """An article that shows the image: about it, or (``off_topic_page``) about something else."""
    if rng.random() < knobs.off_topic_page or not labels:
        kind = rng.randrange(4)
        if kind == 0:
            return person_name(rng).replace(".", "") + rng.choice(("son", "sen", "ova", "ez", "i"))
        if kind == 1:
            return rng.choice(PLACES).replace("the ", "").title()
        if kind == 2:
            return f"{rng.choice(('Festival', 'Siege', 'Treaty', 'Election'))} of {1500 + rng.randrange(520)}"
        return _word(rng, rng.choice(list(TOPIC_WORDS)), knobs).capitalize()
    words = _topic_phrase(rng, labels, TextKnobs(**{**knobs.__dict__, "mention": 1.0, "distractor": 0.0}), [])
    return f"{words[0].capitalize()} of {rng.choice(PLACES).replace('the ', '').title()}" if words else "Overview"


def caption(rng: random.Random, labels, knobs: TextKnobs = TextKnobs()) -> str:
    """A reference caption: names, dates, numbers and some topic words, in any order."""
    others = [lab for lab in TOPIC_WORDS if lab not in set(labels)]
    parts = _topic_phrase(rng, labels, knobs, others)
    if rng.random() < 0.5:
        parts.append(person_name(rng))
    parts.append(rng.choice(FILLER))
    if rng.random() < 0.6:
        parts.append(rng.choice(PLACES))
    if rng.random() < 0.5:
        parts.append(date_text(rng))
    if rng.random() < 0.2:
        parts.append(f"No. {rng.randrange(1, 400)}")
    rng.shuffle(parts)
    text = " ".join(parts).rstrip(".")
    return text[0].upper() + text[1:] + "."


def attribution(rng: random.Random, labels, knobs: TextKnobs = TextKnobs()) -> str:
    """The Commons description WIT calls the attribution: a caption, or camera data, after a language tag."""
    if rng.random() < 0.3:
        return f"English: Taken with a {rng.choice(CAMERAS)}, f/{rng.choice((2.8, 4, 5.6, 8, 11))}, {date_text(rng)}"
    return "English: " + caption(rng, labels, knobs)


def alt_text(rng: random.Random, labels, knobs: TextKnobs = TextKnobs()) -> str:
    words = _topic_phrase(rng, labels, knobs, [])
    return " ".join(words) if words else rng.choice(("image", "photo", "picture", "thumbnail"))


def section(rng: random.Random) -> str:
    return rng.choice(SECTIONS)
