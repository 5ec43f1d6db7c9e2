"""Commands that create an aggregate together with a unique reservation, on a Redis Cluster
without a saga: the new aggregate's id is drawn so that it lives in the partition of its
reservation (issue #19).

Sign-up reserves the email (``uniq:{pE}:email:…``, tagged by the email's digest) and
product creation the SKU (``uniq:{pS}:sku:…``). The new id is ours to choose, so drawing
UUIDv7s until ``partition_of(aggregate) == partition_of(reservation)`` (about
``partitions`` draws of a CRC32, microseconds) puts every key of the append in one slot:
the command stays one atomic call and the value stays unique, with no compensation to get
wrong. A product with a category or a legacy id has a second key elsewhere: the runner
takes those in steps of their own (:mod:`app.commands.slots`). On one node nothing
changes: the id is drawn once, as before.
"""

from __future__ import annotations

from typing import Any

import msgspec

from app.commands.accounts import SignUp, account_aggregate, normalize_email
from app.commands.catalog import CreateProduct, product_aggregate
from events.ids import uuid7
from events.keys import Keys
from events.store import EventStore

MAX_DRAWS = 10_000
"""A bound that is never reached in practice (each draw hits with probability 1/partitions)."""


def colocated_id(keys: Keys, aggregate_of: Any, reservation: str) -> str:
    """An id whose aggregate (``aggregate_of(id)``) has the partition tag of ``reservation``."""
    target = reservation.split(":uniq:", 1)[1].split(":", 1)[0]  # its "{pN}"
    for _ in range(MAX_DRAWS):
        new_id = uuid7()
        if keys.tag(aggregate_of(new_id)) == target:
            return new_id
    raise RuntimeError(f"no id in partition {target} after {MAX_DRAWS} draws")


def colocate(store: EventStore, command: Any) -> Any:
    """``command`` with a co-located new id where it creates one, else unchanged."""
    keys = store.keys
    match command:
        case SignUp(account_id=None):
            digest = store.personal.email_digest(normalize_email(command.email))
            new_id = colocated_id(keys, account_aggregate, keys.uniq("email", digest))
            return msgspec.structs.replace(command, account_id=new_id)
        case CreateProduct(product_id=None):
            new_id = colocated_id(keys, product_aggregate, keys.uniq("sku", command.sku))
            return msgspec.structs.replace(command, product_id=new_id)
    return command
