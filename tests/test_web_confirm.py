"""The acknowledgement link of an OpenPGP notice (`/bevestig/{token}`): the GET shows a button
and changes nothing, the POST acknowledges once (receipt `acknowledged` via "link")."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import Template
from web_rig import SCHOOL, Rig, csrf_of, rig_fixture

from gateway.delivery.seal import new_ack_token
from gateway.store.api import Tx


@pytest.fixture
async def rig(template: Template, tmp_path: Path) -> AsyncIterator[Rig]:
    async for made in rig_fixture(template, tmp_path):
        yield made


async def pgp_notice(rig: Rig, token: str) -> int:
    """A delivered OpenPGP notice whose acknowledgement token is `token`."""
    now, digest = rig.clock(), rig.ctx.vault.digest("ack", token)
    ref = f"HWC-{secrets.token_hex(4)}"

    async def body(tx: Tx) -> int:
        await tx.signals.insert(ref, "vt-utrecht", None, None, secrets.token_hex(8), 1, now)
        notice = await tx.notices.insert(ref, SCHOOL, "<m@gw>", ["a@school.nl"], ["F" * 40],
                                         b"parcel", [], now, digest)
        await tx.notices.finish(notice, "delivered", "250", now, "delivered", True)
        return notice

    return await rig.ctx.store.write(body)


async def test_the_link_page_changes_nothing(rig: Rig) -> None:
    """GET (a mail scanner, twice) shows the button and records nothing."""
    token = new_ack_token()
    notice = await pgp_notice(rig, token)
    client = rig.client()
    for _ in range(2):
        response, text = await client.get(f"/bevestig/{token}")
        assert response.status == 200 and 'id="bevestig"' in text
    stored = await rig.ctx.store.notices.get(notice)
    assert stored is not None and stored.acked_at is None
    assert await rig.events("acknowledged") == []


async def test_the_button_acknowledges_once(rig: Rig) -> None:
    """POST records the acknowledgement with via "link"; the link then says it no longer
    works (404), and a second POST records nothing more."""
    token = new_ack_token()
    notice = await pgp_notice(rig, token)
    client = rig.client()
    _, text = await client.get(f"/bevestig/{token}")
    csrf = csrf_of(text)
    response, text = await client.post(f"/bevestig/{token}", csrf=csrf)
    assert response.status == 200 and "Dank u wel" in text
    [ack] = await rig.events("acknowledged")
    assert (ack["notice"], ack["via"]) == (notice, "link") and "contact" not in ack
    response, _ = await client.get(f"/bevestig/{token}")
    assert response.status == 404
    response, _ = await client.post(f"/bevestig/{token}", csrf=csrf)
    assert response.status == 404 and len(await rig.events("acknowledged")) == 1


async def test_an_unknown_link_and_a_forged_post(rig: Rig) -> None:
    """An unknown token is a 404 page; a POST without the CSRF token acknowledges nothing."""
    token = new_ack_token()
    await pgp_notice(rig, token)
    client = rig.client()
    response, _ = await client.get(f"/bevestig/{new_ack_token()}")
    assert response.status == 404
    response, _ = await client.post(f"/bevestig/{token}")
    assert response.status == 403 and await rig.events("acknowledged") == []
