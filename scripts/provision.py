"""``make run``'s provisioning: the datastores, the config files and the environment.

Before anything starts, :func:`provision` resolves the configuration into the environment
the Procfile's processes get: a Redis config rendered from ``scripts/redis.conf.template``
(AOF, ``appendfsync always``, ``noeviction``) and a data directory for SecantusDB when
their URLs are not given; the PostgreSQL database (created if missing; on a fresh cluster
that refuses passwordless logins, a ``streamshop`` role with a generated password); and the
JWT secret and the email-digest secret, kept in the data directory. Missing servers are installed with apt-get when we
are root; otherwise :class:`RunError` says exactly what to install. Starting and
supervising the processes is ``scripts/run.py``.
"""

from __future__ import annotations

import asyncio
import glob
import os
import secrets
import shutil
import string
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from servers import port_in_use  # scripts/ is on sys.path: the scripts run as scripts

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


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


# -- ports and servers on this machine -----------------------------------------------------


def require_free_ports(ports: dict[str, tuple[str, int]]) -> None:
    for variable, (host, port) in ports.items():
        if port_in_use(host, port):
            raise RunError(
                f"port {port} ({variable}) is in use by another program; stop it or pick "
                f"another port, e.g. `{variable}={port + 1} make run`"
            )


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
        if not port_in_use(host, port):
            _start_local_postgres()
            deadline = time.monotonic() + 30
            while not port_in_use(host, port) and time.monotonic() < deadline:
                time.sleep(0.5)
    if not port_in_use(host, port):
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


def kept_secret(data: Path, name: str) -> str:
    """One random secret per data directory, created on first start and kept (mode 0600)."""
    path = data / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


# -- the environment of the processes -------------------------------------------------------


def provision(layout: Layout, env: dict[str, str]) -> tuple[dict[str, str], set[str]]:
    """Check and install what is missing; return the processes' environment and the
    datastores this run starts itself (``redis``, ``mongo``: those without a URL)."""
    env = {
        **env,
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "STREAMSHOP_RUN_DIR": str(layout.run_dir),
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
    if env.get("STREAMSHOP_DEV", "0") not in ("1", "true", "yes"):
        if not env.get("JWT_SECRET"):
            env["JWT_SECRET"] = kept_secret(layout.data, "jwt_secret")
        # Kept with the log it belongs to: the email reservations in Redis are named by it.
        if not env.get("EMAIL_DIGEST_SECRET"):
            env["EMAIL_DIGEST_SECRET"] = kept_secret(layout.data, "email_digest_secret")
    return env, local
