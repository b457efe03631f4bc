"""A fault-injection switch for the crash tests, and for nothing else.

When the environment variable HWC_GATEWAY_CRASH_AT names a point, the process kills itself with
SIGKILL the first time it reaches that point: no cleanup, no flush, exactly like a power cut or
`kill -9` at the worst moment. Unset (always, outside the tests), `crash_point` does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "HWC_GATEWAY_CRASH_AT"
POINTS = ("before-seal", "after-seal", "after-remote-250")


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
