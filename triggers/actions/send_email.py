"""send_email: render subject/text/HTML from templates, suppress unwanted addresses, send once via SMTP."""

from __future__ import annotations

import email.policy
import hashlib
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog

from leadhub.store import trigger_data
from leadhub.triggers.actions import mime
from leadhub.triggers.actions.base import (
    CompileError,
    Deps,
    Job,
    Permanent,
    RenderEnv,
    Skipped,
    Transient,
    compile_text,
)
from leadhub.triggers.actions.mailbox import ascii_domain, ascii_mailbox, is_address, optional_mailbox
from leadhub.triggers.actions.ses import ses_domain, ses_message_id
from leadhub.triggers.actions.smtp_pool import SmtpPool
from leadhub.triggers.links import link_context
from leadhub.triggers.sandbox import Scope, TemplateProblem, Templates
from leadhub.triggers.schema import SendEmail

log = structlog.get_logger("leadhub.triggers")
LINKS = frozenset({"survey_url", "unsubscribe_url"})
SMTP_TIMEOUT = 15.0
# No folding of long headers: a folded List-Unsubscribe URL becomes encoded words no client can follow.
POLICY = email.policy.SMTP.clone(max_line_length=998)
# An internationalised address (a non-ASCII local part, which intake keeps) goes in raw UTF-8 headers (RFC 6532)
# and an SMTPUTF8 envelope (RFC 6531); aiosmtplib's sendmail encoded it as ASCII and raised UnicodeEncodeError.
UTF8_POLICY = POLICY.clone(utf8=True)


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None
    sender: str | None
    ses_domain: str | None = None  # the domain of the Message-IDs Amazon SES writes (triggers/actions/ses.py)


