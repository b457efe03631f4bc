"""Shared fixtures: real gpg keys made once per session, a real gateway per test.

`identities` are the parties outside the gateway (senders, schools, a stranger), each with its
own GnuPG home. `gateway_template` is a keys directory with the gateway key, development TLS
and secrets, made once and copied per test. `harness` starts a complete gateway on loopback
(SQLite file, SMTP listener on a free port, two school inboxes with their own CA), registers a
sender and two schools, imports a small register, and offers helpers to submit and to drain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opener_helpers import PAYLOAD

from gateway.admin.cli import main
from gateway.admin.keys import keys_export, keys_init
from gateway.admin.pupils import pupils_import
from gateway.admin.schools import schools_add, schools_import_duo
from gateway.admin.senders import senders_add
from gateway.core.config import Config, load_config
from gateway.core.validate import HostPort
from gateway.crypto.keyadmin import stop_agent
from gateway.crypto.tlsdev import CertPair
from gateway.devkit.demokit import (
    Identity,
    Mode,
    Received,
    Reply,
    SchoolInbox,
    build_signal,
    read_notice,
    school_ca,
    signed_multipart,
    submit,
)
from gateway.observe.logs import configure
from gateway.pipeline.context import Context, open_context
from gateway.service import runner
from gateway.service.daemon import Daemon

if TYPE_CHECKING:
    from forgeries import Forge

# As `hwc-gateway` does: files the tests' gateways and their gpg write are the owner's alone.
os.umask(0o077)

GATEWAY = "leerplicht@hwc.example.nl"
SENDER = "vt-utrecht"
SENDER_ADDRESS = "signalen@veiligthuis.example.nl"
PASSWORD = "correct horse battery staple"
SCHOOL_A, SCHOOL_B, SCHOOL_C = "12AB00", "34CD01", "56EF00"
CONTACT_A, CONTACT_B = "hwc@regenboog.example.nl", "zorg@kompas.example.nl"

TODAY = dt.date.today()
SANNE_BIRTH = dt.date(TODAY.year - 9, 4, 12)
DAAN_BIRTH = dt.date(TODAY.year - 12, 9, 3)
EVA_BIRTH = dt.date(TODAY.year - 7, 1, 30)

DUO_CSV = (
    "BRIN NUMMER;VESTIGINGSNUMMER;VESTIGINGSNAAM;PLAATSNAAM\n"
    "12AB;0;Basisschool De Regenboog;Utrecht\n"
    "34CD;1;Het Kompas;Utrecht\n"
    "56EF;0;Sint-Jozefschool;Zeist\n"
)
PUPILS_CSV = (
    "bsn;naam;geboortedatum;vestigingscode\n"
    f"123456782;Sanne de Vries;{SANNE_BIRTH:%d-%m-%Y};{SCHOOL_A}\n"
    f";Daan de Vries;{DAAN_BIRTH:%d-%m-%Y};{SCHOOL_B}\n"
    f";Eva Maria Jansen;{EVA_BIRTH:%d-%m-%Y};{SCHOOL_A}\n"
)


@dataclass
class Identities:
    sender: Identity
    other_sender: Identity
    school_a: Identity
    school_b: Identity
    stranger: Identity


@pytest.fixture(scope="session")
def identities(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Identities]:
    """The parties outside the gateway, each with a key of its own (made once)."""
    base = tmp_path_factory.mktemp("identities")
    ids = Identities(
        sender=Identity.create(base / "sender", "Veilig Thuis Utrecht", SENDER_ADDRESS),
        other_sender=Identity.create(base / "other", "Politie", "hwc@politie.example.nl"),
        school_a=Identity.create(base / "school-a", "De Regenboog", CONTACT_A),
        school_b=Identity.create(base / "school-b", "Het Kompas", CONTACT_B),
        stranger=Identity.create(base / "stranger", "Stranger", SENDER_ADDRESS),
    )
    yield ids
    for identity in vars(ids).values():
        identity.close()


@dataclass(frozen=True)
class Template:
    keys: Path
    school_ca: Path
    school_cert: CertPair


def free_port() -> int:
    """A port nothing listens on now: tests never assume one (issue 12: a gateway already on
    127.0.0.1:2525 made a fresh clone's tests fail)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config_text(base: Path, ca_file: Path, extra: str = "", listen: int | None = None,
                 retry_min: int = 60, smtp_extra: str = "",
                 keys_extra: str = "allow_no_passphrase = true") -> str:
    listen = free_port() if listen is None else listen
    return f"""
[gateway]
address = "{GATEWAY}"
[smtp]
{smtp_extra}
listen = "127.0.0.1:{listen}"
tls_cert = "{base}/keys/tls/server.pem"
tls_key = "{base}/keys/tls/server.key"
[delivery]
ca_file = "{ca_file}"
retry_min_seconds = {retry_min}
retry_max_seconds = 600
timeout_seconds = 10
[storage]
path = "{base}/var/hwc-gateway.sqlite3"
[keys]
dir = "{base}/keys"
{keys_extra}
{extra}
"""


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    """Gateway keys, TLS and secrets, and the school servers' CA, made once per session."""
    base = tmp_path_factory.mktemp("template")
    ca_file, cert = school_ca(base / "school-tls")
    (base / "config.toml").write_text(_config_text(base, ca_file))
    config = load_config(base / "config.toml")
    asyncio.run(keys_init(config, dt.datetime.now(dt.UTC)))
    stop_agent(config.gnupg_home)
    yield Template(base, ca_file, cert)


