"""The system under fault: every process of ``make run`` as a real child, on private ports.

:class:`System` starts Redis (the ``make run`` configuration: AOF, ``appendfsync always``,
``noeviction``), the MongoDB-protocol server on an on-disk data directory, the API, the
projector and the ingest gateway, each from its line in the ``Procfile`` (so this suite
runs what ``make run`` runs), against a PostgreSQL database of its own reached through a
:class:`~tests.support.tcp_proxy.TcpProxy`. Any of them can be ``kill -9``'ed and started
again on the same port and directory; PostgreSQL can be cut at the proxy or have its
backends terminated.

A supervisor restarts a process that exits on its own (as ``make run``'s supervision is
meant to), and records it: an unexpected exit is a finding, not noise.

Later write paths extend it by adding a :class:`Service` to ``System.services``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shlex
import signal
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from app.settings import Settings
from events.connection import connect
from scripts.servers import free_port
from tests.conftest import PG_ADMIN_DSN
from tests.support import cluster as redis_cluster
from tests.support.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JWT_SECRET = "streamshop-faults-secret-0123456789abcdef"
READY_SECONDS = 60.0
"""How long a (re)started process may take to answer before the run is declared broken."""

Ready = Callable[[], Awaitable[bool]]
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: SIGKILL it if the harness dies (a pytest timeout must leave no orphans;
    the children run in their own sessions, so no terminal signal reaches them)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _has_connection(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds an ESTABLISHED TCP socket to 127.0.0.1:``port``."""
    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        rows = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    want = f"0100007F:{port:04X}"
    for row in rows:
        cols = row.split()
        if cols[2] == want and cols[3] == "01" and cols[9] in inodes:
            return True
    return False


class HarnessError(RuntimeError):
    """The harness itself could not do its job (a process would not start, a port stayed shut)."""


def procfile_commands(procfile: Path = ROOT / "Procfile") -> dict[str, str]:
    """Each Procfile process → the command it runs, without ``scripts/service.py``'s wrapper.

    The wrapper orders start and stop under honcho; here the harness does that, and a
    ``kill -9`` must hit the server itself, not a wrapper.
    """
    commands: dict[str, str] = {}
    for line in procfile.read_text().splitlines():
        name, sep, command = line.partition(":")
        if not sep or line.lstrip().startswith("#"):
            continue
        command = command.strip().removeprefix("exec ").strip()
        if " -- " in command:
            command = command.split(" -- ", 1)[1]
        commands[name.strip()] = command
    return commands


