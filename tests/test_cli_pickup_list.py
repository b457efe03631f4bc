"""Pickup contacts in the directory: what `schools remove-contact`, `schools remove` and
`schools set-contact` do to their invitations and second factors, and what `schools list` shows
of them (real CLI, real config with `[web]` on loopback, real SQLite)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from conftest import (
    CONTACT_A,
    SCHOOL_A,
    SCHOOL_B,
    SCHOOL_C,
    Identities,
    Template,
    copy_gateway_state,
    raw_sql,
)
from test_cli_pickup import PICKUP_A, add_credentials, cli, key_file, rows, web, web_config

from gateway.core.config import Config
from gateway.core.records import iso
from gateway.core.timetext import local_time_text

__all__ = ["web"]  # the fixture of test_cli_pickup: pytest finds it by this module's name


# -- remove-contact, set-contact -----------------------------------------------------------------

def test_removing_a_pickup_contact_removes_its_invitation_and_credentials(
        capsys: pytest.CaptureFixture[str], web: Config) -> None:
    """`schools remove-contact` of a pickup contact takes its invitation and second factors
    with it (the foreign keys cascade) and erases its queued enrolment mail; the other
    contact's stay."""
    for email in (PICKUP_A, CONTACT_A):
        assert cli(capsys, web, "schools", "add", SCHOOL_A, "--email", email, "--pickup")[0] == 0
    add_credentials(web, SCHOOL_A, PICKUP_A, "passkey", "totp")
    add_credentials(web, SCHOOL_A, CONTACT_A, "passkey")
    code, out, err = cli(capsys, web, "schools", "remove-contact", SCHOOL_A, "--email", PICKUP_A)
    assert code == 0, err
    assert out == (f"school {SCHOOL_A}: contact {PICKUP_A} (pickup, with its invitation and 2 "
                   "passkey(s) and app(s)) removed\n")
    for table in ("enrolments", "credentials"):
        assert [r["email"] for r in rows(web, f"SELECT email FROM {table}")] == [CONTACT_A]
    states = {r["recipient"]: (r["state"], bytes(r["message"]) == b"")
              for r in rows(web, "SELECT * FROM outbox")}
    assert states == {PICKUP_A: ("superseded", True), CONTACT_A: ("queued", False)}
    [receipt] = [r for r in rows(web, "SELECT * FROM receipts")
                 if r["event"] == "school.contact_removed"]
    assert json.loads(receipt["detail"])["channel"] == "pickup"


def test_removing_the_school_removes_its_pickup_contacts_wholly(
        capsys: pytest.CaptureFixture[str], web: Config) -> None:
    """`schools remove` cascades through contacts to invitations and second factors, and its
    queued enrolment mails are erased."""
    assert cli(capsys, web, "schools", "add", SCHOOL_A, "--email", PICKUP_A, "--pickup")[0] == 0
    add_credentials(web, SCHOOL_A, PICKUP_A, "passkey")
    assert cli(capsys, web, "schools", "remove", SCHOOL_A)[0] == 0
    assert rows(web, "SELECT * FROM enrolments") == rows(web, "SELECT * FROM credentials") == []
    [mail] = rows(web, "SELECT * FROM outbox")
    assert (mail["state"], bytes(mail["message"])) == ("superseded", b"")


def test_set_contact_of_a_pickup_contact_keeps_its_passkeys(
        capsys: pytest.CaptureFixture[str], web: Config) -> None:
    """A pickup contact's new address keeps its passkeys (they cascade with it), its queued
    mail to the old address is erased, and the command names `reenrol` for an open invitation."""
    assert cli(capsys, web, "schools", "add", SCHOOL_A, "--email", PICKUP_A, "--pickup")[0] == 0
    add_credentials(web, SCHOOL_A, PICKUP_A, "passkey")
    code, out, _ = cli(capsys, web, "schools", "set-contact", SCHOOL_A, "--email", PICKUP_A,
                       "--new-email", CONTACT_A)
    assert code == 0 and "same passkeys and app" in out and "schools reenrol" in out
    assert [r["email"] for r in rows(web, "SELECT * FROM credentials")] == [CONTACT_A]
    [mail] = rows(web, "SELECT * FROM outbox")
    assert mail["state"] == "superseded"


