"""``streamshop rebuild <view|all>``: replay the log into a new version of a view and switch
to it with no downtime (see :mod:`workers.rebuild`).

All or nothing: an entry that fails aborts the rebuild (exit 1) and names the entry; the live
view is untouched. ``--park-failures`` switches instead, with the failures parked as dead
letters, and lists them.
"""

from __future__ import annotations

import argparse
import sys

from app.settings import Settings
from workers.rebuild import (
    SPLIT_FROM,
    FailedEntry,
    RebuildAborted,
    RebuildOptions,
    RebuildReport,
    rebuild_views,
)
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
        "--park-failures",
        action="store_true",
        help=(
            "switch even if entries fail: dead-letter each failed entry and park the later "
            "entries of its aggregate behind it (default: abort, nothing switched)"
        ),
    )
    parser.add_argument(
        "--split-from",
        type=int,
        default=SPLIT_FROM,
        metavar="ENTRIES",
        help=(
            "replay half the partitions in a second process from this log size on, for a view"
            " whose partitions are independent (the audit); -1: never (default %(default)s)"
        ),
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines"
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.view == "state":
        return await run_rebuild_state(settings, sys.stdout, sys.stderr, args.no_progress)
    names = list(VIEWS) if args.view == "all" else [args.view]
    options = RebuildOptions(
        batch=args.batch,
        drop_old=args.drop_old,
        catchup=args.catchup,
        park_failures=args.park_failures,
        split_from=None if args.split_from < 0 else args.split_from,
    )
    try:
        reports = await rebuild_views(
            settings, names, options, progress_stream=sys.stderr, quiet=args.no_progress
        )
    except RebuildBusy as exc:
        print(f"rebuild refused: {exc}", file=sys.stderr)
        return 3
    except RebuildAborted as exc:
        for r in exc.completed:
            _print_report(r)
        _print_abort(exc, park=args.park_failures)
        return 1
    for r in reports:
        _print_report(r)
    return 0


def _print_report(r: RebuildReport) -> None:
    heads = sum(1 for f in r.parked if f.behind is None)
    extra = (
        f"; dead-lettered {heads} failed and {len(r.parked) - heads} parked behind them"
        if r.parked
        else ""
    )
    dropped = f"; dropped {', '.join(r.dropped)}" if r.dropped else ""
    print(
        f"{r.view}: now on version {r.version} (was {r.previous}): {r.events} events in "
        f"{r.seconds:.1f}s, {r.events_per_s:,.0f} events/s{extra}{dropped}"
    )
    for failure, dlq_id in zip(r.parked, r.dead_letters, strict=False):
        print(f"  {_letter(failure)}  dlq={dlq_id}")


def _letter(f: FailedEntry) -> str:
    kind = "dead letter" if f.behind is None else "parked     "
    return (
        f"{kind}  {f.entry_id}  p{f.partition}  {f.type or '?'}  {f.aggregate or '?'}  "
        f"event={f.event_id or '?'}  {f.error}"
    )


def _print_abort(exc: RebuildAborted, park: bool) -> None:
    err = sys.stderr
    print(f"{exc.view}: rebuild aborted, nothing switched: {exc.reason}", file=err)
    for failure in exc.failures:
        print(f"  failed  {failure.describe()}", file=err)
    shadow = (
        "was dropped" if exc.shadow_dropped else "is left registered; the next rebuild drops it"
    )
    print(
        f"{exc.view}: the live view stays on version {exc.live}; the new version "
        f"{exc.version} {shadow}",
        file=err,
    )
    if exc.failures and not park:
        print(
            f"{exc.view}: to switch anyway with the failed entries parked as dead letters: "
            f"streamshop rebuild {exc.view} --park-failures",
            file=err,
        )
