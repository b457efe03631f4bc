"""The reply a signal gets on the real path, for every rejection class of docs/protocol.md §5, a
hung gpg and an unexpected error: one precise code, nothing of the signal or of the gateway."""

from __future__ import annotations

from pathlib import Path

from conftest import GATEWAY, PASSWORD, SANNE_BIRTH, SCHOOL_A, SENDER, Harness

from gateway.crypto.gpg import Gpg
from gateway.devkit.demokit import json_payload

# -- every rejection class of docs/protocol.md §5 --------------------------------------------------


async def test_wrong_credentials_get_535(harness: Harness) -> None:
    """AUTH with a wrong password is refused with 535 5.7.8."""
    reply = await harness.send(b"x", password="wrong password")
    assert reply.code == 535 and reply.text.startswith("5.7.8")


async def test_no_auth_gets_530(harness: Harness) -> None:
    """MAIL without AUTH is refused with 530 5.7.0."""
    reply = await harness.send(b"x", user=None, password=None)
    assert reply.code == 530 and reply.text.startswith("5.7.0")


async def test_no_tls_gets_530(harness: Harness) -> None:
    """Commands other than EHLO/STARTTLS before STARTTLS are refused with 530 5.7.0."""
    reply = await harness.send(b"x", user=None, password=None, starttls=False)
    assert reply.code == 530 and reply.text.startswith("5.7.0")


async def test_envelope_sender_not_allowed_gets_550_571(harness: Harness) -> None:
    """A MAIL FROM outside the sender's allowed addresses is refused with 550 5.7.1."""
    reply = await harness.send(b"x", mail_from="someone@else.example")
    assert reply.code == 550 and reply.text.startswith("5.7.1")


async def test_other_recipient_gets_550_511(harness: Harness) -> None:
    """RCPT TO anything but the gateway's address is refused with 550 5.1.1."""
    reply = await harness.send(b"x", rcpt="school@regenboog.example.nl")
    assert reply.code == 550 and reply.text.startswith("5.1.1")


async def test_plaintext_gets_554_575(harness: Harness) -> None:
    """A message that is not PGP/MIME encrypted is refused with 554 5.7.5."""
    plain = b"Subject: hi\r\n\r\nCodewoord: Handle with Care\r\nNaam: Sanne de Vries\r\n"
    reply = await harness.send(plain)
    assert reply.code == 554 and reply.text.startswith("5.7.5") and "Sanne" not in reply.text


async def test_encrypted_to_another_key_gets_554_575(harness: Harness) -> None:
    """A signal encrypted to a key that is not the gateway's is refused with 554 5.7.5."""
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])
    harness.ids.sender.import_public(harness.ids.school_a.public_key())
    reply = await harness.send(harness.signal(payload,
                                              to_key=harness.ids.school_a.fingerprint))
    assert reply.code == 554 and reply.text.startswith("5.7.5")


async def test_unpinned_signature_gets_554_577(harness: Harness) -> None:
    """A signal signed by a key not pinned for the sender is refused with 554 5.7.7."""
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])
    reply = await harness.send(harness.signal(payload, signer=harness.ids.stranger))
    assert reply.code == 554 and reply.text.startswith("5.7.7")


async def test_other_senders_key_gets_554_577(harness: Harness) -> None:
    """A signature by a key pinned for another sender does not count for this one."""
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])
    reply = await harness.send(harness.signal(payload, signer=harness.ids.other_sender))
    assert reply.code == 554 and reply.text.startswith("5.7.7")
    assert harness.inboxes[SCHOOL_A].received == []


async def test_unsigned_signal_gets_554_577(harness: Harness) -> None:
    """An encrypted but unsigned signal is refused with 554 5.7.7."""
    from gateway.devkit.demokit import encrypted_envelope
    armored = harness.ids.sender.sign_encrypt(
        json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}]),
        harness.gateway_fpr, sign=False)
    reply = await harness.send(encrypted_envelope(armored, mail_from="a@b.nl", rcpt=GATEWAY))
    assert reply.code == 554 and reply.text.startswith("5.7.7")


async def test_invalid_signal_gets_554_560_naming_field_not_value(harness: Harness) -> None:
    """A decrypted signal with a bad field is refused with 554 5.6.0 naming field and child."""
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()},
                            {"name": "Daan de Vries", "birthdate": "2016-02-31"}])
    reply = await harness.send(harness.signal(payload))
    assert reply.code == 554 and reply.text.startswith("5.6.0")
    assert "child 2" in reply.text and "birthdate" in reply.text and "2016" not in reply.text
    assert "Daan" not in reply.text


async def test_missing_codeword_gets_554_560(harness: Harness) -> None:
    """A signal without the codeword is refused with 554 5.6.0."""
    payload = (b'Content-Type: application/json\r\n\r\n{"children": [{"name": "Sanne de Vries",'
               b' "birthdate": "' + SANNE_BIRTH.isoformat().encode() + b'"}]}\r\n')
    reply = await harness.send(harness.signal(payload))
    assert reply.code == 554 and reply.text.startswith("5.6.0") and "codeword" in reply.text


async def test_too_large_gets_552_534(harness: Harness) -> None:
    """A message over max_message_bytes is refused with 552 5.3.4."""
    big = b"X-Filler: " + b"a" * 900 + b"\r\n"
    reply = await harness.send(big * 1300)
    assert reply.code == 552 and reply.text.startswith("5.3.4")


async def test_other_sender_password_does_not_open_this_account(harness: Harness) -> None:
    """A sender's password authenticates only that sender."""
    reply = await harness.send(b"x", user="politie", password=PASSWORD)
    assert reply.code == 535
    reply = await harness.send(b"x", user=SENDER, password=PASSWORD + "!")
    assert reply.code == 535


async def test_hung_gpg_gets_451_and_the_resend_is_accepted(harness: Harness,
                                                            tmp_path: Path) -> None:
    """A gpg that hangs is killed at its time limit: 451 4.3.0, and the sender's retry works."""
    flag = tmp_path / "hang"
    wrapper = tmp_path / "gpg-that-may-hang"
    wrapper.write_text(f'#!/bin/sh\nif [ -e "{flag}" ]; then exec sleep 60; fi\nexec gpg "$@"\n')
    wrapper.chmod(0o755)
    harness.ctx.gpg = Gpg(harness.ctx.config.gnupg_home, binary=str(wrapper), timeout=1.5)
    message = harness.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}]))
    flag.touch()
    reply = await harness.send(message)
    assert reply.code == 451 and reply.text.startswith("4.3.0")
    assert "gpg" not in reply.text.lower()
    flag.unlink()
    reply = await harness.send(message)
    assert reply.code == 250 and "Signal accepted" in reply.text
    await harness.drain()
    assert len(harness.inboxes[SCHOOL_A].received) == 1


async def test_unexpected_error_is_451_without_internals(harness: Harness) -> None:
    """handle_exception answers 451 4.3.0 and the reply holds nothing of the error."""
    from gateway.ingress.handler import IntakeHandler
    reply = await IntakeHandler(harness.ctx).handle_exception(KeyError("Sanne de Vries"))
    assert reply.startswith("451 4.3.0") and "Sanne" not in reply and "KeyError" not in reply
