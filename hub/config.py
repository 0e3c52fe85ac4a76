"""Settings: `leadhub.yaml` plus `LEADHUB_*` environment variables, validated up front with errors for people."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from leadhub.config_values import refuse_a_boolean_number
from leadhub.connectors.registry import CONNECTOR_TYPES
from leadhub.durations import DurationError, parse_duration
from leadhub.envelope import CHANNELS
from leadhub.hub.database_urls import asyncpg_query_problem
from leadhub.store.policy import IdentityPolicy
from leadhub.yaml_text import YamlProblem, parse_yaml

DEFAULT_CONFIG_FILE = Path("leadhub.yaml")
ENV_PREFIX = "LEADHUB_"
ROLES = ("http", "pipeline", "relay", "triggers")
WORKER_ROLES = ("http", "pipeline", "relay")  # triggers and pull connectors run once, in the primary
MAX_WORKERS = 64
# docker-compose.yml's default once: a token everyone who read the file knows, refused
PLACEHOLDER_TOKEN = "change-me"  # noqa: S105 - the value refused, not a secret
MIN_TOKEN_LENGTH = 16  # shorter is warned of at start, not refused: tokens already in use keep working
MIN_DUPLICATE_WINDOW, MAX_DUPLICATE_WINDOW = timedelta(seconds=1), timedelta(days=1)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DATABASE_EXAMPLE = "postgresql+asyncpg://user:pass@host/db or sqlite+aiosqlite:////path/leadhub.db"
NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def _is_url(value: str, schemes: tuple[str, ...]) -> bool:
    """`scheme://host...` with one of `schemes`; never echoes the value (it may hold a password)."""
    try:
        parts = urlsplit(value.strip())
        _ = parts.port  # raises for a port that is not a number
    except ValueError:  # that, or a bad IPv6 literal
        return False
    return parts.scheme.lower() in schemes and bool(parts.hostname)


def _user_info_cut(url: str) -> bool:
    """An '@' after the host's start: user info holding '/', '?' or '#', which URL parsers end there. The log's
    redaction ends the user info there too, so such a token or password would be shown."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return "@" in parts.path + parts.query + parts.fragment


def nats_servers(url: str) -> list[str]:
    """Each server of a comma-separated `LEADHUB_NATS_URL`, `nats://` added where it was left out: nats-py takes a
    list (one text with commas fails every connect), and redaction knows a token only after a scheme."""
    servers = [server.strip() for server in url.split(",")]
    return [server if "://" in server else f"nats://{server}" for server in servers]


