"""A municipality's first week (issue 12): `status` tells the truth, nothing is a dead end,
delivery identifies itself. Real gateways on loopback, the command line through `main`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

import pytest
from conftest import (
    CONTACT_A,
    SANNE_BIRTH,
    SCHOOL_A,
    SENDER,
    Harness,
    HarnessFactory,
    Identities,
    start_relay,
)
from conftest import run_cli as run
from test_smtp_limits import RawClient

from gateway.admin.cli import main
from gateway.admin.common import Refused
from gateway.admin.queue import queue_list, queue_retry
from gateway.admin.schools import schools_set_contact
from gateway.admin.status import status as gateway_status
from gateway.devkit.demokit import json_payload
from gateway.ingress.throttle import REFUSE_AFTER_PER_ADDRESS, REFUSE_AFTER_PER_LOGIN, AuthThrottle
from gateway.observe.logs import configure

ALERTS = '[alerts]\naddress = "beheer@leerplicht.example.nl"\n'
HELO_REJECTED = "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"


def watch_logs() -> io.StringIO:
    """From now on the gateway's log lines go to a buffer of the test's own, which stays open
    for the harness's last lines at teardown (capsys's may be closed by then)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        configure(json=True)
    return buffer


async def cli(*args: str, logs: io.StringIO | None = None) -> tuple[int, str, str]:
    """`main` beside a running harness: in a worker thread (it runs its own event loop), its
    output and its own log lines captured; the daemon's log lines then go back to `logs`."""
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(list(args))

    code = await asyncio.to_thread(call)
    with contextlib.redirect_stdout(logs or io.StringIO()):
        configure(json=True)
    return code, out.getvalue(), err.getvalue()


def sanne() -> bytes:
    return json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])


def events(out: str, name: str) -> list[dict[str, object]]:
    """The JSON log lines of one event in captured output."""
    found = []
    for line in out.splitlines():
        if line.startswith("{") and f'"event": "{name}"' in line:
            found.append(json.loads(line))
    return found


def with_relay(cfg: str, relay: str = "127.0.0.1:2") -> None:
    """Give the config file a `[delivery] relay`."""
    path = Path(cfg)
    path.write_text(path.read_text().replace("[delivery]\n", f'[delivery]\nrelay = "{relay}"\n'))


# -- point 4: status tells the truth ----------------------------------------------------------

