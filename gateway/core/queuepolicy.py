"""What becomes of a queued item after an attempt: the decisions the store only records.

Takes counts and states; produces yes/no. Pure: the runner and the status-mail round apply
these and tell the store what to write (`gateway.store.api`), so that the rule is the same
whatever database is behind the store, and testable without one.
"""

from __future__ import annotations

MAX_CRASHES = 5  # attempts that ended in a crash before a notice is parked for a person


def parked_after(crashes: int) -> bool:
    """Whether a notice that has now crashed `crashes` times is parked for a person: a notice
    that keeps crashing the gateway must stop being tried, but is never dropped."""
    return crashes >= MAX_CRASHES


def erase_notice(state: str) -> bool:
    """Whether a finished notice's ciphertext and its children's sealed data go. Delivered:
    the school has it, and a copy kept here would only wait for the day its recipients' keys
    leak. Failed: kept (sealed), so that an administrator can still route the child elsewhere
    or queue it again."""
    return state == "delivered"


def erase_status_mail(state: str) -> bool:
    """Whether a finished status mail's ciphertext goes: once sent (the sender has it)."""
    return state == "sent"


def lease_is_dead(owner: str | None, until: str, now: str, node: str) -> bool:
    """Whether a lease found held at start-up may be released: it expired (`until` before
    `now`, both `records.iso` text), it has no owner (written before leases carried one, by
    a single node), or its owner is a process of this host (`host:pid`) other than this one:
    that process is gone, since only one daemon runs per host and database (the instance
    lock). A live lease of another node is left to that node."""
    if until < now or owner is None:
        return True
    host, _, pid = owner.rpartition(":")
    this_host, _, this_pid = node.rpartition(":")
    return host == this_host and pid != this_pid
