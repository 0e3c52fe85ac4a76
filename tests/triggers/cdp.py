"""A minimal Chrome DevTools Protocol client: headless Chromium driven like a user (clicks, typing)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import free_port, wait_for


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    return path


class Browser:
    def __init__(self, profile: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                chromium_path(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--remote-debugging-port={self.port}", f"--user-data-dir={profile}", "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.session = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async def page_url() -> str | None:
            try:
                async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as response:
                    pages = [p for p in await response.json() if p["type"] == "page"]
            except aiohttp.ClientError:
                return None
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        url = await wait_for(page_url, timeout=30, what="headless chromium to start")
        self.ws = await self.session.ws_connect(url, max_msg_size=0)
        self.reader = asyncio.create_task(self._read())
        await self.call("Page.enable")
        await self.call("Emulation.setScriptExecutionDisabled", value=True)  # the page must work without JS

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            data = message.json()
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                await self.events.put(data)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        call_id = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        answer = await asyncio.wait_for(future, 15)
        assert "error" not in answer, (method, answer)
        return answer.get("result", {})

    async def _loaded(self) -> None:
        while (await asyncio.wait_for(self.events.get(), 15))["method"] != "Page.loadEventFired":
            pass

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self._loaded()

    async def _node(self, selector: str) -> int:
        root = (await self.call("DOM.getDocument"))["root"]["nodeId"]
        node = (await self.call("DOM.querySelector", nodeId=root, selector=selector))["nodeId"]
        assert node, f"no element matches {selector!r}"
        return node

    async def click(self, selector: str) -> None:
        quad = (await self.call("DOM.getBoxModel", nodeId=await self._node(selector)))["model"]["content"]
        x, y = (quad[0] + quad[4]) / 2, (quad[1] + quad[5]) / 2
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def type(self, selector: str, text: str) -> None:
        await self.click(selector)
        await self.call("Input.insertText", text=text)

    async def submit_by_clicking(self, selector: str) -> None:
        await self.click(selector)
        await self._loaded()

    async def text(self, selector: str) -> str:
        html = (await self.call("DOM.getOuterHTML", nodeId=await self._node(selector)))["outerHTML"]
        return html

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        if self.ws is not None:
            await self.ws.close()
        await self.session.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
