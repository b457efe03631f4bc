"""Whether two written names denote the same person, the way a person at leerplicht would judge.

Takes: two names as text (one from a signal, one from the pupil register), in natural order
("Johannes Petrus van der Berg") or administrative order ("Berg, Johannes Petrus van der").
Produces: a `NameKey` (given-name tokens, surname tokens, normalised), a yes/no match, and a
canonical text of the whole name for the receipts' keyed pseudonym.
Fails: never raises on odd input; a name it cannot read (no given name, only initials, more than
one comma) simply matches nothing. A "no" here means the child is held for a person, which is
always safe; a wrong "yes" misroutes a child (docs/architecture.md invariant 5), so every rule errs
towards "no".
Trusts: nothing about its input; pure, no I/O.

What counts as the same name: case, accents (é, ë), spacing, hyphens, typographic apostrophes and
periods are ignored; Dutch surname prefixes ("van der", "ter", "'t") belong to the surname and
must be equal; the given names may be fuller on one side than the other ("Johannes Petrus" vs
"Johannes") as long as one is a leading run of the other. Never: nicknames (Hans/Johannes),
spelling guesses (Sanne/Sane), initials (J./Jan), given names in another order, another surname.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Tussenvoegsels (and the foreign particles common in Dutch registers). Multi-word prefixes
# ("van der", "van 't", "op de") need no entry of their own: their first word is in this set,
# and everything from there on is surname anyway.
PREFIXES = frozenset(
    {
        "van", "de", "der", "den", "des", "het", "'t", "'s", "ter", "te", "ten",
        "in", "op", "aan", "bij", "uit", "onder", "over", "voor", "tot",
        "la", "le", "les", "du", "d'", "l'", "da", "di", "dos", "del", "della",
        "von", "vom", "zu", "zum", "zur",
    }
)  # fmt: skip

# Everything a keyboard or word processor produces for a hyphen or a dash.
_HYPHENS = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"
_APOSTROPHES = {"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'", "\u02bc": "'"}
_SPLIT = re.compile(r"(\s+|[" + re.escape(_HYPHENS) + r"])")
# "d'Ancona", "l'Ecluse": the elided article is a prefix token of its own.
_ELIDED = re.compile(r"^([dl]')(.+)$")


@dataclass(frozen=True)
class NameKey:
    """A name taken apart: given-name tokens and surname tokens (prefixes included), normalised."""

    given: tuple[str, ...]
    surname: tuple[str, ...]

    @property
    def tokens(self) -> tuple[str, ...]:
        """The whole name in natural order."""
        return self.given + self.surname


@dataclass(frozen=True)
class _Token:
    text: str
    hyphen_before: bool  # joined to the previous token by a hyphen ("Smit-de Vries")


def _fold(text: str) -> str:
    """Case, accents, apostrophes and periods folded away; hyphens and spaces kept."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = stripped.casefold()
    for typographic, plain in _APOSTROPHES.items():
        folded = folded.replace(typographic, plain)
    # A period only ever marks an abbreviation; "A.B." is two initials, so it separates.
    return folded.replace(".", " ")


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    hyphen = False
    for part in _SPLIT.split(_fold(text)):
        if not part or part.isspace():
            continue
        if part in _HYPHENS:
            hyphen = True
            continue
        elided = _ELIDED.match(part)
        pieces = [elided.group(1), elided.group(2)] if elided else [part]
        for piece in pieces:
            # A bare "t" is always the article 't with its apostrophe lost ("van t Hof").
            out.append(_Token("'t" if piece == "t" else piece, hyphen and bool(out)))
            hyphen = False
    return out


def _surname_start(tokens: list[_Token]) -> int:
    """Index of the first surname token in natural order, at least 1 when there are 2+ tokens."""
    if len(tokens) < 2:
        return len(tokens)
    start = next((i for i in range(1, len(tokens)) if tokens[i].text in PREFIXES), None)
    if start is None:
        start = len(tokens) - 1
    # A hyphen joins the parts of a double surname ("Smit-de Vries", "Smit-Jansen"): walk back
    # over them, but never into the first token, which is always a given name.
    while start > 1 and tokens[start].hyphen_before:
        start -= 1
    return start


def _parse(name: str) -> tuple[list[_Token], int] | None:
    """The tokens in natural order and where the surname starts; None when unreadable.

    Administrative order "Berg, Johannes Petrus van der" is turned round: the comma says exactly
    where the surname is, and the prefixes trailing the given names move back in front of it.
    """
    if name.count(",") > 1:
        return None
    if "," not in name:
        tokens = _tokens(name)
        return tokens, _surname_start(tokens)
    surname_part, given_part = name.split(",")
    surname, given = _tokens(surname_part), _tokens(given_part)
    if not surname or not given:
        return None
    cut = len(given)
    while cut > 1 and given[cut - 1].text in PREFIXES:
        cut -= 1
    return given + surname, cut


def name_key(name: str) -> NameKey:
    """The normalised given names and surname of `name`; empty parts when it cannot be read."""
    parsed = _parse(name)
    if parsed is None:
        return NameKey((), ())
    tokens, start = parsed
    texts = tuple(t.text for t in tokens)
    return NameKey(given=texts[:start], surname=texts[start:])


# Prefixes that are never a given name: "De Vries" has no given name, it is not a "De" whose
# surname is "Vries". (The foreign ones can be: "Les" is short for Leslie.)
_NEVER_GIVEN = frozenset(
    {"van", "de", "der", "den", "het", "'t", "'s", "ter", "te", "ten", "op", "aan", "bij", "uit"}
)


def _is_initial(token: str) -> bool:
    return len(token) == 1


def _readable(key: NameKey) -> bool:
    """A name with a surname and at least one real given name (not an initial, not a prefix)."""
    return bool(key.surname) and any(
        not _is_initial(t) and t not in _NEVER_GIVEN for t in key.given
    )


def _given_compatible(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    shorter, longer = (a, b) if len(a) <= len(b) else (b, a)
    if not shorter or longer[: len(shorter)] != shorter:
        return False
    # What both sides share must identify someone: "J." alone is an initial, not a name.
    return any(not _is_initial(t) for t in shorter)


def names_match(a: str, b: str) -> bool:
    """True when `a` and `b` name the same person beyond reasonable doubt; never on a guess."""
    key_a, key_b = name_key(a), name_key(b)
    if not (_readable(key_a) and _readable(key_b)):
        return False
    if key_a.surname == key_b.surname and _given_compatible(key_a.given, key_b.given):
        return True
    # Hyphens are only spelling: "Anna Smit-de Vries" and "Anna Smit de Vries" are read with the
    # surname starting at different places, yet both are written with the same words in the same
    # order. Not across a comma, which states the structure: "Maria Smit, Anna" is not
    # "Anna Maria Smit".
    return "," not in a and "," not in b and key_a.tokens == key_b.tokens


def pseudonym_text(name: str) -> str:
    """The whole name as one canonical string (natural order, folded), for a keyed hash."""
    parsed = _parse(name)
    if parsed is None:
        # Unreadable structure: still deterministic and folded, commas and all.
        return " ".join(t.text for t in _tokens(name.replace(",", " , ")))
    return " ".join(t.text for t in parsed[0])
