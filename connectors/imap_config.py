"""The `imap` connector's configuration: server, login (password or OAuth2), folders, post-action, limits, timing."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from leadhub.connectors.base import ConnectorConfig
from leadhub.connectors.imap_oauth import OAuth2Config
from leadhub.durations import parse_duration

MB = 1024 * 1024
# The embedded NATS server accepts payloads up to 32 MB; leave room for headers.
MAX_PAYLOAD = 30 * MB
# An IMAP flag keyword is an atom: no spaces, parentheses, braces, quotes, %, *, backslash or ].
KEYWORD = re.compile(r"^[!#$&'+,\-./0-9:;<=>?@A-Z^_`a-z|~]{1,100}$")
POST_ACTIONS = "none | seen | keyword:<keyword> | move:<folder>"


class ImapConfig(ConnectorConfig):
    type: Literal["imap"] = "imap"
    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535, description="default 993 for ssl, 143 otherwise")
    security: Literal["ssl", "starttls", "none"] = "ssl"
    ca_file: Path | None = Field(None, description="PEM file of CAs to trust instead of the system's (self-signed)")
    username: str = Field(min_length=1)
    password: SecretStr | None = None
    oauth2: OAuth2Config | None = None
    folders: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1)
    post_action: str = Field("none", description=POST_ACTIONS)
    backfill_days: float = Field(7, ge=0, description="on the first start, read only mail newer than this")
    poll_interval: timedelta = Field(timedelta(seconds=60), description="polling, and the safety net under IDLE")
    idle: bool = True
    idle_renew: timedelta = Field(timedelta(minutes=25), description="re-issue IDLE before servers drop it (29 min)")
    own_addresses: list[str] = Field(default_factory=list, description="leadhub's sending addresses (never leads)")
    max_message_bytes: int = Field(25 * MB, ge=1024, le=MAX_PAYLOAD)
    connect_timeout: timedelta = timedelta(seconds=15)
    timeout: timedelta = Field(timedelta(seconds=60), description="for every read/write on the connection")
    fetch_batch: int = Field(100, ge=1, le=1000, description="messages per FETCH and per checkpoint")

    @field_validator("poll_interval", "idle_renew", "connect_timeout", "timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        duration = parse_duration(value)
        if duration.total_seconds() <= 0:
            raise ValueError("must be positive")
        return duration

    @field_validator("idle_renew")
    @classmethod
    def _renew_before_29_minutes(cls, value: timedelta) -> timedelta:
        if value > timedelta(minutes=29):
            raise ValueError("must be at most 29m: servers may end an IDLE after 30 minutes")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"ca_file {value} does not exist or is not a file")
        return value

    @field_validator("folders")
    @classmethod
    def _unique_folders(cls, value: list[str]) -> list[str]:
        if any(not folder.strip() for folder in value):
            raise ValueError("a folder name must not be empty")
        if len({same_folder(folder) for folder in value}) != len(value):
            raise ValueError("each folder may be listed once (INBOX in any case is one folder)")
        return value

    @field_validator("post_action")
    @classmethod
    def _post_action(cls, value: str) -> str:
        if value in ("none", "seen"):
            return value
        if value.startswith("keyword:"):
            keyword = value.removeprefix("keyword:")
            if not KEYWORD.match(keyword) or keyword.startswith("\\"):
                raise ValueError(f"keyword {keyword!r} is not an IMAP keyword (letters, digits, $_-.: and no spaces)")
            return value
        if value.startswith("move:"):
            if not value.removeprefix("move:").strip():
                raise ValueError("move: needs a folder name, e.g. move:Processed")
            return value
        raise ValueError(f"unknown post_action {value!r}; valid: {POST_ACTIONS}")

    @model_validator(mode="after")
    def _one_login(self) -> ImapConfig:
        if (self.password is None) == (self.oauth2 is None):
            raise ValueError("set exactly one of password and oauth2")
        target = self.post_action.removeprefix("move:") if self.post_action.startswith("move:") else None
        if target is not None and same_folder(target) in {same_folder(folder) for folder in self.folders}:
            raise ValueError(f"post_action moves mail into {target!r}, which is also a watched folder")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "ssl" else 143)


def same_folder(name: str) -> str:
    """The name as the server tells folders apart: INBOX is case-insensitive (RFC 3501), other names are not."""
    return "INBOX" if name.upper() == "INBOX" else name
