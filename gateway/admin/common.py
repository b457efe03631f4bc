"""What the administrator's verbs share: the refusal, and the helpers that turn a lower layer's
failure into one.

`Refused` carries a one-line reason for the administrator (the command exits 1). The helpers
read the key passphrase, import a key to pin, check a school code, read an input file, and give
a signal's deadline; each fails with `Refused`, never with the lower layer's exception.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from gateway.core.config import Config
from gateway.core.fields import normalise_school
from gateway.core.records import from_iso
from gateway.core.schedule import deadline
from gateway.crypto.custody import CustodyError, read_passphrase
from gateway.crypto.gpg import Gpg
from gateway.crypto.keyadmin import KeyRefused, import_pinned
from gateway.pipeline.context import Context


class Refused(Exception):
    """The operation was refused; the message is one line for the administrator."""


def key_passphrase(config: Config) -> str | None:
    try:
        return read_passphrase(config)
    except CustodyError as exc:
        raise Refused(str(exc)) from None


def import_key(gpg: Gpg, data: bytes, fingerprint: str, purpose: Any, now: dt.datetime) -> Any:
    try:
        return import_pinned(gpg, data, fingerprint, purpose, now)
    except KeyRefused as exc:
        raise Refused(str(exc)) from None


def school_code(code: str) -> str:
    norm = normalise_school(code)
    if norm is None or len(norm) != 6:
        raise Refused("CODE must be a 6-character DUO vestigingscode such as 12AB00")
    return norm


def signal_deadline(ctx: Context, accepted: str) -> dt.datetime:
    return deadline(from_iso(accepted), ctx.config.schedule)


def read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise Refused(f"cannot read {path}: {exc.strerror}") from None
