"""/readyz: its status and summary for everyone, its detail only for a request the API would serve."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from tests.conftest import HubFactory, RunningHub
from tests.helpers import free_port, wait_for

TOKEN = "a-long-random-token-for-readyz"
SUMMARY = {"ready", "queue", "store", "detail"}


async def _readyz(hub: RunningHub, **headers: str) -> tuple[int, dict[str, Any]]:
    async with hub.session.get(hub.url("/readyz"), headers=headers) as response:
        return response.status, await response.json()


def _closed_mailbox() -> dict[str, Any]:
    """An imap connector whose server is a closed loopback port: /readyz answers 503 with its error in the detail."""
    return {
        "name": "inbox",
        "type": "imap",
        "host": "127.0.0.1",
        "port": free_port(),
        "security": "none",
        "username": "sales@shop.example",
        "password": "not-used",
    }


async def test_the_detail_goes_only_with_the_api_token_and_the_status_is_the_same_without(
    make_hub: HubFactory,
) -> None:
    """Anyone reaching the webhook port read the store's error, each mailbox's host, user and error, rule-file paths.
    A load balancer asks without a token: it still gets 503, never 401."""
    hub = await make_hub([_closed_mailbox()], api_token=TOKEN)
    operator = {"Authorization": f"Bearer {TOKEN}"}

    async def mailbox_failing() -> tuple[int, dict[str, Any]] | None:
        status, body = await _readyz(hub, **operator)
        return (status, body) if (body["detail"].get("connector:inbox") or {}).get("error") else None

    status, body = await wait_for(mailbox_failing, timeout=20, what="the closed mailbox's error in /readyz")
    assert status == 503 and body["ready"] is False and body["detail"]["connector:inbox"]["ok"] is False
    assert body["detail"]["store"] == {"ok": True, "error": None}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        withheld_status, withheld = await _readyz(hub, **headers)
        assert withheld_status == 503, headers
        assert withheld == {
            "ready": False,
            "queue": True,
            "store": True,
            "detail": "withheld: send Authorization: Bearer <LEADHUB_API_TOKEN>",
        }, headers


async def test_without_a_token_a_direct_loopback_request_gets_the_detail_and_a_proxied_one_does_not(
    form_hub: RunningHub,
) -> None:
    """A proxy on the same host connects from 127.0.0.1: its clients must not count as local, as for /api."""
    status, body = await _readyz(form_hub)
    assert status == 200 and body["detail"]["pipeline"]["ok"] and body["detail"]["store"]["ok"]
    for header in ({"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"}, {"X-Real-IP": "203.0.113.7"}):
        proxied_status, proxied = await _readyz(form_hub, **header)
        assert proxied_status == 200, header
        assert set(proxied) == SUMMARY and proxied["ready"] and proxied["queue"] and proxied["store"], header
        assert proxied["detail"] == "withheld: set LEADHUB_API_TOKEN to use the API through a proxy", header


def _own_address() -> str:
    """This host's address on a network, not loopback (the route out; nothing is sent); the test is skipped without."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
        except OSError:
            pytest.skip("no network address besides loopback")
        address = str(sock.getsockname()[0])
    if ipaddress.ip_address(address).is_loopback or address == "0.0.0.0":
        pytest.skip("no network address besides loopback")
    return address


async def test_without_a_token_a_request_from_another_host_gets_no_detail(make_hub: HubFactory) -> None:
    address = _own_address()
    hub = await make_hub([], http_host=address)
    hub.base_url = f"http://{address}:{hub.hub.port}"
    status, body = await _readyz(hub)
    assert status == 200 and body["ready"] is True
    assert body["detail"] == "withheld: set LEADHUB_API_TOKEN to use the API from other hosts"
