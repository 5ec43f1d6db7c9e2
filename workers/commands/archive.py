"""``streamshop archive --keep N | --older-than DURATION [--to URL]``: move the log's old
part from Redis to Parquet segments (see :mod:`workers.archive`)."""

from __future__ import annotations

import argparse
import os
import sys

from app.settings import Settings
from events.errors import ArchiveError
from workers.archive import DEFAULT_ARCHIVE, ArchiveOptions, archive, parse_duration


def duration(text: str) -> object:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--to",
        default=os.environ.get("ARCHIVE_URL", DEFAULT_ARCHIVE),
        help="the archive: a directory or a filesystem URL such as s3://bucket/prefix "
        f"(default: $ARCHIVE_URL, else {DEFAULT_ARCHIVE})",
    )
    parser.add_argument(
        "--keep", type=int, default=None, help="newest entries of each partition kept in Redis"
    )
    parser.add_argument(
        "--older-than",
        type=duration,
        default=None,
        help="archive entries appended longer ago than this (90s, 15m, 12h, 30d, 2w)",
    )
    parser.add_argument(
        "--segment-rows", type=int, default=50_000, help="entries per segment (and per trim)"
    )
    parser.add_argument(
        "--lock-ttl",
        type=float,
        default=60.0,
        help="seconds a killed run keeps the next one out (the lock is refreshed per segment)",
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.keep is None and args.older_than is None:
        print(
            "archive: say what stays in Redis: --keep N or --older-than DURATION", file=sys.stderr
        )
        return 2
    if args.keep is not None and args.keep < 0:
        print("archive: --keep must be 0 or more", file=sys.stderr)
        return 2
    options = ArchiveOptions(
        to=args.to,
        keep=args.keep,
        older_than=args.older_than,
        segment_rows=max(1, args.segment_rows),
        lock_ttl_ms=int(args.lock_ttl * 1000),
    )
    try:
        r = await archive(settings, options)
    except ArchiveError as exc:
        print(f"archive refused: {exc}", file=sys.stderr)
        return 3
    print(
        f"archive to {r.archive}: {r.entries:,} entries in {r.segments} segments, "
        f"{r.trimmed:,} trimmed from Redis, {r.seconds:.1f}s ({r.entries_per_s:,.0f} entries/s)"
        f"{f'; removed {r.removed} leftovers of an interrupted run' if r.removed else ''}"
    )
    return 0
