"""Meta in SQLite: small named values (schema version, chain anchor, reminders sent)."""

from __future__ import annotations

from gateway.store.sqlite.base import Session


class SqliteMeta:
    def __init__(self, s: Session) -> None:
        self._s = s

    async def get(self, key: str) -> str | None:
        row = self._s.one("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row["value"]) if row else None

    async def set(self, key: str, value: str) -> None:
        self._s.set_meta(key, value)
