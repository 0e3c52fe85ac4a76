"""Pure parts of the `imap` connector: envelope keys, configuration checks, OAuth2 token sources, batching, the
/readyz summary. No servers (the token command is a real subprocess)."""

from __future__ import annotations

import json
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from leadhub.connectors.imap import summarize
from leadhub.connectors.imap_config import ImapConfig
from leadhub.connectors.imap_folder import _by_bytes
from leadhub.connectors.imap_message import envelope_for, message_key, truncated_key, unreadable_envelope
from leadhub.connectors.imap_oauth import OAuth2Config, TokenError, TokenProvider, parse_token
from leadhub.connectors.imap_session import HEAD_BYTES
from leadhub.pipelines.parse_email import parse_email
from tests.helpers import corpus
from tests.imap_server import make_mail

BASE = {"name": "inbox", "host": "imap.example.com", "username": "sales@example.com", "password": "pw"}


def config(**overrides: Any) -> ImapConfig:
    return ImapConfig(**(BASE | overrides))


# -- keys -------------------------------------------------------------------------------------------------------


def test_the_key_follows_message_id_and_date_not_the_copy() -> None:
    original = make_mail(7)
    # the same message as another server (or another folder) hands it out: extra trace header, CRLF -> LF
    migrated = b"Received: from migrate.example by imap.example.com\r\n" + original
    assert message_key("inbox", migrated.replace(b"\r\n", b"\n")) == message_key("inbox", original)
    assert message_key("inbox", make_mail(8)) != message_key("inbox", original)
    assert message_key("other", original) != message_key("inbox", original)


def test_a_resent_message_id_with_another_date_is_another_message() -> None:
    first = make_mail(1)
    again = first.replace(b"Date: Mon, 23 Nov 2026 09:00:01", b"Date: Tue, 24 Nov 2026 10:00:00")
    assert message_key("inbox", again) != message_key("inbox", first)


def test_keys_of_messages_with_a_date_are_those_earlier_releases_stored() -> None:
    """sha256(Message-ID, NUL, Date): a message stored before keying changed must stay a duplicate when re-read."""
    assert message_key("inbox", make_mail(7)) == "imap:inbox:mid:f2986f14fadc2cf70d215e9a72807707"


def dateless(n: int, *, sender: str = "Website <wordpress@site.example>", subject: str = "Contact form") -> bytes:
    """A web-form plugin's mail: one Message-ID on every message and no Date; only the text tells them apart."""
    mail = make_mail(n, sender="x", subject=subject, body=f"Name: Customer {n}\r\nPlease call me back.\r\n")
    mail = re.sub(rb"Date: [^\r]*\r\n", b"", mail)
    mail = re.sub(rb"From: [^\r]*", b"From: " + sender.encode(), mail)
    return mail.replace(f"<inquiry-{n}@client.example>".encode(), b"<contact-form@site.example>")


def test_one_message_id_without_a_date_keys_each_message_apart() -> None:
    """Found by an audit: keyed by the Message-ID alone, every later message was dropped as the first's duplicate."""
    first = message_key("inbox", dateless(1))
    assert message_key("inbox", dateless(2)) != first  # another body
    assert message_key("inbox", dateless(1, subject="Callback request")) != first
    assert message_key("inbox", dateless(1, sender="Shop <shop@site.example>")) != first
    assert first.startswith("imap:inbox:mid:") and len(first) == len("imap:inbox:mid:") + 32


def test_one_message_id_without_a_date_keeps_its_key_across_a_migration() -> None:
    original = dateless(1, subject="A long subject line that a migrating server may well fold somewhere")
    trace = b"Received: from old.example by new.example; Tue, 24 Nov 2026 03:00:00 +0000\r\nX-Migrated: yes\r\n"
    refolded = original.replace(b"subject line that", b"subject\r\n\tline that").replace(b"From: ", b"From:\r\n  ")
    mbox_export = (trace + refolded).replace(b"\r\n", b"\n") + b"\n"  # LF line ends, a blank line added
    assert message_key("inbox", mbox_export) == message_key("inbox", original)
    zammad = corpus("email", "zammad", "mail")  # JIRA: one Message-ID, no Date, same body, only the Subject differs
    jira = [(zammad / f"mail10{n}.box").read_bytes() for n in (3, 4)]
    assert message_key("inbox", jira[0]) != message_key("inbox", jira[1])
    assert message_key("inbox", trace + jira[0].replace(b"\n", b"\r\n")) == message_key("inbox", jira[0])


