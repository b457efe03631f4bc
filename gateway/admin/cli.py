"""`hwc-gateway [--config PATH] VERB ...`: the one command (SPEC §7).

Parses arguments, loads the config, opens the context, calls the verb in `admin` (or the daemon,
or the demo) and prints. Exit 0 on success, 1 on a refused operation with a one-line reason, 2 on
usage errors. Read-only verbs change nothing; every verb that changes state says what changed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from gateway.admin import verbs as admin
from gateway.admin.verbs import Refused, dumps
from gateway.core.config import Config, ConfigError, config_warnings, load_config
from gateway.core.fields import parse_date
from gateway.core.inert import inert
from gateway.core.timetext import local_times
from gateway.crypto.custody import CustodyError, custody_problems
from gateway.crypto.vault import VaultError
from gateway.observe.logs import configure
from gateway.pipeline.context import Context, open_context, utc_now
from gateway.service import preflight, retention
from gateway.service.statelock import StateLock, StateLocked
from gateway.store.api import StoreError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hwc-gateway",
        description="Secure mail gateway for Handle with Care signals.")
    p.add_argument("--config", default=os.environ.get("HWC_GATEWAY_CONFIG", "config.toml"),
                   help="configuration file (default: $HWC_GATEWAY_CONFIG or ./config.toml)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    verbs.add_parser("serve", help="run the daemon in the foreground")
    verbs.add_parser("check-config", help="validate the config and what serve needs (state "
                                          "directory, database, keys, ports); report every "
                                          "problem")
    verbs.add_parser("demo", help="a self-contained run on temporary state")
    status = verbs.add_parser("status", help="is everything all right? (exit 1 if not)")
    status.add_argument("--json", action="store_true")

    keys = verbs.add_parser("keys", help="the gateway's keys").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    init = keys.add_parser("init", help="create the gateway key, dev TLS pair and secrets")
    init.add_argument("--if-missing", action="store_true",
                      help="say nothing when everything exists already")
    kexport = keys.add_parser("export", help="print the gateway's public key for senders")
    kexport.add_argument("--all", action="store_true",
                         help="also the previous key(s) still in their overlap")
    krotate = keys.add_parser("rotate", help="new gateway key for signing now; the old one "
                                             "still decrypts for the overlap")
    krotate.add_argument("--overlap-days", type=int, default=30, metavar="N",
                         help="days the old key still opens signals (default 30)")
    kretire = keys.add_parser("retire", help="stop using an old gateway key")
    kretire.add_argument("fingerprint", metavar="FPR")
    kupdate = keys.add_parser("update", help="take in updates (revocation, expiry, subkeys) of "
                                             "keys already pinned")
    kupdate.add_argument("file")
    kalerts = keys.add_parser("pin-alerts", help="pin the key alerts are encrypted to "
                                                 "([alerts] key)")
    kalerts.add_argument("file")
    klist = keys.add_parser("list", help="every key with owner, capabilities, expiry, state")
    klist.add_argument("--expiring-within", type=int, metavar="DAYS")
    klist.add_argument("--json", action="store_true")

    senders = verbs.add_parser("senders", help="sender organisations").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    sadd = senders.add_parser("add", help="register a sender organisation")
    sadd.add_argument("name")
    sadd.add_argument("--key", required=True, metavar="FILE", help="the sender's public key")
    sadd.add_argument("--fingerprint", required=True, metavar="FPR")
    sadd.add_argument("--password-stdin", action="store_true",
                      help="read the SMTP password from standard input (else prompt, unless "
                           "--client-cert is given)")
    sadd.add_argument("--no-status-mail", action="store_true",
                      help="do not mail this sender the status of its signals (sent by default "
                           "to its first --allow-from address, encrypted to its key)")
    sadd.add_argument("--client-cert", action="append", default=[], metavar="SHA256-FPR",
                      help="authenticate the sender by this TLS client certificate "
                           "(needs [smtp] client_ca_file)")
    sadd.add_argument("--allow-from", nargs="+", default=[], metavar="ADDR",
                      help="envelope sender addresses this sender may use")
    sak = senders.add_parser("add-key", help="pin a second key (the sender rotates)")
    sak.add_argument("name")
    sak.add_argument("--key", required=True, metavar="FILE")
    sak.add_argument("--fingerprint", required=True, metavar="FPR")
    srk = senders.add_parser("remove-key", help="stop accepting one of a sender's keys")
    srk.add_argument("name")
    srk.add_argument("fingerprint", metavar="FPR")
    sunlock = senders.add_parser("unlock", help="lift a sender's AUTH lockout (too many "
                                                "failed logins)")
    sunlock.add_argument("name")
    slist = senders.add_parser("list", help="registered senders")
    slist.add_argument("--json", action="store_true")
    srem = senders.add_parser("remove", help="remove a sender")
    srem.add_argument("name")

    schools = verbs.add_parser("schools", help="the school directory").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    duo = schools.add_parser("import-duo", help="load school names and codes from DUO's CSV")
    duo.add_argument("file")
    duo.add_argument("--accept-refused", action="store_true",
                     help="import the valid rows even when some are refused (else a refused "
                          "row refuses the whole file)")
    scadd = schools.add_parser("add", help="onboard a school contact with its pinned key")
    scadd.add_argument("code")
    scadd.add_argument("--name", help="school name (needed when the code is not imported)")
    scadd.add_argument("--email", required=True, metavar="ADDR")
    scadd.add_argument("--key", required=True, metavar="FILE")
    scadd.add_argument("--fingerprint", required=True, metavar="FPR")
    scadd.add_argument("--route", metavar="HOST:PORT", help="the school's own mail server")
    setkey = schools.add_parser("set-key", help="replace a contact's key")
    setkey.add_argument("code")
    setkey.add_argument("--email", required=True, metavar="ADDR")
    setkey.add_argument("--key", required=True, metavar="FILE")
    setkey.add_argument("--fingerprint", required=True, metavar="FPR")
    setcontact = schools.add_parser("set-contact", help="change a contact's address (the key "
                                                        "stays)")
    setcontact.add_argument("code")
    setcontact.add_argument("--email", required=True, metavar="ADDR", help="the address now")
    setcontact.add_argument("--new-email", required=True, metavar="ADDR")
    rmcontact = schools.add_parser("remove-contact", help="remove one contact and its key")
    rmcontact.add_argument("code")
    rmcontact.add_argument("--email", required=True, metavar="ADDR")
    sclist = schools.add_parser("list", help="schools with their contacts")
    sclist.add_argument("--json", action="store_true")
    scrm = schools.add_parser("remove", help="remove a school and its contacts")
    scrm.add_argument("code")

    pupils = verbs.add_parser("pupils", help="the pupil register").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    pimp = pupils.add_parser("import", help="replace the register (bsn;naam;geboortedatum;"
                                            "vestigingscode)")
    pimp.add_argument("file")
    pimp.add_argument("--force", action="store_true",
                      help="allow an import that removes more than half of the register")
    pimp.add_argument("--accept-refused", action="store_true",
                      help="replace the register without the refused rows (else a refused row "
                           "refuses the whole file and the register stays as it is)")

    held = verbs.add_parser("held", help="children the gateway could not route").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    hlist = held.add_parser("list", help="held children (no names)")
    hlist.add_argument("--json", action="store_true")
    hshow = held.add_parser("show", help="decrypt one held child (recorded as a receipt)")
    hshow.add_argument("id")
    hshow.add_argument("--json", action="store_true")
    hroute = held.add_parser("route", help="send a held child to a school")
    hroute.add_argument("id")
    hroute.add_argument("--school", required=True, metavar="CODE")
    hdrop = held.add_parser("drop", help="drop a held child and erase its data")
    hdrop.add_argument("id")
    hdrop.add_argument("--reason", required=True)

    purge = verbs.add_parser("purge", help="apply the [retention] settings now")
    purge.add_argument("--dry-run", action="store_true", help="only show what would go")

    queue = verbs.add_parser("queue", help="notices not yet delivered").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    qlist = queue.add_parser("list", help="notices waiting, with attempts and next try")
    qlist.add_argument("--failed", action="store_true",
                       help="the failed and parked notices instead (to `queue retry`)")
    qlist.add_argument("--json", action="store_true")
    qretry = queue.add_parser("retry", help="queue a failed or parked notice again, or try a "
                                            "waiting one now")
    qretry.add_argument("id", metavar="ID", help="the notice number `queue list` shows")

    receipts = verbs.add_parser("receipts", help="the receipt log").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    rlist = receipts.add_parser("list", help="receipts, oldest first")
    rlist.add_argument("--since", metavar="T", help="ISO date or time (UTC)")
    rlist.add_argument("--json", action="store_true")
    receipts.add_parser("verify", help="check the keyed chain; name each receipt that breaks")
    rfind = receipts.add_parser("find", help="receipts about one child, by pseudonym")
    rfind.add_argument("--name", required=True)
    rfind.add_argument("--birthdate", required=True, metavar="D")
    rfind.add_argument("--json", action="store_true")
    _config_after_the_verb(p)
    return p


def _config_after_the_verb(parser: argparse.ArgumentParser) -> None:
    """Every verb and action also takes `--config` (`hwc-gateway status --config x.toml`), as
    git and systemctl take their options on either side of the verb. SUPPRESS: a sub-parser
    that was not given it leaves the value from before the verb (or the default) alone."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH",
                                 help="configuration file (also accepted before the verb)")
                _config_after_the_verb(sub)


