"""``streamshop rebuild <view|all>``: replay the log into a new version of a view and switch
to it with no downtime (see :mod:`workers.rebuild`)."""

from __future__ import annotations

import argparse
import sys

from app.settings import Settings
from workers.rebuild import RebuildOptions, rebuild_views
from workers.state import run_rebuild as run_rebuild_state
from workers.views import VIEWS, RebuildBusy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "view",
        choices=[*VIEWS, "all", "state"],
        help="the view to rebuild, or all; state: the write side's decision state",
    )
    parser.add_argument(
        "--drop-old",
        action="store_true",
        help="drop the replaced version after the switch (default: keep it until next time)",
    )
    parser.add_argument("--batch", type=int, default=2000, help="entries per read and bulk write")
    parser.add_argument(
        "--catchup",
        type=int,
        default=0,
        help="pause the live view for the switch once fewer entries are left (default 4 batches)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines"
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.view == "state":
        return await run_rebuild_state(settings, sys.stdout, sys.stderr, args.no_progress)
    names = list(VIEWS) if args.view == "all" else [args.view]
    options = RebuildOptions(batch=args.batch, drop_old=args.drop_old, catchup=args.catchup)
    try:
        reports = await rebuild_views(
            settings, names, options, progress_stream=sys.stderr, quiet=args.no_progress
        )
    except RebuildBusy as exc:
        print(f"rebuild refused: {exc}", file=sys.stderr)
        return 3
    for r in reports:
        extra = (
            f", {r.malformed} malformed and {r.failed} failed entries skipped"
            if (r.malformed or r.failed)
            else ""
        )
        dropped = f"; dropped {', '.join(r.dropped)}" if r.dropped else ""
        print(
            f"{r.view}: now on version {r.version} (was {r.previous}): {r.events} events in "
            f"{r.seconds:.1f}s, {r.events_per_s:,.0f} events/s{extra}{dropped}"
        )
    return 0
