"""Connector `telegram`: Bot API updates; `X-Telegram-Bot-Api-Secret-Token` must equal the setWebhook secret_token."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from aiohttp import web
from pydantic import Field, model_validator

from leadhub.connectors.base import HookError, accepted
from leadhub.connectors.webhook import (
    ProviderWebhook,
    WebhookConfig,
    json_object,
    raw_body,
    require_method,
    require_token,
)
from leadhub.json_errors import json_kind

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret
SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TelegramConfig(WebhookConfig):
    """`secret` is the `secret_token` given to setWebhook (1-256 of A-Z a-z 0-9 _ -)."""

    type: Literal["telegram"] = "telegram"
    replay_window: None = None  # updates carry no signed timestamp; update_id makes a resend a duplicate
    callback_data: list[str] = Field(
        default_factory=list, description="inline-button data that means 'call me back', e.g. callback:yes"
    )

    @model_validator(mode="after")
    def _telegram_token_alphabet(self) -> TelegramConfig:
        if any(not SECRET_TOKEN.match(s.get_secret_value()) for s in self.all_secrets()):
            raise ValueError("Telegram's secret_token is 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return self


class TelegramConnector(ProviderWebhook):
    """Checks the secret token in constant time, requires a JSON update with an integer update_id, publishes it."""

    type: ClassVar[str] = "telegram"
    channel: ClassVar[str] = "chat"
    Config: ClassVar[type[TelegramConfig]] = TelegramConfig

    async def handle(self, request: web.Request) -> web.StreamResponse:
        require_method(request, "POST")
        require_token(request.headers.get(SECRET_HEADER), self.secrets, f"the {SECRET_HEADER} header (setWebhook)")
        body = await raw_body(request, int(self.config.max_body))
        update = _update(body)
        update_id = update.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            raise HookError(400, "malformed", f"update_id must be an integer, not {type(update_id).__name__}")
        kinds = [name for name in update if name != "update_id"]
        for kind in kinds:  # every field of an Update but update_id is an object (Bot API, Update)
            if not isinstance(update[kind], dict):
                value = update[kind]
                raise HookError(400, "malformed", f"{kind[:60]} must be a JSON object, not {json_kind(value)}")
        meta = {"update_type": kinds[0][:60]} if kinds else {}
        content_type = request.headers.get("Content-Type", "application/json")
        return accepted(await self.publish(f"update:{update_id}", body, content_type, meta))


def _update(body: bytes) -> dict[str, Any]:
    return json_object(body, "a Telegram update")
