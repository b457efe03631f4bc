"""The pickup channel's notification: a plain, neutral Dutch mail with the link to the page.

Takes the gateway's address, the contacts' addresses, a Message-ID, the link, when it expires,
the schedule's time zone, whether an authenticator app may be used, and the `[web] helpdesk`
text; produces the complete RFC 5322 message as bytes (text/plain, UTF-8, quoted-printable,
CRLF). It says that a confidential message from leerplicht waits and how to open it, and
nothing about the child, the school or the case: no name, no birth date, no codeword, no
reference (docs/protocol.md §8). The link's token is the only secret in it, which is why the
queued mail is kept sealed under the gateway's vault (`gateway.delivery.pickup`). Pure: never
fails for its inputs.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import quopri
from collections.abc import Sequence

from gateway.core.timetext import moment_nl

SUBJECT = "Er staat een vertrouwelijk bericht voor u klaar"
def notification_text(link: str, expires_text: str, helpdesk: str, allow_app: bool) -> str:
    """What the contact reads: who it is from, the link, how to open it, until when, whom to
    call. Written for a teacher, not for an engineer."""
    how = "uw passkey of met de code uit uw app" if allow_app else "uw passkey"
    return "\n".join([
        "Goedendag,",
        "",
        "Er staat een vertrouwelijk bericht van de afdeling Leerplicht voor u klaar.",
        "Open het bericht met deze link:",
        "",
        f"    {link}",
        "",
        f"U opent het bericht met {how}. Lees het",
        "alstublieft voordat de schooldag begint.",
        "",
        f"De link werkt tot {expires_text}.",
        "",
        f"Vragen? {helpdesk.strip()}",
        "",
        "Dit bericht is automatisch verstuurd. U hoeft er niet op te antwoorden.",
    ]) + "\n"


def compose_notification(*, sender: str, recipients: Sequence[str], message_id: str,
                         now: dt.datetime, link: str, expires_at: dt.datetime, zone: str,
                         helpdesk: str, allow_app: bool) -> bytes:
    """The notification mail, ready to send. `Auto-Submitted: auto-generated` (RFC 3834): an
    out-of-office reply to it is not sent, and no reply is expected."""
    body = notification_text(link, moment_nl(expires_at, zone), helpdesk, allow_app)
    headers = [("From", sender), ("To", ", ".join(recipients)), ("Subject", SUBJECT),
               ("Date", email.utils.format_datetime(now)), ("Message-ID", message_id),
               ("Auto-Submitted", "auto-generated"), ("MIME-Version", "1.0"),
               ("Content-Type", 'text/plain; charset="utf-8"'),
               ("Content-Transfer-Encoding", "quoted-printable")]
    encoded = quopri.encodestring(body.encode("utf-8")).replace(b"\n", b"\r\n")
    head = b"".join(f"{k}: {v}\r\n".encode("ascii") for k, v in headers)
    return head + b"\r\n" + encoded
