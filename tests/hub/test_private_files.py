"""leadhub's files are its user's only, whatever the umask: the store holds every contact and the key that signs
survey and unsubscribe links, and the embedded NATS's files its port and the raw payloads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import PG_ADMIN_URL
from tests.helpers import run_leadhub, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(PG_ADMIN_URL), reason="the database is a SQLite file in the data dir"),
]
FORM = {"name": "site-form", "type": "form", "rate_limit": None}


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The umask most systems give a service's user; a process started meanwhile inherits it."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def _post_a_form(base_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/hooks/site-form", json={"phone": "+79160000001"}) as response:
            assert response.status == 202

        async def stored() -> bool:
            async with session.get(f"{base_url}/api/inquiries") as response:
                return response.status == 200 and bool((await response.json())["items"])

        await wait_for(stored, what="the form to be stored")


async def test_a_fresh_daemon_makes_its_data_dir_database_and_nats_files_its_users_only(  # type: ignore[no-untyped-def]
    make_daemon, tmp_path: Path
) -> None:
    data_dir = tmp_path / "fresh" / "data"
    daemon = make_daemon(
        {"connectors": [FORM]},
        env={"LEADHUB_DATA_DIR": str(data_dir), "LEADHUB_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir}/leadhub.db"},
    )
    with umask(0o022):
        await daemon.start()
    await _post_a_form(daemon.base_url)

    assert _mode(data_dir) == 0o700
    database_files = [data_dir / name for name in ("leadhub.db", "leadhub.db-wal", "leadhub.db-shm")]
    nats = data_dir / "nats"
    nats_files = [nats / "nats-server.conf", nats / "lock", nats / "client.url", *(nats / "ports").iterdir()]
    assert len(nats_files) == 4
    for path in [*database_files, *nats_files]:
        assert _mode(path) & 0o077 == 0, f"{path} is {oct(_mode(path))}"
    assert _mode(nats) == 0o700
    assert await daemon.terminate() == 0, daemon.log()


async def test_an_existing_data_dir_open_to_others_keeps_its_mode_and_is_warned_of(  # type: ignore[no-untyped-def]
    make_daemon, tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared"
    data_dir.mkdir()
    data_dir.chmod(0o755)  # the admin's choice, a group's perhaps: left as it is, but said at every start
    daemon = make_daemon({"connectors": [FORM]}, env={"LEADHUB_DATA_DIR": str(data_dir)})
    await daemon.start()
    assert await daemon.terminate() == 0, daemon.log()
    assert _mode(data_dir) == 0o755
    assert "the data dir can be read by other users" in daemon.log()
    assert "0o755" in daemon.log()


def test_a_backup_is_its_users_only_even_of_a_database_open_to_others(tmp_path: Path) -> None:
    database = tmp_path / "data" / "leadhub.db"
    env = {"LEADHUB_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    with umask(0o022):
        upgraded = run_leadhub("db", "upgrade", cwd=tmp_path, env=env)
        assert upgraded.returncode == 0, upgraded.stderr
        assert _mode(database) == 0o600 and _mode(database.parent) == 0o700
        database.chmod(0o644)  # as an older release created it
        backup = run_leadhub("db", "backup", str(tmp_path / "backup.db"), cwd=tmp_path, env=env)
    assert backup.returncode == 0, backup.stderr
    assert _mode(tmp_path / "backup.db") == 0o600
