"""Shared by the shop webhook connectors: secrets with rotation, constant-time checks on the raw body, 400s."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
from typing import Any, Self

from aiohttp import web
from pydantic import ByteSize, Field, SecretStr, model_validator

from leadhub.connectors.base import ConnectorConfig, HookError, Stop
from leadhub.shop_payloads import PayloadError, json_object, validate
from leadhub.store.orders import ORDER_STATUSES

DEFAULT_MAX_BODY = ByteSize(2 * 1024 * 1024)


class SignedConfig(ConnectorConfig):
    """`secret`, or `secrets: [new, old]` while the provider's secret is being rotated."""

    secret: SecretStr | None = None
    secrets: list[SecretStr] = Field(default_factory=list)
    max_body: ByteSize = DEFAULT_MAX_BODY

    @model_validator(mode="after")
    def _one_source_of_secrets(self) -> Self:
        if self.secret is not None and self.secrets:
            raise ValueError("give either secret or secrets (secrets: [new, old] during a rotation), not both")
        if self.secret is None and not self.secrets:
            raise ValueError("secret is required (or secrets: [new, old] during a rotation)")
        if any(not s.get_secret_value() for s in [*self.secrets, *([self.secret] if self.secret else [])]):
            raise ValueError("a secret must not be empty")
        return self

    def secret_values(self) -> list[bytes]:
        chosen = [self.secret] if self.secret is not None else self.secrets
        return [s.get_secret_value().encode() for s in chosen]


def header(request: web.Request, *names: str) -> str | None:
    """The first of `names` present (providers renamed headers; both spellings arrive)."""
    for name in names:
        if value := request.headers.get(name):
            return value
    return None


def hmac_sha256_b64(secret: bytes, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


def check_hmac_b64(given: str | None, body: bytes, secrets: list[bytes], header_name: str) -> None:
    """401 unless `given` is base64(HMAC-SHA256(body)) under one of `secrets`; every secret is compared."""
    if not given:
        raise HookError(401, "bad_signature", f"missing {header_name} header: the request is not signed")
    candidate = given.strip().encode()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(candidate, hmac_sha256_b64(secret, body).encode())
    if not matched:
        raise HookError(401, "bad_signature", f"{header_name} does not match the body signed with the connector secret")


def check_token(given: str | None, secrets: list[bytes], where: str) -> None:
    """401 unless `given` equals one of `secrets` (compared in constant time)."""
    if not given:
        raise HookError(401, "bad_token", f"missing token: put the connector's secret in {where}")
    candidate = given.encode()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(candidate, secret)
    if not matched:
        raise HookError(401, "bad_token", f"wrong token in {where}")


def wordpress_secret(secret: bytes) -> bytes:
    """WooCommerce signs with `wp_specialchars_decode($secret, ENT_QUOTES)`: `&amp;` in a secret means `&`."""
    return html.unescape(secret.decode()).encode()


def checked_json(body: bytes, what: str, model: Any = None) -> dict[str, Any]:
    """The body as a JSON object, optionally checked against a payload model; 400 naming the problem."""
    try:
        data = json_object(body, what)
        if model is not None:
            validate(model, data, what)
    except PayloadError as exc:
        raise HookError(400, "malformed", str(exc)) from None
    return data


def require_post(request: web.Request) -> None:
    if request.method != "POST":
        raise HookError(405, "method", "this webhook takes POST", headers={"Allow": "POST"})


async def no_background_work() -> Stop:
    async def stop() -> None:
        return None

    return stop


def check_status_map(value: dict[str, str]) -> dict[str, str]:
    """`statuses: {their-status: leadhub-status}`; every target must be one of leadhub's statuses."""
    wrong = {k: v for k, v in value.items() if v not in ORDER_STATUSES}
    if wrong:
        raise ValueError(f"unknown leadhub status in {wrong}; use one of {', '.join(ORDER_STATUSES)}")
    return {k.strip().lower().removeprefix("wc-"): v for k, v in value.items()}
