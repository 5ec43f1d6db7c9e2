"""The deploy files: docker-compose.yml, Prometheus' config and Grafana's provisioning parse,
and every series the Grafana dashboard queries is one the API's ``/metrics`` exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import api_fixture  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "streamshop.json"
SERIES = re.compile(r"\bstreamshop_[a-z_]+\b")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def queried_series(dashboard: dict[str, Any]) -> set[str]:
    return {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in SERIES.findall(target["expr"])
    }


def family_of(series: str) -> str:
    for suffix in SUFFIXES:
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


def test_compose_prometheus_and_grafana_files_parse_and_point_at_each_other() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"api", "projector", "prometheus", "grafana"} <= set(services)
    mounts = " ".join(services["grafana"]["volumes"] + services["prometheus"]["volumes"])
    for path in ("deploy/grafana/provisioning", "deploy/grafana/dashboards", "deploy/prometheus"):
        assert f"./{path}" in mounts and (ROOT / path).is_dir(), path

    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    ]
    assert "api:8000" in targets
    port = services["projector"]["environment"]["METRICS_PORT"]
    assert f"projector:{port}" in targets

    provisioning = ROOT / "deploy/grafana/provisioning"
    [source] = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}
    yaml.safe_load((provisioning / "dashboards/streamshop.yml").read_text())


async def test_every_series_the_dashboard_queries_is_exposed(api: AsyncTestClient[Any]) -> None:
    await api.get("/health")
    await api.post("/accounts", json={})  # a command, so the HTTP and command series exist
    resp = await api.get("/metrics")
    assert resp.status_code == 200
    exposed = {family.name for family in text_string_to_metric_families(resp.text)}
    wanted = queried_series(json.loads(DASHBOARD.read_text()))
    assert len(wanted) >= 10, wanted
    missing = sorted(s for s in wanted if family_of(s) not in exposed)
    assert not missing, f"the dashboard queries series /metrics does not expose: {missing}"