def key_file(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / f"{name}.asc"
    path.write_bytes(data)
    return str(path)


def test_status_names_every_dead_end_of_the_setup(capsys: pytest.CaptureFixture[str], cfg: str,
                                                  identities: Identities,
                                                  tmp_path: Path) -> None:
    """A school with a contact but no route and no relay, a sender left without a key, no
    relay for status mails, an empty [alerts] address: each is a line of `status` and of
    `status --json`, exit 1; the verbs that made the first two warned at once."""
    school_key = key_file(tmp_path, "school", identities.school_a.public_key())
    code, out, _ = run(capsys, "--config", cfg, "schools", "add", SCHOOL_A, "--name", "Regenboog",
                       "--email", CONTACT_A, "--key", school_key,
                       "--fingerprint", identities.school_a.fingerprint)
    assert code == 0 and "warning: school 12AB00 has no route and [delivery] relay is empty" in out
    sender_key = key_file(tmp_path, "sender", identities.sender.public_key())
    (tmp_path / "password").write_text("a long enough password\n")
    assert main(["--config", cfg, "senders", "add", "vt", "--key", sender_key, "--fingerprint",
                 identities.sender.fingerprint, "--client-cert", "AB" * 32,
                 "--allow-from", "a@vt.example.nl"]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "--config", cfg, "senders", "remove-key", "vt",
                       identities.sender.fingerprint)
    assert code == 0 and "warning: sender vt has no usable key left" in out

    code, out, _ = run(capsys, "--config", cfg, "status")
    attention = out[out.index("attention"):]
    assert code == 1
    for expected in ("1 schools have a contact but no route", "(12AB00)",
                     "senders without a usable key, every signal refused (554 5.7.7): vt",
                     "status mails to 1 senders cannot be sent",
                     "[alerts] address is empty"):
        assert expected in attention, expected
    code, out, _ = run(capsys, "--config", cfg, "status", "--json")
    data = json.loads(out)
    assert code == 1 and data["unreachable_schools"] == [SCHOOL_A]
    assert data["senders_without_key"] == ["vt"] and data["relay"] is None
    assert any("[alerts] address is empty" in line for line in data["attention"])


def test_status_is_quiet_about_a_setup_that_works(capsys: pytest.CaptureFixture[str], cfg: str,
                                                  identities: Identities,
                                                  tmp_path: Path) -> None:
    """With a relay, an alerts address and keys in place, none of those lines appears (only
    the listener, which no daemon serves here)."""
    with_relay(cfg)
    Path(cfg).write_text(Path(cfg).read_text() + ALERTS)
    school_key = key_file(tmp_path, "school", identities.school_a.public_key())
    code, out, _ = run(capsys, "--config", cfg, "schools", "add", SCHOOL_A, "--name", "Regenboog",
                       "--email", CONTACT_A, "--key", school_key,
                       "--fingerprint", identities.school_a.fingerprint)
    assert code == 0 and "warning" not in out
    code, out, _ = run(capsys, "--config", cfg, "status", "--json")
    data = json.loads(out)
    assert data["attention"] == ["the listener is not answering"]
    assert data["unreachable_schools"] == [] and data["auth_lockouts"] == []


def test_contacts_change_and_go_without_removing_the_school(
        capsys: pytest.CaptureFixture[str], cfg: str, identities: Identities,
        tmp_path: Path) -> None:
    """`schools set-contact` changes an address (the key stays), `schools remove-contact`
    removes one contact and warns when none is left; each refuses with one line what is not
    there; receipts name the change."""
    with_relay(cfg)
    for identity, email in ((identities.school_a, CONTACT_A),
                            (identities.school_b, "second@regenboog.example.nl")):
        assert main(["--config", cfg, "schools", "add", SCHOOL_A, "--name", "Regenboog",
                     "--email", email, "--key", key_file(tmp_path, email, identity.public_key()),
                     "--fingerprint", identity.fingerprint]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "--config", cfg, "schools", "set-contact", SCHOOL_A, "--email",
                       CONTACT_A.upper(), "--new-email", "nieuw@regenboog.example.nl")
    assert code == 0 and out.strip() == (f"school {SCHOOL_A}: contact {CONTACT_A} is now "
                                         "nieuw@regenboog.example.nl (same key)")
    code, _, err = run(capsys, "--config", cfg, "schools", "set-contact", SCHOOL_A, "--email",
                       CONTACT_A, "--new-email", "x@regenboog.example.nl")
    assert code == 1 and err.count("\n") == 1 and "has no contact" in err
    code, _, err = run(capsys, "--config", cfg, "schools", "set-contact", SCHOOL_A, "--email",
                       "nieuw@regenboog.example.nl", "--new-email",
                       "second@regenboog.example.nl")
    assert code == 1 and "has a contact second@regenboog.example.nl already" in err
    code, out, _ = run(capsys, "--config", cfg, "schools", "remove-contact", SCHOOL_A,
                       "--email", "second@regenboog.example.nl")
    assert code == 0 and "removed" in out and "warning" not in out
    code, out, _ = run(capsys, "--config", cfg, "schools", "list", "--json")
    [school] = [s for s in json.loads(out) if s["code"] == SCHOOL_A]
    assert [(c["email"], c["fingerprint"]) for c in school["contacts"]] == [
        ("nieuw@regenboog.example.nl", identities.school_a.fingerprint)]
    code, out, _ = run(capsys, "--config", cfg, "schools", "remove-contact", SCHOOL_A,
                       "--email", "nieuw@regenboog.example.nl")
    assert code == 0 and f"warning: school {SCHOOL_A} has no contact with a usable key" in out
    code, _, err = run(capsys, "--config", cfg, "schools", "remove-contact", SCHOOL_A,
                       "--email", "nieuw@regenboog.example.nl")
    assert code == 1 and err.count("\n") == 1
    code, out, _ = run(capsys, "--config", cfg, "receipts", "list", "--json")
    kinds = [r["event"] for r in json.loads(out)]
    assert kinds.count("school.contact_changed") == 1
    assert kinds.count("school.contact_removed") == 2
    code, out, _ = run(capsys, "--config", cfg, "schools", "list", "--json")
    assert SCHOOL_A in {s["code"] for s in json.loads(out)}, "the school stays"


# -- point 5: queue retry ---------------------------------------------------------------------

async def test_failed_notice_is_retried_and_delivered(harness: Harness) -> None:
    """A notice failed by a 5xx: `queue list --failed` shows it, `queue retry` queues it again
    (attempts from zero, children sealed, a receipt naming who, `notice.requeued`), and the
    next round delivers it; retrying it again is refused with one line."""
    h = harness
    h.inboxes[SCHOOL_A].fail_next("554 5.7.1 Policy rejection")
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    cfg = str(h.ctx.config.path)
    code, out, _ = await cli("--config", cfg, "queue", "list", "--failed", "--json")
    [failed] = json.loads(out)
    assert code == 0 and failed["state"] == "failed" and failed["last_reply"].startswith("554")
    notice = str(failed["notice"])
    code, out, _ = await cli("--config", cfg, "queue", "retry", notice)
    assert code == 0 and f"notice {notice} (" in out and "queued again (was failed: 554" in out
    [requeued] = events(out, "notice.requeued")
    assert requeued["previous"] == "failed" and requeued["school"] == SCHOOL_A
    row = await h.ctx.store.notices.get(int(notice))
    assert row is not None and (row.state, row.attempts) == ("queued", 0)
    assert {c.state for c in await h.ctx.store.children.all(ref=row.ref)} == {"sealed"}
    [receipt] = [r for r in await h.receipts() if r.event == "requeued"]
    assert receipt.detail["previous"] == "failed" and "uid" in receipt.detail["operator"]
    await h.drain()
    assert len(h.inboxes[SCHOOL_A].received) == 1
    assert {c.state for c in await h.ctx.store.children.all(ref=row.ref)} == {"delivered"}
    code, _, err = await cli("--config", cfg, "queue", "retry", notice)
    assert code == 1 and err.count("\n") == 1 and "was delivered" in err
    for bad, why in (("999999", "there is no notice 999999"), ("HWC-1", "notice number")):
        code, _, err = await cli("--config", cfg, "queue", "retry", bad)
        assert code == 1 and why in err


async def test_retry_after_the_give_up_time_is_attempted(harness: Harness) -> None:
    """A notice failed because give_up_after_hours passed is queued again by `queue retry` and
    then deferred by a 4xx, not failed at once: its give-up time counts from the retry."""
    h = harness
    h.inboxes[SCHOOL_A].fail_next("451 4.3.0 Try again later", times=3)
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    h.clock.advance(hours=49)
    await h.drain()
    [failed] = await queue_list(h.ctx, ("failed",))
    await queue_retry(h.ctx, str(failed["notice"]))
    await h.drain()
    [queued] = await queue_list(h.ctx)
    assert queued["attempts"] == 1 and queued["last_reply"].startswith("451")
    h.clock.advance(seconds=61)
    await h.drain()
    assert len(h.inboxes[SCHOOL_A].received) == 1
    assert [r.event for r in await h.receipts()].count("failed") == 1


async def test_retry_of_a_notice_whose_contact_changed_is_superseded(harness: Harness) -> None:
    """A failed notice queued again after its contact's address changed is not sent to the
    old address: it is superseded before the attempt and sealed again for the new one."""
    h = harness
    h.inboxes[SCHOOL_A].fail_next("550 5.1.1 <hwc@regenboog.example.nl>: no such user")
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    [failed] = await queue_list(h.ctx, ("failed",))
    await schools_set_contact(h.ctx, SCHOOL_A, CONTACT_A, "zorg@regenboog.example.nl")
    await queue_retry(h.ctx, str(failed["notice"]))
    await h.drain()
    [item] = h.inboxes[SCHOOL_A].received
    assert item.rcpt_tos == ["zorg@regenboog.example.nl"]
    superseded = [r for r in await h.receipts() if r.event == "superseded"]
    assert [r.detail["notice"] for r in superseded] == [failed["notice"]]


async def test_a_superseded_notice_is_not_retried(harness: Harness) -> None:
    """`queue retry` of a superseded notice is refused with one line naming why."""
    h = harness
    h.inboxes[SCHOOL_A].fail_next("451 4.3.0 Try again later")
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    [queued] = await queue_list(h.ctx)
    await schools_set_contact(h.ctx, SCHOOL_A, CONTACT_A, "zorg@regenboog.example.nl")
    h.clock.advance(seconds=61)
    await h.drain()
    with pytest.raises(Refused, match="was superseded"):
        await queue_retry(h.ctx, str(queued["notice"]))


# -- point 5: the gateway's own set-up is not the school refusing -----------------------------

async def test_ehlo_refused_defers_alerts_and_is_delivered_once_fixed(
        harness_factory: HarnessFactory) -> None:
    """A school MX answering EHLO with 504 5.5.2: the notice is deferred, not failed; the log
    line says why (reason, reply); one alert says what to fix (not one per retry); once the
    server takes the name, `queue retry` delivers it at once."""
    h = await harness_factory(extra_config=ALERTS)
    logs = watch_logs()
    relay = await start_relay(h)
    h.inboxes[SCHOOL_A].fail_command("EHLO", HELO_REJECTED, times=2)
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    h.clock.advance(seconds=61)
    await h.drain()
    [queued] = await queue_list(h.ctx)
    assert queued["attempts"] == 2 and h.inboxes[SCHOOL_A].received == []
    assert [r.event for r in await h.receipts()].count("failed") == 0
    deferred = events(logs.getvalue(), "notice.deferred")
    assert len(deferred) == 2 and {d["reason"] for d in deferred} == {"ehlo_rejected"}
    assert all(str(d["reply"]).startswith("5") for d in deferred)
    alerts = [m for m in relay.received if m.rcpt_tos == ["beheer@leerplicht.example.nl"]]
    assert len(alerts) == 1 and b"[smtp] hostname" in alerts[0].data
    status = await gateway_status(h.ctx, True)
    assert status.data["waiting_on_setup"] == [queued["notice"]]
    assert any("gateway is set up wrong" in line for line in status.attention)
    await queue_retry(h.ctx, str(queued["notice"]))
    await h.drain()
    assert len(h.inboxes[SCHOOL_A].received) == 1
    assert events(logs.getvalue(), "notice.delivered")[0]["reason"] == "delivered"


async def test_permanent_failure_log_line_carries_the_reply(harness: Harness) -> None:
    """`notice.failed` names the reason and the server's reply, made inert."""
    logs = watch_logs()
    harness.inboxes[SCHOOL_A].fail_next("554 5.7.1 Policy \x1b[2J rejection")
    assert (await harness.send(harness.signal(sanne()))).code == 250
    await harness.drain()
    [failed] = events(logs.getvalue(), "notice.failed")
    assert failed["reason"] == "refused" and failed["smtp_code"] == "554"
    assert failed["reply"] == "554 5.7.1 Policy \\x1b[2J rejection"


# -- point 5: an AUTH lockout is shared, shown and lifted --------------------------------------

async def lock_out(h: Harness) -> None:
    """Ten wrong passwords for the sender from this address: the address is locked out."""
    assert h.daemon.handler is not None
    h.daemon.handler.throttle = AuthThrottle(max_delay=0.01)
    for i in range(REFUSE_AFTER_PER_ADDRESS):
        client, _ = await RawClient.connect(h.port)
        assert (await client.login(h, password=f"wrong-{i}-password")).startswith("535")
        await client.close()


async def login_reply(h: Harness) -> str:
    client, _ = await RawClient.connect(h.port)
    try:
        return await client.login(h)
    finally:
        await client.close()


async def test_lockout_is_in_status_and_unlock_lifts_it(harness: Harness) -> None:
    """A sender locked out by the AUTH throttle is listed by `status` (exit 1) until `senders
    unlock` lifts it; the running daemon then takes the right password at once."""
    h = harness
    logs = watch_logs()
    await lock_out(h)
    assert (await login_reply(h)).startswith("454 4.7.0")
    cfg = str(h.ctx.config.path)
    code, out, _ = await cli("--config", cfg, "status", "--json", logs=logs)
    data = json.loads(out)
    [line] = [a for a in data["attention"] if "locked out" in a]
    assert code == 1 and line.startswith(f"sender {SENDER} is locked out of AUTH until ")
    assert "address 127.0.0.1" in line and f"`senders unlock {SENDER}`" in line
    assert {(lk["scope"], lk["subject"], lk["login"]) for lk in data["auth_lockouts"]} == {
        ("address", "127.0.0.1", SENDER)}
    code, out, _ = await cli("--config", cfg, "senders", "unlock", SENDER, logs=logs)
    assert code == 0 and out.startswith(f"sender {SENDER} unlocked: address 127.0.0.1")
    code, out, _ = await cli("--config", cfg, "status", "--json", logs=logs)
    assert not [a for a in json.loads(out)["attention"] if "locked out" in a]
    assert (await login_reply(h)).startswith("235")
    [unlocked] = events(logs.getvalue(), "sender.unlocked")
    assert (unlocked["scope"], unlocked["subject"]) == ("address", "127.0.0.1")
    [receipt] = [r for r in await h.receipts() if r.event == "sender.unlocked"]
    assert receipt.detail["lockouts"] == ["address 127.0.0.1"]
    code, _, err = await cli("--config", cfg, "senders", "unlock", SENDER)
    assert code == 1 and err.count("\n") == 1 and "is not locked out" in err


async def test_guesses_at_unknown_logins_store_no_login_text(harness: Harness) -> None:
    """Many wrong logins that name no sender lock out the address, written as "(unknown)";
    no login text (perhaps a mistyped password) reaches the database, and `status` does not
    call a sender locked out."""
    h = harness
    assert h.daemon.handler is not None
    h.daemon.handler.throttle = AuthThrottle(max_delay=0.01)
    # From two addresses, so that the login too reaches its limit (20) and is locked out.
    for i in range(REFUSE_AFTER_PER_LOGIN + 2):
        source = "127.0.0.2" if i < REFUSE_AFTER_PER_ADDRESS else "127.0.0.3"
        reader, writer = await asyncio.open_connection("127.0.0.1", h.port,
                                                       local_addr=(source, 0))
        client = RawClient(reader, writer)
        await client.reply()
        await client.login(h, user="Tr0ub4dor-secret", password=f"guess-{i}-password")
        await client.close()
    rows = await h.ctx.store.lockouts.running(h.ctx.clock())
    assert [(r.scope, r.subject, r.login) for r in rows] == [
        ("address", "127.0.0.2", "(unknown)"), ("address", "127.0.0.3", "(unknown)")]
    db = h.ctx.config.storage.path
    for path in (db, db.with_name(db.name + "-wal")):
        raw = await asyncio.to_thread(path.read_bytes)
        assert b"Tr0ub4dor" not in raw
    status = await gateway_status(h.ctx, True)
    assert not [a for a in status.attention if "locked out" in a]


async def test_a_restarted_daemon_forgets_old_lockouts(harness: Harness) -> None:
    """Lockouts written by an earlier run are cleared when the listener starts: its throttle
    is empty, so `status` must not show them."""
    h = harness
    await lock_out(h)
    assert await h.ctx.store.lockouts.running(h.ctx.clock())
    await h.daemon.shutdown()
    await h.daemon.start()
    assert await h.ctx.store.lockouts.running(h.ctx.clock()) == []


# -- point 6: the EHLO name -------------------------------------------------------------------

async def test_deliveries_give_the_configured_hostname_in_ehlo(
        harness_factory: HarnessFactory) -> None:
    """The EHLO name school servers see is `[smtp] hostname`."""
    h = await harness_factory(smtp_extra='hostname = "gateway.leerplicht.example.nl"')
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    # EHLO before and after STARTTLS (RFC 3207 §4.2).
    assert h.inboxes[SCHOOL_A].ehlo_names == ["gateway.leerplicht.example.nl"] * 2
