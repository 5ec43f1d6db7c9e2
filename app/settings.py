"""Settings: one dataclass per concern, built once from the environment by ``Settings.from_env``.

Nothing reads the environment at import time; the composition roots (``app.main.create_app``
and ``workers.cli``) build a ``Settings`` and pass it down.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from events.connection import cluster_from_env, connect
from events.durability import ReplicaWait
from events.keys import Keys
from events.personal import DEV_DIGEST_SECRET

_DEV_SECRET = secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6380/0"
    """The Redis holding the log and the decision state (``make run`` starts one on 6380)."""
    prefix: str = "streamshop"
    """Key prefix; tests use one per run so they never collide."""
    partitions: int = 8
    """Number of log partitions; fixed for the life of a deployment."""
    email_digest_secret: str = field(default=DEV_DIGEST_SECRET.decode(), repr=False)
    """HMAC secret of the email digests that uniqueness and login look up
    (``EMAIL_DIGEST_SECRET``). Settings built in code (tests, tools) get the dev secret;
    :meth:`Settings.from_env` leaves it empty outside dev mode when the variable is unset,
    and then the API refuses to start and no digest is computed. Fixed for the life of a
    log: a new one orphans every email reservation."""
    cluster: bool = False
    """``url`` names a node of a Redis Cluster (``REDIS_CLUSTER=1``): use the cluster client."""
    wait_replicas: int = 0
    """``REDIS_WAIT_REPLICAS``: acknowledge an append only once this many replicas hold it
    (``WAIT``, :mod:`events.durability`); 0: answer when the primary has it (the default)."""
    wait_timeout_ms: int = 1000
    """``REDIS_WAIT_TIMEOUT_MS``: how long an append waits for those replicas before it is
    reported as not confirmed (it may still be durable; the client retries with its key)."""

    @property
    def replica_wait(self) -> ReplicaWait | None:
        """The wait the append path makes after its ``FCALL``; ``None`` when off."""
        if self.wait_replicas <= 0:
            return None
        return ReplicaWait(replicas=self.wait_replicas, timeout_ms=self.wait_timeout_ms)

    def connect(self, **options: Any) -> Any:
        """A client for this Redis, single node or cluster (:func:`events.connection.connect`)."""
        return connect(self.url, cluster=self.cluster, **options)

    @property
    def keys(self) -> Keys:
        secret = self.email_digest_secret.encode()
        return Keys(prefix=self.prefix, partitions=self.partitions, digest_secret=secret)


@dataclass(frozen=True, slots=True)
class MongoSettings:
    url: str = "mongodb://127.0.0.1:27018"
    """MongoDB (or the embedded SecantusDB server ``make run`` starts) for the read models."""
    database: str = "streamshop"


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    url: str = "postgresql://postgres@127.0.0.1:5432/streamshop"
    """PostgreSQL for the audit log (schema ``audit``) and the warehouse (schema ``dw``)."""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    jwt_secret: str = ""
    """HMAC secret for access tokens; the API refuses to start without one outside dev mode."""
    token_ttl_seconds: int = 900
    """Access-token lifetime (15 min): a deactivation or logout stops a stateless access
    token at the latest when it expires (``ACCESS_TOKEN_TTL_SECONDS``)."""
    refresh_ttl_seconds: int = 30 * 86400
    """Idle lifetime of a refresh-token family; each refresh restarts it
    (``REFRESH_TOKEN_TTL_SECONDS``)."""
    login_rate_per_minute: int = 20
    """Login attempts per client address per minute, whatever the emails (then 429);
    ``0`` turns the limit off (the login benchmark, one client, sets it)."""
    refresh_rate_per_minute: int = 60
    """Refreshes per client address per minute (then 429)."""
    login_max_failures: int = 5
    """Failures within ``login_window_seconds`` after which login answers 429."""
    login_window_seconds: int = 900
    argon2_time_cost: int = 3
    """argon2id passes; tests lower the three cost parameters to stay fast (still argon2id)."""
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4


@dataclass(frozen=True, slots=True)
class Settings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    mongo: MongoSettings = field(default_factory=MongoSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    default_currency: str = "BRL"
    reservation_ttl_seconds: int = 900
    """How long a checkout holds its stock; an unpaid order then expires."""
    payment_webhook_secret: str = ""
    """HMAC-SHA256 key of ``POST /payments/webhook``; empty: the webhook is off (404)."""
    log_format: str = "json"
    """``json`` (one JSON object per line) or ``console`` (for humans)."""
    dev_mode: bool = False
    """Dev mode allows a random JWT secret (tokens die with the process) and the fixed dev
    secret of the email digests."""
    ready_max_lag_seconds: float = 30.0
    """``/ready`` answers 503 when a projection is further behind than this (0: no lag check)."""
    metrics_port: int = 0
    """Port of the workers' own Prometheus endpoint (``streamshop project``/``ingest``; 0: off)."""
    otel_endpoint: str = ""
    """``OTEL_EXPORTER_OTLP_ENDPOINT``: where traces go over OTLP/HTTP; empty: tracing off."""

    def jwt_secret(self) -> str:
        """The configured secret; in dev mode a random one (tokens then die with the process)."""
        if self.auth.jwt_secret:
            return self.auth.jwt_secret
        if self.dev_mode:
            return _DEV_SECRET
        raise ValueError("JWT_SECRET is required (set STREAMSHOP_DEV=1 for a throwaway one)")

    def email_digest_secret(self) -> bytes:
        """The secret of the email digests (in dev mode :meth:`from_env` gave it the fixed
        dev one). The API asks at start, like :meth:`jwt_secret`, so it refuses to run
        without one."""
        if self.redis.email_digest_secret:
            return self.redis.email_digest_secret.encode()
        raise ValueError(
            "EMAIL_DIGEST_SECRET is required (set STREAMSHOP_DEV=1 for the dev one); keep it "
            "for the life of the log: a new one orphans every email reservation"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        dev = env.get("STREAMSHOP_DEV", "0").lower() in ("1", "true", "yes")
        secret = env.get("JWT_SECRET", "")
        r, m, pg, a = RedisSettings(), MongoSettings(), PostgresSettings(), AuthSettings()
        return cls(
            redis=RedisSettings(
                url=env.get("REDIS_URL", r.url),
                prefix=env.get("STREAM_PREFIX", r.prefix),
                partitions=int(env.get("STREAM_PARTITIONS", r.partitions)),
                cluster=cluster_from_env(env),
                wait_replicas=int(env.get("REDIS_WAIT_REPLICAS", r.wait_replicas)),
                wait_timeout_ms=int(env.get("REDIS_WAIT_TIMEOUT_MS", r.wait_timeout_ms)),
                email_digest_secret=env.get("EMAIL_DIGEST_SECRET", "")
                or (r.email_digest_secret if dev else ""),
            ),
            mongo=MongoSettings(
                url=env.get("MONGO_URL", m.url),
                database=env.get("MONGO_DB", m.database),
            ),
            postgres=PostgresSettings(url=env.get("DATABASE_URL", pg.url)),
            auth=AuthSettings(
                jwt_secret=secret,
                token_ttl_seconds=int(env.get("ACCESS_TOKEN_TTL_SECONDS", a.token_ttl_seconds)),
                refresh_ttl_seconds=int(
                    env.get("REFRESH_TOKEN_TTL_SECONDS", a.refresh_ttl_seconds)
                ),
                login_rate_per_minute=int(
                    env.get("LOGIN_RATE_PER_MINUTE", a.login_rate_per_minute)
                ),
                refresh_rate_per_minute=int(
                    env.get("REFRESH_RATE_PER_MINUTE", a.refresh_rate_per_minute)
                ),
                argon2_time_cost=int(env.get("ARGON2_TIME_COST", a.argon2_time_cost)),
                argon2_memory_kib=int(env.get("ARGON2_MEMORY_KIB", a.argon2_memory_kib)),
                argon2_parallelism=int(env.get("ARGON2_PARALLELISM", a.argon2_parallelism)),
            ),
            default_currency=env.get("DEFAULT_CURRENCY", "BRL"),
            reservation_ttl_seconds=int(env.get("RESERVATION_TTL_SECONDS", "900")),
            payment_webhook_secret=env.get("PAYMENT_WEBHOOK_SECRET", ""),
            log_format=env.get("LOG_FORMAT", "json"),
            dev_mode=dev,
            ready_max_lag_seconds=float(env.get("READY_MAX_LAG_SECONDS", "30")),
            metrics_port=int(env.get("METRICS_PORT", "0")),
            otel_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        )
