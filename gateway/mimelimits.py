"""Cheap structural limits, checked on raw bytes before any MIME parser sees them.

Takes message bytes; produces a refusal reason or None. Python's email parser needs seconds of
CPU for a megabyte of tiny parts and recurses on deep nesting, so a message is measured first:
how many header lines it opens with, and how many lines are delimiters of a boundary declared
anywhere in it (a tree of n entities has at most 2n - 1 of them).
"""

from __future__ import annotations

import re

_BOUNDARY_PARAM = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]*)"|([^;\s]+))', re.IGNORECASE)


def delimiter_lines(data: bytes) -> int:
    """How many lines look like a delimiter of a boundary declared anywhere in `data`."""
    boundaries = {
        (quoted or bare).rstrip(b" \t") for quoted, bare in _BOUNDARY_PARAM.findall(data)
    }
    if not boundaries:
        return 0
    count = 0
    for line in data.split(b"\n"):
        if line.startswith(b"--"):
            token = line[2:].rstrip(b" \t\r")
            if token in boundaries or token.removesuffix(b"--") in boundaries:
                count += 1
    return count


def header_lines(data: bytes) -> int:
    """Lines before the first empty line: the top-level header section, folded lines included."""
    end = re.search(rb"\r?\n\r?\n", data)
    head = data[: end.start()] if end else data
    return head.count(b"\n") + 1 if head else 0


def too_complex(data: bytes, *, max_parts: int, max_header_lines: int) -> str | None:
    """Why `data` is refused before parsing, or None when it is small enough to parse."""
    if header_lines(data) > max_header_lines:
        return "too many header lines"
    if delimiter_lines(data) > 2 * max_parts:
        return "too many MIME parts"
    return None
