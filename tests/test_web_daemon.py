"""The pages in the daemon: started on its loop with `[web] listen` (HTTPS with a certificate),
stopped with it, a port in use a one-line start error; and what the web side logs never holds
a token, a code, an address or a name."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pyotp
import pytest
from conftest import Template, copy_gateway_state, free_port
from web_rig import CHILD, CONTACT, csrf_of, rig_fixture, web_config

from gateway.crypto.keyadmin import stop_agent
from gateway.observe.logs import configure
from gateway.pipeline.context import open_context
from gateway.service.daemon import Daemon, StartError


async def test_the_daemon_serves_https_and_stops(template: Template, tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    """With tls_cert/tls_key the daemon serves the pages over HTTPS with HSTS and __Host-
    cookies, logs
    `web.started` (listen, tls) and, at shutdown, `web.stopped`; the port is closed after."""
    configure(json=True)
    port = free_port()
    tls = tmp_path / "keys" / "tls"
    config = copy_gateway_state(template, tmp_path, extra_config=web_config(
        port, f'tls_cert = "{tls}/server.pem"\ntls_key = "{tls}/server.key"').replace(
            "http://localhost", "https://localhost"))
    ctx = await open_context(config)
    daemon = Daemon(ctx, host="127.0.0.1", port=0, background=False)
    try:
        await daemon.start()
        async with aiohttp.ClientSession() as client, client.get(
                f"https://127.0.0.1:{port}/nergens", ssl=False) as response:
            assert response.status == 404
            assert response.headers["Strict-Transport-Security"] == "max-age=63072000"
            # Over HTTPS the cookies carry the __Host- prefix: this host only, Secure, Path=/.
            assert response.headers["Set-Cookie"].startswith("__Host-csrf=")
    finally:
        await daemon.shutdown()
        await ctx.close()
        stop_agent(config.gnupg_home)
    events = [json.loads(line) for line in capfd.readouterr().out.splitlines()
              if line.startswith("{")]
    [started] = [e for e in events if e["event"] == "web.started"]
    assert started["listen"] == f"127.0.0.1:{port}" and started["tls"] is True
    assert any(e["event"] == "web.stopped" for e in events)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_a_web_port_in_use_is_a_start_error(template: Template, tmp_path: Path) -> None:
    """A `[web] listen` port another program holds stops the start with one line naming the
    setting, and the SMTP listener opened before is closed again."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = copy_gateway_state(template, tmp_path, extra_config=web_config(port))
        ctx = await open_context(config)
        daemon = Daemon(ctx, host="127.0.0.1", port=0, background=False)
        try:
            with pytest.raises(StartError, match=r"\[web\] listen"):
                await daemon.start()
            assert daemon.server is not None and not daemon.server.is_serving()
        finally:
            await ctx.close()
            stop_agent(config.gnupg_home)


async def test_logs_hold_no_token_code_address_or_name(
        template: Template, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A whole pickup (enrolment with an app, a wrong and a right code, reading, "Gelezen")
    logs `web.*` events with school codes and notice ids only: none of the tokens, the codes,
    the contact's address or the child's name appears in any line."""
    configure(json=True)
    async for rig in rig_fixture(template, tmp_path):
        enrol_token, enrol_code = await rig.invite()
        client = rig.client()
        _, text = await client.get(f"/inschrijven/{enrol_token}")
        await client.post(f"/inschrijven/{enrol_token}", {"code": enrol_code},
                          csrf=csrf_of(text))
        _, text = await client.get(f"/inschrijven/{enrol_token}/app")
        secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', text)
        assert secret is not None
        totp = pyotp.TOTP(secret[1].replace(" ", ""))
        response, _ = await client.post(f"/inschrijven/{enrol_token}/app",
                                        {"code": totp.now()}, csrf=csrf_of(text))
        assert response.status == 303
        rig.clock.advance(seconds=30)
        token, _ = await rig.pickup()
        _, text = await client.get(f"/bericht/{token}")
        csrf = csrf_of(text)
        wrong = f"{(int(totp.at(rig.clock())) + 1) % 1_000_000:06d}"
        await client.post(f"/bericht/{token}/code", {"email": CONTACT, "code": wrong},
                          csrf=csrf)
        right = totp.at(rig.clock())
        response, _ = await client.post(f"/bericht/{token}/code",
                                        {"email": CONTACT, "code": right}, csrf=csrf)
        assert response.status == 303
        _, text = await client.get(f"/bericht/{token}/lezen")
        assert CHILD["name"] in text
        await client.post(f"/bericht/{token}/gelezen", csrf=csrf_of(text))
    out = capfd.readouterr().out
    events = {json.loads(line)["event"] for line in out.splitlines() if line.startswith("{")}
    assert {"web.enrolled", "web.code_refused", "web.signed_in", "pickup.opened",
            "notice.acknowledged"} <= events
    for secret_text in (enrol_token, enrol_code, enrol_code.replace("-", ""), token, wrong,
                        right, CONTACT, CHILD["name"], CHILD["ref"]):
        assert secret_text not in out


def test_a_gateway_without_the_page_does_not_load_it() -> None:
    """The daemon module loads no web library: aiohttp, Jinja2 and webauthn (some 17 MB of
    memory) come in only when `[web] listen` starts the page."""
    code = ("import sys, gateway.service.daemon, gateway.admin.cli; "
            "print(sorted(m for m in ('aiohttp', 'jinja2', 'webauthn', 'gateway.web.app')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent.parent).stdout
    assert out.strip() == "[]"
