"""Profile ``POST /orders`` under load: ``python -m bench.profile [seconds]``.

Starts the real API (``uvicorn --factory app.main:create_app --workers N``) on a private
durable Redis, as the http section does, sends the same wrk load, and records every
worker with ``py-spy`` (from the ``bench`` dependency group) while it runs. Prints the
top functions by own time and by total time (share of the samples), and writes the raw
profiles (``--format raw``, collapsed stacks) next to bench/results/ for flame graphs.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

from app.passwords import Passwords
from app.settings import AuthSettings
from bench.common import durable_redis
from bench.http import ACCOUNTS, PRODUCTS, STOCK, _tokens, measure, wrk_version
from bench.servers import VENV_BIN, Stack, api_server
from events.connection import connect
from events.store import EventStore
from workers.commands.demo import DEFAULT_PASSWORD, populate
from workers.demo import make_shop

RESULTS = Path(__file__).parent / "results"
EVENT_LOOP = "Server.run (uvicorn/server.py"
"""A frame of every sample taken in a worker's event-loop thread: shares are of those."""


def top(collapsed: Path, n: int = 25) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(own, total) shares per function from py-spy's collapsed stacks, of the samples
    taken in the workers' event-loop threads."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        if EVENT_LOOP not in stack:
            continue  # the argon2 pool's idle threads, the resource tracker
        k = int(count)
        samples += k
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1] for f in stack.split(";")]
        own[frames[-1]] += k
        for frame in set(frames):
            total[frame] += k
    share = 100.0 / max(samples, 1)
    return (
        [(f, c * share) for f, c in own.most_common(n)],
        [(f, c * share) for f, c in total.most_common(n)],
    )


def _workers(port: int) -> list[str]:
    """The uvicorn worker processes of the server we started on ``port`` (its children)."""
    found = subprocess.run(
        ["pgrep", "-f", f"uvicorn .*--port {port} "], capture_output=True, text=True
    )
    parents = found.stdout.split()
    children = subprocess.run(
        ["pgrep", "-P", ",".join(parents)], capture_output=True, text=True
    ).stdout.split()
    return children


def _spy(pids: list[str], seconds: float, out: Path) -> list[subprocess.Popen[bytes]]:
    """One ``py-spy record`` per worker, raw collapsed stacks into ``out/<pid>.txt``."""
    return [
        subprocess.Popen(
            [
                str(VENV_BIN / "py-spy"),
                "record",
                "--pid",
                pid,
                "--duration",
                str(int(seconds)),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(out / f"{pid}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def _merge(folder: Path, merged: Path) -> Path:
    merged.write_text("".join(p.read_text() for p in folder.glob("*.txt") if p.name[0].isdigit()))
    return merged


async def main(seconds: float = 15.0, workers: int = 2) -> None:
    with durable_redis() as redis_url, tempfile.TemporaryDirectory(prefix="ssprof-") as tmp:
        stack = Stack.new(redis_url)
        client = connect(redis_url)
        store = EventStore(client, stack.settings().redis.keys)
        await store.load_functions()
        shop = make_shop(accounts=ACCOUNTS, products=PRODUCTS, orders=0, seed=808, stock=STOCK)
        one_hash = await Passwords(AuthSettings()).hash(DEFAULT_PASSWORD)

        async def shared_hash(_: str) -> str:
            return one_hash

        await populate(store, shop, hash_password=shared_hash, concurrency=16)
        await client.aclose()
        with api_server(stack, workers, Path(tmp) / "api.log", ready_path="/health") as base:
            emails = [a.email for a in shop.accounts]
            load = {
                "tool": wrk_version(),
                "connections": 32,
                "threads": 2,
                "tokens": await _tokens(base, emails),
                "products": [p.product_id for p in shop.products],
                "emails": emails,
                "workdir": Path(tmp),
            }
            await measure(base, "orders", 2.0, **load)
            pids = _workers(int(base.rsplit(":", 1)[1]))
            spies = _spy(pids, seconds, Path(tmp))
            measured = await measure(base, "orders", seconds, **load)
            for spy in spies:
                spy.wait(timeout=seconds + 30)
        merged = _merge(Path(tmp), RESULTS / "profile_orders.txt")
    rate = measured["requests"] / measured["seconds"]
    print(f"POST /orders: {rate:.0f}/s, p99 {measured['p99_ms']:.1f} ms, {len(pids)} workers")
    own, total = top(merged)
    print("\ntop own time (% of samples)")
    for frame, pct in own:
        print(f"{pct:5.1f}%  {frame}")
    print("\ntop total time (% of samples)")
    for frame, pct in total:
        print(f"{pct:5.1f}%  {frame}")


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 15.0))
