"""`hwc-gateway demo`: a signal's whole journey on temporary state, shown on screen.

Builds a gateway (own keys, own database, listener on a free loopback port), a Veilig Thuis
sender with its own key, and two school mail servers with a CA of their own; submits four
signals over SMTP with STARTTLS and AUTH (a plain one, siblings at two schools, one that must be
held, one that must be rejected); then shows what each school received after decrypting it
with the school's key, the held queue and the receipts. Everything is removed afterwards.
All names are invented.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.admin.held import held_list
from gateway.admin.keys import keys_export, keys_init
from gateway.admin.pupils import pupils_import
from gateway.admin.receipts import receipts_list, receipts_verify
from gateway.admin.schools import schools_add, schools_import_duo
from gateway.admin.senders import senders_add
from gateway.core.config import Config, load_config
from gateway.crypto.keyadmin import stop_agent
from gateway.devkit.demokit import (
    Identity,
    SchoolInbox,
    build_signal,
    json_payload,
    notice_header,
    read_notice,
    school_ca,
    submit,
    text_payload,
)
from gateway.observe.logs import configure
from gateway.pipeline.context import Context, open_context, utc_now
from gateway.service import runner
from gateway.service.daemon import Daemon

GATEWAY = "leerplicht@hwc.example.nl"
SENDER_ADDRESS = "signalen@veiligthuis.example.nl"
PASSWORD = "demo-password-not-secret"  # noqa: S105 - a throwaway sender on temporary state

DUO_CSV = """BRIN NUMMER;VESTIGINGSNUMMER;VESTIGINGSNAAM;PLAATSNAAM
12AB;0;Basisschool De Regenboog;Utrecht
34CD;1;Het Kompas;Utrecht
56EF;0;Sint-Jozefschool;Zeist
"""


def _pupils_csv(today: dt.date) -> str:
    def born(years: int, month: int, day: int) -> str:
        return dt.date(today.year - years, month, day).strftime("%d-%m-%Y")
    return ("bsn;naam;geboortedatum;vestigingscode\n"
            f"123456782;Sanne de Vries;{born(9, 4, 12)};12AB00\n"
            f";Daan de Vries;{born(12, 9, 3)};34CD01\n"
            f";Eva Maria Jansen;{born(7, 1, 30)};12AB00\n")


def _config_text(base: Path, ca_file: Path, relay_port: int) -> str:
    return f"""
[gateway]
address = "{GATEWAY}"
[smtp]
listen = "127.0.0.1:2525"  # the demo listens on a free port instead
tls_cert = "{base}/keys/tls/server.pem"
tls_key = "{base}/keys/tls/server.key"
[delivery]
ca_file = "{ca_file}"
relay = "127.0.0.1:{relay_port}"  # the municipality's mail relay: status mail to the sender
retry_min_seconds = 1
[storage]
path = "{base}/var/hwc-gateway.sqlite3"
[keys]
dir = "{base}/keys"
allow_no_passphrase = true
"""


def _say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class _Run:
    """What the demo's steps share: the gateway, its listener, the mail servers and the keys."""
    base: Path
    today: dt.date
    config: Config
    ctx: Context
    daemon: Daemon
    relay: SchoolInbox
    inboxes: dict[str, SchoolInbox]
    identities: dict[str, Identity]

    @property
    def gateway_fpr(self) -> str:
        fpr = self.ctx.snapshot.signing_key
        assert fpr is not None
        return fpr


