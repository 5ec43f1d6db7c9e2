"""The port between the projector runtime (``workers/``) and a view (``projections/``).

A projection knows how events change its store; it knows nothing of consumer groups,
leases or Redis. The runtime hands it batches of one partition, in log order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from events.codec import RecordedEvent

DEFAULT_VERSION = 1
"""The version of a projection that declares none (and of a view built before versions were
recorded)."""


def version_of(projection: object) -> int:
    """The version a projection declares in ``version`` (:data:`DEFAULT_VERSION` if none).

    The version names the schema and the rows the code writes: a change to either bumps it.
    A view version records the projection version that built it; the runtime never applies
    one version's code to a view another version built, it rebuilds instead
    (``workers.rebuild.upgrade_view``)."""
    return int(getattr(projection, "version", DEFAULT_VERSION))


class SinkUnavailable(Exception):
    """The view's store is down or timing out: retry later, this is not the event's fault.

    The runtime backs off and acknowledges nothing; it never dead-letters on this error.
    """


@runtime_checkable
class Projection(Protocol):
    """A view built by folding the log.

    ``apply`` must be idempotent (delivery is at-least-once) and durable when it returns,
    and it records, in the same write or idempotently after it, the last entry id applied
    for the partition: that is what :meth:`checkpoint` returns and what read-your-writes
    waits on.

    A projection may set ``records_raw = True`` (the audit does): the runtime then also
    hands it, in order within the batch, the entries that do not decode, as
    :class:`events.codec.UndecodableEntry`, instead of retrying and dead-lettering them.

    The checkpoint is the runtime's only resume point: on start and after any sink error a
    partition is re-fed from it, whatever the consumer group has acknowledged. So it must
    never be ahead of an effect the store could still lose, and an effect the store loses
    must take the checkpoint with it (same transaction, or written after it and durable).
    """

    name: str
    """Stable name: the consumer group, the DLQ stream suffix, the lease and CLI name."""

    # A projection may also declare ``version: int`` (see :func:`version_of`); it is not a
    # protocol member, so that a projection without one still is a Projection.

    async def setup(self) -> None:
        """Create indexes, tables or schemas; safe to call on every start."""
        ...

    async def apply(self, partition: int, events: Sequence[RecordedEvent]) -> None:
        """Apply a batch of one partition's events, in log order."""
        ...

    async def checkpoint(self, partition: int) -> str | None:
        """The last entry id applied for ``partition`` (``None`` before the first)."""
        ...
