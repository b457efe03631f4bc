"""systemd's notify protocol (sd_notify(3)): READY, STOPPING, WATCHDOG and STATUS.

Takes messages; sends each as one datagram to $NOTIFY_SOCKET, or does nothing when the daemon
was not started by systemd with Type=notify. Small enough not to need a dependency.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send one notification; False when there is no systemd to tell (or it went away)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket, as systemd usually passes it
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # Never wait on the event loop for a reader that is not reading: a full queue
            # drops this one message (BlockingIOError), as a lost datagram would be.
            sock.setblocking(False)
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings: half of WatchdogSec, as sd_watchdog_enabled(3) advises."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2 / 1_000_000
