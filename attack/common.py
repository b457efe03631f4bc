"""Look-ups the checks share: a fresh reference, the reply's gateway reference, the
laboratory's config limits, receipts, and the notices a school got (decrypted with its key).

Takes a running `Lab`; produces plain values. Nothing here judges.
"""

from __future__ import annotations

import re
import secrets
import tomllib
from typing import Any

from lab import Lab
from lab_mail import armored_blocks, inner_text
from lab_smtp import Got, Reply


def rid() -> str:
    return secrets.token_hex(3).upper()


def ref_of(reply: Reply) -> str | None:
    m = re.search(r"accepted as (HWC-[0-9A-Z-]+)", reply.text)
    return m.group(1) if m else None


def smtp_setting(lab: Lab, key: str, default: int) -> int:
    """A limit of `[smtp]` in the laboratory's config.toml (the checkout's own value)."""
    return int(tomllib.loads(lab.config.read_text()).get("smtp", {}).get(key, default))


def receipts_for(lab: Lab, event: str, ref: str | None = None) -> list[dict[str, Any]]:
    return [r for r in lab.receipts() if r.get("event") == event
            and (ref is None or r.get("ref") == ref)]


def notices_for(lab: Lab, code: str, ref: str) -> list[tuple[Got, str, str]]:
    """(received, inner header section, inner text) of each notice of `ref` a school got."""
    out = []
    for got in lab.inbox[code].all():
        for block in armored_blocks(got.data):
            plain, _ = lab.schools[code].decrypt(block)
            if plain and f"{ref}-" in plain.decode("utf-8", "replace"):
                head, body = inner_text(plain)
                out.append((got, head, body))
    return out
