"""webhook: POST JSON to a URL, signed with HMAC-SHA256 over `<delivery>.<timestamp>.<body>`; retried on 5xx."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from leadhub.durations import parse_duration
from leadhub.ids import id_for_key
from leadhub.triggers.actions.base import CompileError, Deps, Job, RenderEnv, compile_text
from leadhub.triggers.actions.http import post
from leadhub.triggers.context import plain
from leadhub.triggers.sandbox import Scope, TemplateProblem, Templates
from leadhub.triggers.schema import Webhook
from leadhub.triggers.url_template import Origin, check_url, literal_origin
from leadhub.url_redaction import url_secrets


def signature(secret: str, delivery: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{delivery}.{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _compile_body(templates: Templates, scope: Scope, value: Any, path: tuple[Any, ...]) -> Any:
    if isinstance(value, str):
        try:
            return compile_text(templates, scope, value, "body")
        except CompileError as exc:
            raise CompileError(("body", *path), exc.message) from None
    if isinstance(value, dict):
        return {k: _compile_body(templates, scope, v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile_body(templates, scope, v, (*path, i)) for i, v in enumerate(value)]
    return value


def _render_body(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _render_body(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_body(v, context) for v in value]
    if hasattr(value, "render"):
        return value.render(**context)
    return value


@dataclass(frozen=True)
class BoundWebhook:
    spec: Webhook
    url: Any
    body: Any
    origin: Origin | None = None  # the scheme, host and port the url names as literal text

    def render(self, context: dict[str, Any], env: RenderEnv) -> dict[str, Any]:
        event = plain(context["event"])
        body = _render_body(self.body, context) if self.body is not None else {"event": event}
        return {"url": check_url(self.url.render(**context).strip(), self.origin), "body": body}

    async def execute(self, rendered: dict[str, Any], job: Job, deps: Deps) -> dict[str, Any]:
        delivery = id_for_key(f"webhook:{job.key}")
        timestamp = str(int(job.now.timestamp()))
        body = json.dumps(rendered["body"], default=str, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "leadhub",
            "X-Leadhub-Delivery": delivery,
            "X-Leadhub-Timestamp": timestamp,
            "X-Leadhub-Rule": job.rule_id,
        }
        if self.spec.secret:
            headers["X-Leadhub-Signature"] = signature(self.spec.secret, delivery, timestamp, body)
        timeout = parse_duration(self.spec.timeout).total_seconds()
        # A receiver's error page may quote the request line: its credentials stay out of the recorded error.
        hide = url_secrets(rendered["url"])
        status, _ = await post(
            deps.http,
            rendered["url"],
            body,
            headers,
            seconds=timeout,
            label="webhook",
            hide=hide,
            public_only=self.origin is None,  # the host came from a value: never a private address
        )
        return {"delivery": delivery, "status": status}


class WebhookAction:
    name = "webhook"
    Spec = Webhook

    def compile(self, spec: Webhook, templates: Templates, scope: Scope) -> BoundWebhook:
        body = None if spec.body is None else _compile_body(templates, scope, spec.body, ())
        try:
            url = templates.url(spec.url, scope)
        except TemplateProblem as exc:
            raise CompileError(("url",), str(exc)) from None
        return BoundWebhook(spec, url=url, body=body, origin=literal_origin(spec.url))
