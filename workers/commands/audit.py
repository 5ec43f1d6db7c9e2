"""``streamshop audit verify``: recompute every hash chain of the audit log, name the first
broken row of each partition, exit 1 if any.

The hashes are recomputed from the rows alone, the same way the projection made them (see
:mod:`projections.audit`): from the entry's fields as stored, so a schema change on the
reading side never makes an old row look tampered with."""

from __future__ import annotations

import argparse
import sys

import asyncpg

from app.settings import Settings
from projections.audit import verify_chains


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    verify = sub.add_parser("verify", help="recompute the hash chains and report breaks")
    verify.add_argument("--schema", default="audit", help="audit schema (default: audit)")
    verify.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: DATABASE_URL)")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    dsn = args.dsn or settings.postgres.url
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        report = await verify_chains(pool, args.schema)
    finally:
        await pool.close()
    if report.ok:
        raw = (
            f", {report.undecodable} undecodable entries recorded raw" if report.undecodable else ""
        )
        print(f"audit log OK: {report.rows} rows in {report.partitions} chains{raw}")
        return 0
    for broken in report.breaks:
        print(f"BROKEN: {broken}", file=sys.stderr)
    print(
        f"audit log TAMPERED: {len(report.breaks)} broken chain(s), {report.rows} rows read",
        file=sys.stderr,
    )
    return 1