def local_url(host: str, port: int) -> str:
    """This daemon's HTTP as reached from this machine, the base of e-mail links when LEADHUB_PUBLIC_URL is unset.

    A wildcard host (0.0.0.0, ::) is not an address to open; the daemon listens on loopback too, so that is used."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - a listening host read, not bound
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _file_in_the_way(directory: Path) -> Path | None:
    """`directory`, or the nearest of its parents that exists, when that is not a directory: it can never be made."""
    try:
        for path in (directory, *directory.parents):
            if path.exists():
                return None if path.is_dir() else path
    except OSError as exc:  # a name too long, a directory that cannot be searched
        raise ValueError(f"cannot be used as a directory: {exc.strerror}") from None
    return None


def _csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


class ConfigError(Exception):
    """Configuration that cannot be used; `problems` are complete `where: what` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class Settings(BaseSettings):
    """Every setting; each can be overridden by `LEADHUB_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    data_dir: Path = Path("./data")
    database_url: str | None = None
    nats_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    rules_dir: Path = Path("./rules")
    templates_dir: Path | None = None
    smtp_url: SecretStr | None = None
    api_token: SecretStr | None = None
    default_region: str | None = None
    public_url: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"
    roles: Annotated[tuple[Literal["http", "pipeline", "relay", "triggers"], ...], NoDecode] = ROLES
    pipeline_batch_size: int = Field(500, ge=1, le=5000)
    pipeline_max_deliveries: int = Field(5, ge=1)
    shutdown_timeout: float = Field(8.0, gt=0, le=3600, allow_inf_nan=False)  # `inf`: a stop that never ends
    # Processes that serve webhooks and run the pipeline on one port: `auto` is one per CPU this process may use.
    workers: Annotated[int, NoDecode] = Field(1, ge=1, le=MAX_WORKERS)
    # What the processes beside the primary run; unset: the primary's roles among http, pipeline, relay.
    # `pipeline,relay` with `roles: http,triggers` splits webhooks and the pipeline into separate processes.
    # One group of roles for every worker, or one per worker separated by ';' (`http;pipeline,relay`).
    worker_roles: Annotated[tuple[tuple[Literal["http", "pipeline", "relay"], ...], ...] | None, NoDecode] = Field(
        None, validate_default=True
    )
    # Copies of each JetStream stream in a NATS cluster (3 keeps accepted items through the loss of a node).
    stream_replicas: int = Field(1, ge=1, le=5)
    # How long each stream remembers a message id to answer a repeat as a duplicate. NATS keeps every id of the
    # window in memory (~125-150 bytes each, bench/nats_dedupe.py): at 16,000 messages/s, 2 minutes are ~240 MB,
    # 30 s ~60 MB. A repeat after the window is still stored once (the store's keys are unique), only not
    # answered as a duplicate.
    stream_duplicate_window: str = "30s"
    # Identity: fold Gmail dots and +tags when matching addresses; join a contact's open lead within a window.
    email_folding: bool = True
    lead_window: str = "72h"
    lead_windows: dict[str, str] = Field(default_factory=dict)
    connectors: list[dict[str, Any]] = Field(default_factory=list)

    # Checks of one setting against another are field validators (the other is in info.data, declared before):
    # a model validator's error names no setting, so it could not say which file line or variable to fix.
    @field_validator("stream_replicas")
    @classmethod
    def _replicas_need_a_cluster(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and "nats_url" in info.data and not info.data["nats_url"]:
            raise ValueError(
                f"{value} needs a NATS cluster: set LEADHUB_NATS_URL "
                "(the embedded NATS is one server and keeps one copy)"
            )
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_a_boolean_number(value, cls.model_fields[str(info.field_name)].annotation)

    @field_validator("http_host")
    @classmethod
    def _a_host_to_listen_on(cls, value: str) -> str:
        """An empty host made aiohttp listen on every interface: the API and webhooks open to the network, unasked."""
        if not value.strip():
            raise ValueError("is empty; give the address to listen on: 127.0.0.1 (this machine) or 0.0.0.0 (all)")
        return value.strip()

    @field_validator("data_dir")
    @classmethod
    def _data_dir_is_a_directory(cls, value: Path) -> Path:
        if (file := _file_in_the_way(value)) is not None:
            raise ValueError(f"{file} is a file; give a directory (created if missing)")
        return value

    @field_validator("rules_dir", "templates_dir")
    @classmethod
    def _rules_and_templates_are_directories(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """Missing is fine (a volume mounted later; rules load once their directory appears); a file never is one:
        the rule engine would wait for a directory forever, and templates would quietly be the defaults."""
        if value is not None and (file := _file_in_the_way(value)) is not None:
            later = " (its rules load once it is created)" if info.field_name == "rules_dir" else ""
            raise ValueError(f"{file} is a file; give a directory{later}")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_usable(cls, value: str | None) -> str | None:
        """A URL SQLAlchemy can read, naming an async driver for SQLite or PostgreSQL (the value is not echoed)."""
        if value is None:
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(f"not a database URL; write e.g. {DATABASE_EXAMPLE}") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"database {url.get_backend_name()!r} is not supported; write e.g. {DATABASE_EXAMPLE}")
        try:
            is_async = bool(getattr(url.get_dialect(), "is_async", False))
        except NoSuchModuleError:
            is_async = False
        if not is_async:
            raise ValueError(
                f"driver {url.drivername!r} is not an asyncio driver; use postgresql+asyncpg or sqlite+aiosqlite"
            )
        if url.host and ("@" in url.host or "/" in url.host):  # SQLAlchemy split a password's '@' as the user info's
            raise ValueError(
                "the host holds '@' or '/': write them in the user and password percent-encoded (@ as %40, / as %2F)"
            )
        if url.port is not None and not 1 <= url.port <= 65535:  # SQLAlchemy takes any digits; connects then fail
            raise ValueError(f"port {url.port} is out of range; give 1-65535 (or none: 5432)")
        problem = asyncpg_query_problem(url.query) if url.drivername == "postgresql+asyncpg" else None
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_urls(cls, value: str | None) -> str | None:
        if value is None:
            return None
        servers = nats_servers(value)
        for index, server in enumerate(servers, 1):
            which = f"server {index} of {len(servers)}" if len(servers) > 1 else "the URL"
            if _user_info_cut(server):
                raise ValueError(
                    f"{which} has a token or password holding '/', '?' or '#', which nats-py cannot read (it takes "
                    "the URL's host to start there, and percent-encoding is sent as written); choose one without them"
                )
            if not _is_url(server, NATS_SCHEMES):
                raise ValueError(
                    f"{which} is not a NATS URL; write nats://host:4222 (or tls://, ws://, wss://), "
                    "several separated by commas, or leave it unset for the embedded server"
                )
        if len({server.lower().startswith(("ws://", "wss://")) for server in servers}) > 1:  # nats-py refuses it
            raise ValueError("nats:// or tls:// servers cannot be listed with ws:// or wss:// ones; give one kind")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        from leadhub.triggers.actions.base import Permanent
        from leadhub.triggers.actions.send_email import parse_smtp_url
        from leadhub.triggers.actions.ses import valid_domain

        try:
            target = parse_smtp_url(value.get_secret_value())  # what sending reads it with
        except (Permanent, ValueError):
            raise ValueError(
                "not an SMTP URL; write smtp://user:pass@host:587?starttls=1 (or smtps://user:pass@host:465), "
                "with the user and password percent-encoded"
            ) from None
        if target.use_tls and target.start_tls:  # aiosmtplib refuses the pair at every send: no e-mail went out
            raise ValueError(
                "smtps:// is TLS from the start and starttls=1 upgrades a plain smtp:// connection; give one"
            )
        if target.ses_domain is not None and not valid_domain(target.ses_domain):  # replies would match nothing
            raise ValueError(
                f"ses_domain={target.ses_domain!r} is not a domain; give the one Amazon SES writes in its Message-IDs, "
                "e.g. ses_domain=eu-west-1.amazonses.com"
            )
        return value

    @field_validator("api_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty; set a token, or unset LEADHUB_API_TOKEN to serve /api to loopback clients only")
        if value is not None and value.get_secret_value() == PLACEHOLDER_TOKEN:
            raise ValueError(
                f"is the placeholder {PLACEHOLDER_TOKEN!r}; set a long random value (openssl rand -hex 24)"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _is_url(value, ("http", "https")):
            raise ValueError("not an http(s) URL; write e.g. https://leads.example.com")
        return value

    @field_validator("lead_window")
    @classmethod
    def _window_is_duration(cls, value: str) -> str:
        try:
            parse_duration(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("stream_duplicate_window")
    @classmethod
    def _duplicate_window_in_range(cls, value: str) -> str:
        try:
            window = parse_duration(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
        if not MIN_DUPLICATE_WINDOW <= window <= MAX_DUPLICATE_WINDOW:
            raise ValueError(f"{value!r} is outside 1s..1d (NATS reads 0 as its own default of 2 minutes)")
        return value

    @field_validator("lead_windows")
    @classmethod
    def _windows_are_channel_pairs(cls, value: dict[str, str]) -> dict[str, str]:
        allowed = (*CHANNELS, "*")
        for pair, window in value.items():
            channels = pair.split(":")
            if len(channels) != 2 or any(c not in allowed for c in channels):
                raise ValueError(
                    f"key {pair!r}: write '<lead channel>:<inquiry channel>' with channels from "
                    f"{', '.join(allowed)} (e.g. 'shop:shop')"
                )
            try:
                parse_duration(window)
            except DurationError as exc:
                raise ValueError(f"key {pair!r}: {exc}") from None
        return value

    @property
    def duplicate_window_seconds(self) -> float:
        return parse_duration(self.stream_duplicate_window).total_seconds()

    @property
    def identity_policy(self) -> IdentityPolicy:
        return IdentityPolicy(
            fold_email=self.email_folding,
            lead_window=parse_duration(self.lead_window),
            lead_windows={tuple(k.split(":")): parse_duration(v) for k, v in self.lead_windows.items()},  # type: ignore[misc]
        )

    @field_validator("default_region")
    @classmethod
    def _region_is_known(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import phonenumbers

        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r}; use a two-letter country code like RU or US")
        return region

    @field_validator("workers", mode="before")
    @classmethod
    def _workers_auto(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            from leadhub.hub.usable_cpus import usable_cpus

            return min(MAX_WORKERS, usable_cpus())
        if isinstance(value, str) and not value.strip().isdigit():
            raise ValueError(
                f"{value!r} is not a number of processes; write a whole number from 1 to {MAX_WORKERS}, or auto"
            )
        return value

    @field_validator("roles", mode="before")
    @classmethod
    def _roles_from_csv(cls, value: Any) -> Any:
        return _csv(value) if isinstance(value, str) else value

    @field_validator("roles")
    @classmethod
    def _some_role(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:  # an empty LEADHUB_ROLES: a daemon that answers /healthz and does nothing else
            raise ValueError(f"name at least one of {', '.join(ROLES)}")
        return value

    @field_validator("worker_roles", mode="before")
    @classmethod
    def _worker_role_groups(cls, value: Any) -> Any:
        """`pipeline,relay` or a list of roles: one group; `http;pipeline,relay` or a list of lists: one per worker."""
        if isinstance(value, str):
            return tuple(_csv(group) for group in value.split(";"))
        if isinstance(value, list | tuple) and value and all(isinstance(item, str) for item in value):
            return (tuple(value),)
        return value

    @field_validator("worker_roles")
    @classmethod
    def _one_group_for_all_workers_or_one_each(
        cls, value: tuple[tuple[str, ...], ...] | None, info: ValidationInfo
    ) -> tuple[tuple[str, ...], ...] | None:
        if value is not None and (not value or not all(value)):
            raise ValueError(
                f"name at least one of {', '.join(WORKER_ROLES)} (in each group, when groups are separated by ';'), "
                "or leave worker_roles unset"
            )
        workers = info.data.get("workers")
        roles = info.data.get("roles", ROLES)
        if value is None and (workers or 1) > 1 and not any(role in WORKER_ROLES for role in roles):
            raise ValueError(  # the workers would start with no role, be refused, and be started again forever
                f"unset, so the processes beside the first run the roles of roles among {', '.join(WORKER_ROLES)}, "
                f"and roles has none: set worker_roles, or workers: 1"
            )
        if value is not None and workers == 1:  # ignored, and `roles` alone may leave the pipeline to nobody
            raise ValueError(
                "names the roles of the processes beside the first, but workers is 1: set workers: 2 or more, "
                "or put these roles in roles"
            )
        if value is not None and len(value) > 1 and workers is not None and len(value) != workers - 1:
            raise ValueError(
                f"{len(value)} groups of roles (one per worker, separated by ';') but workers: {workers} starts "
                f"{workers - 1} process(es) beside the first; name one group for all of them or one for each, "
                f"e.g. workers: {len(value) + 1}"
            )
        workers_serve_http = any("http" in group for group in value or ())
        if workers_serve_http and (workers or 1) > 1 and "http" not in info.data.get("roles", ("http",)):
            raise ValueError(
                "has http but roles does not: the processes share one port, so the primary would answer a share of "
                "the webhooks without taking them; add http to roles or remove it from worker_roles"
            )
        return value

    @property
    def links_url(self) -> str:
        """The base of links in e-mails (survey, unsubscribe): LEADHUB_PUBLIC_URL, else where HTTP listens."""
        return self.public_url or local_url(self.http_host, self.http_port)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'leadhub.db').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, which is passed in as init values.
        return (env_settings, init_settings)


class HubConfig(BaseModel):
    """Settings plus the connectors, each validated by its own type's schema."""

    model_config = {"arbitrary_types_allowed": True, "frozen": True}

    settings: Settings
    connectors: tuple[BaseModel, ...]
    source: Path | None = None
    # The file's bytes as validated (b"": no file), which workers run rather than the file as an admin may have
    # edited it since; None when the settings came as a mapping (a test's dict). Never in a repr: it holds secrets.
    text: bytes | None = Field(None, repr=False)


