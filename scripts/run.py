"""``make run``: bring the whole system up on this machine with honcho, and down again on Ctrl-C.

What it starts (each only when its URL is not given in the environment):

- Redis on ``REDIS_PORT`` (6380) under ``$STREAMSHOP_DATA_DIR/redis`` with AOF,
  ``appendfsync always`` and ``noeviction`` (config from ``scripts/redis.conf.template``);
- the embedded MongoDB-protocol server (``secantusd-py``) on ``MONGO_PORT`` (27018) under
  ``$STREAMSHOP_DATA_DIR/mongo``;
- and always the API on ``HOST:PORT`` (127.0.0.1:8000) and the workers of the ``Procfile``.

PostgreSQL is the machine's (``DATABASE_URL``, default the ``streamshop`` database on
127.0.0.1:5432, created if missing; on a fresh cluster that refuses passwordless logins, a
``streamshop`` role with a generated password). Missing servers are installed with apt-get
when we are root; otherwise the script says exactly what to install. A JWT secret is generated once
and kept in the data directory, so tokens survive restarts.

Running it twice is safe: a run still alive is reported, and processes left over by a run
that was killed with ``kill -9`` (found by their pid files and verified by their
environment) are stopped first.

A process that dies while the system runs is restarted with a capped backoff by its
``scripts/service.py`` wrapper (``--restart``); Ctrl-C still stops everything.

Views of another log: PostgreSQL (and MongoDB, when ``MONGO_URL`` is shared) may hold
views that another data directory's log built (two data directories on one database, or
``make clean`` then ``make run``). The projector, ``verify`` and the API refuse those; so
after start this script asks ``streamshop verify all --identity`` and rebuilds each view
it refuses from this log (``streamshop rebuild <view>``), into a version of this log's
own. The other log's view is left as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

from service import (  # scripts/ is on sys.path: run.py and service.py run as scripts
    alive,
    mongo_ready,
)

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
READY_SECONDS = float(os.environ.get("STREAMSHOP_READY_SECONDS", "180"))

WORKER_MODULES = {
    "api": "app.main",
    "projector": "workers.commands.project",
    "ingest": "workers.commands.ingest",
}
"""Procfile process → the module it needs; a process whose module is not written yet is skipped."""


class RunError(Exception):
    """Something the user must fix before the system can start; the message says what."""


def say(message: str) -> None:
    print(f"run    | {message}", flush=True)


@dataclass(frozen=True)
class Layout:
    """Where this run keeps its data and which ports it uses (all overridable by environment)."""

    data: Path
    redis_port: int
    mongo_port: int
    api_host: str
    api_port: int

    @property
    def run_dir(self) -> Path:
        return self.data / "run"

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Layout:
        data = Path(env.get("STREAMSHOP_DATA_DIR", str(ROOT / ".data"))).resolve()
        return cls(
            data=data,
            redis_port=int(env.get("REDIS_PORT", "6380")),
            mongo_port=int(env.get("MONGO_PORT", "27018")),
            api_host=env.get("HOST", "127.0.0.1"),
            api_port=int(env.get("PORT", "8000")),
        )


# -- processes of earlier runs ------------------------------------------------------------


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _started_by(pid: int, run_dir: Path) -> bool:
    """Was ``pid`` started by a run on this data directory? (Its environment names the run dir.)"""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"STREAMSHOP_RUN_DIR={run_dir}".encode() in environ


def _stop(pid: int, name: str, timeout: float = 15.0) -> None:
    say(f"stopping {name} (pid {pid}) left over from an earlier run")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def claim_run_dir(run_dir: Path) -> None:
    """Refuse when a run on this data directory is alive; clean up after one that died."""
    run_dir.mkdir(parents=True, exist_ok=True)
    own = run_dir / "run.pid"
    pid = _read_pid(own)
    if pid and pid != os.getpid() and alive(pid):
        cmdline = Path(f"/proc/{pid}/cmdline")
        if not cmdline.exists() or b"run.py" in cmdline.read_bytes():
            raise RunError(
                f"streamshop is already running on {run_dir.parent} (pid {pid}); "
                f"stop it with Ctrl-C (or `kill -INT {pid}`) first"
            )
    pidfiles = sorted(run_dir.glob("*.pid"), key=lambda p: p.name != "honcho.pid")
    for path in pidfiles:
        if path == own:
            continue
        pid = _read_pid(path)
        if pid and alive(pid) and _started_by(pid, run_dir):
            _stop(pid, path.stem)
        path.unlink(missing_ok=True)
    own.write_text(f"{os.getpid()}\n")


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require_free_ports(ports: dict[str, tuple[str, int]]) -> None:
    for variable, (host, port) in ports.items():
        if _port_in_use(host, port):
            raise RunError(
                f"port {port} ({variable}) is in use by another program; stop it or pick "
                f"another port, e.g. `{variable}={port + 1} make run`"
            )


# -- servers on this machine ----------------------------------------------------------------


def install_packages(packages: list[str], why: str) -> None:
    """apt-get install when we are root on Debian/Ubuntu; otherwise say exactly what to run."""
    command = "apt-get install -y " + " ".join(packages)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RunError(
            f"{why}. Install it, e.g. `sudo {command}` (Debian/Ubuntu), "
            "or point the URL variable at a running server"
        )
    say(f"{why}: running `{command}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, env=env)


def _postgres_installed() -> bool:
    return bool(shutil.which("psql") or glob.glob("/usr/lib/postgresql/*/bin/postgres"))


def _start_local_postgres() -> None:
    """Start the Debian cluster(s) of this machine, as root; no-op elsewhere."""
    if os.geteuid() != 0:
        return
    if shutil.which("pg_ctlcluster") and shutil.which("pg_lsclusters"):
        listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            version, cluster, *_ = line.split()
            say(f"starting PostgreSQL cluster {version}/{cluster}")
            subprocess.run(["pg_ctlcluster", version, cluster, "start"], check=False)
    elif shutil.which("service"):
        subprocess.run(["service", "postgresql", "start"], check=False)


async def _ensure_database(dsn: str) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        parts = urlsplit(dsn)
        name = parts.path.lstrip("/")
        admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")), timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            say(f"created PostgreSQL database {name}")
        except asyncpg.DuplicateDatabaseError:
            pass
        finally:
            await admin.close()
    else:
        await conn.close()


def _as_postgres(sql: str) -> None:
    """Run SQL as the ``postgres`` OS user over the local socket (peer auth; needs root)."""
    subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True,
        cwd="/",
        capture_output=True,
    )


def _local_role(data: Path, dsn: str) -> str:
    """A fresh Debian cluster refuses passwordless TCP logins: give streamshop its own role.

    The password is random, kept in the data directory; the database is owned by the role.
    """
    path = data / "pg_password"
    if not path.exists():
        path.write_text(secrets.token_hex(16) + "\n")
        path.chmod(0o600)
    password = path.read_text().strip()
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    say(f"PostgreSQL refuses passwordless logins; using role streamshop for database {name}")
    _as_postgres(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'streamshop') "
        "THEN CREATE ROLE streamshop LOGIN; END IF; END $$; "
        f"ALTER ROLE streamshop LOGIN PASSWORD '{password}' CREATEDB; "
        f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_database WHERE datname = '{name}') "
        f"""THEN EXECUTE 'ALTER DATABASE "{name}" OWNER TO streamshop'; END IF; END $$;"""
    )
    netloc = f"streamshop:{password}@{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc))


def ensure_postgres(dsn: str, local_default: bool, data: Path) -> str:
    """The database of ``dsn`` exists; with the default DSN, PostgreSQL is installed and up.

    Returns the DSN to use: the default one, or one with its own role on a fresh cluster.
    """
    import asyncpg

    parts = urlsplit(dsn)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    if local_default:
        if not _postgres_installed():
            install_packages(["postgresql"], "PostgreSQL is not installed")
        if not _port_in_use(host, port):
            _start_local_postgres()
            deadline = time.monotonic() + 30
            while not _port_in_use(host, port) and time.monotonic() < deadline:
                time.sleep(0.5)
    if not _port_in_use(host, port):
        raise RunError(
            f"PostgreSQL does not answer on {host}:{port}. Start it "
            "(e.g. `sudo service postgresql start`) or set DATABASE_URL"
        )
    refused = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    try:
        asyncio.run(_ensure_database(dsn))
        return dsn
    except refused as exc:
        if not (local_default and os.geteuid() == 0 and shutil.which("runuser")):
            raise RunError(
                f"PostgreSQL refused {dsn}: {exc}. Set DATABASE_URL with a user and password, "
                "or allow the postgres user on 127.0.0.1 in pg_hba.conf (method trust)"
            ) from exc
    except Exception as exc:  # any driver error: the message is what the user needs
        raise RunError(f"cannot use PostgreSQL database {dsn}: {exc}") from exc
    try:
        dsn = _local_role(data, dsn)
        asyncio.run(_ensure_database(dsn))
    except Exception as exc:
        detail = exc.stderr.decode() if isinstance(exc, subprocess.CalledProcessError) else exc
        raise RunError(f"cannot set up a PostgreSQL role for streamshop: {detail}") from exc
    return dsn


def render_redis_conf(layout: Layout) -> Path:
    directory = layout.data / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    template = string.Template((ROOT / "scripts" / "redis.conf.template").read_text())
    conf = directory / "redis.conf"
    conf.write_text(
        template.substitute(
            port=layout.redis_port, dir=directory, pidfile=directory / "redis-server.pid"
        )
    )
    return conf


def jwt_secret(data: Path) -> str:
    """One random secret per data directory, created on first start and kept (mode 0600)."""
    path = data / "jwt_secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


# -- the Procfile ---------------------------------------------------------------------------


def _module_exists(module: str) -> bool:
    return (ROOT / (module.replace(".", "/") + ".py")).exists()


def select_processes(local: set[str]) -> dict[str, str]:
    """The Procfile's processes this run needs, in order (``local``: the servers we start)."""
    selected: dict[str, str] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if not sep or line.lstrip().startswith("#"):
            continue
        name = name.strip()
        if name in ("redis", "mongo") and name not in local:
            continue
        module = WORKER_MODULES.get(name)
        if module and not _module_exists(module):
            say(f"skipping {name}: {module} is not written yet")
            continue
        selected[name] = command.strip()
    return selected


