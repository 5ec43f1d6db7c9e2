"""The warehouse's rebuild path: the batches of every partition in one transaction.

A rebuild replays the partitions concurrently, and each partition's batch of the live path
is a transaction of its own that takes advisory locks on the products it sells (shared) and
changes (exclusive). In a replay from the start almost every batch holds a product's creation
or change and orders that sell other partitions' products, so the partitions' transactions
waited on each other one after the other, each paying its own dozen round trips (measured:
the lock statement was ~60 % of a 5 000-event rebuild's wall time).

:class:`GroupCommit` wraps the version's :class:`~projections.warehouse.WarehouseProjection`
for the rebuild's replay: batches handed in while a write is in flight queue, and the queue
is written as one transaction: each partition's checkpoint locked and its fresh entries kept
(as :meth:`CheckpointedSchema.apply_checkpointed` does), the fresh entries of all of them
written by the live path's own writer as one batch (dimensions first, then facts, lines
resolved against the versions as they are then: the same rows the batches written one after
the other give, since a product's events all come from its own partition, in order), and
every checkpoint moved, then one commit. A write that fails for a reason other than the sink
is retried batch by batch through the live path, so only the partition it came from isolates
the entry that fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from events.codec import RecordedEvent
from events.positions import parse_stream_id
from projections.base import SinkUnavailable
from projections.views import sink_errors
from projections.warehouse import WarehouseProjection


@dataclass(slots=True)
class _Queued:
    partition: int
    events: list[RecordedEvent]
    done: asyncio.Future[None]


class GroupCommit:
    """A warehouse version being rebuilt (see the module docstring)."""

    def __init__(self, projection: WarehouseProjection) -> None:
        self.projection = projection
        self.name = projection.name
        self.version = projection.version
        self.pool = projection.pool
        self.schema = projection.schema
        self._queue: list[_Queued] = []
        self._writing = asyncio.Lock()

    async def setup(self) -> None:
        await self.projection.setup()

    async def checkpoint(self, partition: int) -> str | None:
        return await self.projection.checkpoint(partition)

    async def checkpoints(self) -> dict[int, str | None]:
        return await self.projection.checkpoints()

    async def apply(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        if not events:
            return
        mine = _Queued(partition, list(events), asyncio.get_running_loop().create_future())
        self._queue.append(mine)
        try:
            async with self._writing:
                if not mine.done.done():
                    await asyncio.sleep(0)  # let batches handed in at the same time join
                    queued, self._queue = self._queue, []
                    try:
                        await self._settle(queued)
                    except BaseException:
                        self._queue[:0] = [b for b in queued if b is not mine and not b.done.done()]
                        raise
        except asyncio.CancelledError:
            if mine in self._queue:
                self._queue.remove(mine)
            raise
        mine.done.result()

    async def _settle(self, queued: list[_Queued]) -> None:
        try:
            await self._write(queued)
        except SinkUnavailable as exc:
            for batch in queued:
                batch.done.set_exception(exc)
        except Exception as exc:
            if len(queued) == 1:
                queued[0].done.set_exception(exc)
                return
            for batch in queued:  # told apart: only the failing partition isolates its entry
                try:
                    await self.projection.apply(batch.partition, batch.events)
                except Exception as one:
                    batch.done.set_exception(one)
                else:
                    batch.done.set_result(None)
        else:
            for batch in queued:
                batch.done.set_result(None)

    async def _write(self, queued: list[_Queued]) -> None:
        """One transaction for every queued batch (checkpoints locked in partition order,
        so two writers never wait on each other)."""
        projection = self.projection
        by_partition: dict[int, list[RecordedEvent]] = {}
        for batch in queued:
            by_partition.setdefault(batch.partition, []).extend(batch.events)
        with sink_errors():
            async with projection.pool.acquire() as conn, conn.transaction():
                fresh: list[RecordedEvent] = []
                moved: dict[int, str] = {}
                for partition in sorted(by_partition):
                    head = await projection.lock_checkpoint(conn, partition)
                    done = parse_stream_id(head["entry_id"])
                    new = [e for e in by_partition[partition] if parse_stream_id(e.entry_id) > done]
                    if new:
                        fresh.extend(new)
                        moved[partition] = new[-1].entry_id
                if not fresh:
                    return
                await projection.write_entries(conn, fresh)
                for partition, entry_id in moved.items():
                    await projection.set_checkpoint(conn, partition, {"entry_id": entry_id})