def parse_smtp_url(url: str) -> SmtpTarget:
    """`smtp://user:pass@host:587?starttls=1&from=shop@example.com` (or `smtps://` for implicit TLS);
    `ses_domain=eu-west-1.amazonses.com` where Amazon SES's Message-ID domain is not derived from the host.

    A password over `smtp://` needs STARTTLS unless the URL says `starttls=0`: upgrading only when the server
    offered it sent the password in plain text wherever the offer was missing, or removed on the way."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise Permanent("LEADHUB_SMTP_URL must look like smtp://user:pass@host:587?starttls=1")
    query = _query(parts.query)
    starttls = query.get("starttls")
    if starttls is None and parts.scheme == "smtp" and parts.password:
        starttls = "1"
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or (465 if parts.scheme == "smtps" else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=parts.scheme == "smtps",
        start_tls=None if starttls is None else starttls.lower() in ("1", "true", "yes"),
        sender=query.get("from"),
        ses_domain=query.get("ses_domain"),
    )


def _query(query: str) -> dict[str, str]:
    """The URL's query, percent-decoded, the last of a repeated name winning, blank values left out (parse_qs's
    way). A `+` stays a `+`: parse_qs reads it as a space (HTML forms' encoding), and
    `from=sales+leads@example.com` was sent from `sales leads@example.com`, which no server takes."""
    pairs = (pair.partition("=") for pair in query.split("&"))
    return {unquote(name): unquote(value) for name, _, value in pairs if value}


@dataclass(frozen=True)
class BoundEmail:
    spec: SendEmail
    to: Any
    subject: Any
    text: Any
    html: Any
    sender: Any
    reply_to: Any

    def render(self, context: dict[str, Any], env: RenderEnv) -> dict[str, Any]:
        to = self.to.render(**context).strip()
        full = context | link_context(env.key, env.public_url, context, to, env.now)
        return {
            "to": to,
            "from": optional_mailbox(self.sender.render(**full), "from") if self.sender else None,
            "reply_to": optional_mailbox(self.reply_to.render(**full), "reply_to") if self.reply_to else None,
            "subject": " ".join(self.subject.render(**full).split()),
            "text": self.text.render(**full) if self.text else None,
            "html": self.html.render(**full) if self.html else None,
            "unsubscribe_url": full["unsubscribe_url"],
        }

    async def prefetch(self, batch: list[tuple[dict[str, Any], Job]], deps: Deps) -> None:
        """Suppressions and already-sent Message-IDs of a whole batch in two queries (one per email was slow)."""
        if not deps.smtp_url or deps.engine is None:
            return
        target = parse_smtp_url(deps.smtp_url)
        ids = {
            job.key: _message_id(job.key, ascii_mailbox(rendered["from"] or target.sender or "leadhub@localhost"))
            for rendered, job in batch
        }
        async with deps.engine.connect() as conn:
            reasons, sent = await trigger_data.send_states(conn, [r["to"] for r, _ in batch], list(ids.values()))
        for rendered, job in batch:
            job.prefetched = {
                "suppressed": reasons.get(rendered["to"]),
                "sent": ids[job.key] in sent,
            }

    async def execute(self, rendered: dict[str, Any], job: Job, deps: Deps) -> dict[str, Any]:
        to = rendered["to"]
        if not is_address(to):
            raise Permanent(f"not a single e-mail address: {to!r}")
        if not deps.smtp_url:
            raise Transient("LEADHUB_SMTP_URL is not set")
        target = parse_smtp_url(deps.smtp_url)
        assert deps.engine is not None
        sender = ascii_mailbox(rendered["from"] or target.sender or "leadhub@localhost")
        message_id = _message_id(job.key, sender)
        if job.prefetched is not None:
            reason, sent = job.prefetched["suppressed"], job.prefetched["sent"]
        else:
            async with deps.engine.connect() as conn:
                reason, sent = await trigger_data.send_state(conn, to, message_id)
        if reason is not None:
            raise Skipped(f"suppressed address ({reason})")
        if sent:
            return {"message_id": message_id, "already_sent": True}
        address = ascii_domain(to)  # SMTPUTF8 only for a local part that needs it
        # Reply-To's domain likewise: an address left non-ASCII in a message sent without SMTPUTF8 was written
        # as one RFC 2047 encoded word, which no mail program replies to.
        reply_to = ascii_mailbox(rendered["reply_to"]) if rendered["reply_to"] else None
        headers = _headers(rendered | {"to": address, "reply_to": reply_to}, sender, message_id, job)
        envelope = (_address(sender), address)
        utf8 = not "".join(envelope).isascii() or not _address(reply_to or "").isascii()
        data = _data(headers, rendered, utf8)
        answer = await _send(data, envelope, target, deps.extra.get("smtp_pool"), utf8=utf8)
        return _record_sent(job, message_id, _as_delivered(answer, target, job))


def _record_sent(job: Job, message_id: str, delivered: str | None) -> dict[str, Any]:
    """Recorded with the batch's outcomes, in the scheduler's one transaction, one statement for the batch: the
    derived Message-ID (a later run of the action finds it and sends nothing) and, when Amazon SES replaced it,
    the one the recipient sees, which the reply names. Both rows or neither, so a run sent again records again."""
    lead_id = getattr(job.context.get("lead"), "id", None)
    job.batched.append((trigger_data.record_sent, trigger_data.sent_row(message_id, lead_id, job.now)))
    if delivered is None:
        return {"message_id": message_id}
    job.batched.append((trigger_data.record_sent, trigger_data.sent_row(delivered, lead_id, job.now)))
    return {"message_id": message_id, "ses_message_id": delivered}


def _as_delivered(answer: str, target: SmtpTarget, job: Job) -> str | None:
    """The Message-ID Amazon SES wrote in place of leadhub's, from its answer to DATA; None for other servers."""
    domain = ses_domain(target.host, target.ses_domain)
    if domain is None:
        return None
    delivered = ses_message_id(answer, domain)
    if delivered is None:  # the reply to this mail will not find its lead: say so (the answer holds no address)
        log.warning(
            "Amazon SES accepted the e-mail without naming its Message-ID: a reply to it will not join the lead",
            rule=job.rule_id,
            key=job.key,
            answer=answer[:200],
        )
    return delivered


# A bare address of dot-atoms, which nearly every rendered address is: parseaddr gives it back unchanged
# (tests/triggers/test_send_email_address.py checks generated ones), at ~50 µs a call saved twice per e-mail.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_BARE_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _address(header: str) -> str:
    if _BARE_ADDRESS.fullmatch(header):
        return header
    return parseaddr(header)[1] or header


def _message_id(key: str, sender: str) -> str:
    """Derived from the action key, so a retry sends the same one; the domain is the sender address's (of
    `Name <shop@example.com>` too: the header's last `@` gave `example.com>`, and replies matched nothing)."""
    domain = _address(sender).rpartition("@")[2] or "localhost"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def _headers(rendered: dict[str, Any], sender: str, message_id: str, job: Job) -> list[tuple[str, str]]:
    headers = [
        ("From", sender),
        ("To", rendered["to"]),
        ("Subject", rendered["subject"]),
        ("Message-ID", message_id),
        ("Date", format_datetime(job.now)),
    ]
    if rendered["reply_to"]:
        headers.append(("Reply-To", rendered["reply_to"]))
    if rendered["unsubscribe_url"]:
        headers.append(("List-Unsubscribe", f"<{rendered['unsubscribe_url']}>"))
        headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))  # RFC 8058
    headers.append(("X-Leadhub-Rule", job.rule_id))
    return headers


