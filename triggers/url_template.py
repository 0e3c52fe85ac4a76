"""Webhook URL templates: values go in percent-encoded, and the rendered URL must still point where the rule says."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit

_ORIGIN = re.compile(r"^\s*(https?)://([^/?#]*)", re.IGNORECASE)
Origin = tuple[str, str, int | None]  # scheme, host, port


class UnsafeUrl(ValueError):
    """A rendered URL that does not go where the rule's template points; the message never quotes the URL: it may
    carry a token."""


def url_value(value: Any) -> str:
    """`finalize` of URL templates: a value (`{{ contact.name }}`) becomes one percent-encoded path segment or query
    value. A name like `../admin?x=1#` changed the path a CRM webhook posted to."""
    return "" if value is None else quote(str(value), safe="")


def literal_origin(source: str) -> Origin | None:
    """The scheme, host and port a URL template writes as literal text; None when template syntax is among them."""
    match = _ORIGIN.match(source)
    if match is None or "{" in match.group(2):
        return None
    try:
        return _origin(f"{match.group(1)}://{match.group(2)}")
    except UnsafeUrl:
        return None


def check_url(url: str, origin: Origin | None) -> str:
    """`url` as rendered, if it is http(s) with a host, at the template's literal origin, without dot segments.
    A host a value wrote (no literal origin) must not be an address literal that is not public: the resolver of
    the request checks the names (`post(public_only=True)`), and an address literal never reaches it."""
    host = _origin(url)[1]
    if host == "":
        raise UnsafeUrl("the rendered url has no host")
    if origin is not None and _origin(url) != origin:
        raise UnsafeUrl("the rendered url does not go to the host the rule's url names")
    if origin is None and not _public_literal(host):
        raise UnsafeUrl("the url's host, which a value wrote, is not a public address")
    # HTTP clients resolve `.` and `..` (even encoded as %2E) before sending: `/leads/{{ name }}/notes` with the
    # name `..` posted to `/notes`. Encoding cannot keep such a segment, so the URL is refused.
    if any(unquote(segment) in {".", ".."} for segment in urlsplit(url).path.split("/")):
        raise UnsafeUrl("a value made a '.' or '..' path segment, which would change the path")
    return url


def is_public(address: str) -> bool:
    """Whether an IP address may be reached from a value; ValueError for text that is no address."""
    ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 scope id (`fe80::1%eth0`) is not part of it
    return ip.is_global and not ip.is_multicast


def _public_literal(host: str) -> bool:
    """False for an IP address literal that is not public; True for a public one and for a name."""
    try:
        return is_public(host)
    except ValueError:
        return True


def _origin(url: str) -> Origin:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise UnsafeUrl("the rendered url is not a valid URL") from None
    if parts.scheme.lower() not in {"http", "https"}:
        raise UnsafeUrl("the rendered url is not http(s)")
    return parts.scheme.lower(), parts.hostname or "", port
