"""Onboarding pickup contacts from the command line: `schools add --pickup`, `schools reenrol`,
`schools remove-contact` and `schools list` (real CLI, real config with `[web]` on loopback,
real state directory and SQLite)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CONTACT_A,
    CONTACT_B,
    DUO_CSV,
    SCHOOL_A,
    SCHOOL_B,
    Identities,
    Template,
    copy_gateway_state,
    free_port,
    raw_sql,
    run_cli,
)

from gateway.core.config import Config
from gateway.core.timetext import local_time_text
from gateway.crypto import pickupbox
from gateway.crypto.vault import Vault
from gateway.pipeline.context import open_context
from gateway.store.api import Tx

PICKUP_A = "ib@regenboog.example.nl"
CODE_LINE = re.compile(
    r"^enrolment code for (?P<email>\S+): (?P<code>[A-Z2-9]{4}-[A-Z2-9]{4}) \(read it to the "
    r"contact by phone; the link in the mail expires (?P<until>\d{4}-\d\d-\d\d \d\d:\d\d "
    r"[+-]\d\d:\d\d)\)$", re.MULTILINE)


def web_config(enrolment_hours: int = 72, allow_totp: bool = True) -> str:
    """`[web]` on loopback behind a (future) reverse proxy: the page is on."""
    port = free_port()
    return (f'[web]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n'
            f"enrolment_hours = {enrolment_hours}\n"
            f"allow_totp = {'true' if allow_totp else 'false'}\n"
            'helpdesk = "Bel Leerplicht Utrecht: 030 123 45 67."\n')


@pytest.fixture
def web(template: Template, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> Config:
    """A gateway home with `[web]` on and DUO's schools imported."""
    config = copy_gateway_state(template, tmp_path, extra_config=web_config())
    (tmp_path / "duo.csv").write_text(DUO_CSV)
    assert run_cli(capsys, "--config", str(config.path), "schools", "import-duo",
                   str(tmp_path / "duo.csv"))[0] == 0
    return config


def cli(capsys: pytest.CaptureFixture[str], config: Config, *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "--config", str(config.path), *args)


def key_file(tmp_path: Path, identities: Identities) -> str:
    path = tmp_path / "school-a.asc"
    path.write_bytes(identities.school_a.public_key())
    return str(path)


def rows(config: Config, sql: str, *params: Any) -> list[Any]:
    return raw_sql(config.storage.path, sql, params)


def add_credentials(config: Config, school: str, email: str, *kinds: str) -> list[str]:
    """Second factors for a contact, stored as the enrolment page stores them (the store's
    API); the passkeys' credential ids."""
    async def add() -> list[str]:
        ctx = await open_context(config)
        now = dt.datetime.now(dt.UTC)

        async def store(tx: Tx) -> list[str]:
            ids = []
            for n, kind in enumerate(kinds):
                if kind == "passkey":
                    ids.append(pickupbox.new_token())
                    await tx.pickups.add_credential(school, email, kind, now,
                                                    credential_id=ids[-1],
                                                    public_key=b"cose key")
                else:
                    await tx.pickups.add_credential(
                        school, email, kind, now, secret=ctx.vault.seal({"n": n}, "totp"))
            return ids

        try:
            return await ctx.store.write(store)
        finally:
            await ctx.close()

    return asyncio.run(add())


def enrolled_snapshot(config: Config) -> frozenset[tuple[str, str]]:
    """The contacts a freshly loaded directory snapshot counts as enrolled (what the channel
    and the page go by)."""
    async def load() -> frozenset[tuple[str, str]]:
        ctx = await open_context(config)
        try:
            return (await ctx.refresh(force=True)).enrolled
        finally:
            await ctx.close()

    return asyncio.run(load())


def nothing_queued(config: Config) -> bool:
    return not (rows(config, "SELECT * FROM enrolments") or rows(config, "SELECT * FROM outbox"))


# -- schools add --pickup ------------------------------------------------------------------------

