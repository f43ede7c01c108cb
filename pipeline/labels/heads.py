"""Lexical heads of Commons category names, by rules, with no model download.

The original labeling used a neural constituency parser to find the head noun
phrase of each category name ("Portrait painters from England" -> "Portrait
painters"). Running a parser over 11M names is slow and needs a model; these
rules reproduce its output on most names (see docs/heads.md for the measured
accuracy) and are written as a short chain of regular expressions, so the very
same patterns run in Python (``find_head``) and as Spark built-in expressions
(``with_head``: regexp_replace / regexp_extract, no Python UDF).

The patterns keep to the regex subset that Python ``re`` and Java
``java.util.regex`` read the same way: tokens are separated by plain spaces
(no ``\\s``/``\\b``, whose Unicode rules differ), digits are ``[0-9]``, and
no replacement uses group references (their syntax differs).

Steps, each a regex:
  1. drop a parenthetical or anything after ``,`` ``:`` ``;`` or a dash;
  2. cut at the first preposition or subordinator that starts a post-modifier
     ("Maps of France" -> "Maps"), never at the first word;
  3. cut at a participle that starts a post-modifier ("Bridges completed in
     1851" -> "Bridges");
  4. of a coordination keep the last conjunct ("Monuments and memorials" ->
     "memorials");
  5. drop trailing numbers and dots ("Leichtathletik Gala Linz 2018");
  6. keep the longest run of noun-like words at the end: a run stops at a
     number, or at a determiner or an adjective (a word list plus suffix
     rules; a compound ending in a listed adjective, "61-year-old") that is
     followed by a lower-case word ("Religious tower buildings" -> "Tower
     buildings"); a word followed by a capitalised word belongs to a name and
     is kept ("Native Americans").
The result is capitalised as ``str.capitalize`` does (first letter upper,
the rest lower), the form heads are compared and looked up in.
``traversal_head`` spaces hyphens as the parser's tokens were ("19th -
century houses"): the form the original traversal compared and looked up.
"""

from __future__ import annotations

import re

# --- word lists ---------------------------------------------------------------

# Words that start a post-modifier: the head ends before them.
PREPOSITIONS = (
    "of in from by at on for with to during near under between within without among "
    "about along across after before behind beside besides beyond into onto over "
    "through throughout toward towards upon via against around outside inside "
    "since until till per than versus vs like as featuring including regarding "
    "depicting showing who which that where when whose while not"
).split()

# Irregular participles that open a post-modifier ("Ships sunk in 1942").
PARTICIPLES = (
    "built made held known born shot taken seen drawn written sunk found given "
    "done worn kept lost won run set put led bound hit struck shown grown thrown "
    "flown broken spoken chosen frozen stolen hidden ridden driven eaten fallen "
    "begun sung rung sold told left brought bought caught taught thought sent "
    "spent lent dealt felt meant"
).split()

DETERMINERS = "the a an this that these those all some many various several other another each every any no".split()

# Common adjectives that no suffix rule below catches.
ADJECTIVES = (
    "old new young male female human ancient former great big small large little high low long short "
    "tall major minor modern early late first second third last main grand free "
    "open closed red white black green yellow blue brown orange purple pink grey "
    "gray golden silver dark bright pale dry wet hot cold warm cool full "
    "empty rapid fast slow deep shallow wide narrow abstract extinct urban rural "
    "civil gross heavy rare common wild foreign upper lower inner outer western "
    "eastern northern southern north south east west northeastern northwestern "
    "southeastern southwestern unknown multiple different important prominent "
    "recent current independent present vacant nude naked dead live fresh raw "
    "sweet sour wooden woolen woollen golden single double triple solid liquid "
    "complete incomplete round flat steep rocky sandy snowy sunny cloudy rainy "
    "holy sacred secular pagan orthodox protestant baroque gothic romanesque "
    "byzantine renaissance folk quality featured valued true false good bad best "
    "worst fine pure rich poor mixed plain simple strong weak clean dirty "
    "medieval mediaeval contemporary temporary military literary secondary "
    "primary elementary honorary monetary imaginary culinary sanitary solitary "
    "voluntary revolutionary legendary hereditary parliamentary planetary "
    "sedimentary evolutionary ordinary extraordinary visionary customary dietary "
    "auxiliary stationary tertiary preliminary unitary "
    "american african asian australian european indian mexican roman german "
    "korean italian canadian brazilian cuban moroccan anglican lutheran tibetan "
    "chilean mediterranean caribbean argentine french dutch greek swiss czech "
    "welsh thai israeli pakistani iraqi saudi arab kenyan ugandan tanzanian "
    "jewish muslim hindu sikh catholic postmodern noble cardiac mass marine indoor outdoor "
    "linear nuclear polar solar lunar similar familiar popular"
).split()

