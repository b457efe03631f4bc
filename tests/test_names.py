"""Name matching: the cases a leerplicht officer would decide, and the ones they would refuse."""

from __future__ import annotations

import pytest

from gateway.core.names import NameKey, name_key, names_match, pseudonym_text

# (signal name, register name, expected, why)
CASES: list[tuple[str, str, bool, str]] = [
    # --- the same person, written differently ---
    ("Sanne de Vries", "Sanne de Vries", True, "identical"),
    ("sanne DE VRIES", "Sanne de Vries", True, "case is not a difference"),
    ("Zoë Müller", "Zoe Muller", True, "accents (diaeresis) dropped"),
    ("Élise Bakker", "Elise Bakker", True, "acute accent dropped"),
    ("  Sanne   de  Vries ", "Sanne de Vries", True, "spacing collapsed"),
    ("Jan-Willem de Vries", "Jan Willem de Vries", True, "hyphen in given names is a separator"),
    ("Jan - Willem de Vries", "Jan-Willem de Vries", True, "hyphen with spaces around it"),
    ("Jan–Willem de Vries", "Jan-Willem de Vries", True, "en dash is a hyphen"),
    ("Johannes Petrus van der Berg", "Johannes van der Berg", True, "register fuller given names"),
    ("Johannes van der Berg", "Johannes Petrus van der Berg", True, "signal fuller given names"),
    ("Berg, Johannes Petrus van der", "Johannes Petrus van der Berg", True, "admin order"),
    ("Berg, Johannes van der", "Johannes Petrus van der Berg", True, "admin order, fewer given"),
    ("Vries, Sanne de", "Sanne de Vries", True, "admin order with a single prefix"),
    ("de Vries, Sanne", "Sanne de Vries", True, "admin order with the prefix before the comma"),
    ("Sanne De Vries", "Sanne de Vries", True, "capitalised prefix"),
    ("Daan van ’t Hof", "Daan van 't Hof", True, "typographic apostrophe"),
    ("Daan van t Hof", "Daan van 't Hof", True, "'t with its apostrophe lost"),
    ("Anna d’Ancona", "Anna d'Ancona", True, "elided article, typographic apostrophe"),
    ("Anna Smit-de Vries", "Anna Maria Smit-de Vries", True, "double surname, fuller given"),
    ("Anna Smit-de Vries", "Anna Smit de Vries", True, "double surname with or without hyphen"),
    ("Fatima Al-Hassan", "Fatima Al Hassan", True, "hyphenated surname without prefix"),
    ("Lotte ter Horst", "Lotte Ter Horst", True, "ter is a prefix, case ignored"),
    ("Jan. de Vries", "Jan de Vries", True, "stray period dropped"),
    ("Jan K. de Vries", "Jan de Vries", True, "extra middle initial on the fuller side"),
    # Without a hyphen nothing tells "Smit" from a second given name: the spec's reading (surname
    # from the first prefix) applies. Only a same-birthdate register entry can reach this pair.
    ("Anna de Vries", "Anna Smit de Vries", True, "unhyphenated Smit reads as a given name"),
    ("Mohammed El Amrani", "Mohammed El Amrani", True, "no prefix: surname is the last token"),
    ("Zoe\u0308 Mu\u0308ller", "Zoë Müller", True, "decomposed (NFD) accents"),
    ("Kees in ’t Veld", "Kees in 't Veld", True, "in 't prefix, typographic apostrophe"),
    ("Kees IN 'T VELD", "Kees in 't Veld", True, "in 't prefix in capitals"),
    ("Veld, Kees in 't", "Kees in 't Veld", True, "admin order with a two-word prefix"),
    # --- not to be decided without a person ---
    ("Hans de Vries", "Johannes de Vries", False, "nickname"),
    ("Sane de Vries", "Sanne de Vries", False, "one letter off is a guess"),
    ("Sanne de Vries", "Sanna de Vries", False, "spelling variant is a guess"),
    ("J. de Vries", "Jan de Vries", False, "initial against a given name"),
    ("J. de Vries", "J. de Vries", False, "initials alone identify nobody"),
    ("J.P. van der Berg", "Johannes Petrus van der Berg", False, "initials against given names"),
    ("Petrus Johannes van der Berg", "Johannes Petrus van der Berg", False, "different order"),
    ("Johannes de Berg", "Johannes van der Berg", False, "different prefix"),
    ("Johannes Berg", "Johannes van der Berg", False, "prefix missing on one side"),
    ("Sanne de Vries", "Sanne de Vos", False, "different surname"),
    ("Sanne de Vries", "Daan de Vries", False, "a sibling: different given name"),
    ("Sanne Marie de Vries", "Sanne Lotte de Vries", False, "second given names differ"),
    ("Marie de Vries", "Anna Marie de Vries", False, "given names not a leading run"),
    ("Anna de Vries", "Anna Smit-de Vries", False, "single against double surname"),
    ("Maria Smit, Anna", "Anna Maria Smit", False, "a comma states where the surname is"),
    ("Sanne", "Sanne", False, "no surname"),
    ("De Vries", "De Vries", False, "no given name: a capitalised prefix is not one"),
    ("Vries, de", "De Vries", False, "admin order without a given name"),
    ("", "", False, "empty"),
    ("Vries, Sanne, de", "Sanne de Vries", False, "two commas: unreadable"),
]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(a, b, expected) for a, b, expected, _ in CASES],
    ids=[why for *_, why in CASES],
)
def test_names_match(a: str, b: str, expected: bool) -> None:
    """Each pair is matched, or refused, the way a careful person would decide it."""
    assert names_match(a, b) is expected


