"""Credentials in URLs, for what people read (log lines, `rules test`, recorded errors): the request keeps them.

A URL carries a secret in its user info (`https://user:pass@host`, `nats://TOKEN@host`), in a query value whose name
says so (`?token=`, `?api_key=`, `&sig=`) or in the path, where the URL itself is the credential: the Telegram Bot
API (`/bot123:AAH.../`) and the incoming webhooks of Slack, Discord, Microsoft Teams, Zapier and Make.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

# The password in a URL's user info: `nats://user:pass@host` -> `nats://user:***@host`. Up to the last '@' before
# the path or query, as URL parsers split it: NATS connects with `nats://u:p@ss@host` (password `p@ss`), and an '@'
# in the query (`?from=shop@example.com`) is not the user info's end. Failing that, a password holding an unencoded
# '?' or '#' up to an '@' before any query value (`=`, `&`): hidden too, though only SQLAlchemy would read it so.
_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)(?:[^/?#\s]*|[^/=&\s]+)@", re.IGNORECASE)
# User info without a password is a credential too: NATS reads `nats://TOKEN@host` as a token.
_LONE_USER = re.compile(r"\b([a-z][a-z0-9+.-]*://)(?:[^:/?#\s]+|[^:/=&\s]+)@", re.IGNORECASE)
# Paths that are credentials, as (kept prefix)(secret): whoever has the URL can post as its owner.
_PATH_SECRETS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"(/bot\d+:)([A-Za-z0-9_-]+)",  # Telegram Bot API: /bot123456:AAH.../sendMessage
        r"(//hooks\.slack\.com/(?:services|workflows|triggers)/)([^\s?#]+)",  # Slack: /services/T…/B…/secret
        r"(//(?:[a-z0-9-]+\.)?discord(?:app)?\.com/api/(?:v\d+/)?webhooks/\d+/)([^\s/?#]+)",  # Discord: /id/token
        r"(\.webhook\.office\.com/webhookb2/)([^\s?#]+)",  # Microsoft Teams (Office 365 connector)
        r"(//hooks\.zapier\.com/hooks/catch/\d+/)([^\s/?#]+)",  # Zapier catch hook
        r"(//hook\.[a-z0-9]+\.make\.com/)([^\s/?#]+)",  # Make (Integromat) custom webhook
    )
)
# Query parameter names that hold a credential: token, access_token, api_key, apikey, secret, password, sig, auth...
SECRET_NAME = re.compile(r"token|secret|key|pass|pwd|auth|sig|credential|session", re.IGNORECASE)
_QUERY_VALUE = re.compile(r"([?&;]([^=&#\s?;]*)=)([^&#\s;]+)")


def redact_urls(text: str) -> str:
    """Every URL in `text` with its credentials as `***`: user info, secret query values, secret paths."""
    text = _PASSWORD.sub(r"\1***@", text)
    text = _LONE_USER.sub(r"\1***@", text)
    for pattern in _PATH_SECRETS:
        text = pattern.sub(r"\1***", text)
    return _QUERY_VALUE.sub(_query_value, text)


def _query_value(match: re.Match[str]) -> str:
    return match.group(1) + "***" if SECRET_NAME.search(unquote(match.group(2))) else match.group(0)


def url_secrets(url: str) -> tuple[str, ...]:
    """The credentials in `url` as they appear in it and decoded, to cut from text that may quote the request
    (a receiver's 404 page: "Cannot POST /hook?token=...")."""
    try:
        parts = urlsplit(url)
        found = [parts.password or parts.username or ""]
        found += [value for name, value in parse_qsl(parts.query, keep_blank_values=True) if SECRET_NAME.search(name)]
    except ValueError:
        return ()
    found += [match.group(3) for match in _QUERY_VALUE.finditer(url) if SECRET_NAME.search(unquote(match.group(2)))]
    for pattern in _PATH_SECRETS:
        found += [part for match in pattern.finditer(url) for part in (match.group(2), unquote(match.group(2)))]
    return tuple(sorted({s for s in found if s}, key=lambda s: (-len(s), s)))  # longest first: no partial cuts
