"""Logging: structlog JSON to stdout, one event per state change.

Events are named `noun.verb_past` with stable keys (`ref`, `school`, `sender`, `smtp_code`, ...).
Nothing personal is ever passed to a logger: values that could hold personal data (`Child`,
`Pupil`) redact their own repr, and exceptions are logged by `safe_exception`, which keeps the
type and the frames but not the message (a KeyError's message can be a name).
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

import structlog


def configure(json: bool | None = None, level: int = logging.INFO) -> None:
    """JSON lines to stdout (journald); readable console output when stdout is a terminal."""
    if json is None:
        json = not sys.stdout.isatty()
    renderer: Any = (structlog.processors.JSONRenderer() if json
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    # aiosmtpd logs every AUTH with a deprecation warning and client lines at INFO on
    # `mail.log`; those lines can carry envelope addresses. Keep only its real problems.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    logging.getLogger("gnupg").setLevel(logging.CRITICAL)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def safe_exception(exc: BaseException) -> dict[str, Any]:
    """Type and frames of an exception, without its message or any local value."""
    frames = traceback.extract_tb(exc.__traceback__)
    return {
        "error": type(exc).__name__,
        "frames": [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}:{f.name}" for f in frames[-8:]],
    }
