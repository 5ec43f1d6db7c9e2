"""Settings come from the environment mapping they are given, never from import-time state."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from app.settings import Settings
from events.keys import Keys
from events.personal import DEV_DIGEST_SECRET


def test_defaults_match_what_make_run_starts() -> None:
    settings = Settings.from_env({})
    assert settings.redis.url == "redis://127.0.0.1:6380/0"
    assert settings.mongo.url == "mongodb://127.0.0.1:27018"
    assert settings.postgres.url == "postgresql://postgres@127.0.0.1:5432/streamshop"
    assert (settings.redis.prefix, settings.redis.partitions) == ("streamshop", 8)
    assert settings.default_currency == "BRL"
    assert settings.log_format == "json"
    assert not settings.dev_mode


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://r:1/2",
            "STREAM_PREFIX": "shop",
            "STREAM_PARTITIONS": "16",
            "MONGO_URL": "mongodb://m:2",
            "MONGO_DB": "views",
            "DATABASE_URL": "postgresql://u@p:3/db",
            "JWT_SECRET": "s3cret",
            "DEFAULT_CURRENCY": "USD",
            "LOG_FORMAT": "console",
        }
    )
    assert settings.redis.url == "redis://r:1/2"
    assert settings.redis.keys.prefix == "shop"
    assert settings.redis.keys.partitions == 16
    assert (settings.mongo.url, settings.mongo.database) == ("mongodb://m:2", "views")
    assert settings.postgres.url == "postgresql://u@p:3/db"
    assert settings.jwt_secret() == "s3cret"
    assert settings.default_currency == "USD"
    assert settings.log_format == "console"


def test_jwt_secret_is_required_outside_dev_mode() -> None:
    with pytest.raises(ValueError, match="JWT_SECRET"):
        Settings.from_env({}).jwt_secret()


@pytest.mark.parametrize("flag", ["1", "true", "yes", "TRUE"])
def test_dev_mode_provides_a_stable_throwaway_secret(flag: str) -> None:
    settings = Settings.from_env({"STREAMSHOP_DEV": flag})
    assert settings.dev_mode
    assert settings.jwt_secret() and settings.jwt_secret() == settings.jwt_secret()


def test_a_configured_secret_wins_over_dev_mode() -> None:
    assert Settings.from_env({"STREAMSHOP_DEV": "1", "JWT_SECRET": "x"}).jwt_secret() == "x"


def test_a_non_numeric_partition_count_is_refused() -> None:
    with pytest.raises(ValueError):
        Settings.from_env({"STREAM_PARTITIONS": "many"})


def test_the_process_environment_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGO_DB", "from_env")
    assert Settings.from_env().mongo.database == "from_env"


def test_session_and_rate_limit_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "ACCESS_TOKEN_TTL_SECONDS": "300",
            "REFRESH_TOKEN_TTL_SECONDS": "3600",
            "LOGIN_RATE_PER_MINUTE": "0",
            "REFRESH_RATE_PER_MINUTE": "7",
        }
    )
    auth = settings.auth
    assert (auth.token_ttl_seconds, auth.refresh_ttl_seconds) == (300, 3600)
    assert (auth.login_rate_per_minute, auth.refresh_rate_per_minute) == (0, 7)
    assert Settings.from_env({}).auth.token_ttl_seconds == 900


def test_redis_cluster_flag_selects_the_cluster_client() -> None:
    redis = Settings.from_env({"STREAMSHOP_DEV": "1", "REDIS_CLUSTER": "1"}).redis
    assert redis.cluster
    assert isinstance(redis.connect(), RedisCluster)


def test_without_the_cluster_flag_the_client_is_a_single_node_one() -> None:
    redis = Settings.from_env({"STREAMSHOP_DEV": "1"}).redis
    assert not redis.cluster
    assert isinstance(redis.connect(), aioredis.Redis)


def test_email_digest_secret_is_required_outside_dev_mode() -> None:
    settings = Settings.from_env({"JWT_SECRET": "s3cret"})

    with pytest.raises(ValueError, match="EMAIL_DIGEST_SECRET"):
        settings.email_digest_secret()
    with pytest.raises(ValueError, match="EMAIL_DIGEST_SECRET"):
        settings.redis.keys.email_digest("ana@example.com")


def test_the_api_refuses_to_start_without_an_email_digest_secret() -> None:
    from app.main import create_app

    with pytest.raises(ValueError, match="EMAIL_DIGEST_SECRET"):
        create_app(Settings.from_env({"JWT_SECRET": "s3cret"}))


def test_dev_mode_provides_the_fixed_dev_email_digest_secret() -> None:
    settings = Settings.from_env({"STREAMSHOP_DEV": "1"})

    assert settings.email_digest_secret() == DEV_DIGEST_SECRET
    assert settings.redis.keys.email_digest("a@b.co") == Keys().email_digest("a@b.co")


def test_a_configured_email_digest_secret_keys_the_digest() -> None:
    settings = Settings.from_env({"STREAMSHOP_DEV": "1", "EMAIL_DIGEST_SECRET": "k"})

    assert settings.email_digest_secret() == b"k"
    assert settings.redis.keys.email_digest("a@b.co") != Keys().email_digest("a@b.co")