async def _demo(base: Path) -> int:
    today = dt.date.today()
    ca_file, school_cert = school_ca(base / "school-tls")
    relay = SchoolInbox()  # stands in for the relay that carries mail back to Veilig Thuis
    await relay.start(school_cert)
    config_path = base / "config.toml"
    config_path.write_text(_config_text(base, ca_file, relay.port))
    config = load_config(config_path)

    _say("== Setting up: gateway keys, a sender, two participating schools, the register")
    for line in await keys_init(config, utc_now()):
        _say(f"   {line}")
    ctx = await open_context(config)
    # The demo drives the runner itself (`drain`), so that what it shows is complete: with the
    # daemon's own loops running too, a drain could find nothing left while a notice the loops
    # had claimed was still on its way to the school.
    daemon = Daemon(ctx, host="127.0.0.1", port=0, background=False)
    inboxes = {"12AB00": SchoolInbox(), "34CD01": SchoolInbox()}
    identities = {
        "sender": Identity.create(base / "sender-gpg", "Veilig Thuis (demo)", SENDER_ADDRESS),
        "12AB00": Identity.create(base / "school-a-gpg", "HwC De Regenboog",
                                  "hwc@regenboog.example.nl"),
        "34CD01": Identity.create(base / "school-b-gpg", "HwC Het Kompas",
                                  "zorg@kompas.example.nl"),
    }
    run = _Run(base, today, config, ctx, daemon, relay, inboxes, identities)
    try:
        for inbox in inboxes.values():
            await inbox.start(school_cert)
        await daemon.start()
        await _onboard(run)
        await _submit_signals(run)
        await runner.drain(ctx)
        _show_notices(run)
        await _acknowledge(run)
        _show_status_mail(run)
        return await _show_records(run)
    finally:
        await daemon.shutdown()
        for inbox in [*inboxes.values(), relay]:
            await inbox.stop()
        await ctx.close()
        for identity in identities.values():
            identity.close()
        await asyncio.to_thread(_kill_agent, config.gnupg_home)


async def _onboard(run: _Run) -> None:
    """The sender, the DUO school list, two schools' contacts with their keys, the register."""
    ctx, inboxes, identities, today = run.ctx, run.inboxes, run.identities, run.today
    sender = identities["sender"]
    gateway_public = keys_export(ctx)
    sender.import_public(gateway_public)
    _say("   " + await senders_add(ctx, "veilig-thuis", sender.public_key(),
                                    sender.fingerprint, PASSWORD, [SENDER_ADDRESS]))
    _say("   " + (await schools_import_duo(ctx, DUO_CSV.encode())).splitlines()[0])
    for code, email in (("12AB00", "hwc@regenboog.example.nl"),
                        ("34CD01", "zorg@kompas.example.nl")):
        school = identities[code]
        school.import_public(gateway_public)  # to verify the gateway's signature
        _say("   " + await schools_add(ctx, code, None, email, school.public_key(),
                                        school.fingerprint,
                                        f"127.0.0.1:{inboxes[code].port}"))
    imported = await pupils_import(ctx, _pupils_csv(today).encode(), False)
    _say("\n".join("   " + line for line in imported.splitlines()))
    await ctx.refresh(force=True)


async def _submit_signals(run: _Run) -> None:
    """Three signals from the pinned sender, then one signed by a key it never pinned."""
    ctx, config, daemon, today = run.ctx, run.config, run.daemon, run.today
    sender, gateway_fpr = run.identities["sender"], run.gateway_fpr
    d = {name: dt.date(today.year - y, m, dd) for name, (y, m, dd) in {
        "sanne": (9, 4, 12), "daan": (12, 9, 3), "eva": (7, 1, 30)}.items()}
    signals = [
        ("a plain signal (JSON), one child found by name and birth date",
         json_payload([{"name": "Eva Jansen", "birthdate": d["eva"].isoformat()}],
                      reference="VT-DEMO-0001", incident="read by nobody, discarded"),
         "combined"),
        ("siblings at two schools (labelled text, as typed at Veilig Thuis)",
         text_payload("Codewoord: Handle with Care\nReferentie: VT-DEMO-0002\n\n"
                      f"Naam: Sanne de Vries\nGeboortedatum: {d['sanne']:%d-%m-%Y}\n"
                      "BSN: 123456782\n\n"
                      f"Naam: Daan de Vries\nGeboortedatum: {d['daan']:%d-%m-%Y}\n\n"
                      "Toelichting: (incident details: never forwarded)\n"),
         "signed-inside"),
        ("a child the register does not know and no school named: must be held",
         json_payload([{"name": "Noor Bakker", "birthdate": f"{today.year - 8}-06-15"}],
                      reference="VT-DEMO-0003"),
         "combined"),
    ]
    _say("\n== Submitting signals over SMTP (STARTTLS, AUTH) as Veilig Thuis's mail server")
    for title, payload, mode in signals:
        message = build_signal(payload, sender, gateway_fpr, mail_from=SENDER_ADDRESS,
                               rcpt=GATEWAY, mode=mode)  # type: ignore[arg-type]
        reply = await _submit(daemon, config.smtp.tls_cert.parent / "ca.pem", message)
        _say(f"   {title}\n      -> {reply}")
    stranger = Identity.create(run.base / "stranger-gpg", "Someone else", SENDER_ADDRESS)
    run.identities["stranger"] = stranger
    stranger.import_public(keys_export(ctx))
    forged = build_signal(json_payload([{"name": "Sanne de Vries",
                                         "birthdate": d["sanne"].isoformat()}]),
                          stranger, gateway_fpr, mail_from=SENDER_ADDRESS, rcpt=GATEWAY)
    reply = await _submit(daemon, config.smtp.tls_cert.parent / "ca.pem", forged)
    _say(f"   a signal signed by a key not pinned for this sender: must be rejected\n"
         f"      -> {reply}")


