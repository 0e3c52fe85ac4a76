"""What a stream's duplicate window costs the embedded NATS: resident memory per message id it remembers.

JetStream keeps every `Nats-Msg-Id` of the window in memory to answer repeats. This publishes N events with
fresh ids (as the outbox relay does, pipelined) into a fresh embedded NATS once per window, reads the server's
VmRSS after the last ack, and prints the cost per remembered id (against the shortest window, which by then
remembers only its last moment) and what that comes to at a steady message rate.

    python -m bench.nats_dedupe -n 300000 --windows 120 30 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bench.common import machine, rss_kib
from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.hub.queue import EVENTS, Queue

BATCH = 2000  # the relay's claim size
RATE = 16_000  # messages/s at the targets: 8,000 webhooks plus 3,000 leads' ~2.75 events each


async def one_window(window: float, count: int) -> dict[str, float]:
    """RSS of a fresh server before and after `count` ids published within `window` seconds of memory."""
    with tempfile.TemporaryDirectory(prefix="leadhub-dedupe-") as tmp:
        nats = EmbeddedNats(Path(tmp))
        queue = Queue(await nats.start(), duplicate_window=window)
        try:
            await queue.start()
            assert nats.process is not None
            before = rss_kib(nats.process.pid) / 1024
            started = time.perf_counter()
            for first in range(0, count, BATCH):
                batch = [
                    (f"events.bench.n{i % 16}", b'{"id":"%d"}' % i, {"Nats-Msg-Id": f"01JBENCH{i:018d}"})
                    for i in range(first, min(count, first + BATCH))
                ]
                await queue.publish_many(batch, EVENTS)
            seconds = time.perf_counter() - started
            after = rss_kib(nats.process.pid) / 1024
        finally:
            await queue.stop()
            await nats.stop()
    # ids still remembered at the end: all of them, or the last `window` seconds' worth
    remembered = min(count, count / seconds * window)
    return {"window_s": window, "rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
            "remembered_ids": round(remembered), "publish_per_s": round(count / seconds)}  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300_000, help="message ids published per window")
    parser.add_argument("--windows", type=float, nargs="+", default=[120.0, 30.0, 1.0], help="seconds")
    args = parser.parse_args()
    runs = [await one_window(window, args.n) for window in args.windows]
    floor = min(runs, key=lambda run: run["remembered_ids"])
    for run in runs:
        extra_ids = run["remembered_ids"] - floor["remembered_ids"]
        if extra_ids > 0:
            per_id = (run["rss_after_mib"] - floor["rss_after_mib"]) * 2**20 / extra_ids
            run["bytes_per_remembered_id"] = round(per_id)
            run[f"mb_at_{RATE}_per_s_steady"] = round(per_id * RATE * run["window_s"] / 1e6)
    print(json.dumps({"machine": machine(), "n": args.n, "runs": runs}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
