"""OAuth2 access tokens for IMAP XOAUTH2 (Gmail, Microsoft 365), taken from an admin's command or file.

leadhub does not run an OAuth flow itself: the admin configures a command (e.g. `oauth2l fetch ...`, a small script
around a refresh token, `az account get-access-token ...`) or a file another tool keeps fresh. The command prints
the access token, or JSON with `access_token` and optionally `expires_in` (seconds); the token is cached until
shortly before it expires (or `refresh_interval` when the lifetime is unknown) and fetched again after an
authentication failure.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from leadhub.durations import parse_duration
from leadhub.json_errors import JSON_ERRORS, json_error_text

# Refresh this long before the advertised expiry, so a token never expires between fetch and LOGIN.
EXPIRY_MARGIN = 60.0
# A command's argument (an `--option=value`'s value) this long or longer is hidden where its stderr repeats it.
SHOWN_ARGUMENT = 8


class TokenError(Exception):
    """The configured command or file did not yield an access token; the message says why (never the token)."""


class OAuth2Config(BaseModel):
    """Where the XOAUTH2 access token comes from: exactly one of `token_command` and `token_file`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_command: list[str] | str | None = Field(
        None, description="argv list, or a string split like a shell would (no shell is run)"
    )
    token_file: Path | None = Field(None, description="a file holding the token or the JSON answer")
    mechanism: Literal["XOAUTH2", "OAUTHBEARER"] = "XOAUTH2"
    refresh_interval: timedelta = Field(timedelta(minutes=45), description="token lifetime when none is given")
    command_timeout: timedelta = timedelta(seconds=30)

    @field_validator("refresh_interval", "command_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        duration = parse_duration(value)
        if duration.total_seconds() <= 0:
            raise ValueError("must be positive")
        return duration

    @model_validator(mode="after")
    def _one_source(self) -> OAuth2Config:
        if (self.token_command is None) == (self.token_file is None):
            raise ValueError("set exactly one of token_command and token_file")
        if isinstance(self.token_command, list) and not self.token_command:
            raise ValueError("token_command must not be empty")
        return self

    def argv(self) -> list[str]:
        command = self.token_command
        return shlex.split(command) if isinstance(command, str) else list(command or [])


def parse_token(text: str, default_lifetime: float) -> tuple[str, float]:
    """(access token, lifetime in seconds) from a command's output or a file's content."""
    text = text.strip()
    if not text:
        raise TokenError("the token source returned nothing")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except JSON_ERRORS as exc:
            raise TokenError(f"the token source returned JSON that does not parse: {json_error_text(exc)}") from None
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenError("the token source returned JSON without an `access_token` string")
        expires_in = data.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else default_lifetime
        return token, lifetime
    token = text.splitlines()[0].strip()
    if any(c.isspace() for c in token):
        raise TokenError("the token source's first line is not a single token")
    return token, default_lifetime


class TokenProvider:
    """A cached access token; thread-safe, because every IMAP folder connection logs in from its own thread."""

    def __init__(self, config: OAuth2Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def token(self, *, refresh: bool = False) -> str:
        with self._lock:
            if refresh or self._token is None or self.clock() >= self._expires_at:
                self._token, lifetime = parse_token(self._read(), self.config.refresh_interval.total_seconds())
                self._expires_at = self.clock() + max(1.0, lifetime - EXPIRY_MARGIN)
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _read(self) -> str:
        if self.config.token_file is not None:
            try:
                return self.config.token_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise TokenError(f"cannot read token_file {self.config.token_file}: {exc.strerror}") from None
        argv = self.config.argv()
        try:
            done = subprocess.run(  # noqa: S603 - the admin's own configured command, no shell
                argv,
                capture_output=True,
                timeout=self.config.command_timeout.total_seconds(),
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            # Not str(exc): it quotes the whole command line, and helpers take the client secret as an argument.
            raise TokenError(
                f"token_command {argv[0]!r} timed out after {exc.timeout:g} s; raise command_timeout or fix the command"
            ) from None
        except OSError as exc:
            raise TokenError(
                f"token_command {argv[0]!r} failed to run: {type(exc).__name__}: {exc.strerror or exc.errno}"
            ) from None
        if done.returncode != 0:
            # stderr is the admin's tool talking about itself; keep it short, it must not carry the token
            stderr = without_arguments(done.stderr.decode("utf-8", "replace").strip(), argv[1:])[-300:]
            raise TokenError(f"token_command {argv[0]!r} exited with {done.returncode}: {stderr}")
        return done.stdout.decode("utf-8", "replace")


def without_arguments(text: str, arguments: list[str]) -> str:
    """`text` with the command's own arguments as `***`: helpers take the client secret and refresh token as
    arguments, and an argument parser (argparse's `unrecognized arguments: --client-secret=...`) or a shell wrapper
    under `set -x` repeats them on stderr. Option names and short words (`fetch`) stay, so the message still reads."""
    values = [arg.partition("=")[2] if arg.startswith("-") else arg for arg in arguments]  # an option's name stays
    hidden = {value for value in values if len(value) >= SHOWN_ARGUMENT}
    for secret in sorted(hidden, key=len, reverse=True):  # longest first: no partial cuts
        text = text.replace(secret, "***")
    return text
