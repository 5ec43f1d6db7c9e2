"""One Redis connection shared by every concurrent call of a process, for the command path.

The API's two calls per command (``FCALL_RO`` of the states, ``FCALL`` of the append) went
through redis-py's general machinery: a connection checked out of the pool and back, the
retry wrapper, a timeout context, the command packer and its response callbacks. That was
about 35 µs of CPU per call against 6-12 µs for the same command written straight to a
socket and read back with hiredis (32 concurrent callers, one process; bench/PROFILE.md).

:class:`Multiplexed` is that socket: calls are written as they come, and Redis answers on
one connection in the order it was asked, so each reply goes to the oldest waiting call.
Concurrent commands share the connection's reads and writes (pipelining without a pipeline
object): the commands of one turn of the event loop leave in one write, and one read takes
every reply that has arrived. Error replies become redis-py's own exception classes (its parser's mapping), so
callers catch what they caught before. A lost connection fails every call still waiting on
it with :class:`redis.exceptions.ConnectionError` (a call in flight may or may not have run,
as with any client); the next call connects again. Nothing is retried here.

Only for a single node over TCP (:meth:`Multiplexed.serving`); a cluster, a Unix socket or
TLS keep redis-py.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError, ResponseError


class _ErrorReply(Exception):
    """What hiredis makes of an error reply, before it becomes redis-py's exception."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=_ErrorReply)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self._unsent: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, args: tuple[str | bytes | int, ...]) -> asyncio.Future[Any]:
        """Queue one command; its reply will resolve the returned future. Commands queued in
        one turn of the event loop go out in one write at the end of it."""
        future = asyncio.get_running_loop().create_future()
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._flush)
        self._unsent.append(hiredis.pack_command(args))
        self.waiting.append(future)
        return future

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(unsent)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if future.done():  # its caller was cancelled: the reply is dropped
                continue
            if isinstance(reply, _ErrorReply):
                future.set_exception(BaseParser.parse_error(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = ConnectionError(f"connection to Redis lost: {exc or 'closed'}")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(self.lost)


class Multiplexed:
    """A pipelined connection to one Redis node (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def serving(cls, client: Any) -> Multiplexed | None:
        """One for the node ``client`` (a redis-py client) talks to, when it is a single
        node over plain TCP; ``None`` otherwise."""
        if not isinstance(client, aioredis.Redis):
            return None
        pool = client.connection_pool
        if pool.connection_class is not Connection:  # TLS, Unix socket, or a custom class
            return None
        kw = pool.connection_kwargs
        if kw.get("protocol") not in (None, 2, "2"):
            return None
        return cls(
            kw.get("host", "localhost"),
            int(kw.get("port", 6379)),
            int(kw.get("db", 0) or 0),
            kw.get("username"),
            kw.get("password"),
        )

    async def call(self, *args: str | bytes | int) -> Any:
        """Send one command and wait for its reply (an error reply is raised)."""
        protocol = await self._connected()
        return await protocol.send(args)

    async def _connected(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        if protocol is not None and protocol.lost is None and self._loop is loop:
            return protocol
        if self._connecting is None or self._loop is not loop:
            self._connecting, self._loop = asyncio.Lock(), loop
        async with self._connecting:
            protocol = self._protocol
            if protocol is not None and protocol.lost is None and self._loop is loop:
                return protocol
            try:
                _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
            except OSError as exc:
                raise ConnectionError(
                    f"cannot connect to Redis at {self.host}:{self.port}: {exc}"
                ) from exc
            self._protocol = protocol
            if self.password is not None:
                auth = (self.username, self.password) if self.username else (self.password,)
                await self._first(protocol, "AUTH", *auth)
            if self.db:
                await self._first(protocol, "SELECT", self.db)
            return protocol

    @staticmethod
    async def _first(protocol: _Protocol, *args: str | int) -> None:
        try:
            await protocol.send(args)
        except ResponseError:
            assert protocol.transport is not None
            protocol.transport.close()
            raise

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