def load_config(path: Path | None = None, *, env: dict[str, str] | None = None, text: bytes | None = None) -> HubConfig:
    """Read the file (if any) and the environment; raise ConfigError listing every problem.

    `text` is the file's content as another process read it (a worker gets the primary's): `path` is not read then,
    only named in errors, and without `path` there is no file (./leadhub.yaml created since is not looked for).
    """
    environ = os.environ if env is None else env
    if text is None:
        source = path or (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None)
        text = _read_file(source) if source else b""
    else:
        source = path
    raw, lines = _parse_yaml(source, text) if source else ({}, {})
    return config_from_dict(raw, env=environ, source=source, lines=lines).model_copy(update={"text": text})


def config_from_dict(
    raw: dict[str, Any],
    *,
    env: os._Environ[str] | dict[str, str] | None = None,
    source: Path | None = None,
    lines: dict[tuple[Any, ...], int] | None = None,
) -> HubConfig:
    """Validate settings given as a mapping (the parsed file, or a test's dict)."""
    environ = os.environ if env is None else env
    lines = lines or {}
    label = str(source) if source else "(defaults)"
    problems: list[str] = []
    try:
        settings = _settings_from(raw, environ)
    except ValidationError as exc:
        problems += [_describe(err, label, lines, environ, Settings) for err in exc.errors()]
        raise ConfigError(problems) from None
    except SettingsError as exc:  # a complex value in the environment that is not JSON
        field = str(exc).split('"')[1] if '"' in str(exc) else "?"
        raise ConfigError(
            [f"environment {ENV_PREFIX}{field.upper()}: {field}: not a valid value (write JSON)"]
        ) from None
    connectors = _validate_connectors(settings.connectors, label, lines, problems)
    if problems:
        raise ConfigError(problems)
    return HubConfig(settings=settings, connectors=tuple(connectors), source=source)


