"""One blocking IMAP connection to one folder (imapclient); every method runs in the folder's own thread.

The async side (connectors/imap_folder.py) calls these one at a time, so the connection is never shared between
two commands. `abort()` is the one method another thread may call: it shuts the socket so a blocked read returns.
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from imapclient.imapclient import SocketTimeout

from leadhub.connectors.failure_reason import CredentialsRefused
from leadhub.connectors.imap_config import ImapConfig
from leadhub.connectors.imap_oauth import TokenError, TokenProvider

# Fetched instead of the whole message when it is over the size limit: enough for the headers.
HEAD_BYTES = 65536
IDLE_SLICE = 0.5  # seconds; a stop request is noticed within one slice


class AuthFailed(CredentialsRefused):
    """The server refused the credentials (or no OAuth2 token could be had); the message is for the admin."""


class ConnectionLost(Exception):
    """The server closed the connection (BYE, EOF) while we were waiting."""


class ConnectFailed(Exception):
    """No IMAP session could be started with the configured host, port and `security`; says what to check."""


class PostActionRefused(Exception):
    """A post-action stopped before it could touch mail that is not leadhub's (shown as post_action_error)."""


class FetchIncomplete(Exception):
    """The server sent no content for messages that still exist: fetched again, one at a time (imap_folder.py)."""


@dataclass(frozen=True, slots=True)
class FolderInfo:
    uidvalidity: int
    uidnext: int | None
    exists: int
    idle: bool
    move: bool


@dataclass(frozen=True, slots=True)
class Fetched:
    uid: int
    data: bytes
    internaldate: str | None
    size: int
    truncated: bool
    unreadable: str | None = None  # the server's answer for a message it would not deliver (`data` is empty)


