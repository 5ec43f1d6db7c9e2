"""The test stores are real servers reached through the real drivers."""

from __future__ import annotations

import asyncpg
from pymongo import AsyncMongoClient


async def test_mongo_fixture_speaks_the_wire_protocol(mongo_url: str, mongo_db_name: str) -> None:
    client: AsyncMongoClient = AsyncMongoClient(mongo_url)
    try:
        coll = client[mongo_db_name]["smoke"]
        await coll.insert_one({"_id": 1, "name": "Açaí"})
        assert (await coll.find_one({"_id": 1}))["name"] == "Açaí"
    finally:
        await client.close()


async def test_pg_fixture_is_a_fresh_database(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == pg_dsn.rsplit("/", 1)[1]
    finally:
        await conn.close()
