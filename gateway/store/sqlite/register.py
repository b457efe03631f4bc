"""The pupil register in SQLite: keyed digests of BSN and birth date, the record as a blob.

Takes a whole register to swap in; produces `PupilRow`s found by digest and counts.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.core.records import PupilRow
from gateway.store.sqlite.base import Session


class SqliteRegister:
    def __init__(self, s: Session) -> None:
        self._s = s

    async def by_index(self, bsn_index: str | None, birthdate_index: str) -> list[PupilRow]:
        return [PupilRow(r["bsn_index"], r["birthdate_index"], r["school"], r["blob"])
                for r in self._s.all(
            "SELECT bsn_index, birthdate_index, school, blob FROM pupils"
            " WHERE birthdate_index = ? OR (? IS NOT NULL AND bsn_index = ?)",
            (birthdate_index, bsn_index, bsn_index))]

    async def summary(self) -> tuple[int, int]:
        row = self._s.one("SELECT count(*) AS n, count(DISTINCT school) AS s FROM pupils")
        return (int(row["n"]), int(row["s"])) if row else (0, 0)

    async def counts(self) -> dict[str, int]:
        return {str(r["school"]): int(r["n"]) for r in self._s.all(
            "SELECT school, count(*) AS n FROM pupils GROUP BY school")}

    async def replace(self, pupils: Iterable[PupilRow]) -> int:
        self._s.run("DELETE FROM pupils")
        self._s.many("INSERT INTO pupils (bsn_index, birthdate_index, school, blob)"
                     " VALUES (?, ?, ?, ?)",
                     [(p.bsn_index, p.birthdate_index, p.school, p.blob) for p in pupils])
        self._s.bump_directory_version()
        row = self._s.one("SELECT count(*) AS n FROM pupils")
        return int(row["n"]) if row else 0
