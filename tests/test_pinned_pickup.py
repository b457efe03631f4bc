"""The pickup channel, its secrets and the alert for an unread pickup notice: decisions pinned
where a mutation run (`make mutate`, mutate/run.py) found that the tests would not notice a
wrong answer: each test here fails on at least one mutant that survived before it. Pure and
fast: no gpg, no daemon, no SMTP, no database."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import string

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.core.model import Contact
from gateway.crypto import pickupbox
from gateway.crypto.vault import Vault
from gateway.delivery.parcel import ContactEntry
from gateway.delivery.pickup import PickupChannel
from gateway.pipeline.directory import Snapshot
from gateway.service.escalate import Escalation, _alert_lines, _missing

# -- pickup: who the page reaches ---------------------------------------------------------------

NOW = dt.datetime(2026, 12, 1, 19, 0, tzinfo=dt.UTC)
SCHOOL = "56EF00"
A, B = "a@school.nl", "b@school.nl"
CHANNEL = PickupChannel()


def snapshot(enrolled: set[tuple[str, str]],
             contacts: dict[str, tuple[Contact, ...]]) -> Snapshot:
    return Snapshot("1", NOW, contacts=contacts, enrolled=frozenset(enrolled),
                    pickup_url="https://ophalen.gemeente.nl")


def test_a_school_gone_from_the_directory_reaches_nobody() -> None:
    """A school with no contacts left in the snapshot (all removed, or the school itself),
    whose contact's passkey is still on file, reaches nobody and its sealed notification is
    stopped: the left-over credential alone reaches no one."""
    snap = snapshot({(SCHOOL, A)}, contacts={})
    assert not CHANNEL.reachable(ContactEntry(SCHOOL, A, "", "pickup"), snap, NOW).ok
    assert CHANNEL.still_valid([A], [], snap, SCHOOL, NOW) == [(A, "")]


def test_a_removed_contact_is_not_reached_through_another_contact_of_its_school() -> None:
    """A contact removed from its school while its passkey is still on file is not reachable,
    even while another enrolled pickup contact of the school remains (who still is)."""
    snap = snapshot({(SCHOOL, A), (SCHOOL, B)}, contacts={SCHOOL: (Contact(B, "", "pickup"),)})
    assert not CHANNEL.reachable(ContactEntry(SCHOOL, A, "", "pickup"), snap, NOW).ok
    assert CHANNEL.reachable(ContactEntry(SCHOOL, B, "", "pickup"), snap, NOW).ok
    assert CHANNEL.still_valid([A, B], [], snap, SCHOOL, NOW) == [(A, "")]


# -- pickupbox: tokens, digests, boxes, codes --------------------------------------------------

MAC_KEY = b"m" * 32
VAULT = Vault(b"v" * 32, MAC_KEY)
URL_SAFE = set(string.ascii_letters + string.digits + "-_")


def hmac_digest(label: str, value: str) -> str:
    """The stored digest format, computed apart from `Vault`: HMAC-SHA256 under the pseudonym
    key of `label`, NUL, the value."""
    return hmac.new(MAC_KEY, label.encode() + b"\0" + value.encode(), hashlib.sha256).hexdigest()


def test_a_link_token_is_43_url_safe_characters_without_padding() -> None:
    """Every token is 43 characters of the base64url alphabet, no "=", and decodes to 32
    bytes: it goes into a URL path as it is."""
    for _ in range(50):
        token = pickupbox.new_token()
        assert len(token) == 43 and set(token) <= URL_SAFE
        assert len(base64.urlsafe_b64decode(token + "=")) == 32


def test_a_token_shape_allows_dash_and_underscore_and_no_other_punctuation() -> None:
    """A link with "-" or "_" (base64url) has a token's shape; one with any other punctuation
    is refused before a look-up."""
    assert pickupbox.well_formed_token("-" * 21 + "_" * 22)
    for char in "+/=.~!%*'()":
        assert not pickupbox.well_formed_token("a" * 42 + char), char


def test_a_page_click_and_an_acknowledgement_mail_find_the_same_notice() -> None:
    """The acknowledgement digest a notice is stored with is what the SMTP side looks a reply
    up by (`ctx.vault.digest("ack", token)` in gateway.ingress.acks), so a reply to an OpenPGP
    notice and "Gelezen" on the page acknowledge the same notice."""
    token = pickupbox.new_token()
    assert pickupbox.ack_digest(VAULT, token) == VAULT.digest("ack", token)
    assert pickupbox.ack_digest(VAULT, token) == hmac_digest("ack", token)


def test_a_link_digest_is_the_stored_format_and_unlike_every_other_digest() -> None:
    """How the store finds a link is HMAC-SHA256 of "pickup", NUL, the token (so links and
    invitations stored before an upgrade are found after it), and differs from the token's
    acknowledgement digest and from what another label gives."""
    token = pickupbox.new_token()
    found = pickupbox.token_digest(VAULT, token)
    assert found == hmac_digest("pickup", token)
    assert found not in {pickupbox.ack_digest(VAULT, token), VAULT.digest("pseudonym", token),
                         VAULT.digest("enrolment-code", token), token}


def test_a_box_is_aes_gcm_under_hkdf_of_the_token() -> None:
    """The box is the documented format: a 12-byte nonce, then AES-256-GCM under HKDF-SHA256
    (no salt, info "hwc-gateway pickup box v1") of the token, over the notice as JSON: a box
    sealed before an upgrade opens after it, and a key derived any other way opens nothing."""
    token = pickupbox.new_token()
    notice = {"children": [{"name": "Zoë Ünal", "birthdate": "2014-03-02", "ref": "R-1"},
                           {"name": "Anna de Vries", "birthdate": "2015-01-09", "ref": "R-2"}],
              "teacher_text": "Bel bij twijfel de leerplichtambtenaar."}
    box = pickupbox.seal(token, notice, "pickup:<m@gw>")

    def key(info: bytes) -> AESGCM:
        return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
                      .derive(token.encode()))

    plain = key(b"hwc-gateway pickup box v1").decrypt(box[:12], box[12:], b"pickup:<m@gw>")
    assert json.loads(plain) == notice == pickupbox.open_box(token, box, "pickup:<m@gw>")
    with pytest.raises(Exception):  # noqa: B017 - InvalidTag: any other key fails
        key(b"").decrypt(box[:12], box[12:], b"pickup:<m@gw>")


def test_a_box_that_does_not_open_says_so_in_a_fixed_text() -> None:
    """BoxError carries one fixed text that names neither the link nor the notice (it may end
    up in a log or a traceback)."""
    token = pickupbox.new_token()
    box = pickupbox.seal(token, {"teacher_text": ""}, "pickup:<m@gw>")
    with pytest.raises(pickupbox.BoxError) as info:
        pickupbox.open_box(pickupbox.new_token(), box, "pickup:<m@gw>")
    assert str(info.value) == "the box does not open with this link"


def test_a_code_with_an_x_survives_being_read_out() -> None:
    """"X" is a letter of the code alphabet: typed with spaces, a dash or in lower case, a code
    with X's is the code, not one with the X's dropped."""
    assert pickupbox.normalise_code("xx x x-X 7XX") == "XXXXX7XX"
    assert pickupbox.normalise_code("ACDX - XE7X") == "ACDXXE7X"


def test_an_enrolment_code_digest_binds_the_code_to_its_contact() -> None:
    """The stored code digest is HMAC-SHA256 of "enrolment-code", NUL, school NUL address in
    lower case NUL the code as printed: typed in lower case with spaces, or with the address
    in another case, it is the same digest; another code or school is another digest."""
    digest = pickupbox.code_digest(VAULT, SCHOOL, "Anna.Jansen@School.NL", "acdx xe7x")
    assert digest == hmac_digest("enrolment-code", f"{SCHOOL}\0anna.jansen@school.nl\0ACDXXE7X")
    assert digest == pickupbox.code_digest(VAULT, SCHOOL, "anna.jansen@school.nl", "ACDX-XE7X")
    assert digest not in {pickupbox.code_digest(VAULT, SCHOOL, "anna.jansen@school.nl", other)
                          for other in ("ACDX-XE7Y", "ACDXXE7", "?")}
    assert digest != pickupbox.code_digest(VAULT, "12AB00", "anna.jansen@school.nl", "ACDXXE7X")


# -- escalate: the alert's text -----------------------------------------------------------------

DEADLINE = dt.datetime(2026, 12, 2, 7, 5, tzinfo=dt.UTC)
SEE = ("See `hwc-gateway held list` and `hwc-gateway queue list`; call the school if the"
       " notice cannot reach it in time.")


def test_the_alert_for_an_unread_pickup_notice_says_it_was_not_read_on_the_page() -> None:
    """An unacknowledged signal whose schools all read on the pickup page is "not read on the
    pickup page"; the alert names the reference, the school codes and the deadline in UTC,
    and nothing else about the notice."""
    item = Escalation("R-1", "unacknowledged", ("12AB00", "34CD00"), DEADLINE)
    page = {"R-1": {"34CD00", "12AB00"}}
    missing = _missing(item, page)
    assert missing == "was delivered but not read on the pickup page"
    assert _alert_lines(item, missing, page) == [
        "Signal R-1 was delivered but not read on the pickup page; the school day starts at"
        " 2026-12-02 07:05 UTC.",
        "Schools: 12AB00, 34CD00; state: delivered.",
        "Not read on the pickup page yet: 12AB00, 34CD00.",
        SEE,
    ]


def test_the_alert_names_only_the_schools_that_read_on_the_page_as_unread_there() -> None:
    """When some of the waiting schools receive mail, the alert says a school has not
    confirmed receipt and lists as unread on the page only the pickup schools of this signal;
    another signal's pickup schools do not count."""
    item = Escalation("R-1", "unacknowledged", ("12AB00", "34CD00"), DEADLINE)
    page = {"R-1": {"34CD00", "99ZZ00"}, "R-2": {"12AB00"}}
    missing = _missing(item, page)
    assert missing == "was delivered but its school has not confirmed receipt"
    assert "Not read on the pickup page yet: 34CD00." in _alert_lines(item, missing, page)
    for other in ({}, {"R-2": {"12AB00", "34CD00"}}):
        assert _missing(item, other) == missing
        assert not any("pickup page" in line for line in _alert_lines(item, missing, other))


def test_the_alert_for_an_undelivered_signal_gives_its_states() -> None:
    """An undelivered signal "is not delivered yet", whatever the page holds; its alert gives
    the states, says when the schools are not known yet, and nothing about reading."""
    item = Escalation("R-3", "undelivered", (), DEADLINE, ("routed", "held"))
    page = {"R-3": {"12AB00"}}
    missing = _missing(item, page)
    assert missing == "is not delivered yet"
    assert _alert_lines(item, missing, page) == [
        "Signal R-3 is not delivered yet; the school day starts at 2026-12-02 07:05 UTC.",
        "Schools: (not known yet); state: routed, held.",
        SEE,
    ]
    item = Escalation("R-3", "undelivered", ("12AB00",), DEADLINE, ("sealed",))
    assert _alert_lines(item, _missing(item, page), page)[1:] == [
        "Schools: 12AB00; state: sealed.", SEE]