# -- after start: checks, first admin, the banner -----------------------------------------


def _redis_ready(url: str) -> bool:
    import redis
    from redis.exceptions import RedisError

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except (RedisError, OSError):
        return False
    finally:
        client.close()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Run:
    """One ``make run``: honcho as a child in its own session, this process as its supervisor."""

    def __init__(self, layout: Layout, env: dict[str, str], processes: dict[str, str]) -> None:
        self.layout = layout
        self.env = env
        self.processes = processes
        self.stopping = threading.Event()
        self.honcho: subprocess.Popen[bytes] | None = None
        self.demo: subprocess.Popen[str] | None = None

    def stop(self, signum: int = signal.SIGINT, reason: str = "") -> None:
        if reason:
            say(reason)
        self.stopping.set()
        if self.demo and self.demo.poll() is None:
            self.demo.terminate()
        if self.honcho and self.honcho.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.honcho.send_signal(signum)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop(signum)

    def _wait(self, ready: object, what: str) -> bool:
        deadline = time.monotonic() + READY_SECONDS
        while not self.stopping.is_set():
            if ready():  # type: ignore[operator]
                return True
            if time.monotonic() > deadline:
                self.stop(reason=f"{what} did not come up within {READY_SECONDS:.0f}s; stopping")
                return False
            time.sleep(0.25)
        return False

    def _streamshop(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "streamshop"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )

    def after_start(self) -> None:
        """Check Redis (refuse an evicting one), create the first admin, then print the URLs."""
        env = self.env
        if not self._wait(lambda: _redis_ready(env["REDIS_URL"]), "Redis"):
            return
        check = self._streamshop("check")
        for line in (check.stdout + check.stderr).splitlines():
            say(f"check: {line}")
        if check.returncode != 0:
            self.stop(reason="Redis was refused by `streamshop check`; stopping")
            return
        if not self._wait(lambda: mongo_ready(env["MONGO_URL"]), "MongoDB"):
            return
        self.own_views()
        self.create_admin()
        api = f"http://{self.layout.api_host}:{self.layout.api_port}"
        if "api" in self.processes and not self._wait(lambda: _http_ok(f"{api}/health"), "API"):
            return
        lines = ["", "streamshop is up:"]
        if "api" in self.processes:
            lines += [
                f"  API          {api}",
                f"  OpenAPI      {api}/schema/swagger",
                f"  health       {api}/health  (readiness: {api}/ready)",
            ]
        lines += [
            f"  Redis        {env['REDIS_URL']}",
            f"  MongoDB      {env['MONGO_URL']} (database {env.get('MONGO_DB', 'streamshop')})",
            f"  PostgreSQL   {env['DATABASE_URL']}",
            f"  data         {self.layout.data}",
            "Press Ctrl-C to stop everything.",
            "",
        ]
        print("\n".join(lines), flush=True)
        self.populate_demo()

    def own_views(self) -> None:
        """Rebuild, from this log, every view that was built from another log (see the module
        docstring); the projector refuses them meanwhile and is restarted after."""
        check = self._streamshop("verify", "all", "--identity")
        if check.returncode == 0:
            return
        refused = [line for line in check.stdout.splitlines() if ": refused: " in line]
        if check.returncode != 4 or not refused:
            detail = (check.stdout + check.stderr).strip()[-500:]
            say(f"could not check which log the views were built from: {detail}")
            return
        for line in refused:
            view = line.split(":", 1)[0]
            say(line)
            say(f"rebuilding {view} from this log (the other log's view is kept)")
            result = self._streamshop("rebuild", view, "--no-progress")
            for out in result.stdout.splitlines():
                say(f"rebuild: {out}")
            if result.returncode != 0:
                say(
                    f"rebuild of {view} failed (exit {result.returncode}): "
                    f"{result.stderr.strip()[-500:]}; run `streamshop rebuild {view}`"
                )

    def populate_demo(self) -> None:
        """On first start, a demo shop through ``streamshop demo`` (``DEMO=0`` skips it).

        A marker in the data directory keeps later starts from running it again (the command
        itself adds nothing on a re-run either)."""
        marker = self.layout.data / "demo-created"
        if self.env.get("DEMO", "1").lower() in ("0", "false", "no") or marker.exists():
            return
        if self.stopping.is_set() or not _module_exists("workers.commands.demo"):
            return
        say("populating a demo shop (set DEMO=0 to skip)")
        self.demo = subprocess.Popen(
            [str(VENV_BIN / "streamshop"), "demo"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = self.demo.communicate()
        if self.demo.returncode == 0:
            marker.write_text(out)
            for line in out.splitlines():
                say(f"demo: {line}")
        elif not self.stopping.is_set():
            say(f"demo failed (exit {self.demo.returncode}): {err.strip()[-500:]}")

    def create_admin(self) -> None:
        email, password = self.env.get("ADMIN_EMAIL"), self.env.get("ADMIN_PASSWORD")
        marker = self.layout.data / "admin-created"
        if not (email and password) or marker.exists():
            return
        if not _module_exists("workers.commands.create_admin"):
            say("ADMIN_EMAIL is set but `streamshop create-admin` is not written yet; skipped")
            return
        result = self._streamshop("create-admin", "--email", email, "--password", password)
        if result.returncode == 0:
            marker.write_text(f"{email}\n")
            say(f"created admin {email}")
        else:
            say(f"create-admin failed (exit {result.returncode}): {result.stderr.strip()}")

    def reap(self, timeout: float = 20.0) -> None:
        """After honcho: wait for every recorded process (a datastore may still be flushing)."""
        pidfiles = list(self.layout.run_dir.glob("*.pid"))
        deadline = time.monotonic() + timeout
        for path in pidfiles:
            pid = _read_pid(path)
            if pid and pid != os.getpid() and _started_by(pid, self.layout.run_dir):
                while alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if alive(pid):
                    say(f"{path.stem} (pid {pid}) is still running after {timeout:.0f}s")
                    continue
            path.unlink(missing_ok=True)

    def run(self) -> int:
        procfile = self.layout.run_dir / "Procfile"
        procfile.write_text("".join(f"{n}: {c}\n" for n, c in self.processes.items()))
        command = [sys.executable, "-m", "honcho", "start", "-f", str(procfile), "-d", str(ROOT)]
        if not sys.stdout.isatty():
            command.append("--no-colour")
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self.honcho = subprocess.Popen(command, env=self.env, cwd=ROOT, start_new_session=True)
        (self.layout.run_dir / "honcho.pid").write_text(f"{self.honcho.pid}\n")
        threading.Thread(target=self.after_start, name="after-start", daemon=True).start()
        returncode = self.honcho.wait()
        if self.demo and self.demo.poll() is None:
            self.demo.terminate()
        self.reap()
        if self.stopping.is_set() and returncode in (0, 130, 143):
            say("stopped")
            return 0
        say(
            f"a process could not be kept running (honcho exit {returncode}); everything was "
            "stopped, see above"
        )
        return returncode or 1


def prepare(env: dict[str, str]) -> tuple[Layout, dict[str, str], dict[str, str]]:
    """Resolve the configuration, check and install what is missing, return the child env."""
    layout = Layout.from_env(env)
    run_dir = layout.run_dir
    claim_run_dir(run_dir)
    env = {
        **env,
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "STREAMSHOP_RUN_DIR": str(run_dir),
        "STREAMSHOP_API_HOST": layout.api_host,
        "STREAMSHOP_API_PORT": str(layout.api_port),
        "PYTHONUNBUFFERED": "1",
    }
    env.setdefault("LOG_FORMAT", "console")
    local: set[str] = set()
    ports = {"PORT": (layout.api_host, layout.api_port)}
    if not env.get("REDIS_URL"):
        if not shutil.which("redis-server"):
            install_packages(["redis-server"], "redis-server is not installed")
        local.add("redis")
        env["REDIS_URL"] = f"redis://127.0.0.1:{layout.redis_port}/0"
        env["STREAMSHOP_REDIS_CONF"] = str(render_redis_conf(layout))
        ports["REDIS_PORT"] = ("127.0.0.1", layout.redis_port)
    if not env.get("MONGO_URL"):
        local.add("mongo")
        (layout.data / "mongo").mkdir(parents=True, exist_ok=True)
        env["MONGO_URL"] = f"mongodb://127.0.0.1:{layout.mongo_port}"
        env["STREAMSHOP_MONGO_DIR"] = str(layout.data / "mongo")
        env["STREAMSHOP_MONGO_PORT"] = str(layout.mongo_port)
        ports["MONGO_PORT"] = ("127.0.0.1", layout.mongo_port)
    require_free_ports(ports)
    default_dsn = not env.get("DATABASE_URL")
    if default_dsn:
        env["DATABASE_URL"] = "postgresql://postgres@127.0.0.1:5432/streamshop"
    env["DATABASE_URL"] = ensure_postgres(env["DATABASE_URL"], default_dsn, layout.data)
    if not env.get("JWT_SECRET") and env.get("STREAMSHOP_DEV", "0") not in ("1", "true", "yes"):
        env["JWT_SECRET"] = jwt_secret(layout.data)
    return layout, env, select_processes(local)


def main() -> int:
    os.chdir(ROOT)
    try:
        layout, env, processes = prepare(dict(os.environ))
    except KeyboardInterrupt:
        print("make run: interrupted before start", file=sys.stderr)
        return 130
    except RunError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        own = Layout.from_env(dict(os.environ)).run_dir / "run.pid"
        if _read_pid(own) == os.getpid():
            own.unlink()
        return 1
    return Run(layout, env, processes).run()


if __name__ == "__main__":
    sys.exit(main())