# Nouns that a suffix rule would take for adjectives.
NOT_ADJECTIVES = (
    "animal animals metal festival hospital capital canal terminal signal mineral "
    "memorial cathedral journal manual portal pedal rival crystal interval "
    "proposal arrival survival ritual mural coral petal total arsenal carnival "
    "tribunal admiral general medal principal sandal scandal funeral "
    "music clinic traffic magic mosaic republic topic fabric garlic picnic critic "
    "relic tunic mechanic cleric logic rhetoric arithmetic epic tonic tactic "
    "musician physician politician librarian civilian guardian historian comedian "
    "technician electrician magician mathematician pedestrian veterinarian "
    "custodian median meridian amphibian "
    "locomotive archive detective executive representative olive relative motive "
    "explosive incentive initiative perspective objective directive adhesive "
    "cheese geese fish dish parish radish relish finish wish "
    "table cable vegetable stable constable timetable bible "
    "seed shed reed bed sled bean soybean ocean dean jean burial artist artists scientist tourist cyclist "
    "dentist florist chemist journalist pianist violinist guitarist cellist organist list lists "
    "building clothing painting engineering housing ceiling ring king spring string wing thing things "
    "morning evening wedding meeting mammal mammals jurassic triassic"
).split()



def _alt(words) -> str:
    """An alternation matching exactly ``words``, written as a trie ("an(?:cient|other)?...").

    Both regex engines try the branches of a flat alternation one by one; in
    a trie the first character picks the branch (the rule for the head's
    noun run: 2.4 times faster, docs/heads.md). Every use of it is followed
    by a word boundary of its own (a space, the end, a lookahead), so only
    the set of words matters, not which branch matches first.
    """
    trie: dict = {}
    for w in set(words):
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}
    return _trie_regex(trie)


def _trie_regex(node: dict) -> str:
    ends = "" in node
    branches = [re.escape(ch) + _trie_regex(node[ch]) for ch in sorted(k for k in node if k)]
    if not branches:
        return ""
    if len(branches) > 1:
        body = "(?:" + "|".join(branches) + ")"
    elif ends and len(branches[0]) > 1:
        body = "(?:" + branches[0] + ")"
    else:
        body = branches[0]
    return body + "?" if ends else body


# --- the patterns (shared by Python and Spark) --------------------------------

