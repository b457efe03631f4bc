"""What each `hwc-gateway VERB ACTION` does with an open context, and how it shows the result.

Takes the parsed arguments (`gateway.admin.parser`), the config and an open `Context`; calls
the verb in its module of `gateway.admin` (`keys`, `senders`, `schools`, `pupils`, `held`,
`queue`, `receipts`, `status`) and turns its answer into lines for a person (tables, with
times in the configured zone) or JSON (`--json`, as stored). `HANDLERS` maps (verb, action) to
its handler: a handler returns the text to print (exit 0) or prints itself and returns the exit
code. Fails: `Refused` with a one-line reason, which `gateway.admin.cli` prints (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from gateway.admin.common import Refused, read_file
from gateway.admin.held import held_drop, held_list, held_route, held_show
from gateway.admin.keys import (
    keys_export,
    keys_list,
    keys_pin_alerts,
    keys_retire,
    keys_rotate,
    keys_update,
)
from gateway.admin.pupils import pupils_import
from gateway.admin.queue import (
    PICKUP_COLUMNS,
    PICKUP_SECTION,
    pickup_list,
    queue_list,
    queue_retry,
)
from gateway.admin.receipts import receipts_find, receipts_list, receipts_verify
from gateway.admin.schools import (
    PICKUP,
    schools_add,
    schools_add_pickup,
    schools_import_duo,
    schools_list,
    schools_reenrol,
    schools_remove,
    schools_remove_contact,
    schools_set_contact,
    schools_set_key,
)
from gateway.admin.senders import (
    senders_add,
    senders_add_key,
    senders_list,
    senders_remove,
    senders_remove_key,
    senders_unlock,
)
from gateway.admin.status import Status, pickup_lines, status
from gateway.core.config import Config
from gateway.core.fields import parse_date
from gateway.core.inert import inert, inert_json
from gateway.core.timetext import local_time_text, local_times
from gateway.pipeline.context import Context
from gateway.service import preflight, retention

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2

Handler = Callable[[Context, argparse.Namespace, Config], Awaitable[str | int]]


def _say(text: str, file: TextIO | None = None) -> None:
    """Print for a person: every line made inert (gateway.core.inert), since school servers'
    replies, DUO names, file names and sender names reach these lines (issue 11). Our own
    line breaks stay; one inside a value is shown as `\\x0a` where `_table` made it a cell."""
    print("\n".join(inert(line) for line in text.split("\n")), file=file)


def dumps(value: Any) -> str:
    """JSON for `--json`: strings escaped as JSON does, plus the DEL, C1, bidi and zero-width
    characters it would leave raw (gateway.core.inert), so that no value steers a terminal."""
    return inert_json(json.dumps(value, ensure_ascii=False, indent=2, default=str))


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


def _listener_attention(status: Status, listener: preflight.Listener) -> None:
    """Something answers, but not this gateway: `status` says so instead of "not answering"."""
    if listener.problem is None:
        return
    status.data["listener"]["problem"] = listener.problem
    # `status` said "the listener is not answering": true of ours, but something answers.
    at = next((i for i, a in enumerate(status.attention) if "listener" in a), None)
    if at is None:
        status.attention.insert(0, listener.problem)
    else:
        status.attention[at] = listener.problem


def _since(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Refused("--since must be an ISO date or time, e.g. 2026-11-28") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


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


# -- status -----------------------------------------------------------------------------------

async def _status(ctx: Context, args: argparse.Namespace, config: Config) -> int:
    listener = await asyncio.to_thread(preflight.listener, config)
    st = await status(ctx, listener.ours)
    _listener_attention(st, listener)
    if args.json:
        _say(dumps(st.data))
    else:
        _status_lines(st, listener, config)
    return EXIT_REFUSED if st.attention else EXIT_OK


def _status_lines(st: Status, listener: preflight.Listener, config: Config) -> None:
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
    for line in pickup_lines(d):
        _say(line)
    _say("attention " + ("\n          ".join(st.attention) if st.attention
                          else "none"))


# -- keys, senders, schools -------------------------------------------------------------------

async def _keys_export(ctx: Context, args: argparse.Namespace, config: Config) -> str:
    return keys_export(ctx, args.all)


async def _keys_list(ctx: Context, args: argparse.Namespace, config: Config) -> str:
    return _listing(await keys_list(ctx, ctx.clock(), args.expiring_within),
                    ["fingerprint", "owner", "capabilities", "expires", "state"],
                    args.json, config.schedule.timezone)


async def _senders_add(ctx: Context, args: argparse.Namespace, config: Config) -> str:
    password = (None if args.client_cert and not args.password_stdin
                else _password(args.password_stdin))
    return await senders_add(ctx, args.name, read_file(args.key),
                       args.fingerprint, password, args.allow_from,
                       args.client_cert, not args.no_status_mail)


async def _senders_list(ctx: Context, args: argparse.Namespace, config: Config) -> str:
    rows = await senders_list(ctx)
    return dumps(rows) if args.json else _table(
        [{**r, "keys": " ".join(k["fingerprint"] + ("" if k["usable"] else "(unusable)")
                                for k in r["keys"]),
          "allow_from": " ".join(r["allow_from"])}
         for r in local_times(rows, config.schedule.timezone)],
        ["name", "keys", "allow_from", "created"])


async def _schools_add(ctx: Context, args: argparse.Namespace, config: Config) -> str:
    if args.pickup:
        if args.key is not None or args.fingerprint is not None:
            raise Refused("--pickup is for a contact without a key: leave out --key and "
                          "--fingerprint")
        return await schools_add_pickup(ctx, args.code, args.name, args.email, args.route)
    if args.key is None or args.fingerprint is None:
        raise Refused("give --key FILE and --fingerprint FPR (a contact with an OpenPGP key), "
                      "or --pickup (a contact who reads notices on the pickup page)")
    return await schools_add(ctx, args.code, args.name, args.email,
                             read_file(args.key), args.fingerprint,
                             args.route)


def _contact_text(contact: dict[str, Any], zone: str) -> str:
    """A contact in `schools list`: its address, as before for a key's, with its channel and
    enrolment for a pickup contact."""
    if contact["channel"] != PICKUP:
        return str(contact["email"]) + ("" if contact["usable"] else "(no usable key)")
    state = contact["enrolment"]
    if state == "enrolled":
        names = {"passkey": "passkey", "totp": "app"}
        text = f"enrolled ({', '.join(names.get(k, k) for k in contact['second_factors'])})"
    elif state == "invited":
        text = f"invited until {local_time_text(contact['invited_until'], zone)}"
    else:
        text = "invitation expired" if state == "expired" else "not invited"
    usable = "" if contact["usable"] or state != "enrolled" else ", not usable"
    return f"{contact['email']}(pickup: {text}{usable})"


async def _schools_list(ctx: Context, args: argparse.Namespace, config: Config) -> str:
    rows = await schools_list(ctx)
    zone = config.schedule.timezone
    return dumps(rows) if args.json else _table(
        [{**r, "contacts": " ".join(_contact_text(c, zone) for c in r["contacts"])}
         for r in rows],
        ["code", "name", "place", "route", "contacts"])


# -- held, queue, purge, receipts -------------------------------------------------------------

async def _held_list(ctx: Context, args: argparse.Namespace, config: Config) -> str:
    return _listing(await held_list(ctx),
                    ["id", "reason", "school", "age_minutes", "deadline", "time_left"],
                    args.json, config.schedule.timezone)


async def _held_show(ctx: Context, args: argparse.Namespace, config: Config) -> str:
    shown = await held_show(ctx, args.id)
    return dumps(shown) if args.json else _show_held(shown)


async def _queue_list(ctx: Context, args: argparse.Namespace, config: Config) -> str:
    states = ("failed", "parked") if args.failed else ("queued",)
    rows = await queue_list(ctx, states)
    waiting = [] if args.failed else await pickup_list(ctx)
    if args.json:
        return dumps(rows + waiting)
    text = _listing(rows, ["notice", "ref", "school", *(["state"] if args.failed else []),
                           "attempts", "next_attempt", "time_left", "last_reply"], False,
                    config.schedule.timezone)
    if waiting:
        text += f"\n\n{PICKUP_SECTION}\n" + _listing(waiting, PICKUP_COLUMNS, False,
                                                     config.schedule.timezone)
    return text


async def _purge(ctx: Context, args: argparse.Namespace, config: Config) -> str:
    return "\n".join((await retention.purge(ctx, ctx.clock(), args.dry_run)).lines())


async def _receipts_verify(ctx: Context, args: argparse.Namespace, config: Config) -> str | int:
    count, problems = await receipts_verify(ctx.store)
    if problems:
        _say("\n".join(problems))
        _say(f"receipt chain BROKEN: {len(problems)} problems in {count} receipts")
        return EXIT_REFUSED
    return f"receipt chain intact: {count} receipts"


async def _receipts_find(ctx: Context, args: argparse.Namespace, config: Config) -> str:
    birthdate = parse_date(args.birthdate)
    if birthdate is None:
        raise Refused("--birthdate must be a date like 12-04-2016 or 2016-04-12")
    return _receipts(await receipts_find(ctx, args.name, birthdate),
                     args.json, config.schedule.timezone)


async def _receipts_list(ctx: Context, args: argparse.Namespace, config: Config) -> str:
    return _receipts(await receipts_list(ctx, _since(args.since)),
                     args.json, config.schedule.timezone)


# Every (verb, action) but `keys init`, which runs without a context (gateway.admin.cli).
HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("status", None): _status,
    ("keys", "export"): _keys_export,
    ("keys", "rotate"): lambda ctx, args, _: keys_rotate(ctx, args.overlap_days),
    ("keys", "retire"): lambda ctx, args, _: keys_retire(ctx, args.fingerprint),
    ("keys", "update"): lambda ctx, args, _: keys_update(
        ctx, read_file(args.file)),
    ("keys", "pin-alerts"): lambda ctx, args, _: keys_pin_alerts(
        ctx, read_file(args.file)),
    ("keys", "list"): _keys_list,
    ("senders", "add"): _senders_add,
    ("senders", "add-key"): lambda ctx, args, _: senders_add_key(
        ctx, args.name, read_file(args.key), args.fingerprint),
    ("senders", "remove-key"): lambda ctx, args, _: senders_remove_key(
        ctx, args.name, args.fingerprint),
    ("senders", "remove"): lambda ctx, args, _: senders_remove(ctx, args.name),
    ("senders", "unlock"): lambda ctx, args, _: senders_unlock(ctx, args.name),
    ("senders", "list"): _senders_list,
    ("schools", "import-duo"): lambda ctx, args, _: schools_import_duo(
        ctx, read_file(args.file), args.accept_refused),
    ("schools", "add"): _schools_add,
    ("schools", "set-key"): lambda ctx, args, _: schools_set_key(
        ctx, args.code, args.email, read_file(args.key), args.fingerprint),
    ("schools", "remove"): lambda ctx, args, _: schools_remove(ctx, args.code),
    ("schools", "set-contact"): lambda ctx, args, _: schools_set_contact(
        ctx, args.code, args.email, args.new_email),
    ("schools", "remove-contact"): lambda ctx, args, _: schools_remove_contact(
        ctx, args.code, args.email),
    ("schools", "reenrol"): lambda ctx, args, _: schools_reenrol(ctx, args.code, args.email),
    ("schools", "list"): _schools_list,
    ("pupils", "import"): lambda ctx, args, _: pupils_import(
        ctx, read_file(args.file), args.force, args.accept_refused),
    ("held", "list"): _held_list,
    ("held", "show"): _held_show,
    ("held", "route"): lambda ctx, args, _: held_route(ctx, args.id, args.school),
    ("held", "drop"): lambda ctx, args, _: held_drop(ctx, args.id, args.reason),
    ("queue", "list"): _queue_list,
    ("queue", "retry"): lambda ctx, args, _: queue_retry(ctx, args.id),
    ("purge", None): _purge,
    ("receipts", "verify"): _receipts_verify,
    ("receipts", "find"): _receipts_find,
    ("receipts", "list"): _receipts_list,
}
