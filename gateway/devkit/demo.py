"""`hwc-gateway demo`: a signal's whole journey on temporary state, shown on screen.

Builds a gateway (own keys, own database, SMTP listener and pickup pages on free loopback
ports), a Veilig Thuis sender with its own key, and three school mail servers with a CA of their
own: two schools read notices with their OpenPGP keys, the third has no key and reads them on
the pickup page. Its contact is invited (the enrolment mail goes to the school's server, as its
notices do) and enrols
over HTTP with an authenticator app (`gateway.devkit.demopickup`). Then four signals go in over
SMTP with STARTTLS and AUTH (a plain one, siblings at three schools, one that must be held, one
that must be rejected); the demo shows what each school received (decrypted with the school's
key, or the pickup school's neutral mail), opens the pickup notice and presses "Gelezen",
acknowledges an OpenPGP notice with the link inside it, and ends with the status mails, the
held queue and the receipts. Everything is removed afterwards. All names are invented.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.admin.held import held_list
from gateway.admin.keys import keys_export, keys_init
from gateway.admin.pupils import pupils_import
from gateway.admin.receipts import receipts_list, receipts_verify
from gateway.admin.schools import schools_add, schools_add_pickup, schools_import_duo
from gateway.admin.senders import senders_add
from gateway.core.config import Config, load_config
from gateway.crypto.keyadmin import stop_agent
from gateway.devkit import demopickup
from gateway.devkit.demokit import (
    Identity,
    Received,
    SchoolInbox,
    build_signal,
    json_payload,
    read_notice,
    school_ca,
    submit,
    text_payload,
)
from gateway.devkit.demopickup import App, Browser, say, show_mail
from gateway.observe.logs import configure
from gateway.pipeline.context import Context, open_context, utc_now
from gateway.service import runner
from gateway.service.daemon import Daemon

GATEWAY = "leerplicht@hwc.example.nl"
SENDER_ADDRESS = "signalen@veiligthuis.example.nl"
PASSWORD = "demo-password-not-secret"  # noqa: S105 - a throwaway sender on temporary state
PICKUP_SCHOOL, PICKUP_CONTACT = "56EF00", "ib@sintjozef.example.nl"

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
            f";Eva Maria Jansen;{born(7, 1, 30)};12AB00\n"
            f";Lotte de Vries;{born(6, 2, 11)};56EF00\n")


def _config_text(base: Path, ca_file: Path, relay_port: int, web_port: int) -> str:
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
[web]  # the pickup page, for schools whose contacts have no OpenPGP key
listen = "127.0.0.1:{web_port}"
public_url = "http://localhost:{web_port}"  # http only on loopback; a deployment has https
allow_totp = true  # the authenticator app, beside passkeys
helpdesk = "Bel de afdeling Leerplicht: 030 123 45 67."
"""


_say = say


def _free_port() -> int:
    """A loopback port nothing listens on now: the pages' address is in the configuration
    (`[web] public_url` names it), so it is chosen before the gateway starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Run:
    """What the demo's steps share: the gateway, its listener, the mail servers and the keys,
    and the pickup school's contact: its browser and the code it was given by phone."""
    base: Path
    today: dt.date
    config: Config
    ctx: Context
    daemon: Daemon
    relay: SchoolInbox
    inboxes: dict[str, SchoolInbox]  # the OpenPGP schools'
    identities: dict[str, Identity]
    pickup_inbox: SchoolInbox
    browser: Browser
    phone_code: str = ""
    app: App | None = None

    @property
    def gateway_fpr(self) -> str:
        fpr = self.ctx.snapshot.signing_key
        assert fpr is not None
        return fpr


