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
from pathlib import Path
from typing import Any

from app.logging import configure_logging
from bench.common import durable_redis, machine

SECTIONS = ["append", "http", "projection", "rebuild", "lag", "memory", "archive"]
RESULTS = Path(__file__).parent / "results"


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
            kwargs: dict[str, Any] = {"redis_url": redis_url}
            if name == "rebuild" and args.events:
                kwargs["events"] = args.events
            load = os.getloadavg()[0]
            started = time.perf_counter()
            results[name] = await module.run(**kwargs)
            params = results[name].setdefault("params", {})
            params["section_seconds"] = round(time.perf_counter() - started, 1)
            params["load_average_1m_before"] = round(load, 2)
            results[name]["machine"] = results["machine"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--events", type=int, default=0, help="log size for the rebuild figure")
    args = parser.parse_args()
    configure_logging("console", logging.WARNING)
    args.sections = args.sections or SECTIONS
    if unknown := [s for s in args.sections if s not in SECTIONS]:
        parser.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    results = asyncio.run(main_async(args))
    RESULTS.mkdir(exist_ok=True)
    latest = RESULTS / "latest.json"
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


if __name__ == "__main__":
    main()
