"""The PostgreSQL views under connection faults: a connection cut in the middle of a COPY, a
commit whose reply never arrives, a backend killed with ``pg_terminate_backend``.

Audit and warehouse commit their checkpoint in the same transaction as their rows, and the
runtime re-feeds a partition from that checkpoint after any sink error, so afterwards each
view equals the fold of the log (``verify``): no row applied twice, none skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.settings import PostgresSettings, Settings
from events.store import EventStore
from projections.audit import verify_chains
from tests.integration.test_rebuild_support import (  # noqa: F401
    Shop,
    caught_up,
    eventually,
    live_projector,
    settings_fixture,
)
from tests.support.tcp_proxy import TcpProxy
from workers.dlq import metrics_key
from workers.runner import ProjectorRunner
from workers.verify import verify_view
from workers.views import ViewPointers, pg_schema

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


class FaultyPgProxy(TcpProxy):
    """The real TCP proxy, reading the PostgreSQL frontend protocol on its way to the server.

    While armed it cuts a connection at a chosen message: in the middle of a COPY (half of
    the first ``CopyData`` forwarded, then both sides aborted), or after a ``COMMIT`` (the
    commit reaches the server, its reply is dropped and the connection aborted, so the
    client cannot know the transaction is durable).
    """

    def __init__(self, host: str, port: int, at: str) -> None:
        super().__init__(host, port)
        self.at = at
        self.armed = 0
        self.cuts = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        committing = asyncio.Event()

        def cut() -> None:
            for w in (writer, up_writer):
                w.transport.abort()

        async def upstream() -> None:
            buf, started = b"", False
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await reader.read(65536):
                    buf += data
                    out = b""
                    while True:
                        if not started:  # SSLRequest, then the startup message: no type byte
                            if len(buf) < 8 or len(buf) < int.from_bytes(buf[:4], "big"):
                                break
                            size = int.from_bytes(buf[:4], "big")
                            code = int.from_bytes(buf[4:8], "big")
                            started = code not in (SSL_REQUEST, GSSENC_REQUEST)
                            out, buf = out + buf[:size], buf[size:]
                            continue
                        if len(buf) < 5 or len(buf) < 1 + int.from_bytes(buf[1:5], "big"):
                            break
                        size = 1 + int.from_bytes(buf[1:5], "big")
                        message, buf = buf[:size], buf[size:]
                        kind = message[:1]
                        if self.armed and self.at == "copy" and kind == b"d":
                            self.armed, self.cuts = self.armed - 1, self.cuts + 1
                            up_writer.write(out + message[: size // 2])
                            await up_writer.drain()
                            cut()
                            return
                        if self.armed and self.at == "commit" and kind == b"Q":
                            if message[5:].lstrip().upper().startswith(b"COMMIT"):
                                self.armed, self.cuts = self.armed - 1, self.cuts + 1
                                committing.set()
                        out += message
                    up_writer.write(out)
                    await up_writer.drain()
            up_writer.transport.abort()

        async def downstream() -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await up_reader.read(65536):
                    if committing.is_set():  # the server answered the COMMIT: drop it
                        cut()
                        return
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()


def through(settings: Settings, proxy: TcpProxy) -> Settings:
    dsn = urlsplit(settings.postgres.url)
    netloc = f"{dsn.username}@127.0.0.1:{proxy.port}"
    url = urlunsplit(dsn._replace(netloc=netloc, query="sslmode=disable"))
    return dataclasses.replace(settings, postgres=PostgresSettings(url=url))


async def assert_views_equal_the_log(settings: Settings, store: EventStore) -> None:
    for name in ("audit", "warehouse"):
        assert await store.redis.xlen(store.keys.dlq(name)) == 0, f"{name}: dead letters"
        report = await verify_view(settings, name, show=5)
        assert report.ok, f"{name}: " + "\n".join(str(d) for d in report.differences)
    schema = pg_schema(
        "audit", await ViewPointers(store.redis, settings.redis.prefix).current("audit")
    )
    pool = await asyncpg.create_pool(settings.postgres.url, min_size=1, max_size=1)
    try:
        chains = await verify_chains(pool, schema)
    finally:
        await pool.close()
    assert chains.ok, chains.breaks
    assert chains.rows == await store.count(), "every entry exactly once in the audit"


async def run_with_cuts(settings: Settings, store: EventStore, at: str, cuts: int) -> FaultyPgProxy:
    dsn = urlsplit(settings.postgres.url)
    proxy = FaultyPgProxy(dsn.hostname or "127.0.0.1", dsn.port or 5432, at)
    await proxy.up()
    shop = Shop(store)
    await shop.seed(accounts=6, products=8)
    try:
        async with live_projector(through(settings, proxy), ["audit", "warehouse"]) as runner:
            proxy.armed = cuts  # after set-up: only the projector's writes are cut
            for _ in range(cuts):
                await shop.run(60)
                await eventually(
                    lambda: _caught_up(store, runner), within=120, what="the views to catch up"
                )
    finally:
        await proxy.down()
    assert proxy.cuts == cuts
    assert await sink_failures(store) >= cuts
    return proxy


async def sink_failures(store: EventStore) -> int:
    """Sink failures the runtime counted for the two views (each fault must reach it)."""
    total = 0
    for name in ("audit", "warehouse"):
        raw = await store.redis.hget(metrics_key(store.keys, name), "sink_failures")
        total += int(raw or 0)
    return total


async def test_a_connection_cut_in_the_middle_of_a_copy_loses_and_doubles_nothing(
    settings: Settings, store: EventStore
) -> None:
    await run_with_cuts(settings, store, "copy", cuts=4)
    await assert_views_equal_the_log(settings, store)


async def test_a_commit_whose_reply_is_lost_is_not_applied_twice(
    settings: Settings, store: EventStore
) -> None:
    await run_with_cuts(settings, store, "commit", cuts=4)
    await assert_views_equal_the_log(settings, store)


async def test_backends_killed_with_pg_terminate_backend_mid_copy_lose_and_double_nothing(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=6, products=8)
    admin = await asyncpg.connect(settings.postgres.url)
    killed = 0
    try:
        async with live_projector(settings, ["audit", "warehouse"]) as runner:
            stop = asyncio.Event()
            load = asyncio.create_task(shop.run_until(stop, pause=0))
            try:
                while killed < 4:
                    pids = await admin.fetch(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND query ILIKE 'COPY %'"
                        " AND state = 'active'"
                    )
                    for row in pids:
                        if await admin.fetchval("SELECT pg_terminate_backend($1)", row["pid"]):
                            killed += 1
                    await asyncio.sleep(0.005)
            finally:
                stop.set()
                await load
            await eventually(
                lambda: _caught_up(store, runner), within=120, what="the views to catch up"
            )
    finally:
        await admin.close()
    assert killed >= 4
    assert await sink_failures(store) >= 1
    await assert_views_equal_the_log(settings, store)


async def _caught_up(store: EventStore, runner: ProjectorRunner) -> bool:
    try:
        return await caught_up(store, runner)
    except Exception:  # a checkpoint read met a connection the fault just broke
        return False
