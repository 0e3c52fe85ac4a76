"""The rule file format as pydantic models: what admins may write, validated one rule at a time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from leadhub.durations import parse_duration

RULE_ID = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
WEBHOOK_TIMEOUT_MAX = timedelta(seconds=60)  # well inside the scheduler's 5-minute lease
ANCHOR = re.compile(r"^\s*([a-z_]+)\.([a-z_]+)\s*(?:\+\s*(\S+))?\s*$")


def check_duration(value: str) -> str:
    parse_duration(value)  # raises DurationError (a ValueError) with the valid forms
    return value


Duration = Annotated[
    str, AfterValidator(check_duration), Field(description="a duration: 30s, 15m, 2h, 7d (at most 36500d)")
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SendEmail(Strict):
    """Render a template (subject, HTML and text parts) and send it over SMTP."""

    type: Literal["send_email"] = Field("send_email", exclude=True)
    template: str = Field(description="template name: email/<name>.subject.txt, .html and/or .txt")
    to: str = Field(description="recipient address (a template, e.g. '{{ contact.email }}')")
    from_: str | None = Field(None, alias="from", description="sender address; default from LEADHUB_SMTP_URL ?from=")
    reply_to: str | None = None


class CreateTask(Strict):
    """A task for a manager, listed at /api/tasks."""

    type: Literal["create_task"] = Field("create_task", exclude=True)
    title: str = Field(description="a template")
    due: Duration | None = None
    assignee: str | None = Field(None, description="a template, e.g. '{{ lead.owner }}'")
    note: str | None = None


class Webhook(Strict):
    """POST JSON signed with HMAC-SHA256 over `<delivery>.<timestamp>.<body>`."""

    type: Literal["webhook"] = Field("webhook", exclude=True)
    url: str = Field(pattern=r"^https?://", description="http(s) URL (a template; each {{ value }} is percent-encoded)")
    secret: str | None = Field(None, description="signing secret; the signature goes in X-Leadhub-Signature")
    body: dict[str, Any] | None = Field(None, description="JSON body; string values are templates")
    timeout: Duration = Field("10s", description="more than 0s, at most 60s")

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: str) -> str:
        # 0 is no timeout at all to aiohttp, and the scheduler records a batch when its slowest action ends: a
        # receiver that never answers held every other action, and past the lease another replica re-ran them.
        if not timedelta(0) < parse_duration(value) <= WEBHOOK_TIMEOUT_MAX:
            raise ValueError(f"a webhook timeout must be more than 0s and at most 60s, not {value!r}")
        return value


class UpdateLead(Strict):
    """Change the lead's status, owner or tags."""

    type: Literal["update_lead"] = Field("update_lead", exclude=True)
    status: Literal["new", "in_progress", "won", "lost", "closed"] | None = None  # store.leads.LEAD_STATUSES
    owner: str | None = Field(None, description="a template")
    add_tags: list[str] = Field(default_factory=list)
    remove_tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> UpdateLead:
        if not (self.status or self.owner or self.add_tags or self.remove_tags):
            raise ValueError("give at least one of status, owner, add_tags, remove_tags")
        return self


class NotifyTelegram(Strict):
    """A message to a chat through the Telegram Bot API."""

    type: Literal["notify_telegram"] = Field("notify_telegram", exclude=True)
    bot_token: str = Field(description="the bot's token from @BotFather")
    chat_id: str | int
    text: str = Field(description="a template")
    api_url: str = Field("https://api.telegram.org", pattern=r"^https?://")


ACTION_MODELS: dict[str, type[Strict]] = {
    "send_email": SendEmail,
    "create_task": CreateTask,
    "webhook": Webhook,
    "update_lead": UpdateLead,
    "notify_telegram": NotifyTelegram,
}
Action = Annotated[SendEmail | CreateTask | Webhook | UpdateLead | NotifyTelegram, Field(discriminator="type")]


def _tag_action(item: Any) -> Any:
    """`{send_email: {...}}` as written in YAML → `{"type": "send_email", ...}` for the tagged union.

    Anything else is passed on unchanged for the union to reject (the loader words those errors).
    """
    if isinstance(item, dict) and len(item) == 1:
        ((name, options),) = item.items()
        if isinstance(name, str) and (options is None or isinstance(options, dict)):
            return {"type": name, **(options or {})}
    return item


class Schedule(Strict):
    cron: str = Field(description="five-field cron expression, e.g. '0 9 * * 1'")
    timezone: str = Field("UTC", description="IANA time zone, e.g. Europe/Moscow")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from cronsim import CronSim, CronSimError

        try:
            CronSim(value, datetime.now(UTC))
        except (CronSimError, ValueError) as exc:
            raise ValueError(f"invalid cron expression {value!r}: {exc}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _zone(value)


class ContactAudience(Strict):
    """Which contacts a schedule rule runs for, selected in the store (the rule's `if` filters further)."""

    no_orders_for: Duration | None = Field(None, description="contacts who ordered, the latest order older than this")
    birthday_field: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="the inquiries' form field holding the birthday: contacts whose birthday is the tick's day",
    )


class ForEach(Strict):
    """A schedule rule run once per selected contact at each tick (`contact` in conditions and templates)."""

    contact: ContactAudience = Field(default_factory=ContactAudience)

    @field_validator("contact", mode="before")
    @classmethod
    def _every(cls, value: Any) -> Any:
        return {} if value is None else value


