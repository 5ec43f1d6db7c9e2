"""A test projection that keeps, in memory, every event id handed to ``apply`` (with repeats),
so an in-process test can see exactly what the runtime delivered and how often."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from events.codec import RecordedEvent


class RecordingProjection:
    def __init__(self, name: str) -> None:
        self.name = name
        self.applied: Counter[str] = Counter()
        self.checkpoints: dict[int, str] = {}

    async def setup(self) -> None:
        return None

    async def apply(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        for event in events:
            self.applied[event.id] += 1
        self.checkpoints[partition] = events[-1].entry_id

    async def checkpoint(self, partition: int) -> str | None:
        return self.checkpoints.get(partition)
