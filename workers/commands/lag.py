"""``streamshop lag``: per projection and partition, the owner, positions and lag."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from app.settings import Settings
from events.keys import Keys
from workers.dlq import DeadLetters


@dataclass(frozen=True, slots=True)
class PartitionLag:
    projection: str
    partition: int
    owner: str | None
    """The lease holder (``None``: nobody works on it right now)."""
    delivered: str
    """The group's last-delivered entry id."""
    acked: str
    """Every entry up to this id is applied and acknowledged (before the oldest pending)."""
    pending: int
    lag: int | None
    """Entries not yet delivered (Redis 7 ``XINFO GROUPS`` lag; ``None`` if unknown)."""
    entries_read: int | None
    parked: int = 0
    """Entries of this partition parked in the projection's DLQ (sequenced dead letters):
    acknowledged, yet not applied until ``streamshop dlq retry``."""


def _s(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


async def collect(
    redis: aioredis.Redis, keys: Keys, names: list[str] | None = None
) -> list[PartitionLag]:
    """Lag rows for every consumer group on the log (only ``names``, if given)."""
    rows: list[PartitionLag] = []
    dead = DeadLetters(redis, keys)
    parked: dict[str, dict[int, int]] = {}
    for partition in range(keys.partitions):
        stream = keys.log(partition)
        try:
            groups = await redis.xinfo_groups(stream)
        except ResponseError:
            continue
        for group in groups:
            name = _s(group["name"]) or ""
            if names and name not in names:
                continue
            if name not in parked:
                parked[name] = await dead.count_by_partition(name)
            delivered = _s(group["last-delivered-id"]) or "0-0"
            pending = int(group["pending"])
            acked = delivered
            if pending:
                summary = await redis.xpending(stream, name)
                oldest = _s(summary["min"])
                before = await redis.xrevrange(stream, max=f"({oldest}", min="-", count=1)
                acked = _s(before[0][0]) if before else "0-0"
            rows.append(
                PartitionLag(
                    projection=name,
                    partition=partition,
                    owner=_s(await redis.get(keys.lease(name, partition))),
                    delivered=delivered,
                    acked=acked or "0-0",
                    pending=pending,
                    lag=group.get("lag"),
                    entries_read=group.get("entries-read"),
                    parked=parked[name].get(partition, 0),
                )
            )
    rows.sort(key=lambda r: (r.projection, r.partition))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="projection names (default: every group)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    redis = settings.redis.connect()
    try:
        rows = await collect(redis, settings.redis.keys, args.names or None)
    finally:
        await redis.aclose()
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))
        return 0
    header = ("projection", "p", "owner", "acked", "delivered", "pending", "lag", "parked")
    table = [header] + [
        (
            r.projection,
            str(r.partition),
            r.owner or "-",
            r.acked,
            r.delivered,
            str(r.pending),
            "?" if r.lag is None else str(r.lag),
            str(r.parked),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
