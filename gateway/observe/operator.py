"""Who an audit record names as the person who acted: the real uid of the process, by its name.

Takes the process's uid and environment (`current_operator`), or both given (`operator_text`, pure,
for the tests); produces one line such as "alice (uid 1000)". Never fails: a uid without an
entry in the password database is named by its number. Receipts of the administrator's verbs
and of the daemon's own key jobs carry it.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Mapping

from gateway.core.inert import inert


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def operator_text(uid: int, environ: Mapping[str, str],
                  name_of: Callable[[int], str | None]) -> str:
    """Who an audit record names: the real uid, by its name in the password database when it
    has one ("alice (uid 1000)"). LOGNAME and USER are never read: anyone can set them to any
    name (issue 11). Only for root is sudo's SUDO_UID taken as the person who asked ("root via
    sudo from alice (uid 1000)"): any other user could write SUDO_UID itself. Its name also
    comes from the password database; SUDO_USER only when the uid has no entry there."""
    name = name_of(uid)
    who = f"{name} (uid {uid})" if name else f"uid {uid}"
    sudo_uid = environ.get("SUDO_UID", "")
    if uid != 0 or not sudo_uid.isdigit():
        return who
    number = int(sudo_uid)
    asked = name_of(number) or inert(environ.get("SUDO_USER", "").strip()[:64])
    return (f"{name or who} via sudo from "
            + (f"{asked} (uid {number})" if asked else f"uid {number}"))


def current_operator() -> str:
    """Who runs this process, as `operator_text` names it."""
    return operator_text(os.getuid(), os.environ, _user_name)
