"""Who may use the API and read /readyz's detail: the bearer token, or without one a direct loopback client."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

from leadhub.hub.http.state import DEPS

# What a reverse proxy adds to a request it passes on
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def _is_proxied(request: web.Request) -> bool:
    """A proxy on the same host connects from loopback: without this every client behind it would count as local."""
    return any(name in request.headers for name in PROXY_HEADERS)


def refusal(request: web.Request) -> str | None:
    """Why `request` may not use the API, in words for its sender; None when it may.

    With no token configured only loopback clients may, and not through a proxy.
    """
    token = request.app[DEPS].settings.api_token
    if token is None:
        if not _is_loopback(request.remote):
            return "set LEADHUB_API_TOKEN to use the API from other hosts"
        if _is_proxied(request):
            return "set LEADHUB_API_TOKEN to use the API through a proxy"
        return None
    # RFC 7235: the scheme is case-insensitive (`bearer ...` from some libraries) and one or more spaces follow it
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # surrogatepass: an Authorization header with bytes that are not UTF-8 is a wrong token, not an error
    same = hmac.compare_digest(given.strip(" ").encode("utf-8", "surrogatepass"), token.get_secret_value().encode())
    if not (same and scheme.lower() == "bearer"):
        return "send Authorization: Bearer <LEADHUB_API_TOKEN>"
    return None
