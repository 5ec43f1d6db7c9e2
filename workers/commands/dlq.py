"""``streamshop dlq list|retry``: show parked sequences with their cause, or re-drive them
in order through their projection (removing each entry from the DLQ once applied)."""

from __future__ import annotations

import argparse
import json

import redis.asyncio as aioredis

from app.settings import Settings
from workers.dlq import DeadLetters
from workers.registry import UnknownProjection, factory_for, open_projections


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="show parked sequences and their cause")
    listing.add_argument("projection", nargs="?", help="name or module:factory (default: all)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    retry = sub.add_parser("retry", help="re-drive parked sequences in order")
    retry.add_argument("projection", nargs="?", help="name or module:factory (default: all)")
    retry.add_argument(
        "--id", dest="ids", action="append", help="only the sequence of this DLQ id (repeatable)"
    )


async def _names(dead: DeadLetters, settings: Settings, spec: str | None) -> list[tuple[str, str]]:
    """(how to build it, DLQ name) pairs; a ``module:factory`` spec is built to learn its name."""
    if spec is None:
        return [(name, name) for name in await dead.projections()]
    if ":" not in spec:
        return [(spec, spec)]
    async with open_projections(settings, [spec], upgrade=False) as (projection,):
        return [(spec, projection.name)]


async def run(args: argparse.Namespace, settings: Settings) -> int:
    redis = aioredis.Redis.from_url(settings.redis.url)
    dead = DeadLetters(redis, settings.redis.keys)
    try:
        targets = await _names(dead, settings, args.projection)
        if args.action == "list":
            return await _list(dead, targets, args.json)
        return await _retry(dead, settings, targets, args.ids)
    finally:
        await redis.aclose()


async def _list(dead: DeadLetters, targets: list[tuple[str, str]], as_json: bool) -> int:
    """One line (or JSON object) per parked sequence: its cause, size and time span."""
    for _, name in targets:
        for seq in await dead.sequences(name):
            head = seq.head
            row = {
                "projection": name,
                "sequence": seq.sequence,
                "count": len(seq.letters),
                "partition": head.partition,
                "head_dlq_id": head.dlq_id,
                "head_entry_id": head.entry_id,
                "head_event_id": head.event_id,
                "head_type": head.type,
                "attempts": head.attempts,
                "error": seq.cause,
                "first_at": seq.first_at,
                "last_at": seq.last_at,
                "entries": [
                    {
                        "dlq_id": letter.dlq_id,
                        "entry_id": letter.entry_id,
                        "event_id": letter.event_id,
                        "type": letter.type,
                    }
                    for letter in seq.letters
                ],
            }
            if as_json:
                print(json.dumps(row))
            else:
                print(
                    f"{name}  {seq.sequence}  p{head.partition}  count={len(seq.letters)}  "
                    f"head={head.entry_id} {head.type}  attempts={head.attempts}  "
                    f"first={seq.first_at}  last={seq.last_at}  {seq.cause}"
                )
    return 0


async def _retry(
    dead: DeadLetters, settings: Settings, targets: list[tuple[str, str]], ids: list[str] | None
) -> int:
    """Re-drive each parked sequence in order; a sequence whose entry fails again stays
    parked from that entry on (exit code 1)."""
    failed = 0
    for spec, name in targets:
        sequences = await dead.sequences(name, ids)
        if not sequences:
            continue
        try:
            factory_for(spec)
        except UnknownProjection as exc:
            failed += sum(len(seq.letters) for seq in sequences)
            print(f"failed  {name}  {len(sequences)} parked sequences: {exc}")
            continue
        async with open_projections(settings, [spec], upgrade=False) as (projection,):
            for seq in sequences:
                outcome = await dead.retry(projection, seq)
                for letter in outcome.redriven:
                    print(f"redriven  {name}  {letter.dlq_id}  {letter.entry_id}  {seq.sequence}")
                if outcome.failed is not None:
                    failed += 1
                    left = await dead.sequences(name, [outcome.failed.dlq_id])
                    parked = sum(len(s.letters) for s in left)
                    print(
                        f"failed  {name}  {outcome.failed.dlq_id}  {outcome.failed.entry_id}  "
                        f"{seq.sequence}  {outcome.error}  ({parked} entries stay parked)"
                    )
    return 1 if failed else 0
