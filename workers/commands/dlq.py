"""``streamshop dlq list|retry``: show dead-lettered entries, or re-drive them through their
projection (removing each from the DLQ once applied)."""

from __future__ import annotations

import argparse
import json

import redis.asyncio as aioredis

from app.settings import Settings
from workers.dlq import DeadLetters
from workers.registry import UnknownProjection, factory_for, open_projections


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="show dead letters")
    listing.add_argument("projection", nargs="?", help="name or module:factory (default: all)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    retry = sub.add_parser("retry", help="apply dead letters again; remove those that succeed")
    retry.add_argument("projection", nargs="?", help="name or module:factory (default: all)")
    retry.add_argument("--id", dest="ids", action="append", help="only this DLQ id (repeatable)")


async def _names(dead: DeadLetters, settings: Settings, spec: str | None) -> list[tuple[str, str]]:
    """(how to build it, DLQ name) pairs; a ``module:factory`` spec is built to learn its name."""
    if spec is None:
        return [(name, name) for name in await dead.projections()]
    if ":" not in spec:
        return [(spec, spec)]
    async with open_projections(settings, [spec]) as (projection,):
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
    for _, name in targets:
        for letter in await dead.list(name):
            row = {
                "projection": name,
                "dlq_id": letter.dlq_id,
                "partition": letter.partition,
                "entry_id": letter.entry_id,
                "event_id": letter.fields.get(b"id", b"").decode(errors="replace"),
                "type": letter.fields.get(b"type", b"").decode(errors="replace"),
                "attempts": letter.attempts,
                "dead_at": letter.dead_at,
                "error": letter.error,
            }
            if as_json:
                print(json.dumps(row))
            else:
                print(
                    f"{name}  {letter.dlq_id}  p{letter.partition}  {letter.entry_id}  "
                    f"{row['type']}  attempts={letter.attempts}  {letter.error}"
                )
    return 0


async def _retry(
    dead: DeadLetters, settings: Settings, targets: list[tuple[str, str]], ids: list[str] | None
) -> int:
    failed = 0
    for spec, name in targets:
        letters = await dead.list(name, ids)
        if not letters:
            continue
        try:
            factory_for(spec)
        except UnknownProjection as exc:
            failed += len(letters)
            print(f"failed  {name}  {len(letters)} dead letters: {exc}")
            continue
        async with open_projections(settings, [spec]) as (projection,):
            for letter in letters:
                try:
                    await dead.redrive(projection, letter)
                except Exception as exc:
                    failed += 1
                    print(
                        f"failed  {name}  {letter.dlq_id}  {letter.entry_id}  "
                        f"{type(exc).__name__}: {exc}"
                    )
                else:
                    print(f"redriven  {name}  {letter.dlq_id}  {letter.entry_id}")
    return 1 if failed else 0