def test_add_pickup_invites_and_prints_the_code_once(capsys: pytest.CaptureFixture[str],
                                                     web: Config) -> None:
    """`schools add CODE --email ADDR --pickup` registers a keyless pickup contact, stores an
    invitation (digests of link and code only), queues one enrolment mail sealed with the vault,
    writes `school.contact_invited` without the code, and prints the code to read out with the
    invitation's end in the configured zone."""
    code, out, err = cli(capsys, web, "schools", "add", SCHOOL_A, "--email", PICKUP_A.upper(),
                         "--pickup")
    assert code == 0 and err == "", err
    assert out.startswith(f"school {SCHOOL_A}: pickup contact {PICKUP_A} invited, enrolment "
                          "mail queued\n")
    found = CODE_LINE.search(out)
    assert found and found["email"] == PICKUP_A, out
    [contact] = rows(web, "SELECT * FROM contacts WHERE school = ?", SCHOOL_A)
    assert (contact["email"], contact["fingerprint"], contact["channel"]) == (
        PICKUP_A, None, "pickup")
    [invitation] = rows(web, "SELECT * FROM enrolments")
    vault = Vault.load(web.secrets_dir)
    assert invitation["code_digest"] == pickupbox.code_digest(vault, SCHOOL_A, PICKUP_A,
                                                              found["code"])
    assert found["until"] == local_time_text(invitation["expires_at"], web.schedule.timezone)
    created = dt.datetime.fromisoformat(invitation["created_at"])
    assert dt.datetime.fromisoformat(invitation["expires_at"]) - created == dt.timedelta(hours=72)
    [mail] = rows(web, "SELECT * FROM outbox")
    assert (mail["kind"], mail["topic"], mail["recipient"], mail["state"]) == (
        "enrol", SCHOOL_A, PICKUP_A, "queued")
    opened = vault.open(bytes(mail["message"]), f"enrol:{mail['message_id']}")
    assert pickupbox.token_digest(vault, opened["token"]) == invitation["token_digest"]
    assert opened["token"].encode() not in bytes(mail["message"])
    [receipt] = [r for r in rows(web, "SELECT * FROM receipts")
                 if r["event"] == "school.contact_invited"]
    detail = json.loads(receipt["detail"])
    assert receipt["school"] == SCHOOL_A and detail["contact"] == PICKUP_A
    assert detail["enrolment_mail"] == mail["id"]
    plain = found["code"].replace("-", "")
    everything = json.dumps([dict(r) for r in rows(web, "SELECT * FROM receipts")])
    assert found["code"] not in everything and plain not in everything
    assert out.count(found["code"]) == 1


def test_add_pickup_to_a_new_school_with_name_and_route(capsys: pytest.CaptureFixture[str],
                                                       web: Config) -> None:
    """A pickup contact for a school not yet in the directory comes with `--name` (and may
    bring `--route`), as a key's contact does."""
    code, out, err = cli(capsys, web, "schools", "add", "99ZZ00", "--name", "De Nieuwe School",
                         "--email", PICKUP_A, "--pickup", "--route", "127.0.0.1:2626")
    assert code == 0, err
    assert "route 127.0.0.1:2626" in out and CODE_LINE.search(out)
    [school] = rows(web, "SELECT * FROM schools WHERE code = '99ZZ00'")
    assert (school["name"], school["route"]) == ("De Nieuwe School", "127.0.0.1:2626")


def test_without_a_route_or_relay_the_administrator_is_warned_the_mail_waits(
        capsys: pytest.CaptureFixture[str], web: Config) -> None:
    """The enrolment mail goes where the school's notices go (its route, else the relay):
    with neither, the command says that it and the notices wait; with a route, no warning."""
    code, out, _ = cli(capsys, web, "schools", "add", SCHOOL_A, "--email", PICKUP_A, "--pickup")
    assert code == 0
    assert (f"warning: school {SCHOOL_A} has no route and [delivery] relay is empty: its notices"
            " (and enrolment mails) wait and are never delivered") in out
    code, out, _ = cli(capsys, web, "schools", "add", "99ZZ00", "--name", "De Nieuwe School",
                       "--email", "ib@nieuw.example.nl", "--pickup", "--route", "127.0.0.1:2626")
    assert code == 0 and "warning" not in out


@pytest.mark.parametrize(("extra", "reason"), [
    (("--key", "KEYFILE"), "--pickup is for a contact without a key: leave out --key and "
                           "--fingerprint"),
    (("--fingerprint", "A" * 40), "--pickup is for a contact without a key: leave out --key "
                                  "and --fingerprint"),
])
def test_pickup_with_a_key_is_refused(capsys: pytest.CaptureFixture[str], web: Config,
                                      tmp_path: Path, identities: Identities,
                                      extra: tuple[str, str], reason: str) -> None:
    """`--pickup` together with `--key` or `--fingerprint` is refused with one line, exit 1,
    and nothing is stored."""
    args = [a.replace("KEYFILE", key_file(tmp_path, identities)) for a in extra]
    code, out, err = cli(capsys, web, "schools", "add", SCHOOL_A, "--email", PICKUP_A,
                         "--pickup", *args)
    assert (code, out, err) == (1, "", f"hwc-gateway: {reason}\n")
    assert nothing_queued(web) and rows(web, "SELECT * FROM contacts") == []


