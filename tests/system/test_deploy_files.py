"""The deployment files say what the architecture promises (no Docker engine needed to check)."""

from __future__ import annotations

import string
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DURABLE_REDIS = {
    "appendonly": "yes",
    "appendfsync": "always",
    "no-appendfsync-on-rewrite": "no",
    "maxmemory-policy": "noeviction",
}


def _options(args: list[str]) -> dict[str, str]:
    return {args[i].removeprefix("--"): args[i + 1] for i in range(1, len(args) - 1, 2)}


def test_compose_runs_the_topology_on_a_durable_redis() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "mongo", "postgres", "api", "projector", "ingest"} <= services.keys()
    assert services["redis"]["image"] == "redis:7"
    assert services["mongo"]["image"] == "mongo:7"
    assert services["postgres"]["image"] == "postgres:16"
    assert _options(services["redis"]["command"]).items() >= DURABLE_REDIS.items()
    for name in ("api", "projector", "ingest"):
        env = services[name]["environment"]
        assert env["REDIS_URL"] == "${REDIS_URL:-redis://redis:6379/0}"  # the cluster's: set it
        assert {"MONGO_URL", "DATABASE_URL", "JWT_SECRET", "EMAIL_DIGEST_SECRET"} <= env.keys()


def test_make_runs_redis_config_is_durable() -> None:
    template = string.Template((ROOT / "scripts" / "redis.conf.template").read_text())
    rendered = template.substitute(port=6380, dir="/d", pidfile="/d/p")
    config = dict(
        line.split(None, 1) for line in rendered.splitlines() if line and not line.startswith("#")
    )
    for name, value in DURABLE_REDIS.items():
        assert config[name] == value


def test_procfile_lists_the_datastores_the_api_and_the_workers() -> None:
    names = [
        line.split(":", 1)[0]
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert names == ["redis", "mongo", "api", "projector", "ingest", "expire"]


def test_the_cluster_profile_runs_six_durable_nodes_joined_with_one_replica_each() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    nodes = {n: s for n, s in services.items() if n.startswith("redis-node-")}
    assert len(nodes) == 6
    for node in nodes.values():
        assert node["profiles"] == ["cluster"]
        options = _options(node["command"])
        assert options.items() >= DURABLE_REDIS.items()
        assert options["cluster-enabled"] == "yes"
        assert options["min-replicas-to-write"] == "1"
    init = services["redis-cluster-init"]
    assert init["profiles"] == ["cluster"]
    assert "--cluster-replicas 1" in init["command"][0]
    assert set(init["depends_on"]) == set(nodes)
    assert services["api"]["environment"]["REDIS_CLUSTER"] == "${REDIS_CLUSTER:-0}"
