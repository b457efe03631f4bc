"""The benchmark's set-up: a complete gateway on temporary state, its daemon as a process,
a sender and three schools with loopback servers; and notices matched back to their signals.

Takes the options and a base directory; produces a `Rig` the phases run on. A set-up step that
fails, a daemon that dies and a notice lost or misrouted raise `BenchError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from load import (
    GATEWAY,
    PASSWORD,
    SENDER,
    SENDER_ADDRESS,
    BenchError,
    BenchInbox,
    Pupil,
    Sent,
    _pupils,
    free_port,
    make_signal,
)
from measure import CpuSample, cpu_sample, log_events
from report import Report

from gateway.admin.keys import keys_export, keys_init
from gateway.admin.pupils import pupils_import
from gateway.admin.schools import schools_add, schools_import_duo
from gateway.admin.senders import senders_add
from gateway.core.config import Config, load_config
from gateway.crypto.keyadmin import stop_agent
from gateway.crypto.tlsdev import CertPair
from gateway.devkit.demokit import (
    Identity,
    Received,
    read_notice,
    school_ca,
)
from gateway.pipeline.context import open_context, utc_now

DUO_CSV = """BRIN NUMMER;VESTIGINGSNUMMER;VESTIGINGSNAAM;PLAATSNAAM
12AB;0;Basisschool De Regenboog;Utrecht
34CD;1;Het Kompas;Utrecht
56EF;0;Sint-Jozefschool;Zeist
"""
NOTICE_REF = re.compile(r"Referentie: (HWC-\d{8}-[0-9A-Z]{8})-\d+")


@dataclass
class Options:
    signals: int
    concurrency: int
    per_session: int
    one_at_a_time: int
    backlog: int
    profile: Path | None



def _config_text(base: Path, listen: int, ca_file: Path, concurrency: int) -> str:
    return f"""
