"""The Redis key layout, in one place.

Every key carries a hash tag ``{pN}`` naming a partition, so a Redis Cluster keeps a
partition's stream and the state of the aggregates that live in it in one slot.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field

from events.personal import DEV_DIGEST_SECRET, email_digest


def digest(value: str) -> str:
    """A stable, non-reversible name for a value we must not store in the clear (an email)."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix for a log of ``partitions`` partitions (fixed per deployment)."""

    prefix: str = "streamshop"
    partitions: int = 8
    digest_secret: bytes = field(default=DEV_DIGEST_SECRET, repr=False, compare=False)
    """The server secret of :meth:`email_digest` (``EMAIL_DIGEST_SECRET``)."""

    def email_digest(self, email: str) -> str:
        """The keyed pseudonym an email is looked up by (uniqueness, login); never the
        address itself, in any key name or event."""
        return email_digest(self.digest_secret, email)

    def partition_of(self, name: str) -> int:
        """``crc32(name) % N``: an aggregate (or unique value) always lives in one partition."""
        return zlib.crc32(name.encode()) % self.partitions

    def tag(self, name: str) -> str:
        return f"{{p{self.partition_of(name)}}}"

    def log(self, partition: int) -> str:
        return f"{self.prefix}:log:{{p{partition}}}"

    def logs(self) -> list[str]:
        return [self.log(p) for p in range(self.partitions)]

    def archived(self, partition: int) -> str:
        """The last entry id of a partition that moved to the archive and left Redis
        (see :mod:`events.archive`); set by the archive's trim, in the same script."""
        return f"{self.prefix}:archive:{{p{partition}}}"

    def archive(self, suffix: str = "") -> str:
        """Where the archive is (its URL), and with ``suffix`` its lock."""
        return f"{self.prefix}:archive{suffix}"

    def identity(self) -> str:
        """The log's identity (a UUIDv7), which every view records (see :mod:`events.identity`)."""
        return f"{self.prefix}:log:identity"

    def state(self, aggregate: str) -> str:
        return f"{self.prefix}:state:{self.tag(aggregate)}:{aggregate}"

    def uniq(self, kind: str, value: str) -> str:
        name = f"{kind}:{digest(value)}"
        return f"{self.prefix}:uniq:{self.tag(name)}:{name}"

    def personal_keys(self) -> str:
        """The dev key store of personal data (:class:`events.personal.RedisKeyStore`)."""
        return f"{self.prefix}:pii:keys"

    def idem(self, key: str, home: str | None = None) -> str:
        """An idempotency record, in the partition of the key itself or, with ``home``, of
        that aggregate: a saga step records itself in the slot it writes (Redis Cluster)."""
        return f"{self.prefix}:idem:{self.tag(home or key)}:{key}"

    def saga(self, scope: str) -> str:
        """Which order a billing saga started under an idempotency key (its scope) runs
        for, in the key's own partition: a retry finds the order it must finish or undo."""
        return f"{self.prefix}:saga:{self.tag(scope)}:{scope}"

    def ingest(self, source: str) -> str:
        return f"{self.prefix}:ingest:{source}"

    def dlq(self, projection: str) -> str:
        """A projection's dead-letter stream. Tagged by the projection's name: its
        bookkeeping keys extend this name and :meth:`metrics` shares the tag, so the park
        and remove scripts touch one slot on a Redis Cluster."""
        return f"{self.prefix}:dlq:{{{projection}}}"

    def metrics(self, name: str) -> str:
        """A projection's counters (hash), in the slot of its :meth:`dlq`."""
        return f"{self.prefix}:metrics:{{{name}}}"

    def ingest_dlq(self, source: str) -> str:
        """An ingress source's dead letters. The ingress stream's name is the contract with
        producers and carries no tag, so this key takes that whole name as its tag: the
        gateway's ``MULTI`` (dead letter, ``XACK``, counter) then touches one slot."""
        return f"{self.prefix}:dlq:ingest:{{{self.ingest(source)}}}"

    def ingest_metrics(self, source: str) -> str:
        """An ingress source's counters, in the slot of its stream (see :meth:`ingest_dlq`)."""
        return f"{self.prefix}:metrics:ingest:{{{self.ingest(source)}}}"

    def ingest_source_of(self, dlq_key: str) -> str | None:
        """The source an :meth:`ingest_dlq` key belongs to (``None``: not one)."""
        head, tail = f"{self.prefix}:dlq:ingest:{{{self.prefix}:ingest:", "}"
        if dlq_key.startswith(head) and dlq_key.endswith(tail):
            return dlq_key[len(head) : -len(tail)]
        return None

    def view(self, name: str, suffix: str = "") -> str:
        """The pointer naming a view's live version (``suffix``: its pause, lock, …).

        Tagged by the view's name, not a partition: the rebuild's switch script touches
        only the keys of one view.
        """
        return f"{self.prefix}:view:{{{name}}}{suffix}"

    def lease(self, projection: str, partition: int) -> str:
        return f"{self.prefix}:lease:{projection}:{{p{partition}}}"
