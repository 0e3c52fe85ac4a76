"""The intake load (wrk, bench/wrk_form.lua) against an equivalent Node-RED flow, for a figure beside leadhub's.

    python -m bench compare-n8n              # or: python -m bench.nodered [--seconds 10 -c 32]

The flow: `http in` POST /hooks/site-form -> function (one JSON line: id, Idempotency-Key, received time, the
parsed body) -> `file` (append to a file in a temporary dir) -> function (`{"id", "duplicate": false}`) ->
`http response` 202. The answer goes out after the write, as leadhub answers after the JetStream ack; neither
fsyncs each item (JetStream syncs its files every 2 minutes by default). The flow does less than leadhub:
no queue, no parsing into a contact and lead, no deduplication, no database; leadhub's end-to-end figure
includes all of that.

Node-RED is looked up as $NODE_RED (a red.js or a node-red executable), then
/tmp/nodered/node_modules/node-red/red.js (`npm install --prefix /tmp/nodered node-red`), then `node-red` on
PATH. n8n is detected and reported, but no n8n flow is driven yet: it is skipped with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import free_port, machine, stop_process
from bench.intake import run_wrk

DEFAULT_INSTALL = Path("/tmp/nodered/node_modules/node-red/red.js")
PATH = "/hooks/site-form"

BUILD_LINE = """\
const body = msg.req.body;
if (!body || typeof body !== "object") {
    msg.statusCode = 400;
    msg.payload = {error: "a JSON object is expected"};
    return [null, msg];
}
msg.record = {id: msg._msgid, key: msg.req.headers["idempotency-key"] || null,
              received_at: new Date().toISOString(), payload: body};
msg.payload = JSON.stringify(msg.record);
return [msg, null];
"""
ANSWER = """\
msg.payload = {id: msg.record.id, duplicate: false};
return msg;
"""


def find_node_red() -> list[str] | None:
    """The command that starts Node-RED, or None when it is not installed."""
    configured = os.environ.get("NODE_RED")
    candidates = [Path(configured)] if configured else []
    candidates.append(DEFAULT_INSTALL)
    for candidate in candidates:
        if candidate.is_file():
            return ["node", str(candidate)] if candidate.suffix == ".js" else [str(candidate)]
    on_path = shutil.which("node-red")
    return [on_path] if on_path else None


def flow(data_file: Path) -> list[dict[str, Any]]:
    return [
        {"id": "lhb-tab", "type": "tab", "label": "leadhub comparison"},
        {"id": "lhb-in", "type": "http in", "z": "lhb-tab", "url": PATH, "method": "post", "wires": [["lhb-line"]]},
        {
            "id": "lhb-line",
            "type": "function",
            "z": "lhb-tab",
            "func": BUILD_LINE,
            "outputs": 2,
            "wires": [["lhb-file"], ["lhb-out"]],
        },
        {
            "id": "lhb-file",
            "type": "file",
            "z": "lhb-tab",
            "filename": str(data_file),
            "filenameType": "str",
            "appendNewline": True,
            "createDir": True,
            "overwriteFile": "false",
            "encoding": "none",
            "wires": [["lhb-answer"]],
        },
        {"id": "lhb-answer", "type": "function", "z": "lhb-tab", "func": ANSWER, "outputs": 1, "wires": [["lhb-out"]]},
        {"id": "lhb-out", "type": "http response", "z": "lhb-tab", "statusCode": "202", "headers": {}, "wires": []},
    ]


SETTINGS = """\
module.exports = {{
    uiHost: "127.0.0.1",
    uiPort: {port},
    flowFile: "flows.json",
    httpAdminRoot: false,
    httpNodeRoot: "/",
    credentialSecret: false,
    diagnostics: {{enabled: false}},
    telemetry: {{enabled: false}},
    logging: {{console: {{level: "warn", metrics: false, audit: false}}}},
}};
"""


def node_version(command: list[str]) -> str | None:
    red = Path(command[-1])
    package = red.parent / "package.json"
    if package.is_file():
        return str(json.loads(package.read_text()).get("version"))
    out = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False, timeout=30)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else None


async def _wait_listening(base_url: str, process: subprocess.Popen[bytes], log: Path, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"Node-RED exited with {process.returncode}:\n{_tail(log)}")
            try:
                async with session.post(base_url + PATH, json={"name": "warm-up"}) as response:
                    if response.status == 202:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)  # polling for the port under a deadline
    raise RuntimeError(f"Node-RED did not answer on {base_url}{PATH} within {limit}s:\n{_tail(log)}")


async def run(seconds: int, concurrency: int, threads: int = 1) -> dict[str, Any]:
    """Measure the Node-RED flow; {"skipped": reason} when Node-RED (or wrk) is not installed."""
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    command = find_node_red()
    if command is None:
        n8n = shutil.which("n8n")
        why = "Node-RED is not installed (npm install --prefix /tmp/nodered node-red)"
        if n8n:
            why += f"; n8n is at {n8n}, but no n8n flow is driven by this bench yet"
        return {"skipped": why}
    with tempfile.TemporaryDirectory(prefix="leadhub-bench-nodered-") as tmp:
        user_dir = Path(tmp)
        data_file = user_dir / "data" / "leads.jsonl"
        port = free_port()
        (user_dir / "flows.json").write_text(json.dumps(flow(data_file)))
        (user_dir / "settings.js").write_text(SETTINGS.format(port=port))
        log_path = user_dir / "node-red.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [*command, "--userDir", str(user_dir), "--settings", str(user_dir / "settings.js")],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            await _wait_listening(base_url, process, log_path)
            await run_wrk(base_url, PATH, 2, concurrency, threads)  # warm-up, as for leadhub
            lines_before = _lines(data_file)
            result, rss = await run_wrk(base_url, PATH, seconds, concurrency, threads, process.pid)
            written = _lines(data_file) - lines_before
        finally:
            stop_process(process)
    result.pop("began"), result.pop("ended")
    accepted = result["posts"] - result["failures"]
    return {
        **result,
        "tool": "node-red",
        "version": node_version(command),
        "flow": "http in -> function -> file (append JSON line) -> function -> http response 202",
        "peak_rss_mib": round(rss.total, 1),
        "lines_written": written,
        "every_2xx_written": written >= accepted,
    }


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("-c", type=int, default=32, help="connections (wrk -c)")
    args = parser.parse_args()
    result = asyncio.run(run(args.seconds, args.c))
    print(json.dumps({"bench": "nodered", "machine": machine(), "result": result}, indent=2))


if __name__ == "__main__":
    main()