# -- schools list --------------------------------------------------------------------------------

def test_schools_list_shows_channel_and_enrolment_state(
        capsys: pytest.CaptureFixture[str], web: Config, tmp_path: Path,
        identities: Identities) -> None:
    """`schools list` shows a key's contact as before and each pickup contact with its
    channel and state: invited until (local time), invitation expired, enrolled (passkey),
    (app), (passkey, app); `--json` has the same as fields."""
    assert cli(capsys, web, "schools", "add", SCHOOL_A, "--email", CONTACT_A, "--key",
               key_file(tmp_path, identities), "--fingerprint",
               identities.school_a.fingerprint)[0] == 0
    emails = ["a@kompas.example.nl", "b@kompas.example.nl", "c@kompas.example.nl",
              "d@kompas.example.nl", "e@kompas.example.nl"]
    for email in emails:
        assert cli(capsys, web, "schools", "add", SCHOOL_B, "--email", email, "--pickup")[0] == 0
    add_credentials(web, SCHOOL_B, emails[1], "passkey")
    add_credentials(web, SCHOOL_B, emails[2], "totp")
    add_credentials(web, SCHOOL_B, emails[3], "totp", "passkey")
    # As time passes: the invitation of the last one ended an hour ago.
    past = iso(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    raw_sql(web.storage.path, "UPDATE enrolments SET expires_at = ? WHERE email = ?",
            (past, emails[4]))
    [until] = [r["expires_at"] for r in rows(web, "SELECT * FROM enrolments WHERE email = ?",
                                             emails[0])]
    code, out, _ = cli(capsys, web, "schools", "list")
    assert code == 0
    line = {row.split()[0]: row for row in out.splitlines()}
    assert line[SCHOOL_A].endswith(f"  {CONTACT_A}")
    assert line[SCHOOL_C].split()[-1] == "Zeist"
    zone = web.schedule.timezone
    assert line[SCHOOL_B].endswith("  " + " ".join([
        f"{emails[0]}(pickup: invited until {local_time_text(until, zone)})",
        f"{emails[1]}(pickup: enrolled (passkey))",
        f"{emails[2]}(pickup: enrolled (app))",
        f"{emails[3]}(pickup: enrolled (passkey, app))",
        f"{emails[4]}(pickup: invitation expired)"]))
    code, out, _ = cli(capsys, web, "schools", "list", "--json")
    schools = {s["code"]: s for s in json.loads(out)}
    assert schools[SCHOOL_A]["contacts"] == [{
        "email": CONTACT_A, "fingerprint": identities.school_a.fingerprint, "usable": True,
        "channel": "openpgp"}]
    contacts = {c["email"]: c for c in schools[SCHOOL_B]["contacts"]}
    assert contacts[emails[0]] == {"email": emails[0], "fingerprint": None, "channel": "pickup",
                                   "usable": False, "enrolment": "invited",
                                   "invited_until": until}
    assert contacts[emails[3]]["enrolment"] == "enrolled"
    assert contacts[emails[3]]["second_factors"] == ["passkey", "totp"]
    assert contacts[emails[3]]["usable"] is True
    assert (contacts[emails[4]]["enrolment"], contacts[emails[4]]["invited_until"]) == (
        "expired", past)


def test_an_app_only_contact_where_apps_are_not_allowed_is_listed_not_usable(
        capsys: pytest.CaptureFixture[str], template: Template, tmp_path: Path) -> None:
    """With `[web] allow_totp = false` a contact enrolled with an app only cannot open a
    notice: `schools list` says "not usable"."""
    config = copy_gateway_state(template, tmp_path, extra_config=web_config(allow_totp=False))
    assert cli(capsys, config, "schools", "add", SCHOOL_A, "--name", "De Regenboog", "--email",
               PICKUP_A, "--pickup")[0] == 0
    add_credentials(config, SCHOOL_A, PICKUP_A, "totp")
    _, out, _ = cli(capsys, config, "schools", "list")
    assert f"{PICKUP_A}(pickup: enrolled (app), not usable)" in out
