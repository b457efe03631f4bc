"""The load side of the benchmark: the sender's MTAs, the signals they send, the school servers.

Takes the gateway's port, CA and key fingerprint; produces signed and encrypted signals of a
real size, SMTP sessions that send them as a sender's MTA with connection caching does (one or
many at once), and school servers that note when each notice arrived. A refused command or a
run that cannot go on raises `BenchError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.devkit.demokit import (
    Identity,
    SchoolInbox,
    build_signal,
    json_payload,
)

GATEWAY = "leerplicht@hwc.example.nl"
SENDER = "veilig-thuis"
SENDER_ADDRESS = "signalen@veiligthuis.example.nl"
PASSWORD = "bench-password-not-secret"  # noqa: S105 - a throwaway sender on temporary state


@dataclass(frozen=True)
class Pupil:
    school: str
    email: str
    name: str
    birthdate: dt.date
    bsn: str


def _pupils(today: dt.date) -> list[Pupil]:
    return [Pupil("12AB00", "hwc@regenboog.example.nl", "Sanne de Vries",
                  dt.date(today.year - 9, 4, 12), "123456782"),
            Pupil("34CD01", "zorg@kompas.example.nl", "Daan Jansen",
                  dt.date(today.year - 11, 9, 3), "111222333"),
            Pupil("56EF00", "zorg@sintjozef.example.nl", "Eva Bakker",
                  dt.date(today.year - 7, 1, 30), "100000009")]


# What a case worker writes around the child: read by the gateway, never forwarded. It makes a
# signal the size of a real one (a few kilobytes) instead of a toy.
INCIDENT = ("Politie-inzet in de nacht, huiselijk geweld gemeld door buren; het kind was thuis "
            "en heeft weinig geslapen. School wordt gevraagd morgen extra aandacht te geven. ") * 6

ACCEPTED = re.compile(r"accepted as (HWC-\d{8}-[0-9A-Z]{8})")


class BenchError(Exception):
    """The run itself went wrong: a refused signal, a lost notice, a dead daemon."""



def dot_stuffed(message: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency, and the final dot."""
    data = re.sub(rb"(?m)^\.", b"..", message)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])



# -- the school servers ----------------------------------------------------------------------------

@dataclass
class BenchInbox(SchoolInbox):
    """A school server that also notes when each notice arrived (just before its 250)."""

    arrived_at: list[float] = field(default_factory=list)
    arrival: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            self.arrived_at.append(time.monotonic())
            self.arrival.set()
        return reply

    async def wait_for(self, count: int, seconds: float) -> bool:
        """Until `count` notices have arrived in all; False when `seconds` passed first."""
        deadline = time.monotonic() + seconds
        while len(self.received) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.arrival.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrival.wait(), left)
        return True


# -- the senders' MTAs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Sent:
    index: int
    t_dot: float  # the final dot written
    t_reply: float  # the gateway's reply to it read
    code: int
    text: str

    @property
    def ref(self) -> str | None:
        match = ACCEPTED.search(self.text)
        return match.group(1) if match else None


class SenderSession:
    """One SMTP session as a sender's MTA holds it: STARTTLS and AUTH once, then messages."""

    def __init__(self, port: int, ca_file: Path) -> None:
        self.smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="mta.veiligthuis.example",
                                 timeout=300)
        self.smtp.starttls(context=ssl.create_default_context(cafile=str(ca_file)))
        self.smtp.login(SENDER, PASSWORD)

    def send(self, index: int, message: bytes) -> Sent:
        for verb, arg in (("MAIL", f"FROM:<{SENDER_ADDRESS}>"), ("RCPT", f"TO:<{GATEWAY}>")):
            code, text = self.smtp.docmd(verb, arg)
            if code != 250:
                raise BenchError(f"signal {index}: {verb} answered {code} {text.decode()}")
        code, text = self.smtp.docmd("DATA")
        if code != 354:
            raise BenchError(f"signal {index}: DATA answered {code} {text.decode()}")
        self.smtp.send(dot_stuffed(message))
        t_dot = time.monotonic()
        code, reply = self.smtp.getreply()
        return Sent(index, t_dot, time.monotonic(), code, reply.decode())

    def quit(self) -> None:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            self.smtp.quit()


def send_concurrently(port: int, ca_file: Path, count: int, message_for: Callable[[int], bytes],
                      concurrency: int, per_session: int) -> tuple[float, list[Sent], int]:
    """`count` messages over `concurrency` sessions at once, each session carrying at most
    `per_session` of them; (start time, what each got, sessions opened)."""
    lock = threading.Lock()
    indices = iter(range(count))
    results: list[Sent] = []
    sessions = [0]

    def worker() -> None:
        session: SenderSession | None = None
        used = 0
        try:
            while True:
                with lock:
                    index = next(indices, None)
                if index is None:
                    return
                message = message_for(index)
                if session is None or used >= per_session:
                    if session is not None:
                        session.quit()
                    session, used = SenderSession(port, ca_file), 0
                    with lock:
                        sessions[0] += 1
                results.append(session.send(index, message))
                used += 1
        finally:
            if session is not None:
                session.quit()

    start = time.monotonic()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="sender-mta") as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return start, results, sessions[0]



# -- signals -------------------------------------------------------------------------------------

def make_signal(sender: Identity, gateway_fpr: str, pupil: Pupil, reference: str) -> bytes:
    child = {"name": pupil.name, "birthdate": pupil.birthdate.isoformat(), "bsn": pupil.bsn}
    return build_signal(json_payload([child], reference=reference, incident=INCIDENT),
                        sender, gateway_fpr, mail_from=SENDER_ADDRESS, rcpt=GATEWAY)
