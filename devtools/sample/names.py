"""Commons-style names, unique by construction.

A ``Template`` is a format string over finite pools (countries, cities,
years, ...) or over an unbounded family (binomial species names, person names,
numbers). Each template enumerates its combinations with its own counter, so
``template.name(k)`` is a pure function of ``k`` and two counters never give
the same string; templates differ in their fixed words, so two templates never
give the same string either. A category's name is then just
``(template id, counter)`` and can be rebuilt on demand instead of being held
in memory.
"""

from __future__ import annotations

import re

COUNTRIES = [
    "France", "Spain", "Belgium", "Kenya", "Germany", "Italy", "Japan", "Brazil", "India", "China",
    "Mexico", "Peru", "Egypt", "Nigeria", "Canada", "Australia", "Norway", "Sweden", "Finland", "Poland",
    "Greece", "Turkey", "Iran", "Chile", "Argentina", "Portugal", "Ireland", "England", "Scotland", "Wales",
    "Austria", "Switzerland", "the Czech Republic", "Hungary", "Romania", "Ukraine", "Vietnam", "Thailand",
    "Indonesia", "the Philippines", "South Africa", "Morocco", "Tunisia", "Ethiopia", "Tanzania", "Ghana",
    "Colombia", "Venezuela", "Cuba", "New Zealand", "Iceland", "Denmark", "the Netherlands", "Luxembourg",
    "Croatia", "Serbia", "Bulgaria", "Côte d'Ivoire", "São Tomé and Príncipe", "Curaçao", "Réunion",
    "Bosnia and Herzegovina", "Sri Lanka", "Nepal", "Bhutan", "Mongolia", "Madagascar", "Namibia",
]
CITIES = [
    "Berlin", "London", "Paris", "Zürich", "São Paulo", "Ōsaka", "Kraków", "Köln", "Montréal", "Reykjavík",
    "Düsseldorf", "Málaga", "Brussels", "Antwerp", "Ghent", "Nairobi", "Mombasa", "Tokyo", "Kyoto", "Rome",
    "Milan", "Madrid", "Barcelona", "Sevilla", "Lisbon", "Porto", "Vienna", "Prague", "Budapest", "Warsaw",
    "Gdańsk", "Wrocław", "Łódź", "Helsinki", "Oslo", "Bergen", "Stockholm", "Göteborg", "Copenhagen",
    "Amsterdam", "Rotterdam", "Dublin", "Edinburgh", "Cardiff", "Athens", "Istanbul", "Cairo", "Lagos",
    "Cape Town", "Mumbai", "Delhi", "Shanghai", "Beijing", "Seoul", "Hanoi", "Bangkok", "Jakarta", "Manila",
    "Sydney", "Melbourne", "Auckland", "Toronto", "Vancouver", "New York City", "Chicago", "San Francisco",
    "Mexico City", "Lima", "Bogotá", "Buenos Aires", "Rio de Janeiro", "Washington, D.C.", "Saint-Étienne",
    "Nîmes", "Besançon", "Tromsø", "Ålesund", "Mönchengladbach", "Hørsholm", "Plzeň",
]
MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]
YEARS = [str(y) for y in range(1800, 2026)]
CENTURIES = [
    "1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th", "10th", "11th", "12th", "13th", "14th",
    "15th", "16th", "17th", "18th", "19th", "20th", "21st",
]
DECADES = [f"{d}s" for d in range(1800, 2030, 10)]
LICENSES = ["CC-BY-SA-4.0", "CC-BY-SA-3.0", "CC-BY-4.0", "CC-BY-2.0", "CC0", "PD-self", "PD-old-100", "GFDL"]
ANIMAL_GROUPS = [
    "Birds", "Mammals", "Insects", "Reptiles", "Amphibians", "Fish", "Butterflies", "Spiders",
    "Dogs", "Cats", "Horses", "Cattle", "Bats", "Frogs", "Snakes", "Owls",
]
PLANT_GROUPS = ["Flowers", "Trees", "Ferns", "Mosses", "Orchids", "Cacti", "Grasses", "Shrubs", "Fungi", "Roses"]
BUILDINGS = [
    "Churches", "Castles", "Bridges", "Towers", "Houses", "Mosques", "Synagogues", "Railway stations",
    "Skyscrapers", "Windmills", "Lighthouses", "Palaces", "Schools", "Theatres",
]
SPORTS = ["Football", "Cycling", "Tennis", "Rowing", "Athletics", "Basketball", "Ice hockey", "Swimming", "Rugby union"]
INSTRUMENTS = ["Pianos", "Violins", "Guitars", "Drums", "Trumpets", "Organs", "Flutes", "Accordions"]
VEHICLES = ["Trains", "Buses", "Trams", "Bicycles", "Ships", "Aircraft", "Automobiles", "Motorcycles"]
ELEMENTS = [
    "Hydrogen", "Helium", "Lithium", "Carbon", "Nitrogen", "Oxygen", "Sodium", "Magnesium", "Aluminium",
    "Silicon", "Sulfur", "Chlorine", "Calcium", "Iron", "Copper", "Zinc", "Silver", "Gold", "Mercury", "Lead",
]
FOODS = ["Bread", "Cheese", "Soups", "Cakes", "Sausages", "Noodles", "Rice dishes", "Pastries", "Wine", "Beer"]
OBJECTS = ["Chairs", "Tables", "Clocks", "Lamps", "Keys", "Bottles", "Boxes", "Doors", "Windows", "Tools"]
COLORS = ["Red", "Blue", "Green", "Yellow", "Orange", "Purple", "Black", "White", "Brown", "Pink", "Grey"]
FIRST_NAMES = [
    "Lemuel", "Anna", "Jean", "Maria", "Pieter", "Sofia", "Hiroshi", "Amara", "Lars", "Ingrid", "José",
    "Zofia", "Kwame", "Aiko", "Mateo", "Chiara", "Dmitri", "Fatima", "Oskar", "Elif", "Liam", "Noor",
    "Henrik", "Camille", "Ravi", "Thandiwe", "Björn", "Léa", "Søren", "Ana", "Tomás", "Yuki", "Emil",
    "Greta", "Ahmed", "Chloé", "Mikhail", "Ines", "Jakub", "Olga",
]
MIDDLE_NAMES = ["Francis", "Marie", "Baptiste", "Louise", "Alexander", "Elisabeth", "Camille", "Peter"]
SURNAMES = [
    "Abbott", "Corot", "Vermeulen", "Nakamura", "Okafor", "Lindqvist", "García", "Kowalski", "Mensah",
    "Rossi", "Petrov", "Haddad", "Dubois", "Jansen", "Müller", "Novák", "Nowak", "Silva", "Papadopoulos",
    "Yılmaz", "Nguyen", "Kim", "Sato", "Ferreira", "Costa", "Schmidt", "Larsen", "Virtanen", "Horvat",
    "Popescu", "O'Connor", "D'Angelo", "Smith-Jones", "van der Berg", "de la Cruz", "Ødegård", "Ångström",
]
EPITHETS = [
    "alba", "major", "minor", "vulgaris", "japonica", "africana", "europaea", "sinensis", "borealis",
    "australis", "montana", "sylvestris", "aquatica", "rubra", "nigra", "viridis", "gracilis", "maxima",
    "officinalis", "orientalis", "occidentalis", "kenyensis", "belgica", "hispanica", "gallica", "indica",
    "pallida", "lutea", "punctata", "striata", "elegans", "robusta", "tenuis", "fusca", "cristata",
    "longicauda", "brevipes", "grandis", "pusilla", "caerulea",
]
_CONS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
SYLLABLES = [c + v for c in _CONS for v in _VOWELS]  # 70 two-letter syllables: unambiguous concatenation
_SYL_RE = re.compile(r"(?:[bdfgklmnprstvz][aeiou])+")


