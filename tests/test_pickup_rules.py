"""The pickup channel's pure rules, without gpg, SMTP or a database: who is reachable, when
children wait for the page, when a sealed notification may still go out and why not."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.core.model import Contact
from gateway.core.resolve import HELD_NO_USABLE_KEY
from gateway.delivery.channel import hold_reason, reachable_contacts
from gateway.delivery.parcel import ContactEntry
from gateway.delivery.pickup import (
    HELD_NO_PAGE,
    STALE_CHANNEL,
    STALE_NOT_ENROLLED,
    STALE_REMOVED,
    PickupChannel,
    box_aad,
    mail_aad,
)
from gateway.pipeline.directory import Snapshot

NOW = dt.datetime(2026, 12, 1, 19, 0, tzinfo=dt.UTC)
URL = "https://ophalen.gemeente.nl"
SCHOOL = "56EF00"
A, B = "a@school.nl", "b@school.nl"
CHANNEL = PickupChannel()


def snapshot(enrolled: set[tuple[str, str]], url: str = URL,
             contacts: tuple[Contact, ...] = (Contact(A, "", "pickup"),
                                              Contact(B, "", "pickup"))) -> Snapshot:
    return Snapshot("1", NOW, contacts={SCHOOL: contacts}, enrolled=frozenset(enrolled),
                    pickup_url=url)


def entry(email: str, school: str = SCHOOL) -> ContactEntry:
    return ContactEntry(school, email, "", "pickup")


def test_only_an_enrolled_pickup_contact_of_its_school_is_reachable() -> None:
    """Reachable: a pickup contact of the school with a second factor the page accepts, while
    the page is on. Not: without a second factor, of another school, not a pickup contact,
    or with the page off; the reason is the one resolve holds children with."""
    snap = snapshot({(SCHOOL, A)})
    assert CHANNEL.reachable(entry(A), snap, NOW).ok
    for contact, snap_ in ((entry(B), snap), (entry(A, "99ZZ00"), snap),
                           (entry(A), snapshot({(SCHOOL, A)}, url="")),
                           (entry(A), snapshot({(SCHOOL, A)},
                                               contacts=(Contact(A, "F" * 40, "openpgp"),)))):
        found = CHANNEL.reachable(contact, snap_, NOW)
        assert (found.ok, found.reason) == (False, HELD_NO_USABLE_KEY)


def test_children_wait_for_a_school_until_a_contact_enrolled_and_the_page_is_on() -> None:
    """A pickup school is held with "no usable key" until a contact has a second factor; with
    one, it is sealed for while the page is on, and held with its own reason while it is
    off (the contact is then not reachable either)."""
    assert hold_reason(SCHOOL, snapshot(set()), NOW) == HELD_NO_USABLE_KEY
    assert hold_reason(SCHOOL, snapshot({(SCHOOL, B)}), NOW) is None
    assert reachable_contacts(SCHOOL, snapshot({(SCHOOL, B)}), NOW) == (entry(B),)
    assert CHANNEL.ready(snapshot(set(), url="")) == HELD_NO_PAGE
    assert CHANNEL.ready(snapshot(set())) is None


def test_a_notification_goes_out_only_to_contacts_still_enrolled() -> None:
    """A sealed notification may go out while every recipient is still an enrolled pickup
    contact of its school; the ones that are not are named (keyless: ""), and a notice
    that names nobody is never sent. A page switched off meanwhile does not stop it."""
    both = snapshot({(SCHOOL, A), (SCHOOL, B)})
    assert CHANNEL.still_valid([A, B], [], both, SCHOOL, NOW) == []
    assert CHANNEL.still_valid([A, B], [], snapshot({(SCHOOL, A)}), SCHOOL, NOW) == [(B, "")]
    assert CHANNEL.still_valid([A], [], both, "99ZZ00", NOW) == [(A, "")]
    assert CHANNEL.still_valid([], [], both, SCHOOL, NOW) == [("", "")]
    assert CHANNEL.still_valid([A], [], snapshot({(SCHOOL, A)}, url=""), SCHOOL, NOW) == []


@pytest.mark.parametrize(("pinned", "reason"), [
    ({A: ""}, STALE_REMOVED),                  # B is gone from the school
    ({A: "", B: "F" * 40}, STALE_CHANNEL),     # B now has a key: reached by OpenPGP
    ({A: "", B: ""}, STALE_NOT_ENROLLED),      # B is there, without a second factor
])
def test_why_a_notification_no_longer_goes(pinned: dict[str, str], reason: str) -> None:
    """The fixed reason a superseded notification is recorded with, by what became of the
    contact it was made for."""
    assert CHANNEL.stale_reason([(B, "")], pinned) == reason


def test_the_box_and_the_queued_mail_are_bound_to_their_notice() -> None:
    """The box and the queued mail are each bound to their own notice's Message-ID, apart
    from one another (the page opens the box with `box_aad`)."""
    assert box_aad("<m@gw>") == "pickup:<m@gw>" != box_aad("<n@gw>")
    assert mail_aad("<m@gw>") == "pickup-mail:<m@gw>" != box_aad("<m@gw>")
