"""Helpers shared by the tests/test_pinned_*.py files: gpg status results as the adapter builds
them, the signature refusal, and a multipart signal with one extra part."""

from __future__ import annotations

from gateway.core.model import RejectClass, Rejection
from gateway.crypto.gpg import GpgResult


def gpg_result(*lines: str, returncode: int = 0) -> GpgResult:
    """A GpgResult as the adapter builds it from `[GNUPG:]` lines."""
    status = []
    for line in lines:
        key, _, value = line.partition(" ")
        status.append((key, value))
    return GpgResult(returncode, b"", tuple(status))


def _bad(detail: str) -> Rejection:
    return Rejection(RejectClass.BAD_SIGNATURE, detail)


LABELLED = ("Codewoord: Handle with Care\r\nReferentie: VT-1\r\n"
            "Naam: Sanne de Vries\r\nGeboortedatum: 12-04-2016\r\n")


def _mixed_with(extra_part: str) -> bytes:
    return ("Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
            "Content-Type: text/plain\r\n\r\n" + LABELLED + "\r\n--b1\r\n" + extra_part
            + "\r\n--b1--\r\n").encode()