async def _demo(base: Path) -> int:
    ca_file, school_cert = school_ca(base / "school-tls")
    relay = SchoolInbox()  # stands in for the relay: the status mails to Veilig Thuis
    await relay.start(school_cert)
    config_path = base / "config.toml"
    config_path.write_text(_config_text(base, ca_file, relay.port, _free_port()))
    config = load_config(config_path)

    _say("== Setting up: gateway keys, a sender, three schools (two with OpenPGP keys, one on"
         " the pickup page),\n   the register")
    for line in await keys_init(config, utc_now()):
        _say(f"   {line}")
    ctx = await open_context(config)
    # The demo drives the runner itself (`drain`), so that what it shows is complete: with the
    # daemon's own loops running too, a drain could find nothing left while a notice the loops
    # had claimed was still on its way to the school.
    daemon = Daemon(ctx, host="127.0.0.1", port=0, background=False)
    identities = {
        "sender": Identity.create(base / "sender-gpg", "Veilig Thuis (demo)", SENDER_ADDRESS),
        "12AB00": Identity.create(base / "school-a-gpg", "HwC De Regenboog",
                                  "hwc@regenboog.example.nl"),
        "34CD01": Identity.create(base / "school-b-gpg", "HwC Het Kompas",
                                  "zorg@kompas.example.nl"),
    }
    run = _Run(base=base, today=dt.date.today(), config=config, ctx=ctx, daemon=daemon, relay=relay,
               inboxes={"12AB00": SchoolInbox(), "34CD01": SchoolInbox()},
               identities=identities, pickup_inbox=SchoolInbox(),
               browser=Browser(config.web.public_url))
    try:
        for inbox in [*run.inboxes.values(), run.pickup_inbox]:
            await inbox.start(school_cert)
        await daemon.start()
        await _onboard(run)
        await _enrol(run)
        await _submit_signals(run)
        await runner.drain(ctx)
        _show_notices(run)
        await _open_pickup(run)
        await _acknowledge(run)
        _show_status_mail(run)
        return await _show_records(run)
    finally:
        await run.browser.close()
        await daemon.shutdown()
        for inbox in [*run.inboxes.values(), run.pickup_inbox, relay]:
            await inbox.stop()
        await ctx.close()
        for identity in identities.values():
            identity.close()
        await asyncio.to_thread(_kill_agent, config.gnupg_home)


async def _onboard(run: _Run) -> None:
    """The sender, the DUO school list, two schools' contacts with their keys, one contact
    without a key for the pickup page, the register."""
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
    # `hwc-gateway schools add 56EF00 --email ... --pickup --route ...`: no key; the
    # administrator reads the printed code to the contact on the phone.
    added = await schools_add_pickup(ctx, PICKUP_SCHOOL, None, PICKUP_CONTACT,
                                     f"127.0.0.1:{run.pickup_inbox.port}")
    _say("\n".join("   " + line for line in added.splitlines()))
    found = re.search(r"enrolment code for \S+: (\S+)", added)
    assert found is not None, added
    run.phone_code = found[1]
    imported = await pupils_import(ctx, _pupils_csv(today).encode(), False)
    _say("\n".join("   " + line for line in imported.splitlines()))
    await ctx.refresh(force=True)


async def _enrol(run: _Run) -> None:
    """The enrolment mail goes out to the school's server; the contact enrols on the page."""
    await runner.drain(run.ctx)
    _say("\n== Sint-Jozefschool has no OpenPGP key: its contact enrols for the pickup page\n"
         "   The enrolment mail went to the school's mail server (its route, as its notices);\n"
         "   the school's inbox holds:")
    [mail] = run.pickup_inbox.received  # nothing else has gone there yet
    link = demopickup.link_in(show_mail(mail, "enrolment mail"), "/inschrijven/")
    _say("\n   The contact opens the link, over HTTP as a browser would. A passkey needs a real\n"
         "   browser (WebAuthn: the browser tests drive one), so the demo takes the page's other\n"
         "   way, an authenticator app ([web] allow_totp), whose codes pyotp computes.")
    run.app = await demopickup.enrol_with_app(run.browser, link, run.phone_code)
    await run.ctx.refresh(force=True)  # the contact is reachable now: its child is not held


