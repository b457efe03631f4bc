"""What every stage of a running gateway shares: config, store, gpg, vault, clock, directory.

Built once by `open_context` (for the daemon, the demo and the command line alike) and closed
with `close`. The directory snapshot is replaced, never mutated: a stage that took it keeps a
consistent view for the whole message it works on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from gateway.core.config import Config
from gateway.crypto.custody import read_passphrase
from gateway.crypto.gpg import MAX_PLAINTEXT_FACTOR, Gpg
from gateway.crypto.vault import Vault
from gateway.observe.pulse import Pulse
from gateway.pipeline.directory import Snapshot, load_snapshot
from gateway.pipeline.intake import protect_sender_ref
from gateway.store.api import Store
from gateway.store.chainkey import open_store

Clock = Callable[[], dt.datetime]

# A key can expire while nothing else changes: re-read the directory at least this often.
SNAPSHOT_MAX_AGE = dt.timedelta(minutes=5)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class Context:
    config: Config
    store: Store
    gpg: Gpg
    vault: Vault
    clock: Clock = utc_now
    snapshot: Snapshot = field(default_factory=lambda: Snapshot("", utc_now()))
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # new work for the sealing
    sealed: asyncio.Event = field(default_factory=asyncio.Event)  # new work for the delivery
    # One status-mail round at a time per process: the daemon's loop and a `drain` (demo,
    # tests) on the same context would otherwise both send a signal's status mail.
    reporting: asyncio.Lock = field(default_factory=asyncio.Lock)
    pulse: Pulse = field(default_factory=Pulse)  # the loops' liveness, for the watchdog

    def today(self) -> dt.date:
        """The calendar date where the schools are, for plausibility checks of birth dates."""
        return self.clock().astimezone(zoneinfo.ZoneInfo(self.config.schedule.timezone)).date()

    async def refresh(self, force: bool = False) -> Snapshot:
        """Reload the directory when the command line changed it, or when it is old."""
        now = self.clock()
        stale = now - self.snapshot.loaded_at > SNAPSHOT_MAX_AGE
        if force or stale or await self.store.directory.version() != self.snapshot.version:
            self.snapshot = await load_snapshot(self.store, self.gpg, now,
                                                self.config.alerts.key, self.config.web)
        return self.snapshot

    async def close(self) -> None:
        await self.store.close()


async def open_context(config: Config, clock: Clock = utc_now) -> Context:
    gpg = Gpg(config.gnupg_home, binary=config.keys.gpg_binary,
              timeout=config.keys.gpg_timeout_seconds, passphrase=read_passphrase(config),
              max_plaintext=MAX_PLAINTEXT_FACTOR * config.smtp.max_message_bytes)
    vault = Vault.load(config.secrets_dir)
    store = await open_store(config.storage.path, config.secrets_dir)
    ctx = Context(config, store, gpg, vault, clock)
    try:
        # Here, not in Store.open: only the context holds both the database and the vault.
        await store.protect_sender_refs(partial(protect_sender_ref, vault))
        await ctx.refresh(force=True)
    except Exception:
        await store.close()
        raise
    return ctx
