"""Outbound HTTP for actions: one POST, its failures sorted into retry-later and give-up, no secrets in errors."""

from __future__ import annotations

from typing import Any

import aiohttp

from leadhub.triggers.actions.base import Permanent, Transient
from leadhub.triggers.actions.public_hosts import NotPublic, PublicResolver

RETRY_STATUSES = frozenset({408, 425, 429})
# Bytes of an answer read: a receiver's or the Bot API's JSON fits many times over, and an answer that never
# ends (or a compressed one that grows) costs no more memory than this.
ANSWER_LIMIT = 64 * 1024


async def post(
    session: aiohttp.ClientSession | None,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    seconds: float,
    label: str,
    hide: tuple[str, ...] = (),
    public_only: bool = False,
) -> tuple[int, Any]:
    """POST and return (status, text of the answer, at most ANSWER_LIMIT bytes); Transient/Permanent on failure.

    `label` replaces the URL in every error (it may hold a token). Redirects are not followed: aiohttp turns a
    POST answered 301/302/303 into a GET without the body, and re-sends the signed body to wherever a 307/308
    points; either way the receiver configured is not the one that got the event.
    `hide`: secrets in the URL (a bot token), cut from a failed answer's text too: proxies and frameworks quote
    the request line in their 404 ("Cannot POST /bot123:.../sendMessage"), and the error is logged and recorded.
    `public_only`: the host came from a value; it is connected to only at public addresses (a session of its own).
    """
    owned = session is None or public_only
    if public_only:
        client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=PublicResolver()))
    else:
        client = session or aiohttp.ClientSession()
    timeout = aiohttp.ClientTimeout(total=seconds)
    try:
        async with client.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False) as resp:
            status = resp.status
            text = await _answer(resp)
    except aiohttp.InvalidURL:
        raise Permanent(f"{label}: not a valid URL") from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, NotPublic):  # the same answer every time: the value chose this host
            raise Permanent(f"{label}: {exc.os_error}") from None
        raise Transient(f"{label}: {type(exc).__name__}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Transient(f"{label}: {type(exc).__name__}") from None
    finally:
        if owned:
            await client.close()
    if status >= 400:
        error = Transient if status >= 500 or status in RETRY_STATUSES else Permanent
        raise error(f"{label}: HTTP {status}: {hidden(text, hide)[:200]}")
    if status >= 300:
        raise Permanent(f"{label}: HTTP {status}: a redirect, not followed; give the URL it ends at")
    return status, text


async def _answer(resp: aiohttp.ClientResponse) -> str:
    """The start of the answer. Its status is already known, so an answer that breaks off or outlasts the
    timeout keeps what was read: a 2xx then means delivered (a retry would deliver it twice)."""
    data = b""
    try:
        while len(data) < ANSWER_LIMIT:
            chunk = await resp.content.read(ANSWER_LIMIT - len(data))
            if not chunk:
                break
            data += chunk
    except (aiohttp.ClientError, OSError, TimeoutError):
        pass  # keep what arrived; the status decides
    try:
        return data.decode(resp.charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


def hidden(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every one of `secrets` as `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