def _say(text: str, file: TextIO | None = None) -> None:
    """Print for a person: every line made inert (gateway.core.inert), since school servers'
    replies, DUO names, file names and sender names reach these lines (issue 11). Our own
    line breaks stay; one inside a value is shown as `\\x0a` where `_table` made it a cell."""
    print("\n".join(inert(line) for line in text.split("\n")), file=file)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[("" if r.get(c) is None else inert(str(r.get(c)))) for c in columns]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _listing(rows: list[dict[str, Any]], columns: Sequence[str], as_json: bool,
             zone: str | None = None) -> str:
    """`--json` as stored (times ISO UTC), else a table with times in `zone` (core.timetext)."""
    if as_json:
        return dumps(rows)
    return _table(local_times(rows, zone) if zone else rows, columns)


RECEIPT_COLUMNS = ("seq", "at", "event", "ref", "school")


def _receipts(rows: list[dict[str, Any]], as_json: bool, zone: str) -> str:
    """One line per receipt: its columns, then all else it holds as `key=value` pairs (the
    school server's reply, the rule, the held reason, fingerprints): what `--json` shows."""
    if as_json:
        return dumps(rows)
    shown = [{**{c: r.get(c) for c in RECEIPT_COLUMNS},
              "detail": pairs_text({k: v for k, v in r.items() if k not in RECEIPT_COLUMNS})}
             for r in local_times(rows, zone)]
    return _table(shown, [*RECEIPT_COLUMNS, "detail"])


