"""Property tests (hypothesis) over extract: arbitrary bytes never make it raise, hostile names
and dates are never accepted unclean, a well-formed signal comes out exactly as it went in.
The properties and strategies are in tests/property_checks.py and tests/*strategies.py."""

from __future__ import annotations

from hypothesis import given
from property_checks import (
    SETTINGS,
    check_parse_signal_on_arbitrary_bytes,
    check_parse_signal_on_fuzzed_signal,
    check_round_trip,
)
from signal_strategies import Generated, arbitrary_entities, fuzzed_signals, well_formed_signals


@SETTINGS
@given(arbitrary_entities)
def test_parse_signal_never_raises_on_arbitrary_bytes(entity: bytes) -> None:
    """Arbitrary bytes give a clean Signal or INVALID_SIGNAL with an ASCII one-line detail."""
    check_parse_signal_on_arbitrary_bytes(entity)


@SETTINGS
@given(fuzzed_signals())
def test_accepted_names_and_dates_are_clean(case: Generated) -> None:
    """Hostile names and dates are never accepted unclean, and never echoed in a refusal."""
    check_parse_signal_on_fuzzed_signal(case)


@SETTINGS
@given(well_formed_signals())
def test_well_formed_signal_round_trips(case: Generated) -> None:
    """A well-formed signal in any form, encoding and MIME shape yields exactly its children."""
    check_round_trip(case)
