"""Tests for delivery.seal: the notice text, its protected headers, and real signing+encryption."""

from __future__ import annotations

import datetime as dt
import email.utils
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from conftest import CONTACT_A, GATEWAY, Identities, Template, expired_key

from gateway.core.config import DEFAULT_TEACHER_TEXT
from gateway.crypto.gpg import Gpg, GpgError
from gateway.crypto.keyadmin import stop_agent
from gateway.delivery.seal import (
    INNER_SUBJECT,
    OUTER_SUBJECT,
    NoticeChild,
    ack_address,
    compose_inner,
    make_message_id,
    new_ack_token,
    notice_body,
    seal_notice,
)
from gateway.devkit.demokit import Received, notice_header, read_notice

NOW = dt.datetime(2026, 3, 2, 6, 45, tzinfo=dt.UTC)
SANNE = NoticeChild("Sanne de Vries", dt.date(2016, 4, 12), "HWC-20260302-AB12-1")
ZOE = NoticeChild("Zo\u00eb \u00c7elik-\u00d6zt\u00fcrk", dt.date(2013, 9, 3),
                  "HWC-20260302-AB12-2")
SECRETS = [b"Sanne", b"Vries", "Zo\u00eb".encode(), b"Zo=C3=AB", b"=C3=87elik",
           "\u00c7elik".encode(), b"12-04-2016", b"2016-04-12", b"03-09-2013", b"2013-09-03",
           b"HWC-20260302", b"Referentie: ", b"Naam: "]


