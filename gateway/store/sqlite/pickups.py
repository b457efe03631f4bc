"""The pickup channel's tables in SQLite: invitations, second factors, boxes, wrong codes.

Takes digests, blobs and times (`gateway.store.pickups` says what each method keeps); produces
records. Every change that must happen once (an invitation used, a box read, an app code's time
step) is one conditional statement, so that of two racing requests only one wins.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

from gateway.core.records import CredentialRecord, EnrolmentRecord, PickupRecord, Throttle, iso
from gateway.store.sqlite.base import Session

_PICKUP = ("SELECT p.*, n.ref, n.school, n.recipients, n.state, n.acked_at, n.created_at"
           " FROM pickups p JOIN notices n ON n.id = p.notice_id")


def _enrolment(r: sqlite3.Row) -> EnrolmentRecord:
    return EnrolmentRecord(r["school"], r["email"], r["token_digest"], r["code_digest"],
                           r["created_at"], r["expires_at"], r["used_at"])


def _credential(r: sqlite3.Row) -> CredentialRecord:
    return CredentialRecord(
        int(r["id"]), r["school"], r["email"], r["kind"], r["credential_id"],
        bytes(r["public_key"]) if r["public_key"] is not None else None,
        int(r["sign_count"]), bytes(r["secret"]) if r["secret"] is not None else None,
        r["last_step"], r["created_at"], r["last_used_at"])


def _pickup(r: sqlite3.Row) -> PickupRecord:
    return PickupRecord(
        int(r["notice_id"]), r["ref"], r["school"], tuple(json.loads(r["recipients"])),
        r["state"], bytes(r["sealed"]) if r["sealed"] is not None else None, r["expires_at"],
        int(r["opened"]), r["first_opened_at"], r["read_at"], r["read_by"], r["acked_at"],
        r["created_at"])


class SqlitePickups:
    def __init__(self, s: Session) -> None:
        self._s = s

    async def enrolment(self, token_digest: str) -> EnrolmentRecord | None:
        r = self._s.one("SELECT * FROM enrolments WHERE token_digest = ?", (token_digest,))
        return _enrolment(r) if r else None

    async def enrolment_of(self, school: str, email: str) -> EnrolmentRecord | None:
        r = self._s.one("SELECT * FROM enrolments WHERE school = ? AND email = ?",
                        (school, email))
        return _enrolment(r) if r else None

    async def enrolments(self) -> list[EnrolmentRecord]:
        return [_enrolment(r) for r in self._s.all(
            "SELECT * FROM enrolments ORDER BY school, email")]

    async def credentials(self, school: str | None = None,
                          email: str | None = None) -> list[CredentialRecord]:
        where, params = "", ()  # type: tuple[str, tuple[str, ...]]
        if school is not None:
            where, params = " WHERE school = ?", (school,)
            if email is not None:
                where, params = " WHERE school = ? AND email = ?", (school, email)
        return [_credential(r) for r in self._s.all(
            f"SELECT * FROM credentials{where} ORDER BY id", params)]  # noqa: S608

    async def credential(self, credential_id: str) -> CredentialRecord | None:
        r = self._s.one("SELECT * FROM credentials WHERE credential_id = ?", (credential_id,))
        return _credential(r) if r else None

    async def get(self, token_digest: str) -> PickupRecord | None:
        r = self._s.one(f"{_PICKUP} WHERE p.token_digest = ?", (token_digest,))
        return _pickup(r) if r else None

    async def of_notice(self, notice_id: int) -> PickupRecord | None:
        r = self._s.one(f"{_PICKUP} WHERE p.notice_id = ?", (notice_id,))
        return _pickup(r) if r else None

    async def waiting(self) -> list[PickupRecord]:
        return [_pickup(r) for r in self._s.all(
            f"{_PICKUP} WHERE n.state = 'delivered' AND p.read_at IS NULL"
            " AND n.acked_at IS NULL AND p.sealed IS NOT NULL ORDER BY p.notice_id")]

    async def expired(self, now: dt.datetime) -> list[PickupRecord]:
        return [_pickup(r) for r in self._s.all(
            f"{_PICKUP} WHERE p.sealed IS NOT NULL AND p.expires_at <= ?"
            " ORDER BY p.notice_id", (iso(now),))]

    async def throttle(self, scope: str, subject: str) -> Throttle | None:
        r = self._s.one("SELECT failures, locked_until FROM web_failures WHERE scope = ?"
                        " AND subject = ?", (scope, subject))
        return Throttle(int(r["failures"]), r["locked_until"]) if r else None

    async def invite(self, school: str, email: str, token_digest: str, code_digest: str,
                     at: dt.datetime, expires_at: dt.datetime) -> None:
        self._s.run(
            "INSERT INTO enrolments (school, email, token_digest, code_digest, created_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(school, email) DO UPDATE SET"
            " token_digest = excluded.token_digest, code_digest = excluded.code_digest,"
            " created_at = excluded.created_at, expires_at = excluded.expires_at,"
            " used_at = NULL", (school, email, token_digest, code_digest, iso(at),
                                iso(expires_at)))

    async def use_enrolment(self, token_digest: str, at: dt.datetime) -> bool:
        cur = self._s.run("UPDATE enrolments SET used_at = ? WHERE token_digest = ?"
                          " AND used_at IS NULL", (iso(at), token_digest))
        return cur.rowcount == 1

    async def add_credential(self, school: str, email: str, kind: str, at: dt.datetime, *,
                             credential_id: str | None = None, public_key: bytes | None = None,
                             sign_count: int = 0, secret: bytes | None = None) -> int:
        cur = self._s.run(
            "INSERT INTO credentials (school, email, kind, credential_id, public_key,"
            " sign_count, secret, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (school, email, kind, credential_id, public_key, sign_count, secret, iso(at)))
        # The snapshot's `enrolled` set changes: a running daemon reloads its directory.
        self._s.bump_directory_version()
        return int(cur.lastrowid or 0)

    async def drop_credentials(self, school: str, email: str) -> int:
        cur = self._s.run("DELETE FROM credentials WHERE school = ? AND email = ?",
                          (school, email))
        self._s.bump_directory_version()
        return cur.rowcount

    async def use_credential(self, credential: int, at: dt.datetime, *,
                             sign_count: int | None = None, step: int | None = None) -> bool:
        if step is not None:
            cur = self._s.run(
                "UPDATE credentials SET last_step = ?, last_used_at = ? WHERE id = ?"
                " AND (last_step IS NULL OR last_step < ?)", (step, iso(at), credential, step))
        else:
            cur = self._s.run(
                "UPDATE credentials SET sign_count = coalesce(?, sign_count), last_used_at = ?"
                " WHERE id = ?", (sign_count, iso(at), credential))
        return cur.rowcount == 1

    async def put(self, notice_id: int, token_digest: str, sealed: bytes,
                  expires_at: dt.datetime) -> None:
        self._s.run("INSERT INTO pickups (notice_id, token_digest, sealed, expires_at)"
                    " VALUES (?, ?, ?, ?)", (notice_id, token_digest, sealed, iso(expires_at)))

    async def opened(self, notice_id: int, at: dt.datetime) -> None:
        self._s.run("UPDATE pickups SET opened = opened + 1,"
                    " first_opened_at = coalesce(first_opened_at, ?) WHERE notice_id = ?",
                    (iso(at), notice_id))

    async def read(self, notice_id: int, by: str, at: dt.datetime) -> bool:
        cur = self._s.run("UPDATE pickups SET read_at = ?, read_by = ? WHERE notice_id = ?"
                          " AND read_at IS NULL", (iso(at), by, notice_id))
        return cur.rowcount == 1

    async def erase(self, notice_id: int) -> bool:
        cur = self._s.run("UPDATE pickups SET sealed = NULL WHERE notice_id = ?"
                          " AND sealed IS NOT NULL", (notice_id,))
        return cur.rowcount == 1

    async def fail(self, scope: str, subject: str, at: dt.datetime, max_failures: int,
                   lock_until: dt.datetime) -> Throttle:
        self._s.run(
            "INSERT INTO web_failures (scope, subject, failures, since) VALUES (?, ?, 1, ?)"
            " ON CONFLICT(scope, subject) DO UPDATE SET failures = failures + 1",
            (scope, subject, iso(at)))
        r = self._s.one("SELECT failures FROM web_failures WHERE scope = ? AND subject = ?",
                        (scope, subject))
        failures = int(r["failures"]) if r else 1
        if failures >= max_failures:
            self._s.run("UPDATE web_failures SET failures = 0, locked_until = ? WHERE scope = ?"
                        " AND subject = ?", (iso(lock_until), scope, subject))
            return Throttle(failures, iso(lock_until))
        found = await self.throttle(scope, subject)
        return found or Throttle(failures, None)

    async def clear(self, scope: str, subject: str) -> None:
        self._s.run("DELETE FROM web_failures WHERE scope = ? AND subject = ?", (scope, subject))