def pairs_text(detail: dict[str, Any]) -> str:
    """`key=value` pairs, in the receipt's order. A value with a space, a quote or an `=` (an
    SMTP reply, a local time) is put in double quotes, its `"` and `\\` escaped, so the pairs
    read back unambiguously; lists are joined by commas, None is `-`. Control characters, a line
    break among them, are left to the caller's `inert` (`_table`), which keeps it one line."""
    def text(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list | tuple):
            return ",".join(text(v) for v in value) or "-"
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return str(value)

    def quoted(value: Any) -> str:
        shown = text(value)
        if not shown or any(c.isspace() or c in '"=' for c in shown):
            return '"' + shown.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return shown

    return " ".join(f"{key}={quoted(value)}" for key, value in detail.items())


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("SMTP password for the sender: ")
    if getpass.getpass("again: ") != first:
        raise Refused("the passwords differ")
    return first


def _listener_attention(status: admin.Status, listener: preflight.Listener) -> None:
    """Something answers, but not this gateway: `status` says so instead of "not answering"."""
    if listener.problem is None:
        return
    status.data["listener"]["problem"] = listener.problem
    # admin.status said "the listener is not answering": true of ours, but something answers.
    at = next((i for i, a in enumerate(status.attention) if "listener" in a), None)
    if at is None:
        status.attention.insert(0, listener.problem)
    else:
        status.attention[at] = listener.problem


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


