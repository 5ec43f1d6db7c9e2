"""``streamshop verify``: a view equal to the log passes; a tampered one fails, naming the
first differences."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg

from app.settings import Settings
from events.store import EventStore
from tests.integration.test_rebuild_interrupted import ROOT, cli_env
from tests.integration.test_rebuild_support import (  # noqa: F401
    Shop,
    caught_up,
    eventually,
    live_projector,
    settings_fixture,
)
from tests.support.cluster import single_and_cluster
from workers.views import ViewPointers, pg_schema

pytestmark = single_and_cluster


def verify_cli(settings: Settings, view: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "verify", view, "--show", "3"],
        cwd=ROOT,
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_verify_passes_on_a_true_view_and_names_the_rows_of_a_tampered_one(
    settings: Settings, store: EventStore
) -> None:
    shop = Shop(store)
    await shop.seed(accounts=4, products=4)
    await shop.run(60)
    async with live_projector(settings, ["warehouse"]) as runner:
        await eventually(lambda: caught_up(store, runner), what="the live warehouse")
    schema = pg_schema(
        "warehouse", await ViewPointers(store.redis, settings.redis.prefix).current("warehouse")
    )

    ok = await asyncio.to_thread(verify_cli, settings, "warehouse")
    assert ok.returncode == 0, ok.stdout + ok.stderr[-2000:]
    assert "warehouse" in ok.stdout and "OK" in ok.stdout

    conn = await asyncpg.connect(settings.postgres.url)
    try:
        # The shop's orders are random: read the quantity the log gave the line, never
        # assume one (a fixed "1" failed whenever the first line had more).
        order_id, quantity = await conn.fetchrow(
            f'UPDATE "{schema}".fact_order_line SET quantity = quantity + 1'
            " WHERE line_no = 1 AND order_id = (SELECT min(order_id) FROM"
            f' "{schema}".fact_order_line) RETURNING order_id, quantity - 1'
        )
        await conn.execute(
            f'DELETE FROM "{schema}".dim_account WHERE account_id = $1', shop.accounts[0]
        )
    finally:
        await conn.close()

    bad = await asyncio.to_thread(verify_cli, settings, "warehouse")
    assert bad.returncode == 1, bad.stdout + bad.stderr[-2000:]
    assert "DIFFERS in 2 place(s)" in bad.stdout
    assert (
        f'fact_order_line ["{order_id}", 1]: differs (quantity: live={quantity + 1} log={quantity})'
        in bad.stdout
    )
    assert f'dim_account ["{shop.accounts[0]}"]: missing in live' in bad.stdout
