"""A small HTTP/1.1 load generator on asyncio streams, for the runs where wrk does not fit.

httpx spends more CPU per request than the server under test and queues inside its pool at
high concurrency, which would measure the client. This one keeps N persistent keep-alive
connections, each with one request in flight, and parses only what the API sends back
(status line, ``Content-Length`` or chunked bodies). Two modes:

* closed loop (:func:`closed_loop`): N connections send back-to-back for a duration, like
  ``wrk -cN``;
* open loop (:func:`open_loop`): requests become due at a fixed rate and are served by the
  N connections in order; a request due while ``max_backlog`` others wait is skipped and
  counted, so an overloaded server shows as a lower achieved rate, not as a silent stall.

Timestamps are wall-clock (``time.time()``) so another process on the machine can compare
them with its own observations.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

Request = tuple[str, str, dict[str, str], bytes]
"""(method, path, headers, body)."""


@dataclass
class Outcome:
    """One answered request: when it was due/sent and answered, its status and body."""

    due: float
    sent: float
    answered: float
    status: int
    body: bytes


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    failures: int = 0
    """Requests that got no HTTP answer (connection errors)."""
    skipped: int = 0
    seconds: float = 0.0


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self.reader, self.writer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        reader, writer = await self._open()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        status_line = await reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and "close" in value.lower():
                close = True
        if chunked:
            parts = []
            while size := int((await reader.readline()).split(b";")[0], 16):
                parts.append(await reader.readexactly(size))
                await reader.readline()
            await reader.readline()
            data = b"".join(parts)
        else:
            data = await reader.readexactly(length)
        if close:
            await self.close()
        return status, data


async def _send(conn: Connection, request: Request, due: float, result: LoadResult) -> None:
    method, path, headers, body = request
    sent = time.time()
    try:
        status, data = await conn.request(method, path, headers, body)
    except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
        result.failures += 1
        await conn.close()
        return
    result.outcomes.append(Outcome(due, sent, time.time(), status, data))


async def closed_loop(
    base: str, make: Callable[[int], Request], *, connections: int, seconds: float
) -> LoadResult:
    """``connections`` connections sending back-to-back for ``seconds``."""
    url = urlsplit(base)
    result = LoadResult()
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        conn = Connection(url.hostname or "127.0.0.1", url.port or 80)
        n = index
        try:
            while time.perf_counter() < deadline:
                await _send(conn, make(n), time.time(), result)
                n += connections
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


async def open_loop(
    base: str,
    make: Callable[[int], Request],
    *,
    rate: float,
    seconds: float,
    connections: int,
    max_backlog: int,
) -> LoadResult:
    """Requests due every ``1/rate`` seconds for ``seconds``, served by ``connections``."""
    url = urlsplit(base)
    result = LoadResult()
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    async def worker() -> None:
        conn = Connection(url.hostname or "127.0.0.1", url.port or 80)
        try:
            while (item := await queue.get()) is not None:
                n, due = item
                await _send(conn, make(n), due, result)
        finally:
            await conn.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    started = time.perf_counter()
    wall = time.time()
    for n in range(int(rate * seconds)):
        offset = n / rate
        if (delay := started + offset - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        if queue.qsize() >= max_backlog:
            result.skipped += 1
            continue
        queue.put_nowait((n, wall + offset))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    result.seconds = time.perf_counter() - started
    return result