def test_a_truncated_message_without_a_date_keeps_its_key_across_a_migration() -> None:
    whole = dateless(1).replace(b"Please call me back.", b"Please call me back. " + b"z" * 200_000)
    migrated = (b"Received: from old.example by new.example\r\n" * 40 + whole).replace(b"\r\n", b"\n")
    key = truncated_key("inbox", whole[:HEAD_BYTES], len(whole))
    assert truncated_key("inbox", migrated[:HEAD_BYTES], len(migrated)) == key
    other = dateless(2).replace(b"Please call me back.", b"Please call me back. " + b"z" * 200_000)
    assert truncated_key("inbox", other[:HEAD_BYTES], len(other)) != key


def test_a_folded_message_id_header_gives_the_same_key() -> None:
    plain = make_mail(3)
    folded = plain.replace(b"Message-ID: <inquiry-3", b"Message-ID:\r\n   <inquiry-3")
    assert message_key("inbox", folded) == message_key("inbox", plain)


def test_without_a_message_id_the_raw_bytes_are_the_key() -> None:
    bare = make_mail(4).replace(b"Message-ID: <inquiry-4@client.example>\r\n", b"")
    key = message_key("inbox", bare)
    assert key.startswith("imap:inbox:raw:")
    assert message_key("inbox", bare + b"more") != key


@pytest.mark.parametrize("folder", ["INBOX", "Входящие/Заявки", "Sales Leads", 'we"ird\\'])
def test_envelopes_are_safe_nats_headers_and_carry_the_imap_position(folder: str) -> None:
    envelope = envelope_for(
        "inbox", folder, 1700000000, 42, make_mail(5), size=300, truncated=False, internaldate="2026-11-23T09:00:00"
    )
    for name, value in envelope.headers().items():
        assert "\r" not in value and "\n" not in value, name
    assert envelope.key.isascii() and " " not in envelope.key and len(envelope.key) < 100
    assert json.loads(envelope.headers()["Leadhub-Meta"])["folder"] == folder
    assert envelope.meta["uid"] == 42 and envelope.meta["uidvalidity"] == 1700000000
    assert envelope.channel == "email" and envelope.content_type == "message/rfc822"


def test_a_truncated_message_is_marked_and_keyed_by_its_headers() -> None:
    whole = make_mail(6, body="z" * 5000)
    head = whole[:200]
    envelope = envelope_for("inbox", "INBOX", 1, 9, head, size=len(whole), truncated=True, internaldate=None)
    assert envelope.meta["too_large"] == len(whole)
    assert envelope.key == message_key("inbox", whole)  # the Message-ID is in the first bytes


def test_a_message_the_server_cannot_deliver_is_keyed_by_its_place_and_dropped_with_the_answer() -> None:
    envelope = unreadable_envelope("inbox", "Sales Leads", 1700000000, 42, "NO Internal error occurred.")
    assert envelope.key == unreadable_envelope("inbox", "Sales Leads", 1700000000, 42, "another answer").key
    others = [("INBOX", 1700000000, 42), ("Sales Leads", 1700000001, 42), ("Sales Leads", 1700000000, 43)]
    assert all(unreadable_envelope("inbox", *place, "x").key != envelope.key for place in others)
    assert envelope.key.startswith("imap:inbox:unreadable:") and envelope.key.isascii() and " " not in envelope.key
    assert envelope.meta["folder"] == "Sales Leads" and envelope.meta["uid"] == 42
    draft = parse_email(envelope, {})
    assert draft.dropped == "unreadable: the server could not deliver message UID 42: NO Internal error occurred."


