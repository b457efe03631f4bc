"""Decompression bombs over the real wire: a few hundred bytes of OpenPGP that decompress to
64 MiB, made with the gpg command line and signed by the sender's pinned key, so that only their
size is wrong.

The decrypted plaintext is bounded inside gpg (`--max-output`, 4 x `[smtp] max_message_bytes`),
refused with 552 5.3.4, and never accepted from what gpg wrote before it stopped. While one is
being opened, the daemon's memory stays flat and other SMTP sessions still get their greeting:
nothing parses untrusted bytes on the event loop for long.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

from conftest import (
    GATEWAY,
    SANNE_BIRTH,
    SCHOOL_A,
    SENDER_ADDRESS,
    Harness,
    HarnessFactory,
    Identities,
)
from hostile import compressed_bomb, crlf, detach_sign, sign_encrypt, signed_entity

from gateway.crypto.gpg import MAX_PLAINTEXT_FACTOR
from gateway.devkit.demokit import Reply, encrypted_envelope, json_payload

MAX_MESSAGE = 256 * 1024  # so the plaintext bound is 1 MiB
BOUND = MAX_PLAINTEXT_FACTOR * MAX_MESSAGE
BOMB = 64 * 1024 * 1024
SMALL = f"max_message_bytes = {MAX_MESSAGE}"


def envelope(armored: bytes) -> bytes:
    return encrypted_envelope(armored, mail_from=SENDER_ADDRESS, rcpt=GATEWAY)


def sanne(reference: str, **extra: str) -> bytes:
    return crlf(json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat(),
                               "school": SCHOOL_A}], reference=reference, **extra))


def _memory_kib() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def _reset_peak() -> None:
    """Make VmHWM start again from the current resident set (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


class GreetingProbe(threading.Thread):
    """A second SMTP client in a thread of its own, so that a blocked event loop cannot stop
    it from starting a connection: it connects again and again until stopped, says NOOP, and
    records how long the greeting and the reply took, and what they were."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[float] = []
        self.greetings: list[bytes] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", self.port), timeout=120) as sock:
                lines = sock.makefile("rb")
                greeting = lines.readline()
                sock.sendall(b"NOOP\r\n")
                reply = lines.readline()
                self.latencies.append(time.monotonic() - started)
                self.greetings.append(greeting[:4] + reply[:4])
                sock.sendall(b"QUIT\r\n")
            self.done.wait(0.02)


async def send_probed(h: Harness, message: bytes) -> tuple[Reply, list[float]]:
    """Send `message` while a `GreetingProbe` connects; the reply, and the seconds each
    greeting and NOOP reply of the probe took."""
    probe = GreetingProbe(h.port)
    probe.start()
    try:
        reply = await h.send(message)
    finally:
        probe.done.set()
        await asyncio.to_thread(probe.join)  # its last greeting needs the event loop
    assert all(answers == b"220 250 " for answers in probe.greetings), probe.greetings
    return reply, probe.latencies


async def test_compression_bomb_is_refused_with_flat_memory_and_a_live_listener(
        harness_factory: HarnessFactory, identities: Identities) -> None:
    """A 64 MiB bzip2 bomb, signed by the pinned key: 552 5.3.4, memory flat, greetings fast."""
    h = await harness_factory(smtp_extra=SMALL)
    sender = identities.sender
    armored = await asyncio.to_thread(compressed_bomb, sender.home, b"", BOMB, "--sign",
                                      "--local-user", f"{sender.fingerprint}!",
                                      "--encrypt", "--recipient", h.gateway_fpr)
    bomb = envelope(armored)
    assert len(bomb) < 4096
    # A good signal first: the first message of a process pays once for threads, TLS and
    # imports (about 17 MiB here), which is not what this test measures.
    good = sign_encrypt(sender.home, sanne("VT-WARM-UP"), [sender.fingerprint], [h.gateway_fpr])
    assert (await h.send(envelope(good))).code == 250
    _reset_peak()
    before = _memory_kib()
    reply, latencies = await send_probed(h, bomb)
    after = _memory_kib()
    growth_mib = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(f"resident memory {before['VmRSS']} KiB before, peak {after['VmHWM']} KiB while "
          f"opening; greeting latencies {[round(s, 3) for s in latencies]}")
    assert growth_mib < 8, f"memory grew by {growth_mib:.0f} MiB for a {len(bomb)}-byte bomb"
    assert len(latencies) > 3 and max(latencies) < 0.5, latencies
    assert (reply.code, reply.text.split(" ", 1)[0]) == (552, "5.3.4"), reply
    assert f"larger than {BOUND} bytes" in reply.text
    await h.drain()
    assert [r.event for r in await h.receipts()].count("accepted") == 1  # the warm-up


async def test_signal_followed_by_a_bomb_in_the_epilogue_is_not_accepted(
        harness_factory: HarnessFactory, identities: Identities) -> None:
    """A good encrypted multipart/signed with 64 MiB of zeros after its closing delimiter:
    gpg stops at the bound with the signal complete, and the sender still gets 552 5.3.4."""
    h = await harness_factory(smtp_extra=SMALL)
    sender = identities.sender
    entity = sanne("VT-EPILOGUE")
    signed = signed_entity(entity, detach_sign(sender.home, entity, [sender.fingerprint]))
    armored = await asyncio.to_thread(compressed_bomb, sender.home, signed, BOMB, "--encrypt",
                                      "--recipient", h.gateway_fpr)
    reply = await h.send(envelope(armored))
    assert (reply.code, reply.text.split(" ", 1)[0]) == (552, "5.3.4"), reply
    await h.drain()
    assert "accepted" not in [r.event for r in await h.receipts()]
    assert h.inboxes[SCHOOL_A].received == []


async def test_signal_well_inside_the_plaintext_bound_is_accepted(
        harness_factory: HarnessFactory, identities: Identities) -> None:
    """A signal that decompresses to three quarters of the bound is opened and delivered."""
    h = await harness_factory(smtp_extra=SMALL)
    sender = identities.sender
    payload = sanne("VT-ROOMY", notes="x" * (BOUND * 3 // 4))
    armored = sign_encrypt(sender.home, payload, [sender.fingerprint], [h.gateway_fpr],
                           "-z", "9")
    message = envelope(armored)
    assert len(message) < MAX_MESSAGE
    reply = await h.send(message)
    assert reply.code == 250, reply
    await h.drain()
    assert len(h.inboxes[SCHOOL_A].received) == 1


async def test_many_lines_inside_the_bound_are_parsed_off_the_event_loop(
        harness_factory: HarnessFactory, identities: Identities) -> None:
    """3 MiB of one-character lines (inside the 4 MiB bound, a second of parsing twice over):
    554 5.6.0, and other sessions get their greeting all the while."""
    h = await harness_factory()
    sender = identities.sender
    armored = await asyncio.to_thread(
        compressed_bomb, sender.home, b"Content-Type: text/plain\r\n\r\n", 3 * 1024 * 1024,
        "--sign", "--local-user", f"{sender.fingerprint}!", "--encrypt", "--recipient",
        h.gateway_fpr, line="a")
    reply, latencies = await send_probed(h, envelope(armored))
    print(f"greeting latencies {[round(s, 3) for s in latencies]}")
    assert len(latencies) > 3 and max(latencies) < 0.5, latencies
    assert (reply.code, reply.text) == (554, "5.6.0 codeword missing"), reply
