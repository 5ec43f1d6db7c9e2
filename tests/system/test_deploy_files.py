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
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert {"MONGO_URL", "DATABASE_URL", "JWT_SECRET", "EMAIL_DIGEST_SECRET"} <= env.keys()


def test_compose_cluster_profile_runs_the_app_on_a_durable_six_node_cluster() -> None:
    """Issue #19: ``--profile cluster`` gives 3 primaries + 3 replicas, each AOF-fsynced, and
    app services that talk to it through the cluster client."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    profiled = {name: s for name, s in services.items() if "cluster" in s.get("profiles", [])}
    nodes = {
        name: s
        for name, s in profiled.items()
        if s.get("command", [""])[0] == "redis-server"
        and _options(s["command"]).get("cluster-enabled") == "yes"
    }
    assert len(nodes) == 6
    for node in nodes.values():
        assert node["image"] == "redis:7"
        assert _options(node["command"]).items() >= DURABLE_REDIS.items()
    volumes = {v.split(":")[0] for node in nodes.values() for v in node["volumes"]}
    assert len(volumes) == 6, "each node keeps its AOF and nodes.conf in its own volume"

    init = profiled["redis-cluster-init"]
    script = " ".join(init["command"])
    assert "--cluster create" in script and "--cluster-yes" in script
    assert "--cluster-replicas 1" in script, "6 nodes with one replica each: 3 primaries"
    assert set(init["depends_on"]) == nodes.keys()

    apps = {"api-cluster", "projector-cluster", "ingest-cluster", "expire-cluster"}
    assert apps <= profiled.keys()
    for name in apps:
        env = profiled[name]["environment"]
        assert env["REDIS_CLUSTER"] == "1"
        host = env["REDIS_URL"].removeprefix("redis://").split(":")[0]
        assert host in nodes
        assert {"MONGO_URL", "DATABASE_URL", "JWT_SECRET", "EMAIL_DIGEST_SECRET"} <= env.keys()
        assert "redis" not in profiled[name]["depends_on"], "not the single-node redis"
    check = profiled["check-cluster"]
    assert check["environment"]["REDIS_CLUSTER"] == "1"
    assert check["depends_on"]["redis-cluster-init"]["condition"] == (
        "service_completed_successfully"
    )
    # The default topology stays on the single node.
    assert "REDIS_CLUSTER" not in services["api"]["environment"]


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