class ImapSession:
    """Connect, log in, select one folder, and offer exactly the commands the folder worker needs."""

    def __init__(self, config: ImapConfig, folder: str, tokens: TokenProvider | None) -> None:
        self.config = config
        self.folder = folder
        self.tokens = tokens
        self.client: IMAPClient | None = None
        self.stop_flag = threading.Event()

    # -- connection ---------------------------------------------------------------------------------------------
    def open(self) -> FolderInfo:
        cfg = self.config
        timeout = SocketTimeout(connect=cfg.connect_timeout.total_seconds(), read=cfg.timeout.total_seconds())
        context = self._ssl_context() if cfg.security != "none" else None
        try:
            client = IMAPClient(
                cfg.host, port=cfg.effective_port, ssl=cfg.security == "ssl", ssl_context=context, timeout=timeout
            )
        except (TimeoutError, ssl.SSLError) as exc:
            raise ConnectFailed(self._connect_error(exc)) from exc
        self.client = client
        client.normalise_times = False
        if cfg.security == "starttls":
            client.starttls(context)
        self._login(client)
        return self.select()

    def select(self) -> FolderInfo:
        """(Re-)select the folder: the answer carries the current UIDVALIDITY and UIDNEXT."""
        client = self.imap
        selected = client.select_folder(self.folder, readonly=self.config.post_action == "none")
        capabilities = client.capabilities()
        uidnext = selected.get(b"UIDNEXT")
        return FolderInfo(
            uidvalidity=int(selected[b"UIDVALIDITY"]),
            uidnext=int(uidnext) if uidnext is not None else None,
            exists=int(selected.get(b"EXISTS", 0)),
            idle=b"IDLE" in capabilities,
            move=b"MOVE" in capabilities,
        )

    def _connect_error(self, exc: Exception) -> str:
        """The two usual `security`/`port` mix-ups named as such (the bare errors say neither host nor cause)."""
        cfg = self.config
        where = f"{cfg.host}:{cfg.effective_port}"
        if isinstance(exc, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(exc):
            return (
                f"{where} did not answer with TLS (security: ssl); it looks like a plain IMAP port: "
                f"use security: starttls (or none), or the server's TLS port, usually 993 [{exc}]"
            )
        if isinstance(exc, TimeoutError) and not isinstance(exc, ssl.SSLError):
            seconds = f"{cfg.connect_timeout.total_seconds():g}s"
            if cfg.security == "ssl":
                return f"no TLS handshake from {where} within connect_timeout ({seconds}): the server does not answer"
            return (
                f"no IMAP greeting from {where} within connect_timeout ({seconds}): the server does not answer, "
                "or it waits for TLS first (a port like 993 needs security: ssl)"
            )
        return f"{where}: {type(exc).__name__}: {exc}"

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.config.ca_file) if self.config.ca_file else None)

    def _login(self, client: IMAPClient) -> None:
        cfg = self.config
        if self.tokens is None:
            assert cfg.password is not None
            password = cfg.password.get_secret_value()
            try:
                if cfg.username.isascii() and password.isascii():
                    client.login(cfg.username, password)
                else:  # imaplib sends LOGIN as ASCII only; SASL PLAIN carries UTF-8 (RFC 4616)
                    client.plain_login(cfg.username, password)
            except LoginError as exc:
                raise AuthFailed(f"the server refused the password for {cfg.username}: {_server_text(exc)}") from None
            return
        mechanism = self.tokens.config.mechanism
        for attempt in range(2):  # a cached token may have been revoked or expired early: fetch a new one once
            try:
                token = self.tokens.token(refresh=attempt > 0)
            except TokenError as exc:
                raise AuthFailed(f"no OAuth2 token for {cfg.username}: {exc}") from None
            try:
                if mechanism == "OAUTHBEARER":
                    client.oauthbearer_login(cfg.username, token)
                else:
                    client.oauth2_login(cfg.username, token, mech=mechanism)
                return
            except LoginError as exc:
                error = exc
            self.tokens.invalidate()
        raise AuthFailed(f"the server refused the {mechanism} token for {cfg.username}: {_server_text(error)}")

    def close(self) -> None:
        """Log out politely; the socket is closed either way (`abort()` can still cut a slow LOGOUT short)."""
        client = self.client
        if client is None:
            return
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):  # the connection is going away regardless
            _shutdown(client)
        finally:
            self.client = None

    def abort(self) -> None:
        """From any thread: make a blocked call return now (used when stopping)."""
        self.stop_flag.set()
        client = self.client
        if client is not None:
            try:
                client.socket().shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                return

    # -- queries ------------------------------------------------------------------------------------------------
    @property
    def imap(self) -> IMAPClient:
        if self.client is None:
            raise ConnectionLost("not connected")
        return self.client

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs above `last_uid` (`n:*` also matches the highest UID when it is below n, so filter)."""
        return sorted(uid for uid in self.imap.search(["UID", f"{last_uid + 1}:*"]) if uid > last_uid)

    def uids_since(self, day: date) -> list[int]:
        return sorted(self.imap.search(["SINCE", day]))

    def highest_uid(self) -> int:
        uids = self.imap.search(["UID", "*"])
        return max(uids, default=0)

    def sizes(self, uids: list[int]) -> dict[int, int]:
        answer = self.imap.fetch(uids, ["RFC822.SIZE"])
        return {uid: int(item[b"RFC822.SIZE"]) for uid, item in answer.items() if b"RFC822.SIZE" in item}

    def fetch(self, uids: list[int], sizes: dict[int, int]) -> list[Fetched]:
        """Whole messages without setting \\Seen; messages gone since the search are simply absent."""
        if not uids:
            return []
        answer = self.imap.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE"])
        out = []
        nil = []
        for uid in uids:
            item = answer.get(uid)
            if item is None or b"BODY[]" not in item:
                continue
            if item[b"BODY[]"] is None:  # Dovecot: expunged by another session since our last command
                nil.append(uid)
                continue
            out.append(Fetched(uid, bytes(item[b"BODY[]"]), _date(item), sizes.get(uid, 0), truncated=False))
        self._check_gone(nil)
        return out

    def _check_gone(self, uids: list[int]) -> None:
        """A NIL body is only skipped when the message is really gone; else the batch fails and is retried."""
        if not uids:
            return
        present = set(self.imap.search(["UID", ",".join(map(str, uids))])) & set(uids)
        if present:
            raise FetchIncomplete(f"the server sent no body for UIDs {sorted(present)[:10]}, which still exist")

    def fetch_heads(self, uids: list[int], sizes: dict[int, int]) -> list[Fetched]:
        """The first HEAD_BYTES of messages over the size limit (the rest is never downloaded)."""
        if not uids:
            return []
        answer = self.imap.fetch(uids, [f"BODY.PEEK[]<0.{HEAD_BYTES}>", "INTERNALDATE"])
        out = []
        nil = []
        for uid in uids:
            item = answer.get(uid) or {}
            data = item.get(b"BODY[]<0>")
            if data is None:
                if b"BODY[]<0>" in item:  # NIL: expunged by another session, see fetch()
                    nil.append(uid)
                continue
            out.append(Fetched(uid, bytes(data), _date(item), sizes.get(uid, 0), truncated=True))
        self._check_gone(nil)
        return out

    # -- waiting ------------------------------------------------------------------------------------------------
    def idle_wait(self, max_seconds: float) -> bool:
        """IDLE until new mail (True), `max_seconds` (False) or a stop request; always leaves IDLE mode."""
        client = self.imap
        # Mail delivered since the last command is reported by the next command, but not always by IDLE: the
        # server may watch for changes only from the moment IDLE starts. NOOP asks first, so what arrived
        # while the last sync finished is not left for the next poll.
        if any(_is_new_mail(r) for r in client.noop()[1]):
            return True
        client.idle()
        deadline = time.monotonic() + max_seconds
        quick_empty = 0
        new_mail = False
        try:
            while not self.stop_flag.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                responses = client.idle_check(timeout=IDLE_SLICE)
                if any(_is_bye(r) for r in responses):
                    raise ConnectionLost(f"the server ended the session: {_bye_text(responses)}")
                if any(_is_new_mail(r) for r in responses):
                    new_mail = True
                    break
                # idle_check swallows EOF and returns nothing at once; three in a row means the server is gone
                quick_empty = quick_empty + 1 if not responses and time.monotonic() - started < IDLE_SLICE / 4 else 0
                if quick_empty >= 3:
                    raise ConnectionLost("the server closed the connection during IDLE")
        except ConnectionLost:
            _shutdown(client)
            raise
        client.idle_done()
        return new_mail

    # -- post-actions -------------------------------------------------------------------------------------------
    def post_action(self, uids: list[int], action: str, can_move: bool) -> None:
        """Flag, tag or move messages that are already durable in leadhub; never deletes unless moving."""
        if not uids or action == "none":
            return
        client = self.imap
        if action == "seen":
            client.add_flags(uids, [b"\\Seen"], silent=True)
        elif action.startswith("keyword:"):
            client.add_flags(uids, [action.removeprefix("keyword:").encode()], silent=True)
        elif action.startswith("move:"):
            target = action.removeprefix("move:")
            if can_move:
                client.move(uids, target)
            else:  # RFC 6851 fallback: copy, flag deleted, expunge just these UIDs (UIDPLUS) or the folder
                client.copy(uids, target)
                client.delete_messages(uids, silent=True)
                if b"UIDPLUS" in client.capabilities():
                    client.uid_expunge(uids)
                    return
                # A plain EXPUNGE removes every \Deleted message of the folder, also ones a person marked (and
                # ones not read yet): only when ours are the only ones.
                others = sorted(set(client.search(["DELETED"])) - set(uids))
                if others:
                    raise PostActionRefused(
                        f"moved by copy, but not expunged: the server has no UIDPLUS and {len(others)} other "
                        f"message(s) in {self.folder} are marked \\Deleted (UIDs {others[:5]}...); "
                        "the copied ones stay marked \\Deleted"
                    )
                client.expunge()


def _date(item: dict[bytes, Any]) -> str | None:
    value = item.get(b"INTERNALDATE")
    return value.isoformat() if value is not None else None


def _is_new_mail(response: tuple) -> bool:  # type: ignore[type-arg]
    return len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT")


def _is_bye(response: Iterable[Any]) -> bool:
    response = tuple(response)
    return bool(response) and response[0] == b"BYE"


def _bye_text(responses: list[Any]) -> str:
    for response in responses:
        if _is_bye(response) and len(response) > 1:
            return bytes(response[1]).decode("utf-8", "replace")[:200]
    return "BYE"


def _server_text(exc: Exception) -> str:
    text = str(exc)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return text[:200]


def _shutdown(client: IMAPClient) -> None:
    """Close the socket without LOGOUT; it may be dead already, which is fine."""
    with contextlib.suppress(OSError, imaplib.IMAP4.error):
        client.shutdown()
