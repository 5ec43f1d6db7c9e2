"""``streamshop verify <view|all>``: fold the log into a scratch version, compare it with
the live view, print the first differences, exit 1 when they differ.

Exit 3: a rebuild of the view holds its lock. Exit 4: the view was built from another
log (both identities are printed); nothing is compared. ``--identity`` checks only that.
"""

from __future__ import annotations

import argparse
import sys

from app.settings import Settings
from projections.identity import ForeignView
from workers.progress import Progress
from workers.state import run_verify as run_verify_state
from workers.verify import check_identity, verify_view
from workers.views import VIEWS, RebuildBusy

FOREIGN = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "view",
        choices=[*VIEWS, "all", "state"],
        help="the view to verify, or all; state: the write side's decision state",
    )
    parser.add_argument("--batch", type=int, default=2000, help="entries per read and bulk write")
    parser.add_argument("--show", type=int, default=10, help="differences to print per view")
    parser.add_argument(
        "--identity",
        action="store_true",
        help="only check that each view was built from this log (fast, writes nothing)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines"
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.view == "state":
        return await run_verify_state(settings, show=args.show, out=sys.stdout)
    names = list(VIEWS) if args.view == "all" else [args.view]
    if args.identity:
        return await identities(settings, names)
    failed = False
    for name in names:
        try:
            progress = Progress(name, stream=sys.stderr, enabled=not args.no_progress)
            report = await verify_view(
                settings, name, batch=args.batch, show=args.show, progress=progress
            )
        except RebuildBusy as exc:
            print(f"{name}: verify refused: {exc}", file=sys.stderr)
            return 3
        except ForeignView as exc:
            print(f"{name}: verify refused: {exc}", file=sys.stderr)
            return FOREIGN
        counts = ", ".join(f"{t} {a}/{b}" for t, (a, b) in report.counts.items())
        where = f"at {report.position or 'the start'}"
        if report.behind:
            where += f" ({report.behind} newer entries not yet applied by the live view)"
        if report.ok:
            print(f"{name} ({report.live_version}): OK {where}; live/log rows: {counts}")
            continue
        failed = True
        print(
            f"{name} ({report.live_version}): DIFFERS in {report.total_differences} place(s) "
            f"{where}; live/log rows: {counts}"
        )
        for diff in report.differences:
            print(f"  {diff}")
    return 1 if failed else 0


async def identities(settings: Settings, names: list[str]) -> int:
    """One line per view: the log it records, or why it is refused (``<view>: refused: …``)."""
    foreign = False
    for name in names:
        try:
            recorded = await check_identity(settings, name)
        except ForeignView as exc:
            foreign = True
            print(f"{name}: refused: {exc}")
            continue
        print(f"{name}: built from log {recorded}" if recorded else f"{name}: not built yet")
    return FOREIGN if foreign else 0
