"""The argument parser of `hwc-gateway [--config PATH] VERB [ACTION] ...`: every verb, its
actions, options and help text, one function per verb group.

Takes nothing; produces the `argparse.ArgumentParser` that `gateway.admin.cli.main` uses. A
usage error is argparse's: its message and exit 2.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # What `add_subparsers` returns: the verbs (or a verb's actions) parsers are added to.
    Verbs = argparse._SubParsersAction[argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hwc-gateway",
        description="Secure mail gateway for Handle with Care signals.")
    p.add_argument("--config", default=os.environ.get("HWC_GATEWAY_CONFIG", "config.toml"),
                   help="configuration file (default: $HWC_GATEWAY_CONFIG or ./config.toml)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    _service_verbs(verbs)
    _keys(verbs)
    _senders(verbs)
    _schools(verbs)
    _pupils(verbs)
    _held(verbs)
    _queue(verbs)
    _receipts(verbs)
    _config_after_the_verb(p)
    return p


def _service_verbs(verbs: Verbs) -> None:
    """serve, check-config, demo, status."""
    verbs.add_parser("serve", help="run the daemon in the foreground")
    verbs.add_parser("check-config", help="validate the config and what serve needs (state "
                                          "directory, database, keys, ports); report every "
                                          "problem")
    verbs.add_parser("demo", help="a self-contained run on temporary state")
    status = verbs.add_parser("status", help="is everything all right? (exit 1 if not)")
    status.add_argument("--json", action="store_true")


def _keys(verbs: Verbs) -> None:
    """keys: the gateway's own keys, and updates of pinned ones."""
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


def _senders(verbs: Verbs) -> None:
    """senders: the organisations that submit signals."""
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


def _schools(verbs: Verbs) -> None:
    """schools: the directory of schools, their contacts and keys."""
    schools = verbs.add_parser("schools", help="the school directory").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    duo = schools.add_parser("import-duo", help="load school names and codes from DUO's CSV")
    duo.add_argument("file")
    duo.add_argument("--accept-refused", action="store_true",
                     help="import the valid rows even when some are refused (else a refused "
                          "row refuses the whole file)")
    scadd = schools.add_parser("add", help="onboard a school contact with its pinned key, or "
                                           "one who reads notices on the pickup page")
    scadd.add_argument("code")
    scadd.add_argument("--name", help="school name (needed when the code is not imported)")
    scadd.add_argument("--email", required=True, metavar="ADDR")
    scadd.add_argument("--key", metavar="FILE", help="the contact's public key (with "
                                                     "--fingerprint)")
    scadd.add_argument("--fingerprint", metavar="FPR")
    scadd.add_argument("--pickup", action="store_true",
                       help="no key: the contact reads notices on the pickup page ([web]); "
                            "mails it an enrolment link and prints the code to give by phone")
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
    reenrol = schools.add_parser("reenrol", help="invite a pickup contact anew (lost phone, "
                                                 "expired link): its passkeys and app stop "
                                                 "working at once")
    reenrol.add_argument("code")
    reenrol.add_argument("--email", required=True, metavar="ADDR")
    rmcontact = schools.add_parser("remove-contact", help="remove one contact and its key (or "
                                                          "its passkeys)")
    rmcontact.add_argument("code")
    rmcontact.add_argument("--email", required=True, metavar="ADDR")
    sclist = schools.add_parser("list", help="schools with their contacts (channel, and a "
                                             "pickup contact's enrolment)")
    sclist.add_argument("--json", action="store_true")
    scrm = schools.add_parser("remove", help="remove a school and its contacts")
    scrm.add_argument("code")


def _pupils(verbs: Verbs) -> None:
    """pupils: the register."""
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


def _held(verbs: Verbs) -> None:
    """held: children the gateway could not route."""
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


def _queue(verbs: Verbs) -> None:
    """purge and queue: what is kept and what waits."""
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


def _receipts(verbs: Verbs) -> None:
    """receipts: the receipt log."""
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