def _settings_from(raw: dict[str, Any], environ: os._Environ[str] | dict[str, str]) -> Settings:
    if environ is os.environ:
        return Settings(**raw)
    saved = dict(os.environ)
    try:  # an explicit env (tests, `rules check`) replaces the process environment for parsing
        os.environ.clear()
        os.environ.update(environ)
        return Settings(**raw)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None


def _parse_yaml(path: Path, text: bytes) -> tuple[dict[str, Any], dict[tuple[Any, ...], int]]:
    try:
        node, data = parse_yaml(text)
    except YamlProblem as exc:
        raise ConfigError([f"{path}:{exc.line}:{exc.column}: {exc.message}"]) from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: the file must be a mapping of settings, not a {type(data).__name__}"])
    lines: dict[tuple[Any, ...], int] = {}
    _index_lines(node, (), lines)
    return data, lines


def _index_lines(node: yaml.Node | None, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    """Remember the line of every key and list item so errors can point at it."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            out[child] = key_node.start_mark.line + 1
            _index_lines(value_node, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[(*path, index)] = item.start_mark.line + 1
            _index_lines(item, (*path, index), out)


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(  # noqa: PLR0917
    err: Any,
    label: str,
    lines: dict[tuple[Any, ...], int],
    environ: Any,
    model: type[BaseModel],
    prefix: tuple[Any, ...] = (),
) -> str:
    loc = (*prefix, *err["loc"])
    top = str(loc[0]) if loc else ""
    env_name = ENV_PREFIX + top.upper()
    if not prefix and env_name in environ:
        where = f"environment {env_name}"
    else:
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        where = f"{label}:{line}" if line else label
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(_model_at(model, err["loc"][:-1]).model_fields))
        message = f"unknown key {loc[-1]!r}; allowed keys: {allowed}"
    elif err["type"] == "string_type" and isinstance(err.get("input"), int | float):
        message += f"; {_unquoted_text(err['input'])}"
    return f"{where}: {_dotted(loc)}: {message}"


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel]:
    """The model a nested key belongs to (an imap connector's `oauth2.<key>` is OAuth2Config's, not the connector's)."""
    for part in path:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        nested = next((t for t in _types(field.annotation) if _is_model(t)), None) if field else None
        if nested is None:
            break
        model = nested
    return model


def _types(annotation: Any) -> list[Any]:
    """`annotation` and the types inside it (`X | None`, `list[X]`)."""
    return [annotation, *(t for arg in get_args(annotation) for t in _types(arg))]


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _unquoted_text(value: float) -> str:
    """Why text written in YAML arrived as something else; never echoes the value (it may be a secret)."""
    what = "true, false, yes, no, on or off as a yes/no value" if isinstance(value, bool) else "digits as a number"
    return f'YAML reads unquoted {what}: put the text in quotes ("...")'


def _validate_connectors(
    items: list[dict[str, Any]], label: str, lines: dict[tuple[Any, ...], int], problems: list[str]
) -> list[BaseModel]:
    valid: list[BaseModel] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        loc = ("connectors", index)
        where = f"{label}:{lines.get(loc, '?')}"
        name, kind = item.get("name"), item.get("type")
        if name is None or kind is None:
            missing = " and ".join(key for key in ("name", "type") if item.get(key) is None)
            problems.append(f"{where}: connectors[{index}]: {missing} required (each connector has a name and a type)")
            continue
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            problems.append(
                f"{where}: connectors[{index}].name: {name!r} is not a valid name; use lower-case "
                "letters, digits, '-' and '_' (it becomes the URL /hooks/<name>)"
            )
            continue
        if name in seen:
            problems.append(f"{where}: connectors[{index}].name: {name!r} is already used by connectors[{seen[name]}]")
            continue
        seen[name] = index
        connector_type = CONNECTOR_TYPES.get(str(kind))
        if connector_type is None:
            known = ", ".join(sorted(CONNECTOR_TYPES))
            problems.append(f"{where}: connectors[{index}].type: unknown connector type {kind!r}; known types: {known}")
            continue
        try:
            valid.append(connector_type.Config.model_validate(item))
        except ValidationError as exc:
            problems += [_describe(e, label, lines, {}, connector_type.Config, prefix=loc) for e in exc.errors()]
    _check_orders_of(items, valid, label, lines, problems)
    return valid


def _check_orders_of(
    items: list[dict[str, Any]],
    valid: list[BaseModel],
    label: str,
    lines: dict[tuple[Any, ...], int],
    problems: list[str],
) -> None:
    """A poller's `orders_of` names the shop's webhook connector, which maps statuses as it does: the two deliver
    one order, and differing maps would move its status back and forth."""
    by_name = {getattr(c, "name", None): c for c in valid}
    for index, item in enumerate(items):
        config = by_name.get(item.get("name"))
        target_name = getattr(config, "orders_of", None)
        if config is None or target_name is None:
            continue
        where = f"{label}:{lines.get(('connectors', index, 'orders_of'), lines.get(('connectors', index), '?'))}"
        target = by_name.get(target_name)
        if getattr(target, "type", None) != "woocommerce":
            problems.append(
                f"{where}: connectors[{index}].orders_of: {target_name!r} is not a configured woocommerce connector"
            )
        elif target.statuses != config.statuses:  # type: ignore[union-attr]
            problems.append(
                f"{where}: connectors[{index}].statuses must be those of {target_name!r}: both deliver the same orders"
            )


NOT_SETTINGS = frozenset({"LEADHUB_TEST_DATABASE_URL", "LEADHUB_MIGRATE_URL"})  # the test suite's; parent to child


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """`LEADHUB_` variables that name no setting, each with the closest setting's variable (or None)."""
    import difflib

    known = [name.upper() for name in Settings.model_fields]
    found = []
    for name in sorted(os.environ if environ is None else environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper.removeprefix(ENV_PREFIX) not in known and upper not in NOT_SETTINGS:
            close = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), known, n=1)
            found.append((name, ENV_PREFIX + close[0] if close else None))
    return found