async def _submit_signals(run: _Run) -> None:
    """Three signals from the pinned sender, then one signed by a key it never pinned."""
    ctx, config, daemon, today = run.ctx, run.config, run.daemon, run.today
    sender, gateway_fpr = run.identities["sender"], run.gateway_fpr
    d = {name: dt.date(today.year - y, m, dd) for name, (y, m, dd) in {
        "sanne": (9, 4, 12), "daan": (12, 9, 3), "eva": (7, 1, 30),
        "lotte": (6, 2, 11)}.items()}
    signals = [
        ("a plain signal (JSON), one child found by name and birth date",
         json_payload([{"name": "Eva Jansen", "birthdate": d["eva"].isoformat()}],
                      reference="VT-DEMO-0001", incident="read by nobody, discarded"),
         "combined"),
        ("siblings at three schools, one on the pickup page (labelled text, as typed at "
         "Veilig Thuis)",
         text_payload("Codewoord: Handle with Care\nReferentie: VT-DEMO-0002\n\n"
                      f"Naam: Sanne de Vries\nGeboortedatum: {d['sanne']:%d-%m-%Y}\n"
                      "BSN: 123456782\n\n"
                      f"Naam: Daan de Vries\nGeboortedatum: {d['daan']:%d-%m-%Y}\n\n"
                      f"Naam: Lotte de Vries\nGeboortedatum: {d['lotte']:%d-%m-%Y}\n\n"
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
    """Each OpenPGP school's notices, decrypted with the school's own key; the pickup
    school's notification mail, as its contact reads it."""
    _say("\n== What each school received (OpenPGP notices decrypted with the school's own key)")
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
    for item in _notifications(run):
        text = show_mail(item, f"school {PICKUP_SCHOOL}")
        born = dt.date(run.today.year - 6, 2, 11)
        told = [what for what, shown in (("the name", "Lotte"),
                                         ("the birth date", f"{born:%d-%m-%Y}"),
                                         ("the reference", "HWC-"),
                                         ("the codeword", "Handle with Care")) if shown in text]
        _say("   (a plain mail: the notice waits on the pickup page; checked: it names no child,\n"
             "   birth date, reference or codeword)" if not told
             else f"   WARNING: the mail shows {', '.join(told)}")


def _notifications(run: _Run) -> list[Received]:
    """What the pickup school's server received after the enrolment mail: its notifications."""
    return run.pickup_inbox.received[1:]


async def _open_pickup(run: _Run) -> None:
    """The pickup school's contact opens the notification's link and reads the notice."""
    _say(f"\n== Sint-Jozefschool ({PICKUP_SCHOOL}): its contact opens the link in the mail and"
         " reads the notice")
    mail = _notifications(run)[0]
    link = demopickup.link_in(str(demopickup.mail_of(mail).get_content()), "/bericht/")
    assert run.app is not None
    await demopickup.open_pickup(run.browser, link, PICKUP_CONTACT, run.app)


async def _acknowledge(run: _Run) -> None:
    """An OpenPGP school's contact follows the acknowledgement link inside its notice."""
    _say("\n== An OpenPGP school confirms a notice: with [web] on, the decrypted notice holds\n"
         "   an acknowledgement link instead of a reply address (nobody outside sees its token)")
    text, _ = read_notice(run.inboxes["12AB00"].received[0], run.identities["12AB00"])
    await demopickup.confirm_by_link(run.browser, demopickup.link_in(text, "/bevestig/"))


def _show_status_mail(run: _Run) -> None:
    """The status mails the relay carried back to the sender, decrypted with its key."""
    _say("\n== What Veilig Thuis received back (status mail, decrypted with its own key)")
    for item in run.relay.received:
        if SENDER_ADDRESS not in item.rcpt_tos:
            continue  # the enrolment mail, shown above
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
        _say(f"   {r['seq']:>3} {r['event']:<23} {r['ref'] or '':<26} "
             f"{r['school'] or '':<7} {_receipt_extra(r)}".rstrip())
    count, problems = await receipts_verify(ctx.store)
    _say(f"\n== `hwc-gateway receipts verify`: "
         f"{'intact' if not problems else 'BROKEN'} ({count} receipts)")
    return 0 if not problems else 1


def _receipt_extra(r: dict[str, Any]) -> str:
    """Pure: the one detail of a receipt the list shows: an SMTP reply, why, or who and how."""
    if r.get("via"):
        return f"via {r['via']}" + (f" by {r['contact']}" if r.get("contact") else "")
    if r["event"] == "pickup_opened":
        return f"by {r.get('contact')} from {r.get('client')}"
    if r.get("method") or r.get("channel"):
        return ", ".join(part for part in (
            r.get("contact"), r.get("channel") and f"channel {r['channel']}",
            r.get("method") and f"method {r['method']}") if part)
    return str(r.get("reply") or r.get("reason") or r.get("rule") or "")


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
