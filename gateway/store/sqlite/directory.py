"""The directory in SQLite: senders (keys, addresses, client certificates), schools, their
contacts, and the gateway's own keys.

Takes administrators' changes; produces the directory records the snapshot is built from
(`gateway.pipeline.directory`). Every change bumps `meta.directory_version`, which a running
daemon compares to reload.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from gateway.core.records import (
    ContactRecord,
    GatewayKeyRecord,
    SchoolRecord,
    SenderAddressRecord,
    SenderCertRecord,
    SenderKeyRecord,
    SenderRecord,
    iso,
)
from gateway.store.sqlite.base import Session


class SqliteDirectory:
    def __init__(self, s: Session) -> None:
        self._s = s

    async def version(self) -> str:
        row = self._s.one("SELECT value FROM meta WHERE key = 'directory_version'")
        return str(row["value"]) if row else "0"

    async def bump_version(self) -> None:
        self._s.bump_directory_version()

    async def senders(self) -> list[SenderRecord]:
        return [SenderRecord(r["name"], r["password_hash"], r["created_at"],
                             bool(r["status_mail"])) for r in self._s.all(
            "SELECT name, password_hash, created_at, status_mail FROM senders ORDER BY name")]

    async def sender_keys(self) -> list[SenderKeyRecord]:
        return [SenderKeyRecord(r["sender"], r["fingerprint"], r["added_at"]) for r in
                self._s.all("SELECT sender, fingerprint, added_at FROM sender_keys"
                            " ORDER BY sender, added_at")]

    async def sender_addresses(self) -> list[SenderAddressRecord]:
        return [SenderAddressRecord(r["sender"], r["address"]) for r in self._s.all(
            "SELECT sender, address FROM sender_addresses ORDER BY sender")]

    async def sender_certs(self) -> list[SenderCertRecord]:
        return [SenderCertRecord(r["sender"], r["sha256"]) for r in self._s.all(
            "SELECT sender, sha256 FROM sender_certs ORDER BY sender")]

    async def status_mail_senders(self) -> list[str]:
        return [str(r["name"]) for r in self._s.all(
            "SELECT name FROM senders WHERE status_mail = 1 ORDER BY name")]

    async def schools(self) -> list[SchoolRecord]:
        return [SchoolRecord(r["code"], r["name"], r["place"], r["route"]) for r in self._s.all(
            "SELECT code, name, place, route FROM schools ORDER BY code")]

    async def school(self, code: str) -> SchoolRecord | None:
        r = self._s.one("SELECT code, name, place, route FROM schools WHERE code = ?", (code,))
        return SchoolRecord(r["code"], r["name"], r["place"], r["route"]) if r else None

    async def contacts(self, school: str | None = None) -> list[ContactRecord]:
        if school is None:
            rows = self._s.all("SELECT school, email, fingerprint, channel FROM contacts"
                               " ORDER BY school, email")
        else:
            rows = self._s.all("SELECT school, email, fingerprint, channel FROM contacts"
                               " WHERE school = ? ORDER BY email", (school,))
        return [ContactRecord(r["school"], r["email"], r["fingerprint"], r["channel"])
                for r in rows]

    async def gateway_keys(self) -> list[GatewayKeyRecord]:
        return [GatewayKeyRecord(r["fingerprint"], r["state"], r["created_at"],
                                 r["decrypt_until"]) for r in self._s.all(
            "SELECT fingerprint, state, created_at, decrypt_until FROM gateway_keys"
            " ORDER BY created_at")]

    async def add_sender(self, name: str, password_hash: str, fingerprint: str,
                         allow_from: Sequence[str], client_certs: Sequence[str],
                         at: dt.datetime, status_mail: bool = True) -> None:
        s = self._s
        s.run("INSERT INTO senders (name, password_hash, created_at, status_mail)"
              " VALUES (?, ?, ?, ?)", (name, password_hash, iso(at), status_mail))
        await self.add_sender_key(name, fingerprint, at)
        s.many("INSERT OR IGNORE INTO sender_addresses (sender, address) VALUES (?, ?)",
               [(name, a) for a in allow_from])
        s.many("INSERT OR IGNORE INTO sender_certs (sender, sha256) VALUES (?, ?)",
               [(name, c) for c in client_certs])

    async def add_sender_key(self, name: str, fingerprint: str, at: dt.datetime) -> None:
        self._s.run("INSERT OR IGNORE INTO sender_keys (sender, fingerprint, added_at)"
                    " VALUES (?, ?, ?)", (name, fingerprint, iso(at)))
        self._s.bump_directory_version()

    async def remove_sender_key(self, name: str, fingerprint: str) -> int:
        cur = self._s.run("DELETE FROM sender_keys WHERE sender = ? AND fingerprint = ?",
                          (name, fingerprint))
        self._s.bump_directory_version()
        return cur.rowcount

    async def remove_sender(self, name: str) -> int:
        cur = self._s.run("DELETE FROM senders WHERE name = ?", (name,))
        self._s.bump_directory_version()
        return cur.rowcount

    async def upsert_school(self, code: str, name: str, place: str) -> bool:
        cur = self._s.run(
            "INSERT INTO schools (code, name, place) VALUES (?, ?, ?) ON CONFLICT(code) DO UPDATE"
            " SET name = excluded.name, place = excluded.place"
            " WHERE name != excluded.name OR place != excluded.place", (code, name, place))
        self._s.bump_directory_version()
        return cur.rowcount > 0

    async def set_school_route(self, code: str, route: str | None) -> None:
        self._s.run("UPDATE schools SET route = ? WHERE code = ?", (route, code))

    async def remove_school(self, code: str) -> int:
        cur = self._s.run("DELETE FROM schools WHERE code = ?", (code,))
        self._s.bump_directory_version()
        return cur.rowcount

    async def set_contact(self, school: str, email: str, fingerprint: str | None,
                          channel: str = "openpgp") -> str | None:
        row = self._s.one("SELECT fingerprint FROM contacts WHERE school = ? AND email = ?",
                          (school, email))
        self._s.run(
            "INSERT INTO contacts (school, email, fingerprint, channel) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(school, email) DO UPDATE SET fingerprint = excluded.fingerprint,"
            " channel = excluded.channel", (school, email, fingerprint, channel))
        self._s.bump_directory_version()
        return str(row["fingerprint"]) if row and row["fingerprint"] else None

    async def rename_contact(self, school: str, email: str, new_email: str) -> bool:
        cur = self._s.run("UPDATE contacts SET email = ? WHERE school = ? AND email = ?",
                          (new_email, school, email))
        self._s.bump_directory_version()
        return cur.rowcount == 1

    async def remove_contact(self, school: str, email: str) -> str | None:
        row = self._s.one("SELECT fingerprint FROM contacts WHERE school = ? AND email = ?",
                          (school, email))
        if row is None:
            return None
        self._s.run("DELETE FROM contacts WHERE school = ? AND email = ?", (school, email))
        self._s.bump_directory_version()
        return str(row["fingerprint"] or "")

    async def add_gateway_key(self, fingerprint: str, at: dt.datetime,
                              overlap_until: dt.datetime | None = None) -> str | None:
        row = self._s.one("SELECT fingerprint FROM gateway_keys WHERE state = 'current'")
        self._s.run("UPDATE gateway_keys SET state = 'previous', decrypt_until = ?"
                    " WHERE state = 'current'",
                    (iso(overlap_until) if overlap_until else iso(at),))
        self._s.run("INSERT INTO gateway_keys (fingerprint, state, created_at)"
                    " VALUES (?, 'current', ?)", (fingerprint, iso(at)))
        self._s.bump_directory_version()
        return str(row["fingerprint"]) if row and row["fingerprint"] else None

    async def retire_gateway_key(self, fingerprint: str, at: dt.datetime) -> bool:
        cur = self._s.run("UPDATE gateway_keys SET state = 'retired', decrypt_until = ?"
                          " WHERE fingerprint = ? AND state = 'previous'",
                          (iso(at), fingerprint))
        self._s.bump_directory_version()
        return cur.rowcount == 1