def _show_notices(run: _Run) -> None:
    """Each school's notices, decrypted with the school's own key."""
    _say("\n== What each school received (decrypted with the school's own key)")
    for code, inbox in run.inboxes.items():
        for item in inbox.received:
            text, result = read_notice(item, run.identities[code])
            signer = ("signed by the gateway key" if result.valid
                      and (result.pubkey_fingerprint or result.fingerprint) == run.gateway_fpr
                      else "NOT signed by the gateway")
            _say(f"-- school {code}, to {', '.join(item.rcpt_tos)}; outer Subject: "
                 f"{item.header('Subject')!r}; {signer}")
            for line in text.strip().splitlines():
                _say(f"   | {line}")


async def _acknowledge(run: _Run) -> None:
    """A school contact replies to the notice's acknowledgement address."""
    config, identities = run.config, run.identities
    _say("\n== A school contact confirms receipt by replying (no AUTH, content unread)")
    # The ack address is only in the decrypted notice (protected Reply-To, and the body).
    first = run.inboxes["12AB00"].received[0]
    ack_to = notice_header(first, identities["12AB00"], "Reply-To")
    answer = await submit("127.0.0.1", run.daemon.bound_port, user=None, password=None,
                          mail_from="hwc@regenboog.example.nl", rcpt=ack_to,
                          message=b"Subject: Re: Vertrouwelijk bericht\r\n\r\nOntvangen.\r\n",
                          ca_file=config.smtp.tls_cert.parent / "ca.pem")
    _say(f"   reply to {ack_to} (outer Reply-To: {first.header('Reply-To')!r})\n"
         f"      -> {answer}")


def _show_status_mail(run: _Run) -> None:
    """The status mails the relay carried back to the sender, decrypted with its key."""
    _say("\n== What Veilig Thuis received back (status mail, decrypted with its own key)")
    for item in run.relay.received:
        text, result = read_notice(item, run.identities["sender"])
        _say(f"-- to {', '.join(item.rcpt_tos)}; "
             f"{'signed by the gateway key' if result.valid else 'NOT signed'}")
        for line in text.strip().splitlines():
            _say(f"   | {line}")


async def _show_records(run: _Run) -> int:
    """The held queue, the receipts and the chain check; 0 if the chain is intact."""
    ctx = run.ctx
    _say("\n== Held for an administrator (`hwc-gateway held list`)")
    for row in await held_list(ctx):
        _say(f"   {row['id']}: {row['reason']}")
    _say("\n== Receipts (`hwc-gateway receipts list`): no names, birth dates or BSNs")
    for r in await receipts_list(ctx, None):
        extra = r.get("reply") or r.get("reason") or r.get("rule") or ""
        _say(f"   {r['seq']:>3} {r['event']:<18} {r['ref'] or '':<26} "
             f"{r['school'] or '':<7} {extra}")
    count, problems = await receipts_verify(ctx.store)
    _say(f"\n== `hwc-gateway receipts verify`: "
         f"{'intact' if not problems else 'BROKEN'} ({count} receipts)")
    return 0 if not problems else 1


async def _submit(daemon: Daemon, ca_file: Path, message: bytes) -> str:
    reply = await submit("127.0.0.1", daemon.bound_port, user="veilig-thuis", password=PASSWORD,
                         mail_from=SENDER_ADDRESS, rcpt=GATEWAY, message=message,
                         ca_file=ca_file)
    return str(reply)


def _kill_agent(home: Path) -> None:
    stop_agent(home)


def run_demo() -> int:
    configure(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="hwc-demo-") as tmp:
        return asyncio.run(_demo(Path(tmp)))
