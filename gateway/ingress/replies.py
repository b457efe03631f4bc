"""The SMTP replies of the ingress stage that are tables: what a typed refusal is answered,
what an accepted signal is answered, and aiosmtpd's own replies reworded.

Takes a `Rejection` (from `pipeline.intake.accept` or the opener) or an `Accepted`; produces
the reply line a sender's MTA reads, with the codes and enhanced status codes of the reply
table in docs/protocol.md §5. Pure: no I/O. Does not fail for any `RejectClass` there is (each
has a row in `REPLY_FOR`); a class added without a row would be a `KeyError`, answered
`TEMPORARY_FAILURE` by the handler's `handle_exception`.
"""

from __future__ import annotations

from gateway.core.model import RejectClass, Rejection
from gateway.pipeline.intake import Accepted

REPLY_FOR: dict[RejectClass, str] = {
    RejectClass.NOT_ENCRYPTED: "554 5.7.5",
    RejectClass.BAD_SIGNATURE: "554 5.7.7",
    RejectClass.INVALID_SIGNAL: "554 5.6.0",
    RejectClass.TOO_LARGE: "552 5.3.4",
}

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure in the gateway, please try again later"

# aiosmtpd's own wording lacks the enhanced status codes docs/protocol.md §5 promises senders'
# MTAs.
REWRITE = {
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "552 Error: Too much mail data": "552 5.3.4 Message too large",
    "552 Error: message size exceeds fixed maximum message size": "552 5.3.4 Message too large",
    "500 Line too long (see RFC5321 4.5.3.1.6)":
        "552 5.3.4 Line too long (RFC 5321 section 4.5.3.1.6)",
}


def rejection_reply(rejection: Rejection) -> str:
    """The SMTP reply for a refusal: the class's code and the value-free detail."""
    detail = " ".join(rejection.detail.split())[:200]
    return f"{REPLY_FOR[rejection.kind]} {detail}"


def accepted_reply(accepted: Accepted) -> str:
    if accepted.duplicate:
        return f"250 2.0.0 Signal already accepted as {accepted.ref}"
    return f"250 2.0.0 Signal accepted as {accepted.ref}"
