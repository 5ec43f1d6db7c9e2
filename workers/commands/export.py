"""``streamshop export [--to URL] [--since DATE]``: write what is new in the log, and a
snapshot of the warehouse, to a Parquet lake (see :mod:`workers.export`)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from app.settings import Settings
from workers.export import DEFAULT_LAKE, ExportOptions, Lake, export, verify_lake


def since(text: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 moment (UTC unless it names an offset)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date or ISO 8601 moment: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--to",
        default=os.environ.get("LAKE_URL", DEFAULT_LAKE),
        help="the lake: a directory or a filesystem URL such as s3://bucket/prefix "
        f"(default: $LAKE_URL, else {DEFAULT_LAKE})",
    )
    parser.add_argument(
        "--since",
        type=since,
        default=None,
        help="skip entries appended before this date (YYYY-MM-DD, UTC) or ISO 8601 moment",
    )
    parser.add_argument(
        "--batch", type=int, default=20_000, help="entries per read and commit of a partition"
    )
    parser.add_argument(
        "--no-warehouse", action="store_true", help="export the log only, no warehouse snapshot"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="export nothing: check the lake against its manifest (files, checksums, rows); "
        "exit 1 on a problem",
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.verify:
        problems = verify_lake(Lake(args.to))
        for problem in problems:
            print(problem)
        print(f"{args.to}: {'consistent' if not problems else f'{len(problems)} problems'}")
        return 1 if problems else 0
    options = ExportOptions(
        to=args.to, since=args.since, batch=args.batch, warehouse=not args.no_warehouse
    )
    try:
        r = await export(settings, options, progress_stream=sys.stderr, quiet=args.no_progress)
    except ValueError as exc:  # a lake of another log, an unknown scheme or manifest format
        print(f"export refused: {exc}", file=sys.stderr)
        return 2
    if r.warehouse_snapshot:
        warehouse = f"warehouse snapshot {r.warehouse_snapshot} ({r.warehouse_rows:,} rows)"
    elif r.warehouse_absent:
        warehouse = f"no warehouse (schema {r.warehouse_absent} does not exist)"
    else:
        warehouse = "warehouse unchanged" if not args.no_warehouse else "warehouse not asked"
    print(
        f"export {r.run} to {r.lake}: {r.events:,} events in {r.files:,} files"
        f"{f' ({r.malformed} malformed)' if r.malformed else ''}, "
        f"{warehouse}, {r.seconds:.1f}s"
        f"{f'; removed {r.removed} leftovers of an interrupted run' if r.removed else ''}"
    )
    return 0