class Throttle(Strict):
    per: Literal["contact", "lead", "order", "rule"] = "contact"
    period: Duration = Field(alias="for")


class RunIfWithin(Strict):
    run_if_within: Duration


def check_wait_text(value: str) -> str:
    """`15m`, or an anchor date plus an optional duration: `order.completed_at + 7d`."""
    match = ANCHOR.match(value)
    if match:
        if match.group(3):
            check_duration(match.group(3))
        return value
    return check_duration(value)


WaitText = Annotated[
    str,
    AfterValidator(check_wait_text),
    Field(description="30s/15m/2h/7d, or a date field plus a duration: order.completed_at + 7d"),
]


class WaitSpec(Strict):
    """A delay moved into business hours and/or out of quiet hours (named in the file's top-level keys)."""

    after: WaitText | None = Field(None, description="the delay as in `wait: ...`; none: at once")
    business_hours: str | None = Field(None, description="a name under top-level `business_hours:`")
    quiet_hours: str | None = Field(None, description="a name under top-level `quiet_hours:`")
    timezone: Literal["business", "contact"] = Field(
        "business", description="business: the hours' own zone; contact: the zone of the contact's phone number"
    )

    @model_validator(mode="after")
    def _hours(self) -> WaitSpec:
        if not (self.business_hours or self.quiet_hours):
            raise ValueError("give business_hours and/or quiet_hours (or write the delay alone: `wait: 15m`)")
        return self


def _wait_kind(value: Any) -> str:
    return "WaitSpec" if isinstance(value, dict) else "Text"


# Tagged so an error names one member (`wait: invalid duration`), not both; the loader drops the tag from paths.
WaitField = Annotated[
    Annotated[WaitText, Tag("Text")] | Annotated[WaitSpec, Tag("WaitSpec")], Discriminator(_wait_kind)
]


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name like Europe/Moscow or UTC") from None
    return value


Zone = Annotated[str, AfterValidator(_zone), Field(description="IANA time zone, e.g. Europe/Moscow")]


class BusinessHours(Strict):
    """When the business acts: `mon-fri: 09:00-18:00`; days not listed are closed."""

    timezone: Zone
    days: dict[str, str] = Field(description="day or day range -> HH:MM-HH:MM[, HH:MM-HH:MM] or closed")

    @field_validator("days")
    @classmethod
    def _days(cls, value: dict[str, str]) -> dict[str, str]:
        from leadhub.triggers.hours import weekly

        weekly("check", "UTC", value)  # raises HoursError (a ValueError) naming the bad day or span
        return value


class QuietHours(Strict):
    """When no message may go out, every day: `21:00-09:00`; an action due inside waits for the end."""

    timezone: Zone
    quiet: str = Field(description="HH:MM-HH:MM, may cross midnight")

    @field_validator("quiet")
    @classmethod
    def _quiet(cls, value: str) -> str:
        from leadhub.triggers.hours import parse_quiet

        parse_quiet(value)
        return value


class Rule(Strict):
    """One rule: when (`on` or `schedule`), whether (`if`), when to act (`wait`), what to do (`do`)."""

    id: str = Field(pattern=RULE_ID)
    description: str | None = None
    enabled: bool = True
    on: list[str] | None = Field(None, description="event types, e.g. order.completed")
    schedule: Schedule | None = None
    for_each: ForEach | None = Field(None, description="with `schedule`: run once per contact, e.g. for_each: contact")
    if_: str | list[str] | None = Field(None, alias="if", description="condition(s), all must hold")
    wait: WaitField | None = Field(
        None, description="30s/15m/2h/7d, a date field plus a duration (order.completed_at + 7d), or {after, hours}"
    )
    unless: str | None = Field(None, description="re-checked when due; true cancels the action")
    throttle: Throttle | None = None
    mode: Literal["single", "restart", "parallel"] = "single"
    late: Literal["run", "skip"] | RunIfWithin = "run"
    do: list[Action] = Field(min_length=1)

    @field_validator("late", mode="wrap")
    @classmethod
    def _late(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            if isinstance(value, dict) and set(value) == {"run_if_within"}:
                check_duration(value["run_if_within"])
            raise ValueError("late must be run, skip or {run_if_within: <duration>}, e.g. run_if_within: 2h") from None

    @field_validator("on", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("schedule", mode="before")
    @classmethod
    def _cron_string(cls, value: Any) -> Any:
        return {"cron": value} if isinstance(value, str) else value

    @field_validator("for_each", mode="before")
    @classmethod
    def _for_each_string(cls, value: Any) -> Any:
        return {"contact": {}} if value == "contact" else value

    @field_validator("throttle", mode="before")
    @classmethod
    def _throttle_string(cls, value: Any) -> Any:
        return {"for": value} if isinstance(value, str) else value

    @field_validator("do", mode="before")
    @classmethod
    def _tag_actions(cls, value: Any) -> Any:
        return [_tag_action(item) for item in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _when(self) -> Rule:
        if (self.on is None) == (self.schedule is None):
            raise ValueError("give exactly one of `on` (event types) or `schedule` (cron)")
        if self.for_each is not None and self.schedule is None:
            raise ValueError("`for_each` goes with `schedule` (a cron rule); an event rule already has its contact")
        return self

    @property
    def conditions(self) -> list[str]:
        return [] if self.if_ is None else [self.if_] if isinstance(self.if_, str) else list(self.if_)


class RuleFile(Strict):
    rules: list[dict[str, Any]]
