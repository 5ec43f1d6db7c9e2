"""Commands over HTTP: ``POST /orders`` and ``POST /auth/login`` ÷ ``GET /health`` on the same
server, same load tool, same concurrency, in the same run.

The server is the real one (``uvicorn --factory app.main:create_app --workers N``) on the
private AOF-always Redis, with production argon2id parameters. The load tool is ``wrk``
from Debian's packages (``make bench`` installs it when root) with a Lua script that sends
random baskets with bearer tokens and logins over a pool of accounts; without wrk (or with
``BENCH_LOAD=python``), :mod:`bench.loadgen` runs the same requests in a separate process
(``params.tool`` says which).
Latencies are closed-loop (each connection waits for its answer before the next request).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from app.passwords import Passwords
from app.settings import AuthSettings
from bench.loadgen import Request, closed_loop
from bench.servers import Stack, api_server, drop_prefix
from events.connection import connect
from events.store import EventStore
from workers.commands.demo import DEFAULT_PASSWORD, populate
from workers.demo import make_shop

ACCOUNTS = 64
PRODUCTS = 200
STOCK = 10**8
"""Opening stock per bench product: no order is refused for stock during the run."""

LUA = r"""
local mode = "%(mode)s"
local nthreads = %(threads)d
local tokens = {%(tokens)s}
local products = {%(products)s}
local emails = {%(emails)s}
local password = "%(password)s"
local counter = 0
local n = 0

function setup(thread)
  thread:set("id", n)
  n = n + 1
end

function init(args)
  math.randomseed(id * 7919 + 17)
  counter = id
end

