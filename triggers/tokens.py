"""Signed, expiring tokens for links in emails (survey, unsubscribe): HMAC-SHA256, compared in constant time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any


class BadToken(ValueError):
    """A token that is forged, damaged or expired; `reason` is `invalid` or `expired`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, purpose: str, body: str) -> str:
    return _b64(hmac.new(key, f"{purpose}.{body}".encode(), hashlib.sha256).digest())


def sign(key: bytes, purpose: str, payload: dict[str, Any], expires_at: datetime | None) -> str:
    claims = dict(payload)
    if expires_at is not None:
        claims["exp"] = int(expires_at.timestamp())
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_mac(key, purpose, body)}"


def verify(key: bytes, purpose: str, token: str, now: datetime) -> dict[str, Any]:
    """The payload of a genuine, unexpired token for `purpose`; BadToken otherwise."""
    body, _, mac = token.partition(".")
    if not body or not mac or len(token) > 2000:
        raise BadToken("invalid")
    if not hmac.compare_digest(mac.encode(), _mac(key, purpose, body).encode()):
        raise BadToken("invalid")
    try:
        claims = json.loads(_unb64(body))
    except (binascii.Error, ValueError):
        raise BadToken("invalid") from None
    if not isinstance(claims, dict):
        raise BadToken("invalid")
    expires = claims.pop("exp", None)
    if expires is not None and now.timestamp() > expires:
        raise BadToken("expired")
    return claims
