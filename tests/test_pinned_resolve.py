"""Resolve: decisions pinned where a mutation run (`make mutate`, mutate/run.py) found that the
tests would not notice a wrong answer: each test here fails on at least one mutant that survived
before it. Pure and fast: no gpg, no daemon, no SMTP."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.core import resolve
from gateway.core.model import Child, Held, Pupil, Routed, School
from gateway.core.resolve import resolve_child

# -- resolve: a BSN the register does not know ---------------------------------------------------

BIRTH = dt.date(2016, 4, 12)
DIRECTORY = {"12AB00": School("12AB00", "De Regenboog", usable_contacts=1),
             "34CD00": School("34CD00", "Sint-Jozefschool", usable_contacts=1)}


def test_unknown_bsn_without_a_namesake_is_routed_by_the_senders_school() -> None:
    """A BSN not in the register, no pupil of that name and birth date: rule 3, the hint."""
    child = Child("Sanne de Vries", BIRTH, bsn="123456782", school_hint="12AB00")
    other = Pupil("Daan Jansen", BIRTH, "34CD00", "111222333")
    decision = resolve_child(child, by_bsn=None, same_birthdate=[other], directory=DIRECTORY)
    assert decision == Routed("12AB00", resolve.RULE_HINT)


def test_unknown_bsn_with_a_namesake_without_bsn_is_routed_by_name() -> None:
    """A BSN not in the register and one namesake registered without a BSN: rule 2, the name."""
    child = Child("Sanne de Vries", BIRTH, bsn="123456782")
    namesake = Pupil("Sanne de Vries", BIRTH, "34CD00", None)
    decision = resolve_child(child, by_bsn=None, same_birthdate=[namesake], directory=DIRECTORY)
    assert decision == Routed("34CD00", resolve.RULE_NAME)


def test_unknown_bsn_with_a_namesake_under_another_bsn_is_held() -> None:
    """A namesake registered under another BSN among others without one: held, not guessed."""
    child = Child("Sanne de Vries", BIRTH, bsn="123456782", school_hint="12AB00")
    pupils = [Pupil("Sanne de Vries", BIRTH, "34CD00", None),
              Pupil("Sanne de Vries", BIRTH, "12AB00", "111222333")]
    decision = resolve_child(child, by_bsn=None, same_birthdate=pupils, directory=DIRECTORY)
    assert decision == Held(resolve.HELD_BSN_NAME_DISAGREE)


# -- resolve: the internal contract --------------------------------------------------------------


def test_a_wrong_by_bsn_is_a_programming_error_with_its_message() -> None:
    """Passing a register pupil whose BSN is not the child's is refused with a plain message."""
    pupil = Pupil("Sanne de Vries", BIRTH, "34CD00", "111222333")
    child = Child("Sanne de Vries", BIRTH, bsn="123456782")
    exact = r"^by_bsn is not the register pupil with the child's BSN$"
    with pytest.raises(ValueError, match=exact):
        resolve_child(child, by_bsn=pupil, same_birthdate=[pupil], directory=DIRECTORY)