def expand(command: str, env: dict[str, str]) -> list[str]:
    """Split a Procfile command and substitute its ``$VAR`` / ``"$VAR"`` from ``env``."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            raise HarnessError(f"the Procfile command {command!r} needs ${name}, which is unset")
        return env[name]

    words = shlex.split(command)
    return [re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, w) for w in words]


@dataclass
class Service:
    """One child process: started, ``kill -9``'ed and restarted on the same port and data."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Ready
    process: subprocess.Popen[bytes] | None = None
    expected_down: bool = False
    """Set while the harness itself has it down: the supervisor leaves it alone then."""
    starts: int = 0
    log_offset: int = 0
    """Where the current start's output begins in ``log_path``."""
    exits: list[int] = field(default_factory=list)
    """Return codes of exits the harness did not cause."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by whoever is killing or (re)starting it: the schedule or the supervisor."""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def start(self, ready_s: float = READY_SECONDS) -> None:
        log = self.log_path.open("ab")
        self.log_offset = log.tell()
        log.write(f"\n=== start {self.starts + 1} at {time.strftime('%H:%M:%S')} ===\n".encode())
        log.flush()
        # Popen returns at once; a sync handle keeps kill9/poll usable from the supervisor.
        self.process = subprocess.Popen(  # noqa: ASYNC220
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + ready_s
        while True:
            if self.process.poll() is not None:
                raise HarnessError(
                    f"{self.name} exited with {self.process.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{self.tail()}"
                )
            if await self.ready():
                self.expected_down = False
                return
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"{self.name} did not answer within {ready_s:.0f}s; last lines of "
                    f"{self.log_path}:\n{self.tail()}"
                )
            await asyncio.sleep(0.1)

    def kill9(self) -> None:
        """SIGKILL: no shutdown hook, no flush; only what the process made durable survives."""
        self.expected_down = True
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        self.expected_down = True
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def logged_since_start(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


@dataclass(frozen=True)
class Fault:
    """One injected fault, as the figures report it."""

    kind: str
    """``kill -9 <service>``, ``postgres cut`` or ``postgres backends terminated``."""
    at: float
    """Seconds since the run started."""
    down_s: float
    detail: str = ""


class System:
    """The whole system on private ports under ``base``; ``async with System(base) as s``."""

    SERVICES: tuple[str, ...] = ("redis", "mongo", "api", "projector", "ingest", "expire")
    """Start order; stop order is the reverse."""
    DATASTORES: tuple[str, ...] = ("redis", "mongo")
    PRIMARIES = 3
    """Nodes of the Redis Cluster (``cluster=True``): ``redis-0`` … ``redis-2``."""

    def __init__(
        self,
        base: Path,
        *,
        partitions: int = 4,
        extra_args: dict[str, list[str]] | None = None,
        reservation_ttl_s: int = 3,
        cluster: bool = False,
    ) -> None:
        self.base = base
        self.cluster = cluster
        """Redis is a three-primary Redis Cluster (each node ``appendonly yes``,
        ``appendfsync always``) instead of ``make run``'s single node; every process gets
        ``REDIS_CLUSTER=1`` and the URL of ``redis-0``."""
        if cluster:
            nodes = tuple(f"redis-{i}" for i in range(self.PRIMARIES))
            self.DATASTORES = (*nodes, "mongo")
            self.SERVICES = (*self.DATASTORES, "api", "projector", "ingest", "expire")
        self.redis_ports: list[int] = []
        self.reservation_ttl_s = reservation_ttl_s
        """``RESERVATION_TTL_SECONDS`` of the API and the expiry worker: short, so unpaid
        checkouts expire during the run."""
        self.extra_args = extra_args or {}
        """Arguments appended to a service's Procfile command (an experiment, e.g. a
        MongoDB server with ``--sync-on-commit``)."""
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"faults:{self.run_id}"
        self.pg_database = f"ssfaults_{self.run_id}"
        self.pg_direct = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{self.pg_database}"
        self.partitions = partitions
        self.started = time.monotonic()
        self.faults: list[Fault] = []
        self.proxy: TcpProxy | None = None
        self.services: dict[str, Service] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._cluster_created = False
        self.unexpected_exits: list[tuple[float, str, int]] = []
        """(seconds since start, service, return code) of exits the harness did not cause."""

    # -- layout ---------------------------------------------------------------------------

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def redis(self, **options: Any) -> Any:
        """A client of this run's Redis: the cluster client on the cluster (it follows the
        slots to every primary), a plain one on the single node."""
        return connect(self.env["REDIS_URL"], cluster=self.cluster, **options)

    def _layout(self) -> None:
        self.redis_port, self.mongo_port, self.api_port = free_port(), free_port(), free_port()
        if self.cluster:
            self.redis_ports = redis_cluster.free_ports(self.PRIMARIES)
            self.redis_port = self.redis_ports[0]
        else:
            self.redis_ports = [self.redis_port]
        for sub in ("redis", "mongo", "logs"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        template = string.Template((ROOT / "scripts" / "redis.conf.template").read_text())
        redis_dir = self.base / "redis"
        self.redis_conf = redis_dir / "redis.conf"
        self.redis_conf.write_text(
            template.substitute(
                port=self.redis_port, dir=redis_dir, pidfile=redis_dir / "redis-server.pid"
            )
        )
        assert self.proxy is not None
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "MONGO_URL": f"mongodb://127.0.0.1:{self.mongo_port}",
            "MONGO_DB": f"faults_{self.run_id}",
            "DATABASE_URL": (
                f"postgresql://postgres@127.0.0.1:{self.proxy.port}/{self.pg_database}"
            ),
            "STREAM_PREFIX": self.prefix,
            "STREAM_PARTITIONS": str(self.partitions),
            "JWT_SECRET": JWT_SECRET,
            "LOG_FORMAT": "json",
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_KIB": "1024",
            "ARGON2_PARALLELISM": "1",
            "PYTHONUNBUFFERED": "1",
            "STREAMSHOP_REDIS_CONF": str(self.redis_conf),
            "STREAMSHOP_MONGO_DIR": str(self.base / "mongo"),
            "STREAMSHOP_MONGO_PORT": str(self.mongo_port),
            "STREAMSHOP_API_HOST": "127.0.0.1",
            "STREAMSHOP_API_PORT": str(self.api_port),
            "RESERVATION_TTL_SECONDS": str(self.reservation_ttl_s),
        }
        self.env.pop("STREAMSHOP_DEV", None)
        self.env["REDIS_CLUSTER"] = "1" if self.cluster else "0"
        self.settings = Settings.from_env(self.env)

    def _build_services(self) -> None:
        commands = procfile_commands()
        missing = [
            name for name in self.SERVICES if name not in commands and not name.startswith("redis-")
        ]
        if missing:
            raise HarnessError(f"the Procfile has no line for {', '.join(missing)}")
        ready: dict[str, Ready] = {
            "redis": self._redis_ready,
            "mongo": self._mongo_ready,
            "api": self._api_ready,
            "projector": self._logged("projector", "runner_started"),
            "ingest": self._logged("ingest", "gateway_started"),
            "expire": self._connected("expire", lambda: self.redis_ports),
        }
        for i, port in enumerate(self.redis_ports if self.cluster else ()):
            name = f"redis-{i}"
            self.services[name] = Service(
                name=name,
                argv=redis_cluster.node_argv(
                    port, self.base / "redis" / str(port), "--appendfsync", "always"
                ),
                env=self.env,
                log_path=self.base / "logs" / f"{name}.log",
                ready=self._node_ready(port),
            )
        for name in self.SERVICES:
            if name.startswith("redis-"):
                continue
            self.services[name] = Service(
                name=name,
                argv=expand(commands[name], self.env) + self.extra_args.get(name, []),
                env=self.env,
                log_path=self.base / "logs" / f"{name}.log",
                ready=ready[name],
            )

    # -- readiness ------------------------------------------------------------------------

    async def _redis_ready(self) -> bool:
        client = aioredis.Redis.from_url(self.env["REDIS_URL"], socket_connect_timeout=1)
        try:
            return bool(await client.ping())
        except (RedisError, OSError):  # refused, or LOADING while the AOF replays
            return False
        finally:
            await client.aclose()

    def _node_ready(self, port: int) -> Ready:
        """A cluster node is up once it answers and, after the cluster was created, every
        node reports ``cluster_state:ok`` again (the restarted one has rejoined from its
        ``nodes.conf`` and the others see it)."""

        async def ready() -> bool:
            client = aioredis.Redis(port=port, socket_connect_timeout=1)
            try:
                if not await client.ping():
                    return False
            except (RedisError, OSError):  # refused, or LOADING while the AOF replays
                return False
            finally:
                await client.aclose()
            if not self._cluster_created:
                return True
            try:
                return await asyncio.to_thread(redis_cluster.cluster_ok, self.redis_ports)
            except (RedisError, OSError):
                return False

        return ready

    async def _mongo_ready(self) -> bool:
        client: AsyncMongoClient[Any] = AsyncMongoClient(
            self.env["MONGO_URL"], serverSelectionTimeoutMS=1000
        )
        try:
            await client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            await client.close()

    async def _api_ready(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(f"{self.api_url}/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    def _logged(self, name: str, event: str) -> Ready:
        """A worker has no probe: it is up once this start has logged ``event`` (JSON logs).

        Being alive is not enough: a worker still in its set-up (connecting to its views)
        is not consuming yet, and a fault injected then would test nothing.
        """

        async def ready() -> bool:
            await asyncio.sleep(0.2)
            logged = self.services[name].logged_since_start()
            # JSON log lines, compact (msgspec) or spaced (json.dumps): match either.
            return any(f'"event":{gap}"{event}"' in logged for gap in ("", " "))

        return ready

    def _connected(self, name: str, ports: Callable[[], list[int]]) -> Ready:
        """A worker that logs no start event (``streamshop expire``) is up once it holds an
        established TCP connection to one of ``ports`` (Redis): it connects for its first
        round (``load_functions``, then ``index``), after the slow imports."""

        async def ready() -> bool:
            await asyncio.sleep(0.2)
            pid = self.services[name].pid
            return pid is not None and any(_has_connection(pid, p) for p in ports())

        return ready

    # -- life cycle -----------------------------------------------------------------------

    async def __aenter__(self) -> System:
        await self._create_database()
        self.proxy = TcpProxy("127.0.0.1", 5432)
        await self.proxy.up()
        self._layout()
        self._build_services()
        try:
            # The datastores first; the API and the workers (slow Python start-ups) together.
            for name in self.DATASTORES:
                await self.services[name].start()
            if self.cluster:
                await asyncio.to_thread(redis_cluster.create_cluster, self.redis_ports)
                self._cluster_created = True
            await asyncio.gather(
                *(self.services[n].start() for n in self.SERVICES if n not in self.DATASTORES)
            )
        except BaseException:
            await self.close()
            raise
        self._supervisor = asyncio.create_task(self._supervise())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        for name in reversed(self.SERVICES):
            if name in self.services:
                self.services[name].stop()
        if self.proxy is not None:
            await self.proxy.down()
        await self._drop_database()

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def _create_database(self) -> None:
        await self._admin(f'CREATE DATABASE "{self.pg_database}"')

    async def _drop_database(self) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')

    async def _supervise(self, backoff: float = 0.5) -> None:
        """Restart a process that exited while the harness did not have it down."""
        while True:
            await asyncio.sleep(0.25)
            for name in self.SERVICES:
                service = self.services[name]
                if service.expected_down or service.alive() or service.process is None:
                    continue
                async with service.lock:
                    if service.expected_down or service.alive():
                        continue
                    code = service.process.returncode
                    service.exits.append(code)
                    self.unexpected_exits.append((self.elapsed(), name, code))
                    await asyncio.sleep(backoff)
                    with contextlib.suppress(HarnessError):
                        await service.start()

    # -- faults ---------------------------------------------------------------------------

    async def kill_and_restart(self, name: str, down_s: float = 1.0) -> Fault:
        """``kill -9`` one service, leave it down ``down_s``, start it on the same port/data."""
        service = self.services[name]
        async with service.lock:
            at = self.elapsed()
            service.kill9()
            await asyncio.sleep(down_s)
            await service.start()
        fault = Fault(f"kill -9 {name}", at, round(self.elapsed() - at, 2))
        self.faults.append(fault)
        return fault

    async def cut_postgres(self, down_s: float = 4.0) -> Fault:
        """Refuse new PostgreSQL connections and abort the open ones, for ``down_s``."""
        assert self.proxy is not None
        at = self.elapsed()
        await self.proxy.down()
        await asyncio.sleep(down_s)
        await self.proxy.up()
        fault = Fault("postgres cut", at, round(self.elapsed() - at, 2))
        self.faults.append(fault)
        return fault

    async def terminate_postgres_backends(self) -> Fault:
        """``pg_terminate_backend`` every session on this run's database (the server side)."""
        at = self.elapsed()
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            killed = await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                self.pg_database,
            )
        finally:
            await conn.close()
        fault = Fault("postgres backends terminated", at, 0.0, f"{killed} backends")
        self.faults.append(fault)
        return fault

    # -- the CLI --------------------------------------------------------------------------

    async def streamshop(self, *args: str, limit_s: float = 60.0) -> tuple[int, str]:
        """Run ``streamshop ARGS`` against this system; (exit code, stdout + stderr).

        Asynchronous on purpose: the TCP proxy to PostgreSQL lives on this event loop.
        """
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "streamshop"),
            *args,
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), limit_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return -9, f"streamshop {' '.join(args)} timed out after {limit_s:.0f}s"
        return proc.returncode or 0, out.decode(errors="replace")