def syllables(i: int, min_syllables: int = 2) -> str:
    """An injective map from i >= 0 to a pronounceable lowercase word of >= min_syllables syllables."""
    n = len(SYLLABLES)
    i += n ** min_syllables  # at least min_syllables + 1 digits, bijective from there
    out = []
    while i:
        i, r = divmod(i, n)
        out.append(SYLLABLES[r])
    return "".join(reversed(out))


def genus(g: int) -> str:
    return syllables(g).capitalize() + "us"


def species(i: int) -> str:
    """Binomial names: 40 epithets per genus, bijective in i."""
    g, r = divmod(i, len(EPITHETS))
    return f"{genus(g)} {EPITHETS[(r + g) % len(EPITHETS)]}"


def surname(j: int) -> str:
    if j < len(SURNAMES):
        return SURNAMES[j]
    return syllables(j - len(SURNAMES)).capitalize() + "sen"


assert not any(_SYL_RE.fullmatch(s.lower()[:-3]) and s.lower().endswith("sen") for s in SURNAMES)


def person(i: int) -> str:
    """'Lemuel Francis Abbott': first name and surname decode i; a middle name for some."""
    j, f = divmod(i, len(FIRST_NAMES))
    middle = MIDDLE_NAMES[(i // 7) % len(MIDDLE_NAMES)] + " " if (i * 2654435761) % 5 == 0 else ""
    return f"{FIRST_NAMES[f]} {middle}{surname(j)}"


def place(i: int) -> str:
    """Unbounded town names ('Kalomiburg'): no pool entry or other family ends like this."""
    return syllables(i).capitalize() + "burg"


def asteroid(i: int) -> str:
    return f"{10000 + i} {syllables(i).capitalize()}"


UNBOUNDED = {"place": place, "species": species, "genus": genus, "person": person, "asteroid": asteroid, "number": lambda i: str(i + 1)}
POOLS = {
    "country": COUNTRIES, "city": CITIES, "month": MONTHS, "year": YEARS, "century": CENTURIES,
    "decade": DECADES, "animals": ANIMAL_GROUPS, "plants": PLANT_GROUPS, "building": BUILDINGS,
    "sport": SPORTS, "instrument": INSTRUMENTS, "vehicle": VEHICLES, "element": ELEMENTS, "food": FOODS,
    "object": OBJECTS, "color": COLORS, "license_v": ["1.0", "2.0", "2.5", "3.0", "4.0"],
    "day": [str(d) for d in range(1, 29)],
}
_SLOT = re.compile(r"\{(\w+)\}")


class Template:
    """One name pattern; ``name(k)`` for k in [0, size) are distinct strings."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.slots = _SLOT.findall(pattern)
        unbounded = [s for s in self.slots if s in UNBOUNDED]
        if len(unbounded) > 1:
            raise ValueError(f"{pattern}: at most one unbounded slot")
        self.unbounded = unbounded[0] if unbounded else None
        self.finite = [s for s in self.slots if s not in UNBOUNDED]
        self.finite_size = 1
        for s in self.finite:
            self.finite_size *= len(POOLS[s])
        self.size = None if self.unbounded else self.finite_size
        # An affine bijection of [0, finite_size) so consecutive k do not all share a prefix.
        self._mul = next(m for m in (7919, 104729, 15485863, 1) if _gcd(m, self.finite_size) == 1)

    def name(self, k: int) -> str:
        if self.unbounded:
            k, rest = divmod(k, self.finite_size)
        else:
            rest = k
        rest = (rest * self._mul + 3) % self.finite_size
        values = {}
        for s in self.finite:
            rest, r = divmod(rest, len(POOLS[s]))
            values[s] = POOLS[s][r]
        if self.unbounded:
            values[self.unbounded] = UNBOUNDED[self.unbounded](k)
        return self.pattern.format(**values)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


# Generated category templates by branch: the seed category (or non-seed branch) they grow under.
BRANCH_TEMPLATES: dict[str, list[str]] = {
    "STEM": ["Science in {country}", "{year} in science", "Scientists from {city}", "Laboratories in {country}", "{person} (scientist)"],
    "Diagrams": ["Diagrams of {object}", "{color} diagrams", "Diagrams about {country}", "SVG diagrams in {decade}", "Diagrams by {person}"],
    "Mathematics": ["{number} (number)", "Geometry in {city}", "Mathematicians from {country}", "{century}-century mathematicians"],
    "Chemistry": ["{element} compounds", "Chemical structures of {element}", "Chemists from {country}", "{element} in {country}", "Chemical structures by {person}"],
    "Geology": ["Rocks of {country}", "Volcanoes of {country}", "Minerals of {country}", "Geology of {city}", "{place} Formation"],
    "Astronomy": ["{asteroid}", "Observatories in {country}", "Astronomers from {city}", "Solar eclipse of {month} {year}"],
    "Medicine": ["Hospitals in {city}", "{century}-century physicians", "Medical equipment in {country}", "{person} (physician)"],
    "Health": ["Health in {country}", "Pharmacies in {city}", "Vaccination in {country}", "Health centres in {place}"],
    "Technology": ["Computers in {country}", "{year} in technology", "Engines made in {country}", "Factories in {city}", "{person} (engineer)"],
    "Nature": ["Nature of {country}", "Nature in {city}", "Sunsets in {country}", "Clouds over {city}", "Nature reserves in {place}"],
    "Plantae": ["{species}", "{genus}", "{plants} of {country}", "{plants} in {city}", "{plants} in {month}"],
    "Animalia": ["{species}", "{genus}", "{animals} of {country}", "{animals} in {city}", "{animals} in zoos of {country}"],
    "Fossils": ["{genus} fossils", "Fossils of {country}", "Fossils in museums of {city}"],
    "Places": ["{city}", "{country}", "Streets in {city}", "Squares in {city}", "Villages in {country}", "{place}, {country}"],
    "Architecture": ["{building} in {country}", "{building} in {city}", "{century}-century {building} in {country}", "Buildings in {city} by year {year}", "{building} in {place}"],
    "Monuments and memorials": ["Monuments and memorials in {city}", "War memorials in {country}", "Statues in {city}", "Cultural heritage monuments in {country} ({decade})", "Monument to {person}"],
    "Landscapes": ["Landscapes of {country}", "Mountains of {country}", "Rivers of {country}", "Lakes of {country}", "Beaches of {country}", "Valleys near {place}"],
    "Maps": ["Maps of {country}", "Maps of {city}", "Old maps of {country}", "{century}-century maps of {country}", "Maps of {place}"],
    "Flags": ["Flags of {country}", "Flags of {city}", "Historical flags of {country} ({century} century)", "Flags of {place}"],
    "Society": ["Society of {country}", "Social life in {city}", "Markets in {city}", "Associations in {place}"],
    "People": ["{person}", "People of {city}", "Deaths in {city}", "Portrait painters from {country}", "People from {city} in {year}"],
    "Human births": ["{year} births", "Births in {city}", "People born in {month} {year}", "Births in {place}"],
    "Sports": ["{sport} in {country}", "{sport} in {city}", "{year} in {sport}", "{sport} players from {country}", "{place} FC"],
    "Politics": ["Politicians of {country}", "Elections in {country} in {year}", "Protests in {city}", "Mayors of {place}"],
    "Events": ["{year} in {city}", "{month} {year}", "Festivals in {country}", "{year} events in {country}", "{year} in {place}"],
    "Transport": ["{vehicle} in {country}", "{vehicle} in {city}", "{vehicle} built in {year}", "{place} railway station"],
    "Culture": ["Culture of {country}", "Culture of {city}", "Traditions of {country}", "Culture of {place}"],
    "History": ["History of {city}", "{century}-century history of {country}", "{year} in {country}", "{decade} in {city}", "History of {place}"],
    "Art": ["Paintings by {person}", "Photographs by {person}", "{century}-century paintings in {city}", "{century}-century portrait painters", "Sculptures in {city}"],
    "Music": ["Musicians from {country}", "Concerts in {city}", "{year} in music", "{instrument} in {country}", "Albums by {person}"],
    "Literature": ["Books about {country}", "Writers from {city}", "{century}-century books", "Poems about {city}", "Works by {person}"],
    "Food": ["Cuisine of {country}", "Restaurants in {city}", "{food} of {country}", "{food} in {city}", "Restaurants in {place}"],
    "Belief": ["Religion in {country}", "Christianity in {city}", "Buddhist temples in {country}", "Saints from {country}", "Parish of {place}"],
    "Logos": ["Logos of companies of {country}", "{color} logos", "Logos of {sport} clubs in {country}", "Logos of {place}"],
    # Non-seed branches directly under Topics: categories here carry no label.
    "Objects": ["{object}", "{color} {object}", "{object} in {city}", "{object} made in {year}", "Collection of {person}"],
    "Colors": ["{color} in {city}", "{color} objects in {country}", "{color} buildings in {place}"],
    # Hidden maintenance categories.
    "_hidden": [
        "Quality images of {country}", "Quality images of {city}",
        "Media needing categories as of {day} {month} {year}", "Files by {person}",
        "Uploaded with UploadWizard in {month} {year}", "Pages with maps of {country}",
    ],
    # Categories in components not connected to CommonsRoot (uncategorized categories).
    "_orphan": ["Unsorted photographs of {city} ({year})", "Images from {person}", "Uncategorized {object} of {country}"],
    # Category names that files or categories link to but that have no page.
    "_redlink": ["Unidentified {animals} in {city}", "Photographs of {city} by {person}", "Unidentified locations in {place}"],
}


def titlecase_first(s: str) -> str:
    """MediaWiki upper-cases the first letter of a title."""
    return s[:1].upper() + s[1:]


def underscored(title: str) -> str:
    return title.replace(" ", "_")
