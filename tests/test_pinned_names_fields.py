"""Names, fields and inert text: decisions pinned where a mutation run (`make mutate`,
mutate/run.py) found that the tests would not notice a wrong answer: each test here fails on at
least one mutant that survived before it. Pure and fast: no gpg, no daemon, no SMTP."""

from __future__ import annotations

import json

import pytest

from gateway.core.fields import clean_name, passes_eleven_test, vestigingscode
from gateway.core.inert import inert_json
from gateway.core.names import NameKey, name_key, names_match, pseudonym_text

# -- names with elided articles ------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [
    ("Anna d'Ancona", "Anna d'Abreu"),
    ("Pierre l'Ecluse", "Pierre l'Abbé"),
    ("Anna d'Ancona", "Anna Ancona d'"),
], ids=["d-article", "l-article", "article-moved"])
def test_names_differing_only_after_an_elided_article_do_not_match(a: str, b: str) -> None:
    """"Anna d'Ancona" is not "Anna d'Abreu": the surname after the article is compared."""
    assert not names_match(a, b)
    assert not names_match(b, a)


@pytest.mark.parametrize(("a", "b"), [
    ("Anna d'Ancona", "Anna D'Ancona"),
    ("Anna d'Ancona", "Anna d’Ancona"),
    ("Pierre l'Ecluse", "Pierre l’Écluse"),
], ids=["case", "apostrophe", "accent"])
def test_names_with_the_same_elided_article_match(a: str, b: str) -> None:
    """The same surname after the same elided article matches across spellings."""
    assert names_match(a, b)


# -- names: how a name is taken apart ------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [
    ("Anna d'Ancona", "Anna d' Ancona"),
    ("Pierre l'Ecluse", "Pierre l' Ecluse"),
], ids=["d-article", "l-article"])
def test_an_elided_article_is_a_token_of_its_own(a: str, b: str) -> None:
    """"d'Ancona" is read as the article and the name, as "d' Ancona" is."""
    assert names_match(a, b)


def test_a_given_name_that_is_also_a_particle_is_kept() -> None:
    """The first word is always a given name, even "Les" (short for Leslie, also a particle)."""
    assert name_key("Les van Dijk") == NameKey(("les",), ("van", "dijk"))
    assert names_match("Les van Dijk", "Les van Dijk")


def test_a_hyphen_never_joins_the_first_word_to_the_surname() -> None:
    """In "Anna-de Vries" the hyphen cannot pull the given name into the surname."""
    assert name_key("Anna-de Vries") == NameKey(("anna",), ("de", "vries"))


def test_register_order_with_an_empty_side_is_unreadable() -> None:
    """"Berg," and ", Jan" have no name on one side of the comma: nothing is read from them."""
    assert name_key("Berg,") == NameKey((), ())
    assert name_key(", Jan") == NameKey((), ())


def test_register_order_keeps_one_given_name_before_its_particles() -> None:
    """"Berg, van" keeps "van" as the given part: particles move back only from behind a name."""
    assert name_key("Berg, van") == NameKey(("van",), ("berg",))
    assert name_key("Berg, Jan van der") == NameKey(("jan",), ("van", "der", "berg"))


def test_an_unreadable_side_never_matches_even_with_the_same_words() -> None:
    """"J. Anna-de Vries" reads as an initial and a surname: it matches nobody, not even the
    same words written "J. Anna de Vries"."""
    assert not names_match("J. Anna de Vries", "J. Anna-de Vries")
    assert not names_match("J. Anna-de Vries", "J. Anna de Vries")


def test_pseudonym_text_of_an_unreadable_name_keeps_its_commas_apart() -> None:
    """A name with two commas still has one canonical text: the commas as words of their own."""
    assert pseudonym_text("Berg, Jan, Piet") == "berg , jan , piet"
    assert pseudonym_text("Berg,Jan,Piet") == "berg , jan , piet"


# -- fields: names, BSNs and school codes --------------------------------------------------------


def test_clean_name_keeps_letters_at_its_ends() -> None:
    """Only spaces are trimmed from a name, never a letter ("Xander", "DAX, XAVIER")."""
    assert clean_name("  Xander de Vries  ") == "Xander de Vries"
    assert clean_name("DAX ,  XAVIER") == "DAX, XAVIER"


@pytest.mark.parametrize("text", ["Berg\n, Jan", "Berg, \u2028Jan", "Berg\u2029, Jan",
                                  "Berg, \x0bJan"],
                         ids=["newline", "line-separator", "paragraph-separator", "vertical-tab"])
def test_clean_name_refuses_a_line_break_beside_the_comma(text: str) -> None:
    """A line break next to the comma makes the name invalid; it is not trimmed away."""
    assert clean_name(text) is None


def test_clean_name_keeps_combining_marks() -> None:
    """Combining marks that NFC leaves separate (Mn, Mc: Devanagari, Guarani g̃) are letters'
    parts, not punctuation."""
    assert clean_name("राम शर्मा") == "राम शर्मा"
    assert clean_name("Ana Ag\u0303ua") == "Ana Ag\u0303ua"


@pytest.mark.parametrize("digits", ["12345678a", "1234567.2", "١٢٣٤٥٦٧٨٢", "１２３４５６７８２"],
                         ids=["letter", "dot", "arabic-indic", "fullwidth"])
def test_eleven_test_refuses_anything_but_nine_ascii_digits(digits: str) -> None:
    """Nine characters that are not all ASCII digits fail the eleven-test, without an error."""
    assert not passes_eleven_test(digits)


@pytest.mark.parametrize(("brin", "number"), [("12ß", ""), ("12ﬀ", "1"), ("12AB", "０1")],
                         ids=["sharp-s", "ligature", "fullwidth-number"])
def test_vestigingscode_refuses_non_ascii_that_uppercases_to_ascii(brin: str, number: str) -> None:
    """"12ß" uppercases to "12SS", a BRIN shape: non-ASCII input is refused before that."""
    assert vestigingscode(brin, number) is None


# -- inert: JSON keeps its own newlines ---------------------------------------------------------


def test_inert_json_keeps_the_newlines_of_the_indentation() -> None:
    """The line breaks json.dumps(indent=...) writes stay; other controls become \\uXXXX."""
    text = json.dumps({"a": "x\x85y"}, indent=1, ensure_ascii=False)
    assert inert_json(text) == '{\n "a": "x\\u0085y"\n}'
