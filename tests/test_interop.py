"""Interoperability with the mail clients senders and schools really use.

Inbound: signals written byte for byte the way Thunderbird (built-in OpenPGP, 78 and later) and
mutt/neomutt (PGP/MIME) write them, signed and encrypted with the real gpg command line in the
sender's own GnuPG home, go through the running gateway to the right school. Outbound: a notice,
on the exact bytes the school's server received, decrypts and verifies with the gpg command line
and opens in neomutt (driven headless in a private tmux server) with a good signature, its
protected subject and the names with their accents.

The signals are written by tests/mail_clients.py, byte for byte as each client writes them."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import textwrap
import time
from collections.abc import Callable, Sequence
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from conftest import CONTACT_A, GATEWAY, SCHOOL_A, SCHOOL_B, Harness
from mail_clients import (
    DAAN,
    DANIEL,
    LONG_NAME,
    SANNE,
    ZOE,
    ZOE_AT_A,
    Child,
    mutt_combined,
    mutt_json_attachment,
    mutt_mixed,
    mutt_retained,
    mutt_text_part,
    run_gpg,
    status_lines,
    tb_attachment,
    tb_html_alternative,
    tb_key_attachment,
    tb_text_part,
    text_signal,
    thunderbird,
)

# -- inbound: each client's signal reaches the right school --------------------------------------


async def accept_and_drain(harness: Harness, message: bytes) -> str:
    """Submit as the sender's MTA would; the signal's reference once everything is delivered."""
    reply = await harness.send(message)
    assert reply.code == 250 and reply.text.startswith("2.0.0 Signal accepted as "), reply
    await harness.drain()
    return reply.text.rsplit(" ", 1)[1]


def notice_text(harness: Harness, school: str) -> str:
    """The one notice `school` got, decrypted by its contact; its signature is the gateway's."""
    [(text, result, item)] = harness.notices(school)
    assert result.valid and result.pubkey_fingerprint == harness.gateway_fpr
    assert item.header("Subject") == "Vertrouwelijk bericht"
    return text


def notice_lines(children: Sequence[Child], ref: str, first: int = 1) -> list[str]:
    """docs/protocol.md §8: the codeword, then per child name, birth date and child reference."""
    lines = ["Handle with Care", ""]
    for number, child in enumerate(children, start=first):
        lines += [f"Naam: {child.name}", f"Geboortedatum: {child.birth:%d-%m-%Y}", "",
                  f"Referentie: {ref}-{number}", ""]
    return lines


def assert_only_the_child(text: str, child: Child, ref: str) -> None:
    expected = notice_lines([child], ref)
    assert text.splitlines()[:len(expected)] == expected
    for chatter in ("olitie", "police", "Veilig Thuis", "VT-HVB", "School:", "collega"):
        assert chatter not in text


Builder = Callable[[Harness, Child], bytes]
SIGNED_CASES: list[tuple[str, Builder, Child]] = [
    ("thunderbird-flowed-qp-crlf",
     lambda h, c: thunderbird(h, [tb_text_part(text_signal([c]))]), SANNE),
    ("thunderbird-flowed-long-name-wrapped",
     lambda h, c: thunderbird(h, [tb_text_part(text_signal([c]))]), LONG_NAME),
    ("thunderbird-legacy-display-part",
     lambda h, c: thunderbird(h, [tb_text_part(text_signal([c]))], legacy_display=True), SANNE),
    ("thunderbird-html-alternative-utf8",
     lambda h, c: thunderbird(h, [tb_html_alternative(text_signal([c]))]), ZOE),
    ("thunderbird-lf-inside-ciphertext",
     lambda h, c: thunderbird(h, [tb_text_part(text_signal([c]))], inner_eol="\n"), DANIEL),
    ("mutt-combined-textmode-latin1-qp",
     lambda h, c: mutt_combined(h, mutt_text_part(text_signal([c]), charset="iso-8859-1",
                                                  cte="quoted-printable", protected=True),
                                textmode=True), ZOE),
    ("neomutt-combined-binary-latin1-8bit",
     lambda h, c: mutt_combined(h, mutt_text_part(text_signal([c]), charset="iso-8859-1",
                                                  cte="8bit", protected=True),
                                textmode=False), DANIEL),
    ("mutt-signed-textmode-lf",
     lambda h, c: mutt_retained(h, mutt_text_part(text_signal([c]), charset="iso-8859-1",
                                                  cte="quoted-printable", protected=False),
                                sig="textmode-lf", written_eol="\n"), SANNE),
    ("neomutt-signed-protected-lf",
     lambda h, c: mutt_retained(h, mutt_text_part(text_signal([c]), charset="utf-8",
                                                  cte="quoted-printable", protected=True),
                                sig="binary-crlf", written_eol="\n"), ZOE),
    ("mutt-signed-mixed-json-attachment-qp",
     lambda h, c: mutt_retained(h, mutt_mixed(
         [mutt_text_part("Zie bijlage.\n", charset="us-ascii", cte="7bit", protected=False),
          mutt_json_attachment([c])], protected=True),
         sig="textmode-lf", written_eol="\n"), ZOE),
    ("mutt-signed-crlf-base64",
     lambda h, c: mutt_retained(h, mutt_text_part(text_signal([c]), charset="utf-8",
                                                  cte="base64", protected=True),
                                sig="binary-crlf", written_eol="\r\n"), DANIEL),
]


