"""Where a forgotten person's data could still sit: every Redis key and value under a prefix,
the log's archive, every MongoDB collection, a ``pg_dump``; and which of the person's data a
dump holds. Shared by the forget test (``tests/e2e/test_forget.py``) and the fault suite."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import redis.asyncio as aioredis
from bson import json_util
from pymongo import AsyncMongoClient

from events.archive import Archive


async def redis_dump(redis: aioredis.Redis, prefix: str) -> bytes:
    """Every key under the test's prefix and every value it holds, whatever its type."""
    parts: list[bytes] = []
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        parts.append(key)
        kind = (await redis.type(key)).decode()
        if kind == "string":
            parts.append(await redis.get(key) or b"")
        elif kind == "hash":
            for field, value in (await redis.hgetall(key)).items():
                parts += [field, value]
        elif kind == "stream":
            for _, fields in await redis.xrange(key):
                for field, value in fields.items():
                    parts += [field, value]
        elif kind == "list":
            parts += await redis.lrange(key, 0, -1)
        elif kind == "set":
            parts += list(await redis.smembers(key))
        elif kind == "zset":
            parts += [m for m, _ in await redis.zrange(key, 0, -1, withscores=True)]
    return b"\n".join(parts)


async def mongo_dump(url: str, database: str) -> bytes:
    client: AsyncMongoClient[Any] = AsyncMongoClient(url)
    try:
        db = client[database]
        parts = []
        for name in await db.list_collection_names():
            parts.append(name)
            parts += [json_util.dumps(doc) async for doc in db[name].find({})]
        return "\n".join(parts).encode()
    finally:
        await client.close()


def pg_dump(dsn: str) -> bytes:
    return subprocess.run(["pg_dump", dsn], check=True, capture_output=True).stdout


def leaks(haystack: bytes, person: dict[str, str]) -> list[str]:
    """Which of the person's data is in ``haystack`` (case-folded: ``name_key`` is)."""
    text = haystack.decode(errors="replace").casefold()
    return [what for what, value in person.items() if value.casefold() in text]


def archive_dump(url: str) -> bytes:
    """Every field of every entry in the archive's segments (the log's old part)."""
    archive = Archive(url)
    parts: list[bytes] = []
    for p in sorted(archive.manifest["partitions"], key=int):
        for entry_id, fields in archive.read(int(p), "0-0", 1 << 62):
            parts.append(entry_id.encode())
            for name, value in fields.items():
                parts += [name, value]
    return b"\n".join(parts)


async def archive_dump_of(redis: aioredis.Redis, archive_key: str) -> bytes:
    """:func:`archive_dump` of the archive Redis names at ``archive_key`` (none: empty)."""
    url = await redis.get(archive_key)
    return b"" if url is None else await asyncio.to_thread(archive_dump, url.decode())
