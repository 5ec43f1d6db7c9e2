"""``make bench``: run the benchmark sections, write bench/results/latest.json, print a table.

Sections run in one process against servers started or reached in the same run, so every
ratio compares two numbers measured on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

from app.gc_tuning import tune_gc
from app.logging import configure_logging
from bench.common import durable_redis, machine

SECTIONS = [
    "append",
    "http",
    "projection",
    "rebuild",
    "lag",
    "memory",
    "peer",
    "archive",
    "cluster",
]
RESULTS = Path(__file__).parent / "results"

QUICK: dict[str, dict[str, Any]] = {
    "append": {"events": 500},
    "http": {"duration": 3.0, "warmup": 1.0},
    "projection": {"orders": 600, "accounts": 50, "products": 50},
    "rebuild": {"events": 5000},
    "lag": {"duration": 5.0, "warmup": 1.0},
    "memory": {"events": 2000},
    "peer": {"events": 300},
    "archive": {"orders": 3000, "keep": 100, "rebuild_events": 3000},
    "cluster": {"events": 600, "orders": 200},
}
"""``BENCH_QUICK=1``: smaller runs of every section, to iterate; the figures are noisier."""

GOALS: list[tuple[str, str, float]] = [
    ("http.orders_vs_baseline", ">=", 0.7),
    ("http.orders_p99_ms", "<=", 50),
    ("projection.read_models_vs_api_peak", ">=", 1.0),
    ("projection.audit_vs_api_peak", ">=", 1.0),
    ("projection.warehouse_vs_api_peak", ">=", 1.0),
    ("projection.read_models_vs_raw", ">=", 0.7),
    ("rebuild.read_models_ratio", ">=", 0.7),
    ("rebuild.audit_ratio", ">=", 0.7),
    ("rebuild.warehouse_ratio", ">=", 0.7),
    ("lag.read_models_lag_p99_ms", "<=", 500),
    ("lag.audit_lag_p99_ms", "<=", 250),
    ("lag.warehouse_lag_p99_ms", "<=", 250),
    ("memory.log_bytes_per_event", "<=", 400),
    ("peer.append_vs_peer", ">=", 3),
    ("peer.concurrent_append_vs_peer", ">=", 10),
    ("http.health_p99_during_login_flood_ms", "<=", 20),
]
"""Issue #16's goals: key in latest.json, direction, target."""


def cross_section(results: dict[str, Any]) -> None:
    """Figures that compare two sections of the same run (each view ÷ the API's peak)."""
    peak = results.get("http", {}).get("orders_per_s")
    projection = results.get("projection", {})
    if not peak or "skipped" in projection:
        return
    for view in ("read_models", "audit", "warehouse"):
        if (rate := projection.get(f"{view}_events_per_s")) is not None:
            projection[f"{view}_vs_api_peak"] = round(rate / peak, 3)


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, op, target in GOALS:
        section, _, name = key.partition(".")
        value = results.get(section, {}).get(name)
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        rows.append({"key": key, "value": value, "target": f"{op} {target}", "met": met})
    return rows


def _row(name: str, result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"| {name} | skipped: {result['skipped']} | | |"
    figures = ", ".join(
        f"{k}={v}"
        for k, v in result.items()
        if k not in ("limit", "params", "ratio") and not isinstance(v, dict | list)
    )
    return f"| {name} | {figures} | {result.get('limit', '')} | {result.get('ratio', '')} |"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
    with durable_redis() as redis_url:
        for name in args.sections:
            try:
                module = importlib.import_module(f"bench.{name}")
            except ModuleNotFoundError as exc:
                results[name] = {"skipped": f"bench.{name} not available ({exc.name})"}
                continue
            print(f"running {name} …", flush=True)
            kwargs: dict[str, Any] = {"redis_url": redis_url, **(args.quick.get(name, {}))}
            if name == "rebuild" and args.events:
                kwargs["events"] = args.events
            load = os.getloadavg()[0]
            started = time.perf_counter()
            try:
                results[name] = await module.run(**kwargs)
            except Exception as exc:  # one broken section must not lose the others' figures
                traceback.print_exc()
                results[name] = {"skipped": f"failed: {type(exc).__name__}: {exc}"[:300]}
            params = results[name].setdefault("params", {})
            params["section_seconds"] = round(time.perf_counter() - started, 1)
            params["load_average_1m_before"] = round(load, 2)
            results[name]["machine"] = results["machine"]
    cross_section(results)
    results["goals"] = goals(results)
    results["quick"] = bool(args.quick)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--events", type=int, default=0, help="log size for the rebuild figure")
    args = parser.parse_args()
    configure_logging("console", logging.WARNING)
    # The projection and rebuild sections run our workers in this process: with the
    # collector settings of ``streamshop project`` and ``rebuild`` (app/gc_tuning.py).
    tune_gc()
    args.sections = args.sections or SECTIONS
    args.quick = QUICK if os.environ.get("BENCH_QUICK", "") not in ("", "0") else {}
    if unknown := [s for s in args.sections if s not in SECTIONS]:
        parser.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    results = asyncio.run(main_async(args))
    RESULTS.mkdir(exist_ok=True)
    latest = RESULTS / ("quick.json" if args.quick else "latest.json")
    # A run of some sections keeps the other sections' last figures (each names its date in params).
    kept = json.loads(latest.read_text()) if latest.exists() else {}
    for name in args.sections:
        results[name].setdefault("params", {})["date"] = results["date"]
    latest.write_text(json.dumps({**kept, **results}, indent=2) + "\n")
    print(f"\nstreamshop benchmarks, {results['date']}, {results['machine']['cores']} cores\n")
    print("| figure | measured | compared with | ratio |")
    print("|---|---|---|---|")
    for name in args.sections:
        print(_row(name, results[name]))
    print(f"\ngoals of issue #16{' (BENCH_QUICK: short runs)' if args.quick else ''}\n")
    print("| key | value | target | met? |")
    print("|---|---|---|---|")
    for row in results["goals"]:
        met = {True: "yes", False: "NO", None: "not measured"}[row["met"]]
        print(f"| {row['key']} | {row['value']} | {row['target']} | {met} |")


if __name__ == "__main__":
    main()
