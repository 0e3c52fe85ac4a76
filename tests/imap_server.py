"""A real Dovecot IMAP server on loopback for tests: a private config, a passwd-file user, maildir storage.

`dovecot -F -c <conf>` runs in the foreground as a child of the test. Everything lives in one directory under the
system temp dir (Dovecot's mail processes must be able to reach it; when the tests run as root the mail user is
`nobody`, because Dovecot refuses mail access as UID 0). Skips the test when `dovecot` is not installed
(`apt-get install dovecot-imapd`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.helpers import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "sales@example.test", "s3cret-pass"

CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login{oauth_mechanisms}
auth_failure_delay = 0
mail_location = maildir:~/Maildir
mailbox_idle_check_interval = 1 secs
default_internal_user = {internal_user}
default_login_user = {internal_user}
{internal_group}
{oauth_passdb}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


@dataclass
class Dovecot:
    """A running Dovecot; `client()` opens an admin connection for appending and inspecting mail."""

    root: Path
    port: int
    ssl_port: int | None = None
    cert: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    clients: list[IMAPClient] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.root / "dovecot.log"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "stderr.log", "ab"),  # noqa: SIM115 - handed to the child
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so kill() can take the children along
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"dovecot exited with {self.process.returncode}:\n{self.logs()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.02)  # noqa: sleep-ok - polling for the port under a deadline
        pytest.fail(f"dovecot did not listen on {self.port}:\n{self.logs()}")

    def kill(self) -> None:
        """SIGKILL the master and its children (one process group): gone at once, no goodbye to clients.

        Returns once every process of the group is gone: a child still dying keeps its listening sockets, and
        a restarted Dovecot then refuses to start ("Socket already exists").
        """
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            deadline = time.monotonic() + 10
            while _group_alive(self.process.pid) and time.monotonic() < deadline:
                time.sleep(0.02)  # noqa: sleep-ok - polling for the children to exit under a deadline

    def stop(self) -> None:
        self._log_out_clients()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def discard(self) -> None:
        """At a test's end: its clients logged out, the server killed; a graceful stop takes Dovecot ~1 s."""
        self._log_out_clients()
        self.kill()

    def _log_out_clients(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.logout()
        self.clients.clear()

    def logs(self) -> str:
        text = ""
        for name in ("dovecot.log", "stderr.log"):
            path = self.root / name
            if path.exists():
                text += path.read_text(errors="replace")[-4000:]
        return text

    def client(self, user: str = USER, password: str = PASSWORD) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        client.login(user, password)
        self.clients.append(client)
        return client

    def append(self, messages: list[bytes], folder: str = "INBOX") -> None:
        client = self.client()
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for message in messages:
            client.append(folder, message)
        client.logout()
        self.clients.remove(client)

    def connector(self, name: str = "inbox", **overrides: object) -> dict[str, object]:
        """A connector config for this server (plain IMAP on loopback), with fast test timings."""
        config: dict[str, object] = {
            "name": name,
            "type": "imap",
            "host": "127.0.0.1",
            "port": self.port,
            "security": "none",
            "username": USER,
            "password": PASSWORD,
            "folders": ["INBOX"],
            "poll_interval": "30s",
            "connect_timeout": "3s",
            "timeout": "5s",
        }
        return config | overrides


def _group_alive(pgid: int) -> bool:
    """True while a process of group `pgid` is running (zombies, which hold no sockets, do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _mail_user() -> tuple[int, int, str]:
    if os.getuid() != 0:
        entry = pwd.getpwuid(os.getuid())
        return entry.pw_uid, entry.pw_gid, entry.pw_name
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid, "dovecot" if _user_exists("dovecot") else "nobody"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _self_signed(root: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (openssl CLI); the connector trusts it through `ca_file`."""
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert


OAUTH_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/oauth2.conf.ext
}}"""
# Dovecot asks this URL (`Authorization: Bearer <token>`) whether a token is valid and whose it is.
OAUTH_CONF = """\
introspection_url = {url}
introspection_mode = auth
username_attribute = email
active_attribute = active
active_value = true
"""


def make_dovecot(*, tls: bool = False, introspection_url: str | None = None, extra_config: str = "") -> Dovecot:
    if not Path(DOVECOT).exists():
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="leadhub-dovecot-"))
    root.chmod(0o755)
    uid, gid, internal_user = _mail_user()
    home = root / "home"
    home.mkdir()
    os.chown(home, uid, gid)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}::\n")
    port = free_port()
    ssl_port = free_port() if tls else 0
    cert = _self_signed(root) if tls else None
    ssl = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{root / 'key.pem'}" if cert else "ssl = no"
    group = "" if os.getuid() == 0 else f"default_internal_group = {_group_name(gid)}"
    if introspection_url:
        (root / "oauth2.conf.ext").write_text(OAUTH_CONF.format(url=introspection_url))
    (root / "dovecot.conf").write_text(
        CONFIG.format(
            root=root,
            port=port,
            ssl_port=ssl_port,
            ssl=ssl,
            internal_user=internal_user,
            internal_group=group,
            oauth_mechanisms=" xoauth2 oauthbearer" if introspection_url else "",
            oauth_passdb=OAUTH_PASSDB.format(root=root) if introspection_url else "",
        )
        + extra_config
    )
    return Dovecot(root=root, port=port, ssl_port=ssl_port or None, cert=cert)


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


@contextlib.contextmanager
def running_dovecot(
    *, tls: bool = False, introspection_url: str | None = None, extra_config: str = ""
) -> Iterator[Dovecot]:
    """`extra_config` is appended to dovecot.conf (e.g. an `imap_capability` that hides MOVE and UIDPLUS)."""
    server = make_dovecot(tls=tls, introspection_url=introspection_url, extra_config=extra_config)
    server.start()
    try:
        yield server
    finally:
        server.discard()
        shutil.rmtree(server.root, ignore_errors=True)


def make_mail(n: int, *, sender: str | None = None, subject: str | None = None, body: str | None = None) -> bytes:
    """A plain inquiry e-mail from a distinct sender (one contact, one lead each), with a unique Message-ID."""
    sender = sender or f"customer{n}@client.example"
    subject = subject or f"Quote request #{n}"
    # A phone in the text too, as customers write; it is only a hint on the inquiry, never an identifier.
    body = body or f"Hello, please send a quote for {n} units.\r\nCall me at +7 495 {3000000 + n:07d}.\r\n"
    return (
        f"From: Customer {n} <{sender}>\r\n"
        f"To: {USER}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: Mon, 23 Nov 2026 09:{n // 60 % 60:02d}:{n % 60:02d} +0000\r\n"
        f"Message-ID: <inquiry-{n}@client.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{body}"
    ).encode()