def _since(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Refused("--since must be an ISO date or time, e.g. 2026-11-28") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


async def _run_verb(args: argparse.Namespace, config: Config) -> int:
    verb, action = args.verb, getattr(args, "action", None)

    if verb == "keys" and action == "init":
        done = await admin.keys_init(config, utc_now())
        if not (args.if_missing and all("already present" in d for d in done)):
            _say("\n".join(done))
        return EXIT_OK

    async def run(ctx: Context) -> int:
        out: str
        if verb == "status":
            listener = await asyncio.to_thread(preflight.listener, config)
            st = await admin.status(ctx, listener.ours)
            _listener_attention(st, listener)
            if args.json:
                _say(dumps(st.data))
            else:
                d = local_times(st.data, config.schedule.timezone)
                _say(f"listener  {d['listener']['address']}: "
                      f"{'up' if d['listener']['up'] else 'DOWN'}"
                      + (f" ({listener.problem})" if listener.problem else ""))
                _say(f"queue     {d['queued']} waiting (oldest since {d['oldest_queued'] or '-'})")
                _say(f"held      {d['held']} children")
                nd = d["next_deadline"]
                _say("deadline  " + (f"{nd['ref']} due {nd['deadline']} ({nd['time_left']} left)"
                                      if nd else "nothing waiting"))
                _say(f"escalated {len(d['escalated'])}; unacknowledged notices "
                      f"{d['unacknowledged']}")
                last = d["last_delivery"]
                _say("delivered " + (f"last at {last['at']} ({last['ref']} to {last['school']})"
                                      if last else "nothing yet"))
                _say(f"counts    {', '.join(f'{k}={v}' for k, v in sorted(d['counts'].items()))}")
                for key in d["gateway_keys"]:
                    until = (f", opens signals until {key['overlap_until']}"
                             if key["overlap_until"] else "")
                    _say(f"key       {key['fingerprint']} ({key['state']}{until})")
                if not d["gateway_keys"]:
                    _say("key       none")
                _say(f"receipts  {d['receipts']}")
                _say("attention " + ("\n          ".join(st.attention) if st.attention
                                      else "none"))
            return EXIT_REFUSED if st.attention else EXIT_OK
        if verb == "keys":
            if action == "export":
                out = admin.keys_export(ctx, args.all)
            elif action == "rotate":
                out = await admin.keys_rotate(ctx, args.overlap_days)
            elif action == "retire":
                out = await admin.keys_retire(ctx, args.fingerprint)
            elif action == "update":
                out = await admin.keys_update(ctx, admin.read_file(args.file))
            elif action == "pin-alerts":
                out = await admin.keys_pin_alerts(ctx, admin.read_file(args.file))
            else:
                out = _listing(await admin.keys_list(ctx, ctx.clock(), args.expiring_within),
                               ["fingerprint", "owner", "capabilities", "expires", "state"],
                               args.json, config.schedule.timezone)
        elif verb == "senders":
            if action == "add":
                password = (None if args.client_cert and not args.password_stdin
                            else _password(args.password_stdin))
                out = await admin.senders_add(ctx, args.name, admin.read_file(args.key),
                                              args.fingerprint, password, args.allow_from,
                                              args.client_cert, not args.no_status_mail)
            elif action == "add-key":
                out = await admin.senders_add_key(ctx, args.name, admin.read_file(args.key),
                                                  args.fingerprint)
            elif action == "remove-key":
                out = await admin.senders_remove_key(ctx, args.name, args.fingerprint)
            elif action == "remove":
                out = await admin.senders_remove(ctx, args.name)
            elif action == "unlock":
                out = await admin.senders_unlock(ctx, args.name)
            else:
                rows = await admin.senders_list(ctx)
                out = dumps(rows) if args.json else _table(
                    [{**r, "keys": " ".join(k["fingerprint"] + ("" if k["usable"] else "(unusable)")
                                            for k in r["keys"]),
                      "allow_from": " ".join(r["allow_from"])}
                     for r in local_times(rows, config.schedule.timezone)],
                    ["name", "keys", "allow_from", "created"])
        elif verb == "schools":
            if action == "import-duo":
                out = await admin.schools_import_duo(ctx, admin.read_file(args.file),
                                                     args.accept_refused)
            elif action == "add":
                out = await admin.schools_add(ctx, args.code, args.name, args.email,
                                              admin.read_file(args.key), args.fingerprint,
                                              args.route)
            elif action == "set-key":
                out = await admin.schools_set_key(ctx, args.code, args.email,
                                                  admin.read_file(args.key), args.fingerprint)
            elif action == "remove":
                out = await admin.schools_remove(ctx, args.code)
            elif action == "set-contact":
                out = await admin.schools_set_contact(ctx, args.code, args.email, args.new_email)
            elif action == "remove-contact":
                out = await admin.schools_remove_contact(ctx, args.code, args.email)
            else:
                rows = await admin.schools_list(ctx)
                out = dumps(rows) if args.json else _table(
                    [{**r, "contacts": " ".join(
                        c["email"] + ("" if c["usable"] else "(no usable key)")
                        for c in r["contacts"])} for r in rows],
                    ["code", "name", "place", "route", "contacts"])
        elif verb == "pupils":
            out = await admin.pupils_import(ctx, admin.read_file(args.file), args.force,
                                            args.accept_refused)
        elif verb == "held":
            if action == "list":
                out = _listing(await admin.held_list(ctx),
                               ["id", "reason", "school", "age_minutes", "deadline", "time_left"],
                               args.json, config.schedule.timezone)
            elif action == "show":
                shown = await admin.held_show(ctx, args.id)
                out = dumps(shown) if args.json else _show_held(shown)
            elif action == "route":
                out = await admin.held_route(ctx, args.id, args.school)
            else:
                out = await admin.held_drop(ctx, args.id, args.reason)
        elif verb == "queue" and action == "retry":
            out = await admin.queue_retry(ctx, args.id)
        elif verb == "queue":
            states = ("failed", "parked") if args.failed else ("queued",)
            out = _listing(await admin.queue_list(ctx, states),
                           ["notice", "ref", "school", *(["state"] if args.failed else []),
                            "attempts", "next_attempt", "time_left", "last_reply"], args.json,
                           config.schedule.timezone)
        elif verb == "purge":
            out = "\n".join((await retention.purge(ctx, ctx.clock(), args.dry_run)).lines())
        elif verb == "receipts":
            if action == "verify":
                count, problems = await admin.receipts_verify(ctx.store)
                if problems:
                    _say("\n".join(problems))
                    _say(f"receipt chain BROKEN: {len(problems)} problems in {count} receipts")
                    return EXIT_REFUSED
                out = f"receipt chain intact: {count} receipts"
            elif action == "find":
                birthdate = parse_date(args.birthdate)
                if birthdate is None:
                    raise Refused("--birthdate must be a date like 12-04-2016 or 2016-04-12")
                out = _receipts(await admin.receipts_find(ctx, args.name, birthdate),
                                args.json, config.schedule.timezone)
            else:
                out = _receipts(await admin.receipts_list(ctx, _since(args.since)),
                                args.json, config.schedule.timezone)
        else:  # pragma: no cover - argparse allows nothing else
            raise Refused(f"unknown verb {verb}")
        _say(out)
        return EXIT_OK

    return await _with_context(config, run)


def _show_held(shown: dict[str, Any]) -> str:
    lines = [f"{shown['id']}  held: {shown['reason']}",
             f"  name:        {shown['name']}",
             f"  birthdate:   {shown['birthdate']}",
             f"  bsn:         {shown['bsn'] or '-'}",
             f"  school hint: {shown['school_hint'] or '-'}",
             "  candidates in the register:"]
    lines += [f"    {c['school']} {c['school_name']}: {c['name']} ({c['birthdate']}; {c['why']})"
              for c in shown["candidates"]] or ["    none"]
    return "\n".join(lines)


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
    problem = preflight.storage_problem(config.storage.path)
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


def main(argv: Sequence[str] | None = None) -> int:
    # Everything this process (and the gpg it runs) writes is for the service user alone; gpg
    # rewrites its keyrings with the process umask (systemd sets UMask=0077 as well).
    os.umask(0o077)
    parser = build_parser()
    args = parser.parse_args(argv)
    configure()
    if args.verb == "demo":
        from gateway.devkit.demo import run_demo
        return run_demo()
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
    if args.verb == "check-config":
        return _check_config(config)
    if args.verb == "serve":
        return _serve(config)
    try:
        return asyncio.run(_run_verb(args, config))
    except Refused as exc:
        _say(f"hwc-gateway: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
