"""Routing (docs/protocol.md §7): the register first, the sender's hint last, a hold on doubt."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest

from gateway.core import resolve
from gateway.core.model import Child, Decision, Held, Pupil, Routed, School
from gateway.core.resolve import resolve_child

BIRTH = dt.date(2016, 4, 12)
OTHER_BIRTH = dt.date(2013, 9, 3)
BSN_SANNE = "123456782"
BSN_OTHER = "111222333"

DIRECTORY: dict[str, School] = {
    "12AB00": School("12AB00", "De Regenboog", usable_contacts=1),
    "12AB01": School("12AB01", "De Regenboog, dependance", usable_contacts=2),
    "34CD00": School("34CD00", "Sint-Jozefschool", usable_contacts=1),
    "56EF00": School("56EF00", "Het Kompas", usable_contacts=0),
}

SANNE = Pupil("Sanne Maria de Vries", BIRTH, "34CD00", BSN_SANNE)


def decide(
    child: Child,
    *,
    by_bsn: Pupil | None = None,
    same_birthdate: Sequence[Pupil] = (),
    directory: dict[str, School] | None = None,
) -> Decision:
    return resolve_child(
        child,
        by_bsn=by_bsn,
        same_birthdate=same_birthdate,
        directory=DIRECTORY if directory is None else directory,
    )


# --- rule 1: BSN ---


def test_bsn_in_register_routes_to_its_school() -> None:
    """A BSN found in the register, with matching name and birth date, routes by rule 'bsn'."""
    child = Child("Sanne de Vries", BIRTH, bsn=BSN_SANNE)
    assert decide(child, by_bsn=SANNE, same_birthdate=[SANNE]) == Routed("34CD00", "bsn")


def test_bsn_with_other_birthdate_is_held() -> None:
    """The BSN's pupil was born on another day: held, the BSN or the date is wrong."""
    child = Child("Sanne de Vries", OTHER_BIRTH, bsn=BSN_SANNE)
    assert decide(child, by_bsn=SANNE) == Held(resolve.HELD_BSN_MISMATCH)


def test_bsn_with_other_name_is_held() -> None:
    """The BSN's pupil has another name: held, not routed on the BSN alone."""
    child = Child("Daan de Vries", BIRTH, bsn=BSN_SANNE)
    assert decide(child, by_bsn=SANNE, same_birthdate=[SANNE]) == Held(resolve.HELD_BSN_MISMATCH)


def test_bsn_and_name_pointing_at_different_pupils_is_held() -> None:
    """Another register pupil (other BSN) also matches the name and date: held."""
    other = Pupil("Sanne de Vries", BIRTH, "12AB00", BSN_OTHER)
    child = Child("Sanne de Vries", BIRTH, bsn=BSN_SANNE)
    decision = decide(child, by_bsn=SANNE, same_birthdate=[SANNE, other])
    assert decision == Held(resolve.HELD_BSN_OTHER_PUPIL)


def test_bsn_with_a_namesake_without_bsn_is_held() -> None:
    """A register entry without BSN answering to the same name and date also stops rule 1."""
    other = Pupil("Sanne de Vries", BIRTH, "12AB00", None)
    child = Child("Sanne de Vries", BIRTH, bsn=BSN_SANNE)
    decision = decide(child, by_bsn=SANNE, same_birthdate=[SANNE, other])
    assert decision == Held(resolve.HELD_BSN_OTHER_PUPIL)


def test_bsn_ignores_same_day_pupils_with_other_names() -> None:
    """Classmates born the same day with other names do not disturb a BSN routing."""
    daan = Pupil("Daan Jansen", BIRTH, "12AB00", BSN_OTHER)
    child = Child("Sanne de Vries", BIRTH, bsn=BSN_SANNE)
    assert decide(child, by_bsn=SANNE, same_birthdate=[daan, SANNE]) == Routed("34CD00", "bsn")


def test_by_bsn_with_another_bsn_is_a_caller_error() -> None:
    """Passing a pupil whose BSN is not the child's is a programming error, not a routing."""
    child = Child("Sanne de Vries", BIRTH, bsn=BSN_OTHER)
    with pytest.raises(ValueError, match="by_bsn"):
        decide(child, by_bsn=SANNE)