function request()
  counter = counter + nthreads
  if mode == "orders" then
    local count = math.random(1, 3)
    local used, parts = {}, {}
    for i = 1, count do
      local p
      repeat p = products[math.random(#products)] until not used[p]
      used[p] = true
      parts[i] = '{"product_id":"' .. p .. '","quantity":' .. math.random(1, 3) .. '}'
    end
    return wrk.format("POST", "/orders", {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. tokens[counter %% #tokens + 1],
    }, '{"lines":[' .. table.concat(parts, ",") .. ']}')
  elseif mode == "login" then
    local email = emails[counter %% #emails + 1]
    return wrk.format("POST", "/auth/login", {["Content-Type"] = "application/json"},
      '{"email":"' .. email .. '","password":"' .. password .. '"}')
  end
  return wrk.format("GET", "/health")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%%d,"duration_us":%%d,"status_errors":%%d,"socket_errors":%%d,' ..
    '"timeouts":%%d,"p50_us":%%d,"p95_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def _lua_list(items: list[str]) -> str:
    return ",".join(f'"{item}"' for item in items)


def wrk_version() -> str | None:
    exe = shutil.which("wrk")
    if exe is None:
        return None
    out = subprocess.run([exe, "-v"], capture_output=True, text=True)
    first = (out.stdout + out.stderr).splitlines()[:1]
    return first[0].split(" [")[0] if first else "wrk"


def run_wrk(
    base: str,
    mode: str,
    *,
    duration: float,
    connections: int,
    threads: int,
    tokens: list[str],
    products: list[str],
    emails: list[str],
    workdir: Path,
) -> dict[str, Any]:
    script = workdir / f"{mode}.lua"
    script.write_text(
        LUA
        % {
            "mode": mode,
            "threads": threads,
            "tokens": _lua_list(tokens),
            "products": _lua_list(products),
            "emails": _lua_list(emails),
            "password": DEFAULT_PASSWORD,
        }
    )
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            base + ("/health" if mode == "health" else "/"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("BENCH "))
    raw = json.loads(line.removeprefix("BENCH "))
    return {
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "errors": raw["status_errors"] + raw["socket_errors"] + raw["timeouts"],
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
    }


# -- the fallback: bench.loadgen in its own process ------------------------------------------


def request_maker(
    mode: str, tokens: list[str], products: list[str], emails: list[str]
) -> Callable[[int], Request]:
    """The same requests as the Lua script, request ``n`` built from ``n`` alone."""
    json_type = {"Content-Type": "application/json"}

    def make(n: int) -> Request:
        if mode == "orders":
            rng = random.Random(n)
            lines = [
                {"product_id": p, "quantity": rng.randint(1, 3)}
                for p in rng.sample(products, rng.randint(1, 3))
            ]
            headers = {**json_type, "Authorization": f"Bearer {tokens[n % len(tokens)]}"}
            return "POST", "/orders", headers, json.dumps({"lines": lines}).encode()
        if mode == "login":
            body = {"email": emails[n % len(emails)], "password": DEFAULT_PASSWORD}
            return "POST", "/auth/login", json_type, json.dumps(body).encode()
        return "GET", "/health", {}, b""

    return make


def _python_load(
    base: str,
    mode: str,
    seconds: float,
    connections: int,
    tokens: list[str],
    products: list[str],
    emails: list[str],
) -> dict[str, Any]:
    make = request_maker(mode, tokens, products, emails)
    result = asyncio.run(closed_loop(base, make, connections=connections, seconds=seconds))
    latencies = sorted(o.answered - o.sent for o in result.outcomes)

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0
        )

    return {
        "requests": len(latencies),
        "seconds": result.seconds,
        "errors": result.failures + sum(1 for o in result.outcomes if o.status >= 400),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000 if latencies else 0.0,
    }


async def run_python_load(
    base: str,
    mode: str,
    *,
    duration: float,
    connections: int,
    tokens: list[str],
    products: list[str],
    emails: list[str],
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return await loop.run_in_executor(
            pool, _python_load, base, mode, duration, connections, tokens, products, emails
        )


# -- the section -----------------------------------------------------------------------------


async def _tokens(base: str, emails: list[str]) -> list[str]:
    """Log every bench account in over HTTP (the real path) and keep the bearer tokens."""
    semaphore = asyncio.Semaphore(4)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def one(email: str) -> str:
            async with semaphore:
                response = await client.post(
                    "/auth/login", json={"email": email, "password": DEFAULT_PASSWORD}
                )
                response.raise_for_status()
                return str(response.json()["access_token"])

        return list(await asyncio.gather(*(one(e) for e in emails)))


def _figures(name: str, measured: dict[str, Any]) -> dict[str, Any]:
    per_s = measured["requests"] / measured["seconds"] if measured["seconds"] else 0.0
    return {
        f"{name}_per_s": round(per_s, 1),
        f"{name}_p50_ms": round(measured["p50_ms"], 2),
        f"{name}_p95_ms": round(measured["p95_ms"], 2),
        f"{name}_p99_ms": round(measured["p99_ms"], 2),
        f"{name}_errors": measured["errors"],
    }


async def measure(
    base: str,
    mode: str,
    seconds: float,
    *,
    tool: str | None,
    connections: int,
    threads: int,
    tokens: list[str],
    products: list[str],
    emails: list[str],
    workdir: Path,
) -> dict[str, Any]:
    """One closed-loop run of ``mode`` against ``base`` with wrk (or bench.loadgen)."""
    if tool:
        return await asyncio.to_thread(
            run_wrk,
            base,
            mode,
            duration=seconds,
            connections=connections,
            threads=threads,
            tokens=tokens,
            products=products,
            emails=emails,
            workdir=workdir,
        )
    return await run_python_load(
        base,
        mode,
        duration=seconds,
        connections=connections,
        tokens=tokens,
        products=products,
        emails=emails,
    )


async def run(
    redis_url: str,
    duration: float = 10.0,
    connections: int = 32,
    workers: int | None = None,
    warmup: float = 2.0,
    probe_connections: int = 4,
    rounds: int = 3,
) -> dict[str, Any]:
    """``POST /orders``, ``POST /auth/login`` and ``GET /health`` on the real API, then
    ``GET /health`` (``probe_connections``) while ``connections`` clients flood the login,
    and the same ``POST /orders`` load against the bare baseline app (:mod:`bench.baseline_app`)
    on the same Redis with the same workers. Both servers run side by side (an idle one costs
    nothing) and the orders and the baseline are measured in ``rounds`` alternating rounds,
    so that on a shared machine both see the same background load."""
    workers = workers or os.cpu_count() or 1
    threads = 2
    tool = wrk_version() if os.environ.get("BENCH_LOAD", "wrk") == "wrk" else None
    stack = Stack.new(redis_url)
    client = connect(redis_url)
    store = EventStore(client, stack.settings().redis.keys)
    await store.load_functions()
    shop = make_shop(accounts=ACCOUNTS, products=PRODUCTS, orders=0, seed=808, stock=STOCK)
    passwords = await asyncio.to_thread(Passwords, AuthSettings())
    one_hash = await passwords.hash(DEFAULT_PASSWORD)

    async def shared_hash(_: str) -> str:
        return one_hash

    try:
        await populate(store, shop, hash_password=shared_hash, concurrency=16)
        emails = [a.email for a in shop.accounts]
        products = [p.product_id for p in shop.products]
        results: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory(prefix="ssbench-http-") as tmp:
            load: dict[str, Any] = {
                "tool": tool,
                "connections": connections,
                "threads": threads,
                "products": products,
                "emails": emails,
                "workdir": Path(tmp),
            }
            # no view store runs here, so /ready would answer 503: wait for /health
            with (
                api_server(stack, workers, Path(tmp) / "api.log", ready_path="/health") as base,
                api_server(
                    stack,
                    workers,
                    Path(tmp) / "baseline.log",
                    factory="bench.baseline_app:create_app",
                    ready_path=None,
                ) as baseline,
            ):
                load["tokens"] = await _tokens(base, emails)
                if warmup > 0:
                    await measure(base, "health", warmup, **load)
                results["health"] = await measure(base, "health", duration, **load)
                results["orders"], results["baseline_post"] = await _interleaved(
                    base, baseline, duration, warmup, rounds, load
                )
                # argon2 has nothing to warm up, and a login warm-up would leave a queue
                # of hashes behind that eats into the measured run.
                results["login"] = await measure(base, "login", max(duration, 6.0), **load)
                probe = {**load, "connections": probe_connections, "threads": 1}
                # the control: the same probe with no flood, just before it
                results["health_probe"] = await measure(base, "health", duration, **probe)
                flood, during = await asyncio.gather(
                    measure(base, "login", max(duration, 6.0) + 2, **load),
                    _after(1.0, measure(base, "health", max(duration, 6.0), **probe)),
                )
                results["login_flood"], results["health_during_login_flood"] = flood, during
    finally:
        await client.aclose()
        await drop_prefix(redis_url, stack.prefix)
    health, orders, login = results["health"], results["orders"], results["login"]
    figures = {
        **_figures("orders", orders),
        **_figures("baseline_post", results["baseline_post"]),
        **_figures("login", login),
        **_figures("health", health),
        **_figures("health_probe", results["health_probe"]),
        **_figures("health_during_login_flood", results["health_during_login_flood"]),
        "login_flood_per_s": _figures("f", results["login_flood"])["f_per_s"],
        "orders_rounds_per_s": results["orders"]["rounds"],
        "orders_cpu_us_per_request": results["orders"]["cpu_us"],
        "baseline_post_cpu_us_per_request": results["baseline_post"]["cpu_us"],
        "baseline_post_rounds_per_s": results["baseline_post"]["rounds"],
        "health_p99_during_login_flood_ms": round(
            results["health_during_login_flood"]["p99_ms"], 2
        ),
    }
    trivial = figures["health_per_s"]
    baseline = figures["baseline_post_per_s"]
    return {
        **figures,
        "orders_vs_baseline": round(figures["orders_per_s"] / baseline, 3) if baseline else None,
        "limit": "a bare POST /orders doing one FCALL of the append function (baseline_post),"
        " same server, workers, Redis, tool and concurrency; GET /health for the trivial rate",
        "ratio": round(figures["orders_per_s"] / baseline, 3) if baseline else None,
        "cpu_vs_baseline": round(
            figures["baseline_post_cpu_us_per_request"] / figures["orders_cpu_us_per_request"], 3
        )
        if figures["orders_cpu_us_per_request"]
        else None,
        "ratio_vs_health": round(figures["orders_per_s"] / trivial, 3) if trivial else None,
        "ratio_login": round(figures["login_per_s"] / trivial, 3) if trivial else None,
        "params": {
            "tool": f"{tool} (Debian package), Lua script, {threads} threads"
            if tool
            else "bench.loadgen (asyncio keep-alive connections, closed loop) in a separate"
            " process",
            "concurrency": connections,
            "duration_s": duration,
            "warmup_s": warmup,
            "rounds": f"orders and baseline_post alternate in {rounds} rounds of"
            f" {max(1.0, duration / rounds):g} s each, both servers up; per side requests and"
            " seconds summed, each percentile the highest of its rounds; cpu_us_per_request:"
            " user+system CPU of the side's uvicorn workers per answered request (robust to"
            " the neighbours' load where the rates are not); cpu_vs_baseline = baseline's ÷"
            " ours",
            "server": f"uvicorn --factory app.main:create_app --workers {workers}"
            " (uvloop, httptools), JSON access log per request",
            "baseline": f"uvicorn --factory bench.baseline_app:create_app --workers {workers}:"
            " Litestar POST /orders reading the body and doing one FCALL streamshop_append_v2"
            " of a fixed 2-line OrderBilled; no auth, validation, state reads or logging",
            "redis": "private redis-server, appendonly yes, appendfsync always",
            "orders": f"1-3 random lines (quantity 1-3) over {PRODUCTS} products,"
            f" {ACCOUNTS} accounts' bearer tokens",
            "login": f"{ACCOUNTS} accounts round-robin, argon2id t=3 m=64MiB p=4 (production)",
            "health_during_login_flood": f"GET /health with {probe_connections} connections"
            f" while {connections} connections send POST /auth/login; health_probe: the same"
            " probe just before, with no flood (the control)",
            "latency": "closed loop: each connection waits for its answer",
        },
    }


async def _interleaved(
    base: str,
    baseline: str,
    duration: float,
    warmup: float,
    rounds: int,
    load: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``POST /orders`` on ``base`` and on ``baseline`` in alternating rounds of
    ``duration / rounds`` seconds each (at least 1 s, wrk's unit); each side's figures are
    its rounds together: requests and seconds summed, each percentile the highest of the
    rounds (percentiles do not add up, the highest is the conservative one), and the CPU
    its uvicorn workers spent per answered request (``cpu_us``)."""
    if warmup > 0:
        await measure(base, "orders", warmup, **load)
        await measure(baseline, "orders", warmup, **load)
    each = max(1.0, duration / rounds)
    parts: dict[str, list[dict[str, Any]]] = {base: [], baseline: []}
    pids = {url: _worker_pids(url) for url in parts}
    for n in range(rounds):
        for url in (base, baseline) if n % 2 == 0 else (baseline, base):
            before = cpu_seconds(pids[url])
            got = await measure(url, "orders", each, **load)
            got["cpu_s"] = cpu_seconds(pids[url]) - before
            parts[url].append(got)
    return _together(parts[base]), _together(parts[baseline])


def _worker_pids(url: str) -> list[str]:
    """The uvicorn worker processes serving ``url`` (children of the server we started)."""
    port = url.rsplit(":", 1)[1]
    found = subprocess.run(
        ["pgrep", "-f", f"uvicorn .*--port {port} "], capture_output=True, text=True
    )
    parents = found.stdout.split()
    if not parents:
        return []
    children = subprocess.run(
        ["pgrep", "-P", ",".join(parents)], capture_output=True, text=True
    ).stdout.split()
    return children or parents


def cpu_seconds(pids: list[str]) -> float:
    """User + system CPU seconds ``pids`` have used so far (``/proc/<pid>/stat``; 0 where
    there is no /proc)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _together(parts: list[dict[str, Any]]) -> dict[str, Any]:
    together: dict[str, Any] = {
        key: sum(p[key] for p in parts) for key in ("requests", "seconds", "errors")
    }
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        together[key] = max(p[key] for p in parts)
    together["rounds"] = [round(p["requests"] / p["seconds"], 1) for p in parts]
    cpu = sum(p["cpu_s"] for p in parts)
    together["cpu_us"] = round(cpu / together["requests"] * 1e6, 1) if together["requests"] else 0
    return together


async def _after(seconds: float, coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """``coro`` started ``seconds`` late (once the flood is on)."""
    await asyncio.sleep(seconds)
    return await coro