@pytest.mark.parametrize(
    ("a", "b"), [(a, b) for a, b, _, _ in CASES], ids=[why for *_, why in CASES]
)
def test_names_match_is_symmetric(a: str, b: str) -> None:
    """Which name came from the signal and which from the register never changes the answer."""
    assert names_match(a, b) is names_match(b, a)


def test_name_key_reorders_administrative_order() -> None:
    """'Surname, Given prefix' yields the same key as the natural order."""
    expected = NameKey(given=("johannes", "petrus"), surname=("van", "der", "berg"))
    assert name_key("Berg, Johannes Petrus van der") == expected
    assert name_key("Johannes Petrus van der Berg") == expected


def test_name_key_surname_starts_at_first_prefix_after_first_token() -> None:
    """The surname runs from the first prefix after the first token; else it is the last token."""
    assert name_key("Sanne Lotte van 't Hof") == NameKey(("sanne", "lotte"), ("van", "'t", "hof"))
    assert name_key("Sanne Lotte Hof") == NameKey(("sanne", "lotte"), ("hof",))


def test_name_key_keeps_hyphenated_double_surname_together() -> None:
    """A hyphen before a prefix or the last token marks a double surname, not a given name."""
    assert name_key("Anna Smit-de Vries") == NameKey(("anna",), ("smit", "de", "vries"))
    assert name_key("Anna Smit-Jansen") == NameKey(("anna",), ("smit", "jansen"))


def test_name_key_unreadable_is_empty() -> None:
    """A name with more than one comma gives an empty key rather than a guessed structure."""
    assert name_key("a, b, c") == NameKey((), ())


PSEUDONYM_SPELLINGS = [
    "Jan-Willem van der Berg",
    "jan willem van der berg",
    "JAN  WILLEM VAN DER BERG",
    "Jan - Willem van der Berg",
    "Berg, Jan-Willem van der",
    " Jan Willem  van der Berg ",
]


@pytest.mark.parametrize("spelling", PSEUDONYM_SPELLINGS)
def test_pseudonym_text_is_stable(spelling: str) -> None:
    """Case, spacing, hyphens and administrative order all give the same pseudonym input."""
    assert pseudonym_text(spelling) == "jan willem van der berg"


def test_pseudonym_text_folds_accents_and_apostrophes() -> None:
    """Accents and typographic apostrophes fold to the same pseudonym input."""
    assert pseudonym_text("Zoë van ’t Hof") == pseudonym_text("Zoe van 't hof")
    assert pseudonym_text("Zoë van ’t Hof") == "zoe van 't hof"


def test_pseudonym_text_differs_for_different_names() -> None:
    """Different people (a sibling, another given name) do not share a pseudonym input."""
    assert pseudonym_text("Sanne de Vries") != pseudonym_text("Daan de Vries")
    assert pseudonym_text("Johannes de Vries") != pseudonym_text("Johannes Petrus de Vries")


def test_pseudonym_text_of_unreadable_name_is_deterministic() -> None:
    """Even a name with two commas gives the same folded text each time."""
    assert pseudonym_text("Vries, Sanne, de") == pseudonym_text("VRIES, SANNE, DE")
