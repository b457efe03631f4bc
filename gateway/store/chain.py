"""The receipt chain: how each receipt is linked to the one before, and how a break is found.

Takes receipts (`gateway.core.records.Receipt`) and the receipt key; produces link hashes and
the list of breaks. Pure: the store appends with `receipt_hash`, `receipts verify` checks with
`chain_problems`. The key lives with the other secrets (`keys/secrets/receipts.key`, see
`gateway.store.chainkey`), not in the database: whoever can write the database but not read
that key cannot rebuild the chain after changing an entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from typing import Any

from gateway.core.records import Anchor, Receipt

GENESIS = "0" * 64
CHAIN_SCHEME = "hmac-sha256"  # meta `receipt_chain`: the receipts are linked under the key


def _canonical(prev: str, seq: int, at: str, event: str, ref: str | None, school: str | None,
               detail: str, pseudonym: str | None) -> bytes:
    return json.dumps([prev, seq, at, event, ref, school, detail, pseudonym],
                      ensure_ascii=True, separators=(",", ":")).encode()


def receipt_hash(key: bytes, prev: str, seq: int, at: str, event: str, ref: str | None,
                 school: str | None, detail: str, pseudonym: str | None) -> str:
    """The chain link: HMAC-SHA256 under the receipt key over the previous link and the
    canonical JSON of the entry. A plain hash could be recomputed by anyone who can write the
    database (an attack review changed receipt 8 of 204, rehashed the rest, and verification
    passed); the key lives with the other secrets, not in the database."""
    canonical = _canonical(prev, seq, at, event, ref, school, detail, pseudonym)
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def legacy_receipt_hash(prev: str, seq: int, at: str, event: str, ref: str | None,
                        school: str | None, detail: str, pseudonym: str | None) -> str:
    """The link of chains written before receipts were keyed: plain SHA-256. Only checked once,
    when such a chain is re-linked under the key (`Store.key_chain`)."""
    canonical = _canonical(prev, seq, at, event, ref, school, detail, pseudonym)
    return hashlib.sha256(canonical).hexdigest()


def detail_text(detail: dict[str, Any]) -> str:
    return json.dumps(detail, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def chain_problems(rows: Iterable[Receipt], key: bytes, anchor: Anchor | None = None,
                   link: Callable[..., str] | None = None) -> list[str]:
    """Every break in the chain: a changed entry, a missing or an inserted one. `link` is
    the keyed `receipt_hash` unless given (the legacy check at re-linking)."""
    def keyed(*fields: Any) -> str:
        return receipt_hash(key, *fields)

    check = link or keyed
    problems = []
    prev, expected_seq = (anchor.hash, anchor.seq + 1) if anchor else (GENESIS, None)
    for r in rows:
        if expected_seq is not None and r.seq != expected_seq:
            problems.append(f"receipt {expected_seq}: missing (next is {r.seq})")
        if r.prev != prev:
            problems.append(f"receipt {r.seq}: does not follow the previous receipt")
        if not hmac.compare_digest(check(r.prev, r.seq, r.at, r.event, r.ref, r.school,
                                         detail_text(r.detail), r.pseudonym), r.hash):
            problems.append(f"receipt {r.seq}: content does not match its hash")
        prev, expected_seq = r.hash, r.seq + 1
    return problems
