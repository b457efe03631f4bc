"""`hwc-gateway [--config PATH] VERB ...`: the one command.

Parses arguments (`gateway.admin.parser`), loads the config, opens the context, calls the
verb's handler (`gateway.admin.handlers`, which calls the verb's module of `gateway.admin`), the
daemon or the demo, and prints. Exit 0 on success, 1 on a refused operation with a one-line
reason, 2 on usage errors. Read-only verbs change nothing; every verb that changes state says
what changed. The demo lives in a higher layer (`gateway.devkit`): the entry point above every
layer (`gateway.__main__`) passes it in.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from gateway.admin.common import Refused
from gateway.admin.handlers import EXIT_OK, EXIT_REFUSED, HANDLERS, _say
from gateway.admin.handlers import pairs_text as pairs_text
from gateway.admin.keys import keys_init
from gateway.admin.parser import build_parser as build_parser
from gateway.core.config import Config, ConfigError, config_warnings, load_config
from gateway.crypto.custody import CustodyError, custody_problems
from gateway.crypto.keyadmin import stop_agent
from gateway.crypto.vault import VaultError
from gateway.observe.logs import configure
from gateway.pipeline.context import Context, open_context, utc_now
from gateway.service import preflight
from gateway.service.statelock import StateLock, StateLocked, holder
from gateway.store.api import StoreError


async def _open_context(config: Config) -> Context:
    """The context, or one line saying why the state cannot be opened (every verb, serve too:
    a storage path that is a directory or not a database was a traceback)."""
    problem = preflight.storage_problem(config.storage.path)
    if problem is not None:
        raise Refused(problem)
    try:
        return await open_context(config)
    except (VaultError, CustodyError) as exc:
        raise Refused(str(exc)) from None
    except StoreError as exc:
        # What storage_problem cannot see beforehand (a database damaged past its header).
        raise Refused(f"cannot open the database {config.storage.path}: {exc}") from None
    except OSError as exc:
        raise Refused(f"cannot open the state: {exc.strerror or exc}"
                      + (f": {exc.filename}" if exc.filename else "")) from None


async def _with_context(config: Config, fn: Callable[[Context], Awaitable[int]]) -> int:
    ctx = await _open_context(config)
    try:
        return await fn(ctx)
    finally:
        await ctx.close()


async def _run_verb(args: argparse.Namespace, config: Config) -> int:
    verb, action = args.verb, getattr(args, "action", None)

    if verb == "keys" and action == "init":
        done = await keys_init(config, utc_now())
        if not (args.if_missing and all("already present" in d for d in done)):
            _say("\n".join(done))
        return EXIT_OK

    handler = HANDLERS.get((verb, action))
    if handler is None:  # pragma: no cover - argparse allows nothing else
        raise Refused(f"unknown verb {verb}")

    async def run(ctx: Context) -> int:
        out = await handler(ctx, args, config)
        if isinstance(out, int):
            return out
        _say(out)
        return EXIT_OK

    return await _with_context(config, run)


def _check_config(config: Config) -> int:
    """Beyond the file and the custody of keys/: what `serve` would trip over at start."""
    found = preflight.check(config)
    if found.problems:
        _say(f"{config.path}: the gateway could not start here "
             f"({len(found.problems)} problem(s)):", file=sys.stderr)
        for problem in found.problems:
            _say(f"  {problem}", file=sys.stderr)
        return EXIT_REFUSED
    _say(f"{config.path}: configuration is valid")
    for warning in config_warnings(config):
        _say(f"  warning: {warning}")
    for note in found.notes:
        _say(f"  note: {note}")
    return EXIT_OK


def _serve(config: Config) -> int:
    """Run the daemon; what keeps it from starting is one line on stderr and exit 1 (issue 12:
    each of these was a traceback of 30 to 60 lines)."""
    problem = preflight.start_problem(config)
    try:
        if problem is not None:
            raise Refused(problem)
        lock = StateLock.acquire(config.storage.path)
    except (Refused, StateLocked) as exc:
        _say(f"hwc-gateway: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        asyncio.run(_serve_async(config))
    except Refused as exc:
        _say(f"hwc-gateway: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return EXIT_REFUSED
    finally:
        lock.release()
    return EXIT_OK


async def _serve_async(config: Config) -> None:
    from gateway.service.daemon import StartError, serve

    ctx = await _open_context(config)
    try:
        await serve(ctx)
    except StartError as exc:
        raise Refused(str(exc)) from None
    finally:
        await ctx.close()


def main(argv: Sequence[str] | None = None, demo: Callable[[], int] | None = None) -> int:
    """Run one command line; `demo` runs the `demo` verb (given by `gateway.__main__.main`)."""
    # Everything this process (and the gpg it runs) writes is for the service user alone; gpg
    # rewrites its keyrings with the process umask (systemd sets UMask=0077 as well).
    os.umask(0o077)
    parser = build_parser()
    args = parser.parse_args(argv)
    configure()
    if args.verb == "demo":
        if demo is None:
            _say("hwc-gateway: the demo runs from the installed command or `python -m gateway`",
                 file=sys.stderr)
            return EXIT_REFUSED
        return demo()
    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        _say(f"{args.config}: configuration has {len(exc.problems)} problem(s):",
              file=sys.stderr)
        for problem in exc.problems:
            _say(f"  {problem}", file=sys.stderr)
        return EXIT_REFUSED
    if args.verb in ("check-config", "serve"):
        problems = custody_problems(config)
        if problems:
            _say(f"{config.path}: the secret material is not kept safely "
                  f"({len(problems)} problem(s)):", file=sys.stderr)
            for problem in problems:
                _say(f"  {problem}", file=sys.stderr)
            return EXIT_REFUSED
    if args.verb == "serve":
        return _serve(config)
    try:
        if args.verb == "check-config":
            return _check_config(config)
        return asyncio.run(_run_verb(args, config))
    except Refused as exc:
        _say(f"hwc-gateway: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return EXIT_REFUSED
    finally:
        _let_go_of_the_keys(config)


def _let_go_of_the_keys(config: Config) -> None:
    """gpg starts an agent in the gateway's GnuPG home for a verb that uses its keys (`keys
    init` and `keys rotate` unlock the secret key), and the agent kept running after the
    command, with the key it unlocked cached. Stopped when the verb ends, unless a daemon
    serves this state: that agent is the daemon's (`serve` stops it when it ends)."""
    if config.gnupg_home.is_dir() and holder(config.storage.path) is None:
        stop_agent(config.gnupg_home)