# 1. a parenthetical, or a comma/colon/semicolon/dash clause, ends the phrase.
P_CLAUSE = r"(?<=[^ ]) ?(\(|\[|,|:|;| – | — | - ).*$"
# 2. a lower-case participle after the first word, followed by more words
# ("Ships sunk in 1940"); an -ing form only after a plural ("Men wearing hats"),
# since singular -ing words are mostly nouns ("5-limit tuning and intervals").
P_PARTICIPLE = (
    r" (?:[a-z]+ed|" + _alt(PARTICIPLES) + r")(?=(?i: (?:" + _alt(PREPOSITIONS) + r")) | [0-9])"
    + r".*$"
    + r"|(?<=[IVX0-9*]) (?:listed|protected|registered) .*$"  # "Grade II* listed houses"
    + r"|(?:(?<=s)|(?<=[Mm]en)|(?<=[Pp]eople)|(?<=[Cc]hildren)) [a-z]+ing .*$"
    # "1861 works in ...", "2nd-millennium BC works": tagged as verbs
    + r"|(?:(?<=^[0-9]{4})|(?<=BC)|(?<=century)) (?:works|plays)( .*)?$"
)
# 3. first preposition (case-insensitive) after the first word.
P_PREPOSITION = r"(?i) (" + _alt(PREPOSITIONS) + r")( .*)?$"
# 4. everything up to the last conjunction.
P_CONJUNCTION = r"^.* (and|&|or) "
# 5. trailing numbers and dots.
P_TRAILING = r"(\.| [0-9][^ ]*| [IVX]{2,}\*?| [IVX]\*)+$"

# A possessive first word makes the parser return the possessive marker
# ("Men's health" -> "'s"), and so does a plural possessive anywhere
# ("Tall Ships' Races" -> "'").
P_POSSESSIVE = r"^(?:[^ ']+(?='s(?: |$))|(?:[^ ]+ )*[^ ']+s(?='(?: |$)))('s?)"

_NOT_ADJ = r"(?!(?:" + _alt(NOT_ADJECTIVES) + r")(?: |$))"
_ADJ_WORD = (
    r"(?:[0-9][0-9,.]*"  # a number ("1440 establishments"), not "1880s" nor "18th"
    + r"|(?:" + _alt(DETERMINERS + ADJECTIVES) + r")"
    + r"|" + _NOT_ADJ + r"[^ ]{2,}(?:al|ic|ous|ive|ian|ean|ese|ish|ist|ful|less|able|ible|ular)"
    # -ed, but not -eed: "speed", "feed", "breed" are nouns ("Speed limit road signs")
    + r"|" + _NOT_ADJ + r"[^ ]+[^ e]ed"
    # a compound ending in a listed adjective ("61-year-old deaths", "62-meter-tall buildings")
    + r"|[^ ]+-(?:" + _alt(ADJECTIVES) + r")"
    + r")"
)
# 6. the run of noun-like words that ends the phrase: it starts after a space
# or a hyphen ("Père-Lachaise Cemetery" -> "Lachaise cemetery"), its words
# hold no hyphen except "18th-century", and it skips modifiers (a modifier is
# a word of _ADJ_WORD followed by another word).
_WORD = r"(?:[^ -]|-(?![A-Z]))+"
# A number ends the run even before a capitalised word: the parser tagged it
# CD, never part of the noun run ("2012 Summer Olympics medal winners" ->
# "Summer olympics medal winners").
P_HEAD = (r"(?:^| |-(?=[A-Z]))((?:(?![0-9][0-9,.]* )(?!(?i:" + _ADJ_WORD + r") [a-z0-9])" + _WORD + r" )*"
          + _WORD + r")$")

# The parser's tokenizer split hyphenated words into three tokens, and heads
# are its tokens joined by spaces: "19th-century houses" -> "19th - century
# houses". This matters beyond looks: such a head is looked up as a category
# name (and "19th - century houses" names none) and its words are counted when
# headJ shortens heads. Words after common prefixes ("Anti-", "Pre-",
# "Cross-", ...) and number ranges ("2013-10") stayed whole.
HYPHEN_PREFIXES = "anti pre cross trans self co non multi tri re semi sub super ultra inter intra counter".split()
P_HYPHEN = (
    r"(?<=[^ 0-9-])"
    + "".join(rf"(?:(?<![{p[0].upper()}{p[0]}]{p[1:]})|(?<=[^ ][{p[0].upper()}{p[0]}]{p[1:]}))" for p in HYPHEN_PREFIXES)
    + r"-(?=[^ -])|(?<=[0-9])-(?=[^ 0-9-])"
)