def copy_gateway_state(template: Template, dest: Path, extra_config: str = "",
                       listen: int | None = None, retry_min: int = 60,
                       smtp_extra: str = "") -> Config:
    """A fresh gateway home for one test: the session's keys and database, copied."""
    shutil.copytree(template.keys / "keys", dest / "keys",
                    ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"))
    shutil.copytree(template.keys / "var", dest / "var")
    (dest / "config.toml").write_text(_config_text(dest, template.school_ca, extra_config,
                                                   listen, retry_min, smtp_extra))
    return load_config(dest / "config.toml")


def expired_key(home: Path, uid: str, encrypt: bool) -> tuple[str, bytes]:
    """A key that expired in 2020 (gpg's faked clock): a signing key, with an encryption
    subkey when `encrypt`. Returns its fingerprint and armored public key."""
    home.mkdir(mode=0o700, parents=True)
    base = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
            "--passphrase", "", "--faked-system-time", "20200101T000000"]
    subprocess.run([*base, "--quick-gen-key", uid, "ed25519", "sign,cert", "1d"], check=True,
                   capture_output=True)
    listing = subprocess.run([*base, "--with-colons", "--list-keys"], check=True,
                             capture_output=True, text=True).stdout
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    if encrypt:
        subprocess.run([*base, "--quick-add-key", fpr, "cv25519", "encr", "1d"], check=True,
                       capture_output=True)
    public = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--armor", "--export",
                             fpr], check=True, capture_output=True).stdout
    stop_agent(home)
    return fpr, public


class FakeClock:
    """An injectable clock: real time unless frozen or moved on by a test."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC).replace(microsecond=0) + self.offset

    def advance(self, **kwargs: float) -> None:
        self.offset += dt.timedelta(**kwargs)

    def set(self, moment: dt.datetime) -> None:
        """From now on the clock reads `moment` (and runs on from there)."""
        self.offset = moment - dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class Harness:
    ctx: Context
    daemon: Daemon
    ids: Identities
    inboxes: dict[str, SchoolInbox]
    clock: FakeClock
    template: Template
    gateway_fpr: str
    base: Path
    sent: list[bytes] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.daemon.bound_port

    def signal(self, payload: bytes, *, signer: Identity | None = None,
               mode: Mode = "combined", message_id: str | None = None,
               to_key: str | None = None) -> bytes:
        return build_signal(payload, signer or self.ids.sender, to_key or self.gateway_fpr,
                            mail_from=SENDER_ADDRESS, rcpt=GATEWAY, mode=mode,
                            message_id=message_id)

    async def send(self, message: bytes, *, user: str | None = SENDER,
                   password: str | None = PASSWORD, mail_from: str = SENDER_ADDRESS,
                   rcpt: str = GATEWAY, starttls: bool = True) -> Reply:
        self.sent.append(message)
        return await submit("127.0.0.1", self.port, user=user, password=password,
                            mail_from=mail_from, rcpt=rcpt, message=message,
                            ca_file=self.ctx.config.smtp.tls_cert.parent / "ca.pem",
                            starttls=starttls)

    async def drain(self) -> None:
        await runner.drain(self.ctx)

    def notices(self, code: str) -> list[tuple[str, Any, Received]]:
        """Every notice a school received, decrypted with that school's own key."""
        school = self.ids.school_a if code == SCHOOL_A else self.ids.school_b
        return [(*read_notice(item, school), item) for item in self.inboxes[code].received]

    async def receipts(self) -> list[Any]:
        return await self.ctx.store.receipts.all()


