"""What the ingress stage reads off the client's connection, bounded and cheap where aiosmtpd
is neither: the bytes of a line, the path of a MAIL or RCPT, and the client's address.

Takes aiosmtpd's stream reader, a MAIL/RCPT argument, or a session; produces a reader whose
over-long lines cannot grow memory (`BoundedReader`), the (address, parameters) of a plain
`<local@domain>` path (`plain_path`), and the client's IP address as logged and throttled
(`peer_host`). Nothing here fails: a line past the cap reads as nothing (aiosmtpd has marked it
too long already and answers 552 after the final dot), a path that is not plain is None (left
to aiosmtpd's parser), and a session without a peer is "".
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiosmtpd.smtp import Session


class BoundedReader(asyncio.StreamReader):
    """aiosmtpd keeps the fragments of an over-long line until its CRLF arrives, without bound
    (200 MiB sent grew memory by 200 MB). Past a cap, the rest of such a line is consumed and
    thrown away: aiosmtpd has marked the line too long already and answers after the final dot,
    as RFC 5321 §4.2.5 wants, instead of a reset the client could not read a reply from."""

    line_cap: int = 1 << 20
    _line_bytes: int = 0

    async def readuntil(self, separator: Any = b"\n") -> bytes:
        line = await super().readuntil(separator)
        self._line_bytes = 0
        return line

    async def read(self, n: int = -1) -> bytes:
        data = await super().read(n)
        self._line_bytes += len(data)
        return b"" if self._line_bytes > self.line_cap else data


# A path as senders' MTAs write it, `<local@domain>` with a dot-atom local part and a host name:
# for these, aiosmtpd's `_getaddr` answer is the text between the brackets.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


def plain_path(arg: str) -> tuple[str, str] | None:
    """(address, parameters) exactly as aiosmtpd's `_getaddr` has the email header parser find
    them, for a plain `<local@domain>` path; None for anything else (quoted strings, comments,
    source routes, non-ASCII, no brackets), which is left to that parser.

    The parser takes white space after the `>` (and a comment after it: not plain) as part of
    the path, so the parameters start after it.
    """
    match = _PLAIN_PATH.match(arg)
    if match is None:
        return None
    rest = arg[match.end():]
    if rest[:1] in (" ", "\t"):
        rest = rest.lstrip()
    if rest.startswith("("):
        return None
    return match.group(1), rest


def peer_host(session: Session | None) -> str:
    """The client's IP address as text; "" before aiosmtpd has a session or a peer."""
    peer = session.peer if session is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""

