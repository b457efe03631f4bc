"""The web side's test rig: a real gateway state (SQLite, vault) with `[web]` on, its pages
served on a free loopback port, a client that keeps cookies like a browser, and a software
passkey authenticator (ECDSA P-256, attestation "none") that answers WebAuthn as a security key
would, so the HTTP-level tests can run every ceremony without a browser.

Used by tests/test_web_*.py (the browser tests drive Chromium's virtual authenticator instead).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import secrets
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import cbor2
import pyotp
from conftest import FakeClock, Template, copy_gateway_state, free_port
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.crypto import pickupbox
from gateway.crypto.keyadmin import stop_agent
from gateway.observe.logs import configure
from gateway.pipeline.context import Context, open_context
from gateway.store.api import Tx
from gateway.web.app import WebServer
from gateway.web.enrol import totp_aad

SCHOOL = "12AB00"
CONTACT = "hwc@regenboog.example.nl"
OTHER = "zorg@regenboog.example.nl"
HELPDESK = "Bel de leerplichtambtenaar: 030 123 45 67."
# A child as the pickup channel seals it in the box (gateway/delivery/pickup.py).
CHILD = {"name": "Sanne Canarie de Vries", "birthdate": "2016-04-12", "ref": "HWC-TEST-1/1"}
TEACHER_TEXT = "Wees er vandaag extra voor het kind."


def web_config(port: int, extra: str = "") -> str:
    return (f'[web]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://localhost:{port}"\n'
            f'helpdesk = "{HELPDESK}"\nmax_failures = 3\nlock_minutes = 15\n{extra}\n')


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Authenticator:
    """A security key in software: one P-256 credential per registration, a counter."""

    origin: str
    keys: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)
    counter: int = 0

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge,
                           "origin": origin or self.origin, "crossOrigin": False}).encode()

    def create(self, options: dict[str, Any], origin: str | None = None) -> dict[str, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cred_id = secrets.token_bytes(16)
        numbers = key.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})
        rp_hash = hashlib.sha256(options["rp"]["id"].encode()).digest()
        auth_data = (rp_hash + bytes([0x45]) + struct.pack(">I", self.counter) + bytes(16)
                     + struct.pack(">H", len(cred_id)) + cred_id + cose)
        self.keys[b64url(cred_id)] = key
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        return {"id": b64url(cred_id), "rawId": b64url(cred_id), "type": "public-key",
                "clientExtensionResults": {}, "authenticatorAttachment": "cross-platform",
                "response": {"clientDataJSON": b64url(client_data), "transports": ["usb"],
                             "attestationObject": b64url(cbor2.dumps(
                                 {"fmt": "none", "attStmt": {}, "authData": auth_data}))}}

    def get(self, options: dict[str, Any], origin: str | None = None,
            cred_id: str | None = None) -> dict[str, Any]:
        allowed = [c["id"] for c in options.get("allowCredentials", [])]
        chosen = cred_id or next(c for c in allowed if c in self.keys)
        self.counter += 1
        rp_hash = hashlib.sha256(options["rpId"].encode()).digest()
        auth_data = rp_hash + bytes([0x05]) + struct.pack(">I", self.counter)
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = self.keys[chosen].sign(auth_data + hashlib.sha256(client_data).digest(),
                                           ec.ECDSA(hashes.SHA256()))
        return {"id": chosen, "rawId": chosen, "type": "public-key",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": b64url(client_data),
                             "authenticatorData": b64url(auth_data),
                             "signature": b64url(signature), "userHandle": None}}


class Client:
    """An HTTP client that keeps cookies as a browser does and says where its POSTs come from
    (`Origin`, as a browser sends it)."""

    def __init__(self, base: str, origin: str) -> None:
        self.base, self.origin = base, origin
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[base])
        self.session = aiohttp.ClientSession(cookie_jar=jar)

    async def get(self, path: str, **kw: Any) -> tuple[aiohttp.ClientResponse, str]:
        async with self.session.get(self.base + path, allow_redirects=False, **kw) as r:
            return r, await r.text()

    async def post(self, path: str, data: dict[str, str] | None = None, *,
                   json_body: Any = None, csrf: str | None = None,
                   headers: dict[str, str] | None = None,
                   **kw: Any) -> tuple[aiohttp.ClientResponse, str]:
        sent = {"Origin": self.origin, **(headers or {})}
        if json_body is not None:
            sent["X-CSRF-Token"] = csrf or ""
            kw["json"] = json_body
        else:
            kw["data"] = {**({"csrf": csrf} if csrf is not None else {}), **(data or {})}
        async with self.session.post(self.base + path, headers=sent, allow_redirects=False,
                                     **kw) as r:
            return r, await r.text()

    async def post_raw(self, path: str, body: bytes,
                       headers: dict[str, str]) -> tuple[aiohttp.ClientResponse, str]:
        async with self.session.post(self.base + path, data=body, allow_redirects=False,
                                     headers={"Origin": self.origin, **headers}) as r:
            return r, await r.text()

    async def close(self) -> None:
        await self.session.close()


def csrf_of(text: str) -> str:
    found = re.search(r'(?:name="csrf" value|data-csrf)="([^"]+)"', text)
    assert found is not None, "the page has no CSRF token"
    return found[1]


@dataclass
class Rig:
    ctx: Context
    server: WebServer
    clock: FakeClock
    base: str
    origin: str
    clients: list[Client] = field(default_factory=list)

    def client(self) -> Client:
        made = Client(self.base, self.origin)
        self.clients.append(made)
        return made

    async def invite(self, email: str = CONTACT, hours: int = 72) -> tuple[str, str]:
        """An invitation for a pickup contact: its link token and its phone code."""
        token, code = pickupbox.new_token(), pickupbox.new_enrolment_code()
        now, vault = self.clock(), self.ctx.vault

        async def body(tx: Tx) -> None:
            await tx.directory.set_contact(SCHOOL, email, None, "pickup")
            await tx.pickups.invite(SCHOOL, email, pickupbox.token_digest(vault, token),
                                    pickupbox.code_digest(vault, SCHOOL, email, code), now,
                                    now + dt.timedelta(hours=hours))

        await self.ctx.store.write(body)
        return token, code

    async def add_totp(self, email: str = CONTACT) -> pyotp.TOTP:
        secret = pyotp.random_base32(32)
        sealed = self.ctx.vault.seal({"secret": secret}, totp_aad(SCHOOL, email))
        now = self.clock()

        async def body(tx: Tx) -> None:
            await tx.directory.set_contact(SCHOOL, email, None, "pickup")
            await tx.pickups.add_credential(SCHOOL, email, "totp", now, secret=sealed)

        await self.ctx.store.write(body)
        return pyotp.TOTP(secret)

    async def pickup(self, recipients: Sequence[str] = (CONTACT,), hours: int = 30,
                     children: Sequence[dict[str, str]] = (CHILD,)) -> tuple[str, int]:
        """A delivered pickup notice for `recipients`: its link token and notice id."""
        token = pickupbox.new_token()
        ref, message_id = f"HWC-{secrets.token_hex(4)}", f"<{secrets.token_hex(8)}@gw>"
        box = pickupbox.seal(token, {"children": list(children), "teacher_text": TEACHER_TEXT},
                             f"pickup:{message_id}")
        now, vault = self.clock(), self.ctx.vault

        async def body(tx: Tx) -> int:
            for email in recipients:
                await tx.directory.set_contact(SCHOOL, email, None, "pickup")
            await tx.signals.insert(ref, "vt-utrecht", None, None, secrets.token_hex(8), 1, now)
            notice = await tx.notices.insert(
                ref, SCHOOL, message_id, list(recipients), [], b"mail", [], now,
                pickupbox.ack_digest(vault, token), channel="pickup")
            await tx.pickups.put(notice, pickupbox.token_digest(vault, token), box,
                                 now + dt.timedelta(hours=hours))
            await tx.notices.finish(notice, "delivered", "250", now, "delivered", True)
            return notice

        return token, await self.ctx.store.write(body)

    async def events(self, event: str) -> list[dict[str, Any]]:
        """The receipts of `event`: ref, school and detail in one dict."""
        return [{"ref": r.ref, "school": r.school, **r.detail}
                for r in await self.ctx.store.receipts.all() if r.event == event]


async def start_rig(template: Template, base: Path, extra: str = "") -> Rig:
    configure(json=True)  # on this test's stdout (an earlier test's capture is closed)
    port = free_port()
    config = copy_gateway_state(template, base, extra_config=web_config(port, extra))
    clock = FakeClock()
    ctx = await open_context(config, clock=clock)
    await ctx.store.write(lambda tx: tx.directory.upsert_school(SCHOOL, "De Regenboog",
                                                                 "Utrecht"))
    assert config.web.listen is not None
    server = WebServer(ctx, config.web.listen)
    await server.start()
    scheme = server.scheme
    return Rig(ctx, server, clock, f"{scheme}://127.0.0.1:{server.bound_port}",
               f"{scheme}://localhost:{port}")


async def stop_rig(rig: Rig) -> None:
    for made in rig.clients:
        await made.close()
    await rig.server.stop()
    await rig.ctx.close()
    stop_agent(rig.ctx.config.gnupg_home)


async def rig_fixture(template: Template, base: Path, extra: str = "") -> AsyncIterator[Rig]:
    rig = await start_rig(template, base, extra)
    try:
        yield rig
    finally:
        await stop_rig(rig)

