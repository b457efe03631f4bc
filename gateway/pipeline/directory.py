"""The directory snapshot: senders, schools, contacts and gateway keys as the pipeline sees them.

Takes the store and the gpg adapter; produces an immutable `Snapshot`, rebuilt whenever the
command line changes something (the store's directory version moves) and at least every few
minutes (a key can expire while nothing else changes). Each contact key and sender key is
checked with gpg's own listing (`gateway.core.keyinfo.key_usable`, the one key rule): a key
that is expired, revoked or cannot do its job is left out, so nothing downstream can pick it
(docs/architecture.md invariant 6). Each contact keeps its channel's name; a contact of a
keyless channel (pickup) is let through, with the contacts that have a second factor
(`enrolled`) and the page's origin (`pickup_url`) for that channel to judge. Whether a contact in
the snapshot is reachable now, and whether a notice sealed earlier may still go out, is the
channel's to say (`gateway.delivery.channel.reachable_contacts`, `Channel.still_valid`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field

from gateway.core.keyinfo import KeyInfo, Purpose, key_info, key_usable
from gateway.core.model import Contact, School, Sender
from gateway.core.records import from_iso
from gateway.core.validate import HostPort, parse_hostport
from gateway.core.webconfig import WebSection
from gateway.crypto.gpg import Gpg
from gateway.store.api import Store


@dataclass(frozen=True)
class Snapshot:
    version: str
    loaded_at: dt.datetime
    senders: dict[str, Sender] = field(default_factory=dict)
    schools: dict[str, School] = field(default_factory=dict)
    contacts: dict[str, tuple[Contact, ...]] = field(default_factory=dict)  # usable ones only
    routes: dict[str, HostPort] = field(default_factory=dict)
    signing_key: str | None = None  # the gateway's current key
    decrypt_keys: frozenset[str] = frozenset()  # keys whose signals are still opened
    alert_keys: frozenset[str] = frozenset()  # [alerts] key, when it is usable
    # When the pinned keys expire (those that do): a key can expire between two loads.
    key_expires: dict[str, dt.datetime] = field(default_factory=dict)
    # Pickup contacts (school, address) with a second factor the page accepts (a passkey, or
    # an app while `[web] allow_totp`), and the page's origin ("" when `[web]` is off).
    enrolled: frozenset[tuple[str, str]] = frozenset()
    pickup_url: str = ""


def parse_route(text: str | None) -> HostPort | None:
    """A school's stored route (`schools add --route`, checked by the same parser), or None."""
    return parse_hostport(text) if text else None


def key_infos(gpg: Gpg, fingerprints: list[str], secret: bool = False) -> dict[str, KeyInfo]:
    """gpg's view of the given keys, by primary fingerprint (missing keys are absent)."""
    if not fingerprints:
        return {}
    return {info.fingerprint: info
            for info in map(key_info, gpg.list_keys(secret=secret, fingerprints=fingerprints))}


async def load_snapshot(store: Store, gpg: Gpg, now: dt.datetime,
                        alerts_key: str = "", web: WebSection | None = None) -> Snapshot:
    version = await store.directory.version()
    sender_rows = await store.directory.senders()
    sender_keys = await store.directory.sender_keys()
    addresses = await store.directory.sender_addresses()
    certs = await store.directory.sender_certs()
    school_rows = await store.directory.schools()
    contact_rows = await store.directory.contacts()
    gateway_rows = await store.directory.gateway_keys()
    credentials = await store.pickups.credentials()

    wanted = sorted({k.fingerprint for k in sender_keys}
                    | {c.fingerprint for c in contact_rows if c.fingerprint}
                    | ({alerts_key} if alerts_key else set()))
    infos = await asyncio.to_thread(key_infos, gpg, wanted)

    def usable(fpr: str, purpose: Purpose) -> bool:
        return key_usable(infos.get(fpr), purpose, now)

    senders = {
        r.name: Sender(
            name=r.name, password_hash=r.password_hash,
            fingerprints=frozenset(k.fingerprint for k in sender_keys if k.sender == r.name
                                   and usable(k.fingerprint, "sign")),
            allowed_from=frozenset(a.address.lower() for a in addresses
                                   if a.sender == r.name),
            client_certs=frozenset(c.sha256 for c in certs if c.sender == r.name))
        for r in sender_rows}
    contacts: dict[str, list[Contact]] = {}
    for c in contact_rows:
        # A contact bound to a key (openpgp) is in only while that key is usable; a contact of
        # a keyless channel (pickup) is let through, to be judged by its channel's `reachable`.
        if c.fingerprint is None or usable(c.fingerprint, "encrypt"):
            contacts.setdefault(c.school, []).append(
                Contact(c.email, c.fingerprint or "", c.channel))
    allow_totp = web is not None and web.allow_totp
    enrolled = frozenset((c.school, c.email) for c in credentials
                         if c.kind == "passkey" or (c.kind == "totp" and allow_totp))
    schools = {r.code: School(r.code, r.name, len(contacts.get(r.code, [])))
               for r in school_rows}
    routes = {r.code: route for r in school_rows if (route := parse_route(r.route))}

    signing = next((r.fingerprint for r in gateway_rows if r.state == "current"), None)
    decrypt = frozenset(
        r.fingerprint for r in gateway_rows
        if r.state == "current" or (r.state == "previous" and r.decrypt_until
                                       and from_iso(r.decrypt_until) > now))
    alert_keys = frozenset({alerts_key} if alerts_key and usable(alerts_key, "encrypt") else ())
    expires = {fpr: info.expires for fpr, info in infos.items() if info.expires is not None}
    return Snapshot(version, now, senders, schools,
                    {k: tuple(v) for k, v in contacts.items()}, routes, signing, decrypt,
                    alert_keys, expires, enrolled,
                    web.public_url if web is not None and web.enabled else "")