@pytest.mark.parametrize(("build", "child"), [pytest.param(b, c, id=i)
                                               for i, b, c in SIGNED_CASES])
async def test_client_signal_reaches_the_right_school(
        harness: Harness, build: Builder, child: Child) -> None:
    """A signal as Thunderbird or mutt writes it gets 250 and its child reaches only its school."""
    ref = await accept_and_drain(harness, build(harness, child))
    assert_only_the_child(notice_text(harness, child.school), child, ref)
    other = SCHOOL_B if child.school == SCHOOL_A else SCHOOL_A
    assert harness.inboxes[other].received == []


async def test_thunderbird_json_attachment_routes_each_sibling(harness: Harness) -> None:
    """Thunderbird's base64 `signal.json` attachment is the signal: each sibling to its school."""
    document = {"codeword": "Handle with Care", "reference": "VT-HVB-2026-000123",
                "children": [{"name": SANNE.name, "birthdate": SANNE.birth.isoformat(),
                              "bsn": "123456782"},
                             {"name": DAAN.name, "birthdate": DAAN.birth.isoformat()}],
                "incident": "Politie ter plaatse om 02:10"}
    parts = [tb_text_part("Beste collega,\n\nZie het signaal in de bijlage.\n\nMet "
                          "vriendelijke groet,\nVeilig Thuis Utrecht\n"),
             tb_attachment("signal.json", "application/json",
                           json.dumps(document, ensure_ascii=False, indent=2).encode()),
             tb_key_attachment(harness.ids.sender)]
    ref = await accept_and_drain(harness, thunderbird(harness, parts))
    text_a = notice_text(harness, SCHOOL_A)
    text_b = notice_text(harness, SCHOOL_B)
    assert text_a.splitlines()[:7] == notice_lines([SANNE], ref)
    assert text_b.splitlines()[:7] == notice_lines([DAAN], ref, first=2)
    assert "Daan" not in text_a and "Sanne" not in text_b
    assert "123456782" not in text_a and "Politie" not in text_a


# -- outbound: the notice as the school's clients open it ----------------------------------------


async def school_a_notice(harness: Harness, directory: Path) -> tuple[Path, str]:
    """Sanne and Zoë, both for School A, sent from Thunderbird: the one notice School A's
    server received, saved byte for byte, and the signal's reference."""
    signal = thunderbird(harness, [tb_text_part(text_signal([SANNE, ZOE_AT_A]))])
    ref = await accept_and_drain(harness, signal)
    [item] = harness.inboxes[SCHOOL_A].received
    path = directory / "notice.eml"
    path.write_bytes(item.data)
    return path, ref


async def test_notice_decrypts_and_verifies_with_gpg_command_line(
        harness: Harness, tmp_path: Path) -> None:
    """gpg decrypts the notice's exact bytes: gateway's good signature, protected headers, body."""
    path, ref = await school_a_notice(harness, tmp_path)
    school = harness.ids.school_a
    # gpg finds the armor inside the message itself: nothing is cut out or re-encoded first.
    proc = run_gpg(school.home, ["--decrypt", str(path)])
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, stderr
    assert 'Good signature from "hwc-gateway <leerplicht@hwc.example.nl>"' in stderr
    [goodsig] = status_lines(proc.stderr, "GOODSIG")
    [validsig] = status_lines(proc.stderr, "VALIDSIG")
    assert validsig[-1] == harness.gateway_fpr and validsig[0].endswith(goodsig[0])
    assert status_lines(proc.stderr, "DECRYPTION_OKAY") and status_lines(proc.stderr, "GOODMDC")
    [enc_to] = status_lines(proc.stderr, "ENC_TO")  # the school's key and nobody else's
    school_keys = run_gpg(school.home, ["--list-keys", "--with-colons", school.fingerprint])
    assert enc_to[0] in school_keys.stdout.decode()

    inner = BytesParser(policy=policy.default).parsebytes(proc.stdout)
    assert inner.get_content_type() == "text/plain"
    assert inner.get_param("protected-headers") == "v1"
    assert inner["Subject"] == "Handle with Care"
    assert inner["From"] == GATEWAY and inner["To"] == CONTACT_A
    assert inner["Message-ID"] == harness.inboxes[SCHOOL_A].received[0].header("Message-ID")
    expected = notice_lines([SANNE, ZOE_AT_A], ref)
    assert inner.get_content().splitlines()[:len(expected)] == expected
    # The acknowledgement address: the protected Reply-To and a body line, nowhere outside.
    ack = str(inner["Reply-To"])
    assert ack.startswith("ack+") and ack.endswith("@hwc.example.nl")
    assert f"    {ack}" in inner.get_content().splitlines()
    assert harness.inboxes[SCHOOL_A].received[0].header("Reply-To") == ""
    assert b"ack+" not in path.read_bytes()


