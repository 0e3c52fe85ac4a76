"""notify_telegram: a message to the managers' chat through the Bot API sendMessage; the token is never logged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from leadhub.triggers.actions.base import Deps, Job, Permanent, RenderEnv, compile_text
from leadhub.triggers.actions.http import hidden, post
from leadhub.triggers.sandbox import Scope, Templates
from leadhub.triggers.schema import NotifyTelegram

TIMEOUT = 10.0
TEXT_LIMIT = 4096  # the Bot API's limit on a message's text, in UTF-16 code units (an emoji of the astral planes is 2)


@dataclass(frozen=True)
class BoundTelegram:
    spec: NotifyTelegram
    text: Any

    def render(self, context: dict[str, Any], env: RenderEnv) -> dict[str, Any]:
        return {"chat_id": self.spec.chat_id, "text": fit_text(self.text.render(**context))}

    async def execute(self, rendered: dict[str, Any], job: Job, deps: Deps) -> dict[str, Any]:
        url = f"{self.spec.api_url.rstrip('/')}/bot{self.spec.bot_token}/sendMessage"
        body = json.dumps({"chat_id": rendered["chat_id"], "text": rendered["text"]}).encode()
        secret = (self.spec.bot_token,)
        headers = {"Content-Type": "application/json"}
        _, text = await post(deps.http, url, body, headers, seconds=TIMEOUT, label="telegram", hide=secret)
        answer = _object(text)
        if answer.get("ok") is False:
            raise Permanent(f"telegram: {hidden(str(answer.get('description', 'not ok')), secret)}")
        result = answer.get("result")
        return {"message_id": result.get("message_id") if isinstance(result, dict) else None}


def fit_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """`text` cut to `limit` UTF-16 code units, as Telegram counts, never between the two halves of an emoji.

    A cut at 4,096 characters left a text of many emoji twice as long as the Bot API takes: it answered
    400 "message is too long", a failure no retry mends, and the managers got nothing.
    """
    if len(text) <= limit // 2:  # even all outside the BMP it fits; the usual case, no encoding
        return text
    units = text.encode("utf-16-le")
    if len(units) <= 2 * limit:
        return text
    cut = units[: 2 * limit]
    if 0xD800 <= int.from_bytes(cut[-2:], "little") <= 0xDBFF:  # the first half of a pair: drop it too
        cut = cut[:-2]
    return cut.decode("utf-16-le")


def _object(text: str) -> dict[str, Any]:
    """The answer to a 2xx as a JSON object, or an empty one. The Bot API took the message: an answer cut short
    or of another shape (`{"ok": true, "result": true}`, a list) was an error, retried, and each retry posted the
    message again."""
    try:
        answer = json.loads(text)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


class NotifyTelegramAction:
    name = "notify_telegram"
    Spec = NotifyTelegram

    def compile(self, spec: NotifyTelegram, templates: Templates, scope: Scope) -> BoundTelegram:
        return BoundTelegram(spec, text=compile_text(templates, scope, spec.text, "text"))