# --- rule 2: name and birth date ---


def test_unique_name_match_routes_by_name() -> None:
    """No BSN: exactly one same-day pupil whose name matches routes by rule 'name'."""
    child = Child("Sanne de Vries", BIRTH)
    assert decide(child, same_birthdate=[SANNE]) == Routed("34CD00", "name")


def test_name_match_after_bsn_not_found_routes_by_name() -> None:
    """A BSN not in the register falls through to a name match of a pupil without BSN."""
    pupil = Pupil("Sanne de Vries", BIRTH, "12AB00", None)
    child = Child("Sanne de Vries", BIRTH, bsn=BSN_SANNE)
    assert decide(child, same_birthdate=[pupil]) == Routed("12AB00", "name")


def test_bsn_not_found_but_name_matches_pupil_with_other_bsn_is_held() -> None:
    """The signal's BSN is unknown and the name matches a pupil with another BSN: held."""
    child = Child("Sanne de Vries", BIRTH, bsn=BSN_OTHER)
    assert decide(child, same_birthdate=[SANNE]) == Held(resolve.HELD_BSN_NAME_DISAGREE)


def test_twins_with_different_given_names_are_told_apart() -> None:
    """Twins share surname and birth date; the given name alone tells them apart."""
    sanne = Pupil("Sanne de Vries", BIRTH, "12AB00")
    lotte = Pupil("Lotte de Vries", BIRTH, "12AB01")
    assert decide(Child("Lotte de Vries", BIRTH), same_birthdate=[sanne, lotte]) == Routed(
        "12AB01", "name"
    )
    assert decide(Child("Sanne de Vries", BIRTH), same_birthdate=[sanne, lotte]) == Routed(
        "12AB00", "name"
    )


def test_same_name_and_birthdate_at_two_schools_is_held() -> None:
    """Two pupils with the same name and birth date at different schools: held, never a pick."""
    first = Pupil("Sanne de Vries", BIRTH, "12AB00")
    second = Pupil("Sanne de Vries", BIRTH, "34CD00")
    decision = decide(Child("Sanne de Vries", BIRTH), same_birthdate=[first, second])
    assert decision == Held(resolve.HELD_SEVERAL)


def test_same_name_and_birthdate_at_one_school_is_still_held() -> None:
    """Two register entries answering to one child are held even when the school is the same."""
    first = Pupil("Sanne de Vries", BIRTH, "12AB00")
    second = Pupil("Sanne Maria de Vries", BIRTH, "12AB00")
    decision = decide(Child("Sanne de Vries", BIRTH), same_birthdate=[first, second])
    assert decision == Held(resolve.HELD_SEVERAL)


def test_fuzzy_name_is_not_a_match() -> None:
    """A near-miss spelling finds no pupil; without a hint the child is held."""
    decision = decide(Child("Sane de Vries", BIRTH), same_birthdate=[SANNE])
    assert decision == Held(resolve.HELD_NOT_FOUND)


def test_pupil_born_on_another_day_is_ignored() -> None:
    """A same-name pupil with another birth date in the list (a caller slip) is not a match."""
    pupil = Pupil("Sanne de Vries", OTHER_BIRTH, "12AB00")
    decision = decide(Child("Sanne de Vries", BIRTH), same_birthdate=[pupil])
    assert decision == Held(resolve.HELD_NOT_FOUND)


# --- rule 3: the sender's school hint ---


def test_hint_in_directory_routes_by_hint() -> None:
    """Not in the register: the sender's 6-character school code in the directory routes."""
    child = Child("Sanne de Vries", BIRTH, school_hint="12AB01")
    assert decide(child) == Routed("12AB01", "hint")


def test_hint_is_compared_case_insensitively() -> None:
    """A lower-case hint names the same school."""
    child = Child("Sanne de Vries", BIRTH, school_hint="12ab01")
    assert decide(child) == Routed("12AB01", "hint")


def test_hint_not_in_directory_is_held() -> None:
    """A school code the directory does not know is held, not forwarded blind."""
    child = Child("Sanne de Vries", BIRTH, school_hint="99ZZ00")
    assert decide(child) == Held(resolve.HELD_HINT_UNKNOWN)


