"""The embedded NATS runs with a tighter Go collector unless the admin tuned it; read off the real child."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadhub.hub.embedded_nats import EmbeddedNats


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.mark.parametrize(
    ("admin", "expected"),
    [({}, {"GOGC": "25"}), ({"GOGC": "200"}, {"GOGC": "200"}), ({"GOMEMLIMIT": "96MiB"}, {"GOMEMLIMIT": "96MiB"})],
)
async def test_go_collector_setting_of_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, admin: dict[str, str], expected: dict[str, str]
) -> None:
    for name in ("GOGC", "GOMEMLIMIT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in admin.items():
        monkeypatch.setenv(name, value)
    server = EmbeddedNats(tmp_path)
    await server.start()
    try:
        assert server.process is not None
        environ = _environ(server.process.pid)
    finally:
        await server.stop()
    assert {name: environ[name] for name in expected} == expected
    if "GOMEMLIMIT" in admin:
        assert "GOGC" not in environ  # a memory limit is the admin's whole choice
