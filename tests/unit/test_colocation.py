"""Co-located ids (Redis Cluster): a new account or product lands in the partition of its
email or SKU reservation, so sign-up and product creation stay one single-slot append."""

from __future__ import annotations

import uuid

from app.commands.catalog import product_aggregate
from app.commands.colocation import colocated_id
from events.keys import Keys


def test_a_drawn_product_id_shares_the_partition_tag_of_its_sku_reservation() -> None:
    keys = Keys(prefix="t", partitions=16)
    for _ in range(50):
        reservation = keys.uniq("sku", f"SKU-{uuid.uuid4().hex[:8]}")
        product_id = colocated_id(keys, product_aggregate, reservation)
        state = keys.state(product_aggregate(product_id))
        assert state.split(":")[2] == reservation.split(":")[2]  # the "{pN}" of both keys