# -- configuration ----------------------------------------------------------------------------------------------


def test_defaults_are_safe() -> None:
    cfg = config()
    assert (cfg.effective_port, cfg.security, cfg.post_action, cfg.folders, cfg.idle) == (
        993,
        "ssl",
        "none",
        ["INBOX"],
        True,
    )
    assert cfg.max_message_bytes == 25 * 1024 * 1024
    assert config(security="starttls").effective_port == 143


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"password": None}, "exactly one of password and oauth2"),
        ({"oauth2": {"token_file": "/tmp/t"}}, "exactly one of password and oauth2"),
        ({"post_action": "delete"}, "unknown post_action 'delete'"),
        ({"post_action": "keyword:two words"}, "is not an IMAP keyword"),
        ({"post_action": "move:"}, "move: needs a folder name"),
        ({"post_action": "move:INBOX"}, "also a watched folder"),
        ({"post_action": "move:inbox"}, "also a watched folder"),
        ({"folders": ["Inbox"], "post_action": "move:INBOX"}, "also a watched folder"),
        ({"idle_renew": "30m"}, "at most 29m"),
        ({"folders": []}, "at least 1"),
        ({"folders": ["INBOX", "INBOX"]}, "each folder may be listed once"),
        ({"folders": ["INBOX", "inbox"]}, "each folder may be listed once"),
        ({"poll_interval": "soon"}, "invalid duration"),
        ({"max_message_bytes": 64 * 1024 * 1024}, "less than or equal"),
        ({"security": "tls"}, "'ssl', 'starttls' or 'none'"),
        ({"pasword": "typo"}, "Extra inputs are not permitted"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file /nonexistent/ca.pem does not exist"),
    ],
)
def test_configuration_errors_name_the_problem(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        config(**overrides)


def test_oauth2_needs_exactly_one_token_source() -> None:
    with pytest.raises(ValidationError, match="exactly one of token_command and token_file"):
        OAuth2Config()
    with pytest.raises(ValidationError, match="exactly one of token_command and token_file"):
        OAuth2Config(token_command="x", token_file="/tmp/t")
    assert OAuth2Config(token_command="oauth2l fetch --scope 'a b'").argv() == ["oauth2l", "fetch", "--scope", "a b"]


def test_the_password_never_shows_in_the_config_repr() -> None:
    assert "pw" not in repr(config()).replace("password", "")


# -- OAuth2 tokens ----------------------------------------------------------------------------------------------


def test_tokens_parse_from_plain_text_or_json() -> None:
    assert parse_token("ya29.abc\n", 100) == ("ya29.abc", 100)
    assert parse_token('{"access_token": "eyJ0", "expires_in": 3599}', 100) == ("eyJ0", 3599)
    for bad, message in [
        ("", "nothing"),
        ("{", "does not parse"),
        ('{"token": 1}', "without an `access_token`"),
        ('{"expires_in": %s}' % ("9" * 5000), "does not parse: a number has more than 4300 digits"),
    ]:
        with pytest.raises(TokenError, match=message):
            parse_token(bad, 100)


def _counting_command(tmp_path: Path, expires_in: int) -> list[str]:
    counter = tmp_path / "calls"
    script = (
        "import json, pathlib, sys; p = pathlib.Path(sys.argv[1]); n = int(p.read_text()) + 1 if p.exists() else 1; "
        f"p.write_text(str(n)); print(json.dumps({{'access_token': f'token-{{n}}', 'expires_in': {expires_in}}}))"
    )
    return [sys.executable, "-c", script, str(counter)]


def test_the_token_is_cached_until_it_expires_and_refetched_on_demand(tmp_path: Path) -> None:
    now = [0.0]
    provider = TokenProvider(OAuth2Config(token_command=_counting_command(tmp_path, 3600)), clock=lambda: now[0])
    assert provider.token() == "token-1"
    now[0] = 3000.0
    assert provider.token() == "token-1"
    now[0] = 3541.0  # within a minute of expiry
    assert provider.token() == "token-2"
    assert provider.token(refresh=True) == "token-3"  # after an authentication failure


def test_a_token_file_is_reread_after_invalidate(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    provider = TokenProvider(OAuth2Config(token_file=token_file, refresh_interval=timedelta(hours=1)))
    assert provider.token() == "first"
    token_file.write_text("second\n")
    assert provider.token() == "first"
    provider.invalidate()
    assert provider.token() == "second"


def test_a_failing_token_command_says_why_without_its_output(tmp_path: Path) -> None:
    script = "import sys; print('secret-token-on-stdout'); sys.exit('refresh token revoked')"
    provider = TokenProvider(OAuth2Config(token_command=[sys.executable, "-c", script]))
    with pytest.raises(TokenError, match="exited with 1: refresh token revoked") as caught:
        provider.token()
    assert "secret-token-on-stdout" not in str(caught.value)
    missing = TokenProvider(OAuth2Config(token_command=["/nonexistent/oauth-helper"]))
    with pytest.raises(TokenError, match="failed to run"):
        missing.token()


def test_a_token_command_that_times_out_is_named_without_its_arguments() -> None:
    """Helpers take the client secret and refresh token as arguments (Google's oauth2.py: --client_secret=...
    --refresh_token=...); the timeout's message quoted the whole command line into the log and /readyz."""
    # The helper hangs on purpose (longer than command_timeout): the timeout path is what is tested.
    argv = [sys.executable, "-c", "import time; time.sleep(30)", "--client_secret=oauth-SECRET-1"]  # noqa: sleep-ok
    provider = TokenProvider(OAuth2Config(token_command=argv, command_timeout="1s"))
    with pytest.raises(TokenError, match="timed out after 1") as caught:
        provider.token()
    assert "oauth-SECRET-1" not in str(caught.value), caught.value


def test_a_token_command_repeating_its_arguments_on_failure_does_not_carry_them_into_the_error() -> None:
    """A helper's argument parser quotes a mistyped argument whole (argparse: `unrecognized arguments:
    --client-secret=...`), and shell wrappers under `set -x` print their command lines: the refresh token or
    client secret reached the log and /readyz with the helper's stderr."""
    script = "import sys; sys.exit('error: unrecognized arguments: ' + ' '.join(sys.argv[1:]))"
    argv = [sys.executable, "-c", script, "--client-secret=oauth-SECRET-3", "--refresh_token", "1//oauth-SECRET-4"]
    with pytest.raises(TokenError, match="exited with 1: error: unrecognized arguments: --client-secret=") as caught:
        TokenProvider(OAuth2Config(token_command=argv)).token()
    assert "SECRET" not in str(caught.value), caught.value
    assert "--refresh_token ***" in str(caught.value)


# -- batching and reporting ----------------------------------------------------------------------------------------


def test_batches_respect_count_and_bytes() -> None:
    sizes = {1: 10, 2: 10, 3: 10, 4: 10, 5: 10}
    assert list(_by_bytes([1, 2, 3, 4, 5], sizes, 2, 1000)) == [[1, 2], [3, 4], [5]]
    big = {1: 20 * 1024 * 1024, 2: 20 * 1024 * 1024, 3: 10}
    assert list(_by_bytes([1, 2, 3], big, 100, 25 * 1024 * 1024)) == [[1], [2, 3]]
    # over the message limit only the head is fetched, so such messages share a batch
    assert list(_by_bytes([1, 2, 3], big, 100, 1024 * 1024)) == [[1, 2, 3]]


def test_the_mailbox_is_ready_only_when_every_folder_is() -> None:
    ok = {"ok": True, "last_sync": "2026-11-23T09:00:00", "uid_lag": 0, "error": None}
    failing = {"ok": False, "last_sync": None, "uid_lag": 3, "error": "AuthFailed: refused"}
    summary = summarize({"INBOX": ok, "Leads": failing})
    assert summary["ok"] is False and summary["uid_lag"] == 3 and summary["last_sync"] is None
    assert summary["error"] == "Leads: AuthFailed: refused"
    assert summarize({"INBOX": ok})["ok"] is True