# Cuts applied in order; each match is deleted. None can match at the first
# character, so none leaves an empty string (but for a name of dots only,
# where the name itself is the head).
STEPS = (P_CLAUSE, P_PARTICIPLE, P_PREPOSITION, P_CONJUNCTION, P_TRAILING)

NULL_HEADS = frozenset(
    "January February March April May June July August September October November December "
    "Century Categories Category".split()
)

# A head that is a number (ASCII digits, so Python and Spark agree).
P_NUMBER = r"^[0-9]+$"

_COMPILED = [re.compile(p) for p in STEPS]
_HYPHEN_RE = re.compile(P_HYPHEN)
_NUMBER_RE = re.compile(P_NUMBER)
_HEAD_RE = re.compile(P_HEAD)
_POSSESSIVE_RE = re.compile(P_POSSESSIVE)


def _normalize(name: str) -> str:
    return re.sub(" +", " ", name.replace("_", " ")).strip(" ")


def find_head(name: str, spaced_hyphens: bool = False) -> str:
    """The multi-word head of a category name, capitalised ("Maps of France" -> "Maps").

    ``spaced_hyphens``: write hyphens as the parser's tokens ("18th - century painters").
    """
    original = _normalize(name)
    m = _POSSESSIVE_RE.search(original)
    if m:
        return m.group(1)
    s = original
    for rx in _COMPILED:
        s = rx.sub("", s, count=1)
    m = _HEAD_RE.search(s)
    head = m.group(1).strip(" ") if m else ""
    head = (head or original).capitalize()
    return _HYPHEN_RE.sub(" - ", head) if spaced_hyphens else head


def traversal_head(name: str) -> str:
    """The head as the traversal compares it and looks it up: with the parser's spaced hyphens."""
    return find_head(name, spaced_hyphens=True)


def one_word(head: str) -> str:
    """The one-word variant: the last word of the multi-word head, capitalised."""
    parts = head.split()
    return parts[-1].capitalize() if parts else head


def is_null_head(head: str) -> bool:
    """Heads that carry no topic: numbers, months, "Century", "Categories"."""
    return bool(_NUMBER_RE.match(head)) or head in NULL_HEADS


# --- Spark --------------------------------------------------------------------


def with_head(df, name: str, out: str, spaced_hyphens: bool = False):
    """``df`` plus a column ``out``: the same head as ``find_head`` of column ``name``, built only from built-ins.

    A chain of regexp_replace then regexp_extract, each pattern a literal
    (compiled once per task): JVM-side, no Python worker. The steps are
    separate projections because later steps read an intermediate result
    twice (the fallback to the whole name, capitalising); folded into one
    expression Spark would run the regex chain once per reference, two to
    three times slower.
    """
    from pyspark.sql import functions as F

    tmp = [f"__head_{k}" for k in ("name", "head", "possessive")]
    original, head, possessive = (F.col(c) for c in tmp)
    s = original
    for pattern in STEPS:
        s = F.regexp_replace(s, pattern, "")
    df = df.withColumn(tmp[0], F.trim(F.regexp_replace(F.regexp_replace(F.col(name), "_", " "), " +", " ")))
    df = df.withColumn(tmp[1], F.trim(F.regexp_extract(s, P_HEAD, 1)))
    df = df.withColumn(tmp[1], capitalize_column(F.coalesce(F.nullif(head, F.lit("")), original)))
    if spaced_hyphens:
        df = df.withColumn(tmp[1], F.regexp_replace(head, P_HYPHEN, " - "))
    df = df.withColumn(tmp[2], F.regexp_extract(original, P_POSSESSIVE, 1))
    return df.withColumn(out, F.coalesce(F.nullif(possessive, F.lit("")), head)).drop(*tmp)


def capitalize_column(col):
    """Python's str.capitalize as a Column: first character upper, the rest lower."""
    from pyspark.sql import functions as F

    return F.concat(F.upper(F.substring(col, 1, 1)), F.lower(F.substring(col, 2, 1 << 30)))
