"""Which school a child goes to: the rules of docs/protocol.md §7 over register and directory.

Takes: one `Child` from a signal, the register pupil carrying the child's BSN (if any), every
register pupil born on the child's birth date, and the school directory (vestigingscode →
`School`). The caller does the look-ups; this module only decides.
Produces: `Routed(school, rule)` with rule "bsn", "name" or "hint", or `Held(reason)` where the
reason is one of the fixed `HELD_*` texts below (never personal data: it goes into receipts).
Fails: never on data; whatever is unclear or contradictory is held, because a misrouted signal is
worse than a held one (docs/architecture.md invariant 5). A `by_bsn` pupil with another BSN is a
caller bug and raises ValueError.
Trusts: that the child's fields were validated by extract (BSN eleven-test, hint normalised) and
that `same_birthdate` comes from the same register snapshot as `by_bsn`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.core.model import Child, Decision, Held, Pupil, Routed, School
from gateway.core.names import names_match

RULE_BSN = "bsn"
RULE_NAME = "name"
RULE_HINT = "hint"

HELD_BSN_MISMATCH = "BSN and name or birth date disagree"
HELD_BSN_OTHER_PUPIL = "BSN and name point to different pupils"
HELD_BSN_NAME_DISAGREE = "BSN and name disagree"
HELD_SEVERAL = "several pupils match"
HELD_HINT_AMBIGUOUS = "school hint is ambiguous"
HELD_HINT_UNKNOWN = "school hint not in the directory"
HELD_NOT_FOUND = "not in the register and no school named"
HELD_HINT_DIFFERS = "sender's school differs from the register"
HELD_NOT_IN_DIRECTORY = "school not in the directory"
HELD_NO_USABLE_KEY = "school has no contact with a usable key"

HELD_REASONS = frozenset(
    {
        HELD_BSN_MISMATCH,
        HELD_BSN_OTHER_PUPIL,
        HELD_BSN_NAME_DISAGREE,
        HELD_SEVERAL,
        HELD_HINT_AMBIGUOUS,
        HELD_HINT_UNKNOWN,
        HELD_NOT_FOUND,
        HELD_HINT_DIFFERS,
        HELD_NOT_IN_DIRECTORY,
        HELD_NO_USABLE_KEY,
    }
)

_BRIN_LENGTH = 4
_CODE_LENGTH = 6


def resolve_child(
    child: Child,
    *,
    by_bsn: Pupil | None,
    same_birthdate: Sequence[Pupil],
    directory: Mapping[str, School],
) -> Decision:
    """The school for `child` by rules 1-3 of docs/protocol.md §7, or why a person must decide."""
    if by_bsn is not None and (child.bsn is None or by_bsn.bsn != child.bsn):
        raise ValueError("by_bsn is not the register pupil with the child's BSN")
    hint = child.school_hint.strip().upper() if child.school_hint else None
    born_same_day = [p for p in same_birthdate if p.birthdate == child.birthdate]

    found = _from_register(child, by_bsn, born_same_day)
    if isinstance(found, Held):
        return found
    if found is not None:
        code, rule = found
        if hint and _hint_contradicts(hint, code):
            return Held(HELD_HINT_DIFFERS)
        return _reachable(code, rule, directory)
    if hint:
        return _from_hint(hint, directory)
    return Held(HELD_NOT_FOUND)


def _from_register(
    child: Child, by_bsn: Pupil | None, born_same_day: Sequence[Pupil]
) -> tuple[str, str] | Held | None:
    """Rules 1 and 2: (school, rule) from the register, a hold, or None when it knows nothing."""
    name_matches = [p for p in born_same_day if names_match(child.name, p.name)]
    if by_bsn is not None:
        if by_bsn.birthdate != child.birthdate or not names_match(child.name, by_bsn.name):
            return Held(HELD_BSN_MISMATCH)
        # Another register entry (another BSN, or none) with this name and birth date: the BSN
        # and the name may each point at a different child; a person must look.
        if any(p != by_bsn and p.bsn != by_bsn.bsn for p in name_matches):
            return Held(HELD_BSN_OTHER_PUPIL)
        return by_bsn.school, RULE_BSN

    # The signal's BSN is not in the register. A name-matching pupil registered under another
    # BSN is another child, or one of the two BSNs is wrong: either way not ours to decide.
    if child.bsn is not None and any(
        p.bsn is not None and p.bsn != child.bsn for p in name_matches
    ):
        return Held(HELD_BSN_NAME_DISAGREE)
    if len(name_matches) > 1:
        # Even at one school: two register entries answering to one child is not a routing.
        return Held(HELD_SEVERAL)
    if name_matches:
        return name_matches[0].school, RULE_NAME
    return None


def _hint_contradicts(hint: str, code: str) -> bool:
    """True when the sender named a school other than the one the register gives."""
    if len(hint) == _BRIN_LENGTH:
        return not code.startswith(hint)
    return hint != code


def _from_hint(hint: str, directory: Mapping[str, School]) -> Decision:
    """Rule 3: the school the sender named, if the directory knows exactly one such school."""
    if len(hint) == _CODE_LENGTH:
        if hint not in directory:
            return Held(HELD_HINT_UNKNOWN)
        return _reachable(hint, RULE_HINT, directory)
    if len(hint) == _BRIN_LENGTH:
        codes = [code for code in directory if code.startswith(hint)]
        if len(codes) > 1:
            # A BRIN names an institution; its locations are different schools with
            # different contacts.
            return Held(HELD_HINT_AMBIGUOUS)
        if codes:
            return _reachable(codes[0], RULE_HINT, directory)
    return Held(HELD_HINT_UNKNOWN)


def _reachable(code: str, rule: str, directory: Mapping[str, School]) -> Decision:
    """Routed only when the school can receive: in the directory, with a usable pinned key."""
    school = directory.get(code)
    if school is None:
        return Held(HELD_NOT_IN_DIRECTORY, school=code)
    if school.usable_contacts <= 0:
        # Never plaintext (docs/protocol.md §8): the child waits until the school has a key.
        return Held(HELD_NO_USABLE_KEY, school=code)
    return Routed(school=code, rule=rule)