async def onboard(ctx: Context, ids: Identities, ports: dict[str, int],
                  pupils_csv: str = PUPILS_CSV) -> None:
    """What an administrator does before the first signal: sender, schools, register."""
    gateway_public = keys_export(ctx)
    for identity in (ids.sender, ids.other_sender, ids.stranger, ids.school_a, ids.school_b):
        identity.import_public(gateway_public)
    await senders_add(ctx, SENDER, ids.sender.public_key(), ids.sender.fingerprint,
                      PASSWORD, [SENDER_ADDRESS])
    await senders_add(ctx, "politie", ids.other_sender.public_key(),
                      ids.other_sender.fingerprint, PASSWORD + "!", [])
    await schools_import_duo(ctx, DUO_CSV.encode())
    await schools_add(ctx, SCHOOL_A, None, CONTACT_A, ids.school_a.public_key(),
                      ids.school_a.fingerprint, f"127.0.0.1:{ports[SCHOOL_A]}")
    await schools_add(ctx, SCHOOL_B, None, CONTACT_B, ids.school_b.public_key(),
                      ids.school_b.fingerprint, f"127.0.0.1:{ports[SCHOOL_B]}")
    await pupils_import(ctx, pupils_csv.encode(), False)
    await ctx.refresh(force=True)


async def start_harness(config: Config, ids: Identities, template: Template,
                        base: Path) -> Harness:
    clock = FakeClock()
    ctx = await open_context(config, clock=clock)
    inboxes = {SCHOOL_A: SchoolInbox(), SCHOOL_B: SchoolInbox()}
    for inbox in inboxes.values():
        await inbox.start(template.school_cert)
    await onboard(ctx, ids, {code: inbox.port for code, inbox in inboxes.items()})
    daemon = Daemon(ctx, host="127.0.0.1", port=0, background=False)
    await daemon.start()
    assert ctx.snapshot.signing_key is not None
    return Harness(ctx, daemon, ids, inboxes, clock, template, ctx.snapshot.signing_key, base)


async def start_relay(h: Harness) -> SchoolInbox:
    """A mail relay on loopback for alerts and status mail, and the gateway pointed at it."""
    relay = SchoolInbox()
    await relay.start(h.template.school_cert)
    delivery = dataclasses.replace(h.ctx.config.delivery, relay=HostPort("127.0.0.1", relay.port))
    h.ctx.config = dataclasses.replace(h.ctx.config, delivery=delivery)
    h.inboxes["relay"] = relay  # stopped with the others
    return relay


async def stop_harness(h: Harness) -> None:
    await h.daemon.shutdown()
    for inbox in h.inboxes.values():
        await inbox.stop()
    await h.ctx.close()
    stop_agent(h.ctx.config.gnupg_home)


@pytest.fixture
async def harness(identities: Identities, template: Template,
                  tmp_path: Path) -> AsyncIterator[Harness]:
    """A running gateway with a sender, two participating schools and a register."""
    configure(json=True)
    config = copy_gateway_state(template, tmp_path)
    h = await start_harness(config, identities, template, tmp_path)
    try:
        yield h
    finally:
        await stop_harness(h)


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def harness_factory(identities: Identities, template: Template,
                          tmp_path: Path) -> AsyncIterator[HarnessFactory]:
    """Like `harness`, with settings of the test's own (e.g. `smtp_extra="timeout_seconds = 1"`)."""
    configure(json=True)
    started: list[Harness] = []

    async def make(**settings: Any) -> Harness:
        config = copy_gateway_state(template, tmp_path, **settings)
        h = await start_harness(config, identities, template, tmp_path)
        started.append(h)
        return h

    try:
        yield make
    finally:
        for h in started:
            await stop_harness(h)


def csv_bytes(*lines: str, encoding: str = "utf-8") -> bytes:
    """An administrator's CSV file: the lines with CRLF, in `encoding`."""
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command line as an administrator runs it: exit code, stdout, stderr."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cfg(template: Template, tmp_path: Path) -> str:
    """A copy of the onboarded gateway state; its config file's path."""
    return str(copy_gateway_state(template, tmp_path).path)


@pytest.fixture(scope="module")
def signed(identities: Identities) -> bytes:
    """A real RFC 3156 §5 multipart/signed over PAYLOAD (tests/opener_helpers.py) by the sender:
    the tests of the multipart/signed split and of gpg verifying it share it."""
    return signed_multipart(PAYLOAD, identities.sender)


@pytest.fixture(scope="session")
def forge(identities: Identities, template: Template,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forge]:
    """Every forgery of the hostile tests, built once (sync: the harness is per test and async)."""
    # Imported here: the forgery modules import this one for its names and identities.
    from forged_messages import build_forge
    from forgeries import workshop

    w = workshop(identities, template, tmp_path_factory.mktemp("hostile"))
    f = build_forge(w)
    try:
        yield f
    finally:
        w.stop_agents()


def raw_sql(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """`sql` run through a second, plain connection to the gateway's database file (autocommit),
    as an operator or an intruder would: what no record of the store shows, or an older
    gateway's or an attacker's change. Its rows."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.row_factory = sqlite3.Row
        return list(con.execute(sql, params).fetchall())
    finally:
        con.close()