def test_neither_key_nor_pickup_is_refused(capsys: pytest.CaptureFixture[str],
                                           web: Config) -> None:
    """`schools add` with neither a key nor `--pickup` says which to give (one line, exit 1)."""
    code, _, err = cli(capsys, web, "schools", "add", SCHOOL_A, "--email", PICKUP_A)
    assert code == 1 and err.count("\n") == 1
    assert "--key FILE and --fingerprint FPR" in err and "--pickup" in err


def test_pickup_without_the_web_side_is_refused(capsys: pytest.CaptureFixture[str],
                                                template: Template, tmp_path: Path) -> None:
    """With `[web]` not configured, `--pickup` and `reenrol` are refused: the page is off."""
    config = copy_gateway_state(template, tmp_path)
    (tmp_path / "duo.csv").write_text(DUO_CSV)
    assert cli(capsys, config, "schools", "import-duo", str(tmp_path / "duo.csv"))[0] == 0
    off = "hwc-gateway: the pickup page is off: set [web] listen and public_url\n"
    assert cli(capsys, config, "schools", "add", SCHOOL_A, "--email", PICKUP_A,
               "--pickup") == (1, "", off)
    assert cli(capsys, config, "schools", "reenrol", SCHOOL_A, "--email", PICKUP_A) == (
        1, "", off)
    assert nothing_queued(config)


def test_usual_refusals_hold_for_pickup(capsys: pytest.CaptureFixture[str],
                                        web: Config) -> None:
    """A bad address, a bad route, an unknown school without `--name` and a bad code are
    refused with the same one line as for a key's contact."""
    cases = [
        (("12AB00", "--email", "ib\t@regenboog.example.nl"), "is not an e-mail address"),
        (("12AB00", "--email", PICKUP_A, "--route", "::1:25"), "--route must be HOST:PORT"),
        (("98YY00", "--email", PICKUP_A), "school 98YY00 is not in the directory: give --name"),
        (("12AB", "--email", PICKUP_A), "CODE must be a 6-character DUO vestigingscode"),
    ]
    for args, reason in cases:
        code, out, err = cli(capsys, web, "schools", "add", *args, "--pickup")
        assert code == 1 and out == "" and reason in err and err.count("\n") == 1, (args, err)
    assert nothing_queued(web)


def test_a_schools_contacts_share_one_channel(capsys: pytest.CaptureFixture[str], web: Config,
                                              tmp_path: Path, identities: Identities) -> None:
    """A pickup contact at a school whose contacts have keys is refused, and the other way
    round; so is the same address on the other channel; each names what to do."""
    key = key_file(tmp_path, identities)
    fpr = identities.school_a.fingerprint
    assert cli(capsys, web, "schools", "add", SCHOOL_A, "--email", CONTACT_A, "--key", key,
               "--fingerprint", fpr)[0] == 0
    code, _, err = cli(capsys, web, "schools", "add", SCHOOL_A, "--email", PICKUP_A, "--pickup")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("hwc-gateway: a school's contacts share one channel: school 12AB00 "
                          "reaches its contacts through OpenPGP keys; add this contact with "
                          "--key FILE --fingerprint FPR, or remove the others first")
    code, _, err = cli(capsys, web, "schools", "add", SCHOOL_A, "--email", CONTACT_A,
                       "--pickup")
    assert code == 1 and err.count("\n") == 1
    assert (f"contact {CONTACT_A} of school 12AB00 reads notices through OpenPGP keys: remove "
            f"it first (`hwc-gateway schools remove-contact 12AB00 --email {CONTACT_A}`)") in err
    assert cli(capsys, web, "schools", "add", SCHOOL_B, "--email", CONTACT_B, "--pickup")[0] == 0
    code, _, err = cli(capsys, web, "schools", "add", SCHOOL_B, "--email", CONTACT_A, "--key",
                       key, "--fingerprint", fpr)
    assert code == 1 and err.count("\n") == 1
    assert "school 34CD01 reaches its contacts through the pickup page; add this contact with " \
           "--pickup" in err
    code, _, err = cli(capsys, web, "schools", "set-key", SCHOOL_B, "--email", CONTACT_B,
                       "--key", key, "--fingerprint", fpr)
    assert code == 1 and "reads notices through the pickup page: remove it first" in err
    assert [r["email"] for r in rows(web, "SELECT * FROM enrolments")] == [CONTACT_B]


