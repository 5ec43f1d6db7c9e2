"""Named errors of the event log: what the write side and the readers can tell apart."""

from __future__ import annotations


class EventStoreError(Exception):
    """Base class for every error raised by ``events/``."""


class AppendRejected(EventStoreError):
    """An atomic append did not happen because one of its checks failed; nothing was written."""


class VersionConflict(AppendRejected):
    """An aggregate's version was not the one the decision was based on."""

    def __init__(self, aggregate: str, expected: int, actual: int) -> None:
        super().__init__(f"{aggregate}: expected version {expected}, found {actual}")
        self.aggregate = aggregate
        self.expected = expected
        self.actual = actual


class AggregateMissing(AppendRejected):
    """An aggregate the append requires to exist has no state."""

    def __init__(self, aggregate: str) -> None:
        super().__init__(f"{aggregate} does not exist")
        self.aggregate = aggregate


class UniquenessViolation(AppendRejected):
    """A unique value (an email, a SKU) is already reserved by another owner."""

    def __init__(self, kind: str, value: str, owner: str) -> None:
        super().__init__(f"{kind} is already taken")
        self.kind = kind
        self.value = value
        self.owner = owner


class GuardFailed(AppendRejected):
    """A numeric field of the decision state was below what the append needs (e.g. stock)."""

    def __init__(self, aggregate: str, field: str, actual: int, required: int) -> None:
        super().__init__(f"{aggregate}.{field} is {actual}, needs at least {required}")
        self.aggregate = aggregate
        self.field = field
        self.actual = actual
        self.required = required


class MalformedEvent(EventStoreError):
    """A stream entry could not be decoded into an event; carries the entry id and the reason."""

    def __init__(self, entry_id: str, reason: str) -> None:
        super().__init__(f"entry {entry_id}: {reason}")
        self.entry_id = entry_id
        self.reason = reason


class RedisNotSuitable(EventStoreError):
    """The Redis server cannot hold the log safely (too old, or it may evict keys)."""


class ArchiveError(EventStoreError):
    """The archive does not hold what Redis says it does, or a segment is not as listed."""