def _data(headers: list[tuple[str, str]], rendered: dict[str, Any], utf8: bool) -> bytes:
    """The message as sent. What cannot be written (a header value the stdlib refuses, a lone surrogate) fails
    the same way on every attempt: it was retried as an unexpected error, with a traceback each time."""
    try:
        return mime.build(headers, rendered["text"], rendered["html"]) or _message(headers, rendered, utf8).as_bytes()
    except ValueError as exc:  # UnicodeEncodeError too
        raise Permanent(f"the message could not be written: {exc}") from None


def _message(headers: list[tuple[str, str]], rendered: dict[str, Any], utf8: bool = False) -> EmailMessage:
    """The stdlib's way, for what `mime.build` leaves to it (non-ASCII addresses, odd header values)."""
    message = EmailMessage(policy=UTF8_POLICY if utf8 else POLICY)
    for name, value in headers:
        message[name] = value
    message.set_content(rendered["text"] or "")
    if rendered["html"]:
        if rendered["text"]:
            message.add_alternative(rendered["html"], subtype="html")
        else:
            message.set_content(rendered["html"], subtype="html")
    return message


async def _send(
    data: bytes, envelope: tuple[str, str], target: SmtpTarget, pool: SmtpPool | None, *, utf8: bool
) -> str:
    """Send the message; the server's answer to DATA (its text after `250`), which may name the id it gave it."""
    import aiosmtplib  # here, not at module level: a daemon whose rules send no e-mail never loads it

    sender, to = envelope
    options = ["SMTPUTF8"] if utf8 else None
    try:
        if pool is not None:
            async with pool.connection(target) as client:
                _, answer = await client.sendmail(sender, [to], data, mail_options=options)
            return answer
        _, answer = await aiosmtplib.send(
            data,
            sender=sender,
            recipients=[to],
            hostname=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.use_tls,
            start_tls=target.start_tls,
            timeout=SMTP_TIMEOUT,
            mail_options=options,
        )
        return answer
    except aiosmtplib.SMTPNotSupported as exc:
        if not utf8:
            raise Transient(f"SMTP server unavailable: SMTPNotSupported: {exc}") from None
        raise Permanent(f"the SMTP server does not take internationalised addresses: {exc}") from None
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        error = Transient if all(400 <= c < 500 for c in codes) else Permanent
        raise error(f"recipient refused: {'; '.join(f'{r.code} {r.message}' for r in exc.recipients)}") from None
    except aiosmtplib.SMTPResponseException as exc:
        error = Transient if 400 <= exc.code < 500 else Permanent
        raise error(f"SMTP {exc.code}: {exc.message}") from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise Transient(f"SMTP server unavailable: {type(exc).__name__}: {exc}") from None
    except ValueError as exc:  # an address aiosmtplib will not put on a command line (a space, `<`): every time
        raise Permanent(f"the SMTP envelope could not be written: {exc}") from None


class SendEmailAction:
    name = "send_email"
    Spec = SendEmail

    def compile(self, spec: SendEmail, templates: Templates, scope: Scope) -> BoundEmail:
        email_scope = Scope(scope.objects, scope.extra | LINKS)
        base = f"email/{spec.template}"
        try:
            subject = templates.file(f"{base}.subject.txt", email_scope, html=False)
            text = templates.file(f"{base}.txt", email_scope, html=False)
            html = templates.file(f"{base}.html", email_scope, html=True)
        except TemplateProblem as exc:
            raise CompileError(("template",), str(exc)) from None
        if subject is None or (text is None and html is None):
            raise CompileError(
                ("template",),
                f"unknown template {spec.template!r}: needs {base}.subject.txt and {base}.txt and/or {base}.html "
                "in LEADHUB_TEMPLATES_DIR or the shipped templates",
            )
        return BoundEmail(
            spec,
            to=compile_text(templates, scope, spec.to, "to"),
            subject=subject,
            text=text,
            html=html,
            sender=compile_text(templates, scope, spec.from_, "from"),
            reply_to=compile_text(templates, scope, spec.reply_to, "reply_to"),
        )