def test_adding_a_pickup_contact_twice_points_to_reenrol(capsys: pytest.CaptureFixture[str],
                                                         web: Config) -> None:
    """`schools add --pickup` for a contact that is one already changes nothing and names
    `schools reenrol`: a new invitation is a deliberate act."""
    assert cli(capsys, web, "schools", "add", SCHOOL_A, "--email", PICKUP_A, "--pickup")[0] == 0
    before = rows(web, "SELECT * FROM enrolments")
    code, _, err = cli(capsys, web, "schools", "add", SCHOOL_A, "--email", PICKUP_A, "--pickup")
    assert code == 1 and f"`hwc-gateway schools reenrol 12AB00 --email {PICKUP_A}`" in err
    assert rows(web, "SELECT * FROM enrolments") == before


def test_a_second_pickup_contact_joins_the_school(capsys: pytest.CaptureFixture[str],
                                                  web: Config) -> None:
    """A further pickup contact of a pickup school is invited on its own."""
    assert cli(capsys, web, "schools", "add", SCHOOL_A, "--email", PICKUP_A, "--pickup")[0] == 0
    code, out, _ = cli(capsys, web, "schools", "add", SCHOOL_A, "--email", CONTACT_A,
                       "--pickup")
    assert code == 0 and CODE_LINE.search(out)
    assert {r["email"] for r in rows(web, "SELECT * FROM enrolments")} == {PICKUP_A, CONTACT_A}


# -- schools reenrol -------------------------------------------------------------------------

def test_reenrol_removes_every_second_factor_and_invites_anew(
        capsys: pytest.CaptureFixture[str], web: Config) -> None:
    """`schools reenrol` drops the contact's passkeys and app at once (the snapshot no longer
    counts it enrolled), replaces the invitation (the old link's digest finds nothing), erases
    the old queued mail, queues a new one, prints a new code and writes
    `school.contact_reenrolled`."""
    _, out, _ = cli(capsys, web, "schools", "add", SCHOOL_A, "--email", PICKUP_A, "--pickup")
    first = CODE_LINE.search(out)
    assert first
    [old] = rows(web, "SELECT * FROM enrolments")
    [passkey] = add_credentials(web, SCHOOL_A, PICKUP_A, "passkey", "totp")
    assert (SCHOOL_A, PICKUP_A) in enrolled_snapshot(web)
    code, out, err = cli(capsys, web, "schools", "reenrol", SCHOOL_A, "--email", PICKUP_A)
    assert code == 0, err
    assert out.startswith(f"school {SCHOOL_A}: pickup contact {PICKUP_A} re-enrolled: 2 "
                          "passkey(s) and app(s) removed")
    second = CODE_LINE.search(out)
    assert second and second["code"] != first["code"]
    assert rows(web, "SELECT * FROM credentials") == []
    assert rows(web, "SELECT * FROM credentials WHERE credential_id = ?", passkey) == []
    assert (SCHOOL_A, PICKUP_A) not in enrolled_snapshot(web)
    [new] = rows(web, "SELECT * FROM enrolments")
    assert new["token_digest"] != old["token_digest"]
    assert rows(web, "SELECT * FROM enrolments WHERE token_digest = ?",
                old["token_digest"]) == []
    vault = Vault.load(web.secrets_dir)
    assert new["code_digest"] == pickupbox.code_digest(vault, SCHOOL_A, PICKUP_A,
                                                       second["code"])
    superseded, queued = rows(web, "SELECT * FROM outbox ORDER BY id")
    assert (superseded["state"], bytes(superseded["message"])) == ("superseded", b"")
    assert queued["state"] == "queued"
    [receipt] = [r for r in rows(web, "SELECT * FROM receipts")
                 if r["event"] == "school.contact_reenrolled"]
    detail = json.loads(receipt["detail"])
    assert (receipt["school"], detail["contact"], detail["credentials_removed"]) == (
        SCHOOL_A, PICKUP_A, 2)
    assert second["code"] not in receipt["detail"]


def test_reenrol_refuses_what_is_not_a_pickup_contact(capsys: pytest.CaptureFixture[str],
                                                      web: Config, tmp_path: Path,
                                                      identities: Identities) -> None:
    """`schools reenrol` of an unknown contact or of a key's contact is refused (one line,
    exit 1), the key's contact pointed to `schools set-key`."""
    code, _, err = cli(capsys, web, "schools", "reenrol", SCHOOL_A, "--email", PICKUP_A)
    assert (code, err) == (1, f"hwc-gateway: school 12AB00 has no contact {PICKUP_A}\n")
    assert cli(capsys, web, "schools", "add", SCHOOL_A, "--email", CONTACT_A, "--key",
               key_file(tmp_path, identities), "--fingerprint",
               identities.school_a.fingerprint)[0] == 0
    code, _, err = cli(capsys, web, "schools", "reenrol", SCHOOL_A, "--email", CONTACT_A)
    assert code == 1 and err.count("\n") == 1 and "`hwc-gateway schools set-key`" in err
    assert nothing_queued(web)