def parse(data: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(data)


def test_notice_body_is_exactly_the_spec_text() -> None:
    """Codeword, then per child Naam, Geboortedatum DD-MM-YYYY and Referentie, then the teacher."""
    body = notice_body([SANNE, ZOE], "Wees er extra voor het kind.\n")
    assert body == (
        "Handle with Care\n"
        "\n"
        "Naam: Sanne de Vries\n"
        "Geboortedatum: 12-04-2016\n"
        "\n"
        "Referentie: HWC-20260302-AB12-1\n"
        "\n"
        "Naam: Zo\u00eb \u00c7elik-\u00d6zt\u00fcrk\n"
        "Geboortedatum: 03-09-2013\n"
        "\n"
        "Referentie: HWC-20260302-AB12-2\n"
        "\n"
        "Wees er extra voor het kind.\n"
    )


def test_notice_body_single_child_with_default_text() -> None:
    """One child and the default teacher text: nothing else is in the body."""
    body = notice_body([SANNE], DEFAULT_TEACHER_TEXT)
    assert body == ("Handle with Care\n\nNaam: Sanne de Vries\nGeboortedatum: 12-04-2016\n\n"
                    "Referentie: HWC-20260302-AB12-1\n\n" + DEFAULT_TEACHER_TEXT + "\n")


def test_notice_child_repr_hides_the_name() -> None:
    """A NoticeChild in a log line or traceback shows its reference, never name or birth date."""
    text = repr(ZOE)
    assert "HWC-20260302-AB12-2" in text
    assert "Zo" not in text and "2013" not in text


def test_make_message_id_is_fresh_and_neutral() -> None:
    """Message-IDs are random per notice and carry nothing but the domain."""
    first, second = make_message_id("hwc.example.nl"), make_message_id("hwc.example.nl")
    assert first != second
    assert first.startswith("<") and first.endswith("@hwc.example.nl>")
    assert len(first) == len("<@hwc.example.nl>") + 32


def inner_message(children: list[NoticeChild], teacher_text: str = DEFAULT_TEACHER_TEXT,
                  ) -> tuple[bytes, str, str]:
    message_id = make_message_id("hwc.example.nl")
    date = email.utils.format_datetime(NOW)
    return (compose_inner(notice_body(children, teacher_text), sender=GATEWAY,
                          recipients=[CONTACT_A, "zorg@regenboog.example.nl"],
                          message_id=message_id, date=date), message_id, date)


def test_compose_inner_has_protected_headers() -> None:
    """The inner entity carries the real subject, the HP-Outer copies and protected-headers=v1."""
    data, message_id, date = inner_message([SANNE])
    msg = parse(data)
    to = f"{CONTACT_A}, zorg@regenboog.example.nl"
    assert msg["Subject"] == INNER_SUBJECT == "Handle with Care"
    assert msg["From"] == GATEWAY
    assert msg["To"] == to
    assert msg["Message-ID"] == message_id
    assert msg["Date"] == date
    assert msg.get_content_type() == "text/plain"
    assert msg.get_param("protected-headers") == "v1"
    assert msg.get_param("hp") == "cipher"
    assert msg.get_content_charset() == "utf-8"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_all("HP-Outer") == [f"From: {GATEWAY}", f"To: {to}",
                                       f"Subject: {OUTER_SUBJECT}", f"Date: {date}",
                                       f"Message-ID: {message_id}"]


def test_compose_inner_is_seven_bit_crlf_and_round_trips_accents() -> None:
    """The payload is 7-bit with CRLF lines of at most 78 octets; accented names decode intact."""
    long_text = "Een heel lange regel voor de leerkracht " * 6 + "= \u00e9\u00e9n."
    data, _, _ = inner_message([SANNE, ZOE], long_text)
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert all(len(line) <= 78 for line in data.split(b"\r\n"))
    assert b"Zo=C3=AB" in data
    text = parse(data).get_content().replace("\r\n", "\n")
    assert text == notice_body([SANNE, ZOE], long_text)


@dataclass(frozen=True)
class GatewayHome:
    home: Path
    fingerprint: str
    public_key: str


def copy_gateway_home(template: Template, dest: Path) -> GatewayHome:
    """A private copy of the session's gateway GnuPG home, and its current signing key."""
    home = dest / "gnupg"
    shutil.copytree(template.keys / "keys" / "gnupg", home,
                    ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"))
    with sqlite3.connect(template.keys / "var" / "hwc-gateway.sqlite3") as db:
        (fpr,) = db.execute("SELECT fingerprint FROM gateway_keys"
                            " WHERE state = 'current'").fetchone()
    gpg = Gpg(home)
    public = str(gpg.call_sync(lambda g: g.export_keys([fpr], armor=True)))
    return GatewayHome(home, str(fpr), public)


@dataclass(frozen=True)
class SealSetup:
    gateway: GatewayHome
    expired_fpr: str


@pytest.fixture(scope="module")
def setup(template: Template, identities: Identities,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[SealSetup]:
    base = tmp_path_factory.mktemp("seal")
    gateway = copy_gateway_home(template, base)
    expired_fpr, expired_public = expired_key(
        base / "old-school", "Old School <old@school.example>", encrypt=True)
    gpg = Gpg(gateway.home)
    gpg.call_sync(lambda g: g.import_keys(identities.school_a.public_key()))
    gpg.call_sync(lambda g: g.import_keys(expired_public))
    identities.school_a.import_public(gateway.public_key)
    try:
        yield SealSetup(gateway, expired_fpr)
    finally:
        stop_agent(gateway.home)


async def seal(setup: SealSetup, fingerprints: list[str], *, signer: str | None = None,
               children: tuple[NoticeChild, ...] = (SANNE, ZOE),
               ack_to: str | None = None) -> tuple[bytes, str]:
    message_id = make_message_id("hwc.example.nl")
    sealed = await seal_notice(Gpg(setup.gateway.home), children, sender=GATEWAY,
                               recipients=[CONTACT_A], fingerprints=fingerprints,
                               signer=signer or setup.gateway.fingerprint,
                               message_id=message_id, teacher_text=DEFAULT_TEACHER_TEXT,
                               now=NOW, ack_to=ack_to)
    return sealed, message_id


async def test_sealed_notice_opens_for_the_school_signed_by_the_gateway(
        setup: SealSetup, identities: Identities) -> None:
    """The school's key decrypts the notice; one valid signature by the gateway's fingerprint."""
    sealed, message_id = await seal(setup, [identities.school_a.fingerprint])
    text, result = read_notice(Received(GATEWAY, [CONTACT_A], sealed), identities.school_a)
    assert result.ok
    assert result.valid
    assert result.pubkey_fingerprint == setup.gateway.fingerprint
    assert text.replace("\r\n", "\n") == notice_body([SANNE, ZOE], DEFAULT_TEACHER_TEXT)
    inner = parse(result.data)
    assert inner["Subject"] == "Handle with Care"
    assert inner["Message-ID"] == message_id
    assert inner.get_param("protected-headers") == "v1"


async def test_sealed_notice_outer_headers_are_neutral(setup: SealSetup,
                                                       identities: Identities) -> None:
    """Outside: only From, To, neutral Subject, Date, Message-ID, MIME-Version, Content-Type."""
    sealed, message_id = await seal(setup, [identities.school_a.fingerprint])
    outer = parse(sealed)
    assert list(outer.keys()) == ["From", "To", "Subject", "Date", "Message-ID",
                                  "MIME-Version", "Content-Type"]
    assert outer["Subject"] == OUTER_SUBJECT == "Vertrouwelijk bericht"
    assert outer["From"] == GATEWAY and outer["To"] == CONTACT_A
    assert outer["Message-ID"] == message_id
    assert email.utils.parsedate_to_datetime(str(outer["Date"])) == NOW
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer.get_param("protocol") == "application/pgp-encrypted"
    parts = outer.get_payload()
    assert isinstance(parts, list) and len(parts) == 2
    assert [p.get_content_type() for p in parts if not isinstance(p, str)] == [
        "application/pgp-encrypted", "application/octet-stream"]
    assert b"Version: 1" in sealed


async def test_sealed_notice_bytes_hold_no_personal_data(setup: SealSetup,
                                                         identities: Identities) -> None:
    """Nothing of names, birth dates, child references or the codeword is readable outside."""
    sealed, _ = await seal(setup, [identities.school_a.fingerprint])
    assert sealed.isascii()
    assert b"\r\n" in sealed and b"\n" not in sealed.replace(b"\r\n", b"")
    for secret in [*SECRETS, b"Handle with Care", b"Geboortedatum"]:
        assert secret not in sealed


async def test_sealing_to_an_unknown_fingerprint_fails(setup: SealSetup,
                                                       identities: Identities) -> None:
    """A well-formed fingerprint the gateway holds no key for: GpgError, no message."""
    with pytest.raises(GpgError, match="INV_RECP"):
        await seal(setup, [identities.school_b.fingerprint])


async def test_sealing_to_one_unknown_of_two_fingerprints_fails(setup: SealSetup,
                                                               identities: Identities) -> None:
    """One unusable contact key fails the whole notice; nobody gets a partial encryption."""
    with pytest.raises(GpgError, match="INV_RECP"):
        await seal(setup, [identities.school_a.fingerprint, identities.school_b.fingerprint])


async def test_sealing_to_an_expired_key_fails(setup: SealSetup) -> None:
    """An expired school key is never used: GpgError."""
    with pytest.raises(GpgError, match="INV_RECP"):
        await seal(setup, [setup.expired_fpr])


@pytest.mark.parametrize(
    "recipient",
    ["hwc@regenboog.example.nl", "De Regenboog", "0x1234ABCD", ""],
)
async def test_sealing_to_a_non_fingerprint_fails(setup: SealSetup, recipient: str) -> None:
    """An e-mail address, name, short key ID or empty string is refused before gpg runs."""
    with pytest.raises(GpgError, match="fingerprint"):
        await seal(setup, [recipient])


async def test_sealing_with_a_lower_case_fingerprint_fails(setup: SealSetup,
                                                           identities: Identities) -> None:
    """Fingerprints are compared as gpg prints them: a lower-case spelling is refused."""
    with pytest.raises(GpgError, match="fingerprint"):
        await seal(setup, [identities.school_a.fingerprint.lower()])


async def test_sealing_with_a_non_fingerprint_signer_fails(setup: SealSetup,
                                                           identities: Identities) -> None:
    """The signing key is chosen by fingerprint too: an address is refused."""
    with pytest.raises(GpgError, match="fingerprint"):
        await seal(setup, [identities.school_a.fingerprint], signer=GATEWAY)


async def test_sealing_with_a_key_we_cannot_sign_with_fails(setup: SealSetup,
                                                            identities: Identities) -> None:
    """A signer fingerprint without a secret key here (the school's): GpgError, no message."""
    with pytest.raises(GpgError, match="INV_SGNR"):
        await seal(setup, [identities.school_a.fingerprint],
                   signer=identities.school_a.fingerprint)


def test_notice_body_asks_for_an_acknowledgement_to_the_address() -> None:
    """With an ack address, the body ends with the Dutch request naming that address."""
    ack = ack_address("a" * 26, GATEWAY)
    body = notice_body([SANNE], DEFAULT_TEACHER_TEXT, ack)
    assert body.startswith(notice_body([SANNE], DEFAULT_TEACHER_TEXT).rstrip("\n"))
    assert f"\n    {ack}\n" in body
    assert "Stuur dan een e-mail aan" in body and "automatisch\nantwoord" in body


async def test_ack_address_is_readable_only_inside_the_notice(
        setup: SealSetup, identities: Identities) -> None:
    """The ack token is nowhere in the sealed bytes: only the decrypted notice shows it, as
    the protected Reply-To (no HP-Outer copy: the outside lacks it) and in the body."""
    token = new_ack_token()
    ack = ack_address(token, GATEWAY)
    sealed, _ = await seal(setup, [identities.school_a.fingerprint], ack_to=ack)
    assert token.encode() not in sealed.lower() and b"ack+" not in sealed.lower()
    assert "Reply-To" not in parse(sealed)
    item = Received(GATEWAY, [CONTACT_A], sealed)
    assert notice_header(item, identities.school_a, "Reply-To") == ack
    text, result = read_notice(item, identities.school_a)
    assert ack in text
    assert not any(h.startswith("Reply-To") for h in parse(result.data).get_all("HP-Outer", []))