[gateway]
address = "{GATEWAY}"
[smtp]
listen = "127.0.0.1:{listen}"
tls_cert = "{base}/keys/tls/server.pem"
tls_key = "{base}/keys/tls/server.key"
# The load generator is one client address: let all of its sessions in.
max_sessions_per_client = {max(10, concurrency)}
[delivery]
ca_file = "{ca_file}"
retry_min_seconds = 1
retry_max_seconds = 5
timeout_seconds = 30
[storage]
path = "{base}/var/hwc-gateway.sqlite3"
[keys]
dir = "{base}/keys"
allow_no_passphrase = true
"""


class Rig:
    """The gateway under test and its neighbours: set-up, the daemon, notices matched to signals."""

    def __init__(self, base: Path, options: Options, report: Report) -> None:
        self.base = base
        self.opt = options
        self.report = report
        self.today = dt.date.today()
        self.pupils = _pupils(self.today)
        self.listen = free_port()
        self.down_port = free_port()  # school C's server: closed until phase 4
        self.identities: list[Identity] = []
        self.inboxes: dict[str, BenchInbox] = {}
        self.daemon: subprocess.Popen[bytes] | None = None
        self.log_path = base / "daemon.log"
        self.config: Config | None = None
        self.school_ids: dict[str, Identity] = {}
        self.gateway_fpr = ""
        self.ca_file = Path()
        self.school_cert: CertPair | None = None
        self.load_cpu: CpuSample | None = None  # phase 2's, for the CPU budget of phase 3

    # -- setting up --------------------------------------------------------------------------

    async def set_up(self) -> None:
        base = self.base
        school_ca_file, cert = school_ca(base / "school-tls")
        self.school_cert = cert
        config_path = base / "config.toml"
        config_path.write_text(_config_text(base, self.listen, school_ca_file,
                                            self.opt.concurrency))
        config = self.config = load_config(config_path)
        self.ca_file = config.smtp.tls_cert.parent / "ca.pem"
        await keys_init(config, utc_now())
        sender = Identity.create(base / "sender-gpg", "Veilig Thuis (bench)", SENDER_ADDRESS)
        self.identities.append(sender)
        self.sender = sender
        for i, pupil in enumerate(self.pupils):
            school = Identity.create(base / f"school-{i}-gpg", f"HwC {pupil.school}",
                                     pupil.email)
            self.identities.append(school)
            self.school_ids[pupil.school] = school
        for pupil in self.pupils[:2]:
            inbox = BenchInbox()
            await inbox.start(cert)
            self.inboxes[pupil.school] = inbox
        ctx = await open_context(config)
        try:
            gateway_public = keys_export(ctx)
            fpr = ctx.snapshot.signing_key
            if fpr is None:
                raise BenchError("keys init made no gateway key")
            self.gateway_fpr = fpr
            sender.import_public(gateway_public)
            # No status mail: the raw baseline has none, and without a relay each one would be
            # sealed and then wait in the queue (its own gpg work, not the signal path's).
            await senders_add(ctx, SENDER, sender.public_key(), sender.fingerprint,
                              PASSWORD, [SENDER_ADDRESS], status_mail=False)
            await schools_import_duo(ctx, DUO_CSV.encode())
            for pupil in self.pupils:
                school = self.school_ids[pupil.school]
                school.import_public(gateway_public)
                port = (self.inboxes[pupil.school].port if pupil.school in self.inboxes
                        else self.down_port)
                await schools_add(ctx, pupil.school, None, pupil.email,
                                  school.public_key(), school.fingerprint,
                                  f"127.0.0.1:{port}")
            csv = "bsn;naam;geboortedatum;vestigingscode\n" + "".join(
                f"{p.bsn};{p.name};{p.birthdate:%d-%m-%Y};{p.school}\n" for p in self.pupils)
            await pupils_import(ctx, csv.encode(), False)
        finally:
            await ctx.close()

    def start_daemon(self) -> None:
        assert self.config is not None
        command = [sys.executable, "-m", "gateway", "--config", str(self.config.path), "serve"]
        if self.opt.profile is not None:
            command = [sys.executable, "-m", "pyinstrument", "-r", "text", "--show-all",
                       "-o", str(self.opt.profile), *command[1:]]
        with self.log_path.open("wb") as log:
            self.daemon = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                           cwd=self.base)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise BenchError(f"the daemon exited at start-up ({self.daemon.returncode}): "
                                 + self.log_tail())
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.listen), timeout=1):
                return
            time.sleep(0.1)
        raise BenchError("the daemon did not start listening within 60 s")

    def stop_daemon(self) -> None:
        if self.daemon is None or self.daemon.poll() is not None:
            return
        self.daemon.terminate()
        try:
            self.daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_daemon(self) -> None:
        if self.daemon is None or self.daemon.poll() is not None:
            raise BenchError("the daemon died:\n" + self.log_tail())

    @property
    def pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.pid

    def cpu(self) -> CpuSample:
        assert self.config is not None
        return cpu_sample(self.pid, [self.config.gnupg_home])

    def stages(self, since_wall: float, count: int) -> str:
        """When the daemon's log says the stages finished, counted from `since_wall`."""
        labels = {"signal.accepted": "accepted", "notice.sealed": "sealed",
                  "notice.delivered": "delivered", "notice.deferred": "attempts deferred"}
        found = log_events(self.log_path, since_wall, list(labels))
        parts = []
        for event, label in labels.items():
            times = found[event]
            if not times:
                continue
            span = times[-1] - times[0]
            rate = f" ({(len(times) - 1) / span:.1f}/s from first to last)" if span > 0 else ""
            parts.append(f"{len(times)} {label} by +{times[-1] - since_wall:.1f} s{rate}")
        return f"stages (daemon log, of {count}): " + "; ".join(parts)

    def build(self, pupils: Sequence[Pupil], tag: str) -> list[bytes]:
        """Signals to the gateway, signed by the sender (built in parallel before a phase)."""
        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            return list(pool.map(
                lambda item: make_signal(self.sender, self.gateway_fpr, item[1],
                                         f"BENCH-{tag}-{item[0]:05d}"),
                enumerate(pupils)))

    # -- matching notices to signals ---------------------------------------------------------

    async def latencies(self, sent: Sequence[Sent], school_of: Callable[[int], str],
                        first: dict[str, int]) -> list[float]:
        """End of DATA → school 250 per signal, matched by the reference inside each notice
        (decrypted with the school's key); each must have reached its own school, once."""
        expected: dict[str, tuple[float, str]] = {}
        for s in sent:
            if s.code != 250 or s.ref is None:
                raise BenchError(f"signal {s.index} was not accepted: {s.code} {s.text}")
            expected[s.ref] = (s.t_dot, school_of(s.index))
        jobs: list[tuple[Received, str, float]] = []
        for code, inbox in self.inboxes.items():
            start = first.get(code, 0)
            jobs += [(item, code, at) for item, at in
                     zip(inbox.received[start:], inbox.arrived_at[start:], strict=True)]

        def ref_of(job: tuple[Received, str, float]) -> tuple[str, str, float]:
            text, result = read_notice(job[0], self.school_ids[job[1]])
            match = NOTICE_REF.search(text)
            if not result.valid or match is None:
                raise BenchError("a school received a notice it cannot read or verify")
            return match.group(1), job[1], job[2]

        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            arrivals = await asyncio.get_running_loop().run_in_executor(
                None, lambda: list(pool.map(ref_of, jobs)))
        seen: dict[str, float] = {}
        for ref, code, at in arrivals:
            if ref in seen:
                raise BenchError(f"signal {ref} reached a school twice")
            if ref not in expected or expected[ref][1] != code:
                raise BenchError(f"school {code} received a notice of signal {ref}, not its own")
            seen[ref] = at
        missing = set(expected) - set(seen)
        if missing:
            raise BenchError(f"{len(missing)} accepted signals never reached their school")
        return [seen[ref] - t_dot for ref, (t_dot, _) in expected.items()]

    def queued_for(self, school: str) -> int:
        """Notices sealed and waiting for `school`, read from the database (read-only)."""
        assert self.config is not None
        uri = f"file:{self.config.storage.path}?mode=ro"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
                row = db.execute("SELECT count(*) FROM notices WHERE school = ? AND"
                                 " state = 'queued'", (school,)).fetchone()
                return int(row[0])
        except sqlite3.Error:
            return -1


    async def close(self) -> None:
        await asyncio.to_thread(self.stop_daemon)
        for inbox in self.inboxes.values():
            await inbox.stop()
        homes = [ident.home for ident in self.identities]
        if self.config is not None:
            homes.append(self.config.gnupg_home)
        for home in homes:
            await asyncio.to_thread(stop_agent, home)

    def errors_logged(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if '"level": "error"' in line
                or "Traceback" in line]