# neomutt, headless ------------------------------------------------------------------------------

PAGER_END = "[-- End of PGP/MIME signed and encrypted data --]"


def mutt_binary() -> str:
    for name in ("neomutt", "mutt"):
        if shutil.which(name):
            return name
    pytest.skip("neither neomutt nor mutt is installed (apt-get install neomutt)")


def open_in_mutt(binary: str, message: bytes, gnupg_home: Path, work: Path) -> str:
    """Open `message` in (neo)mutt as the school's contact would; the screen it shows.

    mutt needs a terminal: it runs in a private tmux server (its own socket under `work`, so no
    other tmux is touched) on a 200x60 pane, reads a maildir holding the message, decrypts and
    verifies with GPGME in the school's GnuPG home, and is told to display the first message.
    The pane is read until the end of the decrypted part shows (or 30 s pass); then the tmux
    server, and mutt with it, is killed.
    """
    maildir = work / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1700000000.1.school.example").write_bytes(message)
    (work / "tmp").mkdir()
    rc = work / "muttrc"
    rc.write_text(textwrap.dedent(f"""\
        set mbox_type=Maildir
        set folder="{maildir}"
        set spoolfile="{maildir}"
        set header_cache=""
        set tmpdir="{work / "tmp"}"
        set charset=utf-8
        set crypt_use_gpgme=yes
        set crypt_verify_sig=yes
        set crypt_protected_headers_read=yes
        set pager_index_lines=0
        set help=no
        set wait_key=no
        set mailcap_path=/dev/null
        set sort=date
        """))
    command = shlex.join(["env", f"GNUPGHOME={gnupg_home}", f"HOME={work}", "LC_ALL=C.UTF-8",
                          "TERM=screen", binary, "-n", "-R", "-F", str(rc), "-f", str(maildir),
                          "-e", "push <display-message>"])
    (work / "tmux.conf").write_text("set-option -g status off\n")
    tmux = ["tmux", "-S", str(work / "tmux.sock"), "-f", str(work / "tmux.conf")]
    # Under pytest, children inherit LINES=24 and COLUMNS=80 (set in the C environment, not in
    # os.environ, presumably by readline); curses would believe them over the pane's size.
    # An explicit environment leaves them out.
    env = {k: v for k, v in os.environ.items() if k not in ("LINES", "COLUMNS", "TMUX")}
    subprocess.run([*tmux, "new-session", "-d", "-s", "school", "-x", "200", "-y", "60",
                    command], check=True, timeout=10, env=env)
    try:
        screen = ""
        deadline = time.monotonic() + 30
        while PAGER_END not in screen and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the pane for a condition, under a deadline
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", "school"],
                                    capture_output=True, text=True, timeout=10, env=env).stdout
        return screen
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10, env=env,
                       check=False)


@pytest.mark.parametrize("stored", ["exact-crlf", "mda-lf"])
async def test_notice_opens_in_neomutt_with_good_signature(
        harness: Harness, tmp_path: Path, stored: str) -> None:
    """neomutt opens the notice: good gateway signature, protected subject, accented names."""
    binary = mutt_binary()
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (apt-get install tmux); it gives neomutt a terminal")
    path, ref = await school_a_notice(harness, tmp_path)
    message = path.read_bytes()
    # As received (CRLF), and as a local delivery agent (Dovecot, procmail) stores it (LF).
    if stored == "mda-lf":
        message = message.replace(b"\r\n", b"\n")
    screen = await asyncio.to_thread(open_in_mutt, binary, message, harness.ids.school_a.home,
                                     tmp_path / "mutt")
    assert PAGER_END in screen, screen
    lines = [line.rstrip() for line in screen.splitlines()]
    assert "Good signature from: hwc-gateway <leerplicht@hwc.example.nl>" in lines, screen
    [fingerprint] = [line.split(":", 1)[1] for line in lines if line.startswith("Fingerprint:")]
    assert fingerprint.replace(" ", "") == harness.gateway_fpr
    assert "[-- The following data is PGP/MIME signed and encrypted --]" in lines
    expected = notice_lines([SANNE, ZOE_AT_A], ref)
    start = lines.index("Handle with Care")
    assert lines[start:start + len(expected)] == expected, screen
    # The pager's status line shows the protected Subject, not the outer "Vertrouwelijk bericht".
    [status] = [line for line in lines if " 1/1: " in line]
    assert "Handle with Care" in status and "Vertrouwelijk" not in status, screen
