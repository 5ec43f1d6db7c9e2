"""Read-model handlers of the cart: one ``carts`` document per account (``_id`` = account id).

Every cart event writes only its own cart (aggregate ``cart:<account id>``, one partition),
guarded by ``Own(seq)`` like any own-aggregate write, and upserts: a rebuild may meet any
cart event first on a document that is not there yet. ``items`` is a map keyed by
:func:`item_key` (a product id made safe as a MongoDB field name), each entry holding
``product_id`` and ``quantity``, so setting a quantity is one ``$set`` of its entry and a
removal one ``$unset``; ``CartCheckedOut`` empties the map. Entries keep the order they were
added in, as the write side's ``CartState`` does (a removed and re-added product goes last).

Writes whose paths conflict (a checkout's ``items`` and an entry's ``items.<key>``) or that
use ``$unset`` are not folded with others (see :mod:`projections.read_models.folding`), so
any batch split gives the same document.

``GET /cart`` does not read this view: the caller's own cart must show a change at once
(read-your-writes), so it reads the write side's decision state; this document serves
``GET /carts/{account_id}`` and ``verify`` / ``rebuild`` like every other view document.
"""

from __future__ import annotations

from urllib.parse import quote

from events.codec import RecordedEvent
from events.types import CartCheckedOut, CartItemRemoved, CartItemSet
from projections.read_models.folding import Own, Update, Write


def item_key(product_id: str) -> str:
    """The ``items`` field name of a product: percent-encoded, with ``.`` encoded too and
    a ``p`` in front, so no product id can split a path or start with ``$``."""
    return "p" + quote(product_id, safe="").replace(".", "%2E")


def _cart(rec: RecordedEvent, account_id: str, update: Update) -> Write:
    update = {**update, "$set": {**update.get("$set", {}), "updated_at": rec.at}}
    update["$set"]["account_id"] = account_id
    return Write("carts", account_id, update, Own(rec.seq), upsert=True)


def on_cart_item_set(rec: RecordedEvent, e: CartItemSet) -> list[Write]:
    entry = {"product_id": e.product_id, "quantity": e.quantity}
    return [_cart(rec, e.account_id, {"$set": {f"items.{item_key(e.product_id)}": entry}})]


def on_cart_item_removed(rec: RecordedEvent, e: CartItemRemoved) -> list[Write]:
    # $unset on an upserted (new) document leaves no ``items``: the document reads it as {}.
    return [_cart(rec, e.account_id, {"$unset": {f"items.{item_key(e.product_id)}": ""}})]


def on_cart_checked_out(rec: RecordedEvent, e: CartCheckedOut) -> list[Write]:
    fields = {"items": {}, "last_order_id": e.order_id}
    return [_cart(rec, e.account_id, {"$set": fields})]