def test_unique_brin_hint_routes_to_its_only_location() -> None:
    """A bare BRIN with exactly one location in the directory routes there."""
    child = Child("Sanne de Vries", BIRTH, school_hint="34CD")
    assert decide(child) == Routed("34CD00", "hint")


def test_ambiguous_brin_hint_is_held() -> None:
    """A bare BRIN with several locations in the directory is held."""
    child = Child("Sanne de Vries", BIRTH, school_hint="12AB")
    assert decide(child) == Held(resolve.HELD_HINT_AMBIGUOUS)


def test_unknown_brin_hint_is_held() -> None:
    """A bare BRIN with no location in the directory is held as not in the directory."""
    child = Child("Sanne de Vries", BIRTH, school_hint="99ZZ")
    assert decide(child) == Held(resolve.HELD_HINT_UNKNOWN)


# --- rule 4 and disagreement ---


def test_nothing_known_is_held() -> None:
    """Not in the register and no school named: held."""
    assert decide(Child("Sanne de Vries", BIRTH)) == Held(resolve.HELD_NOT_FOUND)


def test_hint_differing_from_register_is_held() -> None:
    """The register says one school, the sender another: held, whichever is right."""
    child = Child("Sanne de Vries", BIRTH, bsn=BSN_SANNE, school_hint="12AB00")
    decision = decide(child, by_bsn=SANNE, same_birthdate=[SANNE])
    assert decision == Held(resolve.HELD_HINT_DIFFERS)


def test_hint_differing_from_name_match_is_held() -> None:
    """Disagreement also holds when the register school came from the name rule."""
    child = Child("Sanne de Vries", BIRTH, school_hint="12AB01")
    assert decide(child, same_birthdate=[SANNE]) == Held(resolve.HELD_HINT_DIFFERS)


def test_brin_hint_not_prefix_of_register_school_is_held() -> None:
    """A BRIN hint that is not the register school's BRIN is a disagreement."""
    child = Child("Sanne de Vries", BIRTH, school_hint="12AB")
    assert decide(child, same_birthdate=[SANNE]) == Held(resolve.HELD_HINT_DIFFERS)


def test_hint_agreeing_with_register_routes_by_register_rule() -> None:
    """A hint naming the register's school (full code or its BRIN) agrees; the rule stays."""
    for hint in ("34CD00", "34CD", "34cd00"):
        child = Child("Sanne de Vries", BIRTH, school_hint=hint)
        assert decide(child, same_birthdate=[SANNE]) == Routed("34CD00", "name")


# --- reachability ---


def test_register_school_not_in_directory_is_held_with_school() -> None:
    """A register school the directory lacks is held, naming the school for the administrator."""
    pupil = Pupil("Sanne de Vries", BIRTH, "78GH00")
    decision = decide(Child("Sanne de Vries", BIRTH), same_birthdate=[pupil])
    assert decision == Held(resolve.HELD_NOT_IN_DIRECTORY, school="78GH00")


def test_school_without_usable_key_is_held_with_school() -> None:
    """A school with no contact holding a usable key gets nothing; the child is held."""
    pupil = Pupil("Sanne de Vries", BIRTH, "56EF00")
    decision = decide(Child("Sanne de Vries", BIRTH), same_birthdate=[pupil])
    assert decision == Held(resolve.HELD_NO_USABLE_KEY, school="56EF00")


def test_hint_school_without_usable_key_is_held_with_school() -> None:
    """The no-key hold applies to a hinted school too."""
    child = Child("Sanne de Vries", BIRTH, school_hint="56EF00")
    assert decide(child) == Held(resolve.HELD_NO_USABLE_KEY, school="56EF00")


# --- the reasons themselves ---


def test_every_reason_is_fixed_text_without_personal_data() -> None:
    """Hold reasons are the module's constants; none carries a name, date or BSN."""
    assert len(resolve.HELD_REASONS) == 10
    for reason in resolve.HELD_REASONS:
        assert not any(ch.isdigit() for ch in reason)
        assert "Sanne" not in reason and "Vries" not in reason
