"""Folding rules of the read-models projection, on plain data (no store)."""

from __future__ import annotations

from pymongo import InsertOne, UpdateOne

from projections.read_models.folding import Cross, Own, Write, combine, fold


def test_combine_sums_increments_keeps_last_set_largest_max_and_first_set_on_insert() -> None:
    assert combine(
        [
            {"$set": {"name": "a"}, "$inc": {"stock": 2}, "$setOnInsert": {"x": 1}},
            {"$set": {"name": "b"}, "$inc": {"stock": -5}, "$max": {"at": 3}},
            {"$max": {"at": 2}, "$setOnInsert": {"x": 9}},
        ]
    ) == {"$set": {"name": "b"}, "$inc": {"stock": -3}, "$max": {"at": 3}, "$setOnInsert": {"x": 1}}


def test_zero_set_on_insert_gives_way_to_an_increment_and_to_a_set() -> None:
    assert combine(
        [{"$setOnInsert": {"n": 0, "version": 0}}, {"$inc": {"n": 1}, "$set": {"version": 4}}]
    ) == {"$inc": {"n": 1}, "$set": {"version": 4}}


def test_updates_touching_one_path_with_two_operators_do_not_combine() -> None:
    assert combine([{"$set": {"stock": 1}}, {"$inc": {"stock": 1}}]) is None
    assert combine([{"$setOnInsert": {"n": 5}}, {"$inc": {"n": 1}}]) is None
    assert combine([{"$set": {"applied": {}}}, {"$set": {"applied.p1": "x"}}]) is None


def test_own_writes_fold_in_seq_order_guarded_by_the_first_and_setting_the_last() -> None:
    writes = [
        Write("products", "p", {"$inc": {"stock": 1}}, Own(3)),
        Write("products", "p", {"$set": {"name": "x"}, "$inc": {"stock": 2}}, Own(1), upsert=True),
        Write("products", "p", {"$set": {"name": "y"}}, Own(2)),
    ]
    (only,) = fold(writes)["products"]
    query, update = only.guarded()
    assert query == {"_id": "p", "version": {"$lt": 1}}
    assert update == {"$set": {"name": "y", "version": 3}, "$inc": {"stock": 3}}
    assert only.upsert


def test_cross_writes_from_several_partitions_fold_with_one_watermark_guard_each() -> None:
    writes = [
        Write("products", "p", {"$inc": {"stock": -1}}, Cross(1, "a"), upsert=True),
        Write("products", "p", {"$inc": {"stock": -2}}, Cross(2, "c"), upsert=True),
        Write("products", "p", {"$inc": {"stock": -4}}, Cross(1, "b"), upsert=True),
    ]
    (only,) = fold(writes)["products"]
    query, update = only.guarded()
    assert query == {
        "_id": "p",
        "applied.p1": {"$not": {"$gte": "a"}},
        "applied.p2": {"$not": {"$gte": "c"}},
    }
    assert update == {
        "$inc": {"stock": -7},
        "$set": {"applied.p1": "b", "applied.p2": "c"},
        "$setOnInsert": {"version": 0},
    }


def test_a_creation_and_cross_writes_fold_under_both_guards() -> None:
    writes = [
        Write("products", "p", {"$inc": {"stock": -1}}, Cross(2, "a"), upsert=True),
        Write("products", "p", {"$set": {"sku": "S"}, "$inc": {"stock": 9}}, Own(1), upsert=True),
    ]
    (only,) = fold(writes)["products"]
    query, update = only.guarded()
    assert query == {"_id": "p", "version": {"$lt": 1}, "applied.p2": {"$not": {"$gte": "a"}}}
    assert update == {"$set": {"sku": "S", "version": 1, "applied.p2": "a"}, "$inc": {"stock": 8}}


def test_own_writes_without_the_creation_stay_apart_from_cross_writes() -> None:
    writes = [
        Write("products", "p", {"$inc": {"stock": 1}}, Own(4)),
        Write("products", "p", {"$inc": {"stock": -1}}, Cross(1, "a"), upsert=True),
    ]
    assert len(fold(writes)["products"]) == 2


def test_writes_that_do_not_combine_stay_one_fold_each_in_order() -> None:
    writes = [
        Write("products", "p", {"$set": {"stock": 1}}, Own(1), upsert=True),
        Write("products", "p", {"$inc": {"stock": 1}}, Own(2)),
    ]
    folds = fold(writes)["products"]
    assert [f.writes for f in folds] == [[writes[0]], [writes[1]]]


def test_a_plain_update_before_an_upsert_is_not_folded() -> None:
    writes = [
        Write("accounts", "a", {"$max": {"at": 1}}),
        Write("accounts", "a", {"$max": {"at": 2}}, upsert=True),
    ]
    assert len(fold(writes)["accounts"]) == 2


def test_a_sole_writer_creation_is_an_insert_of_the_upserted_document() -> None:
    write = Write("orders", "o", {"$set": {"total": 5}}, Own(1), upsert=True, sole_writer=True)
    (only,) = fold([write])["orders"]
    op = only.op()
    assert isinstance(op, InsertOne)
    assert op._doc == {"_id": "o", "total": 5, "version": 1}
    assert isinstance(write.op(), UpdateOne)


def test_a_creation_known_missing_is_an_insert_with_its_watermarks_as_embedded_fields() -> None:
    """A product created in the batch that also sells it from two partitions: the insert
    holds what the folded upsert would insert, dotted guard paths as embedded documents."""
    writes = [
        Write("products", "p", {"$set": {"name": "Chá"}, "$inc": {"stock": 10}}, Own(1), True),
        Write("products", "p", {"$inc": {"stock": -2}}, Cross(0, "m0"), upsert=True),
        Write("products", "p", {"$inc": {"stock": -1}}, Cross(3, "m3"), upsert=True),
    ]
    (only,) = fold(writes)["products"]
    assert isinstance(only.op(), UpdateOne)  # not known to be missing: an upsert
    op = only.op(missing=True)
    assert isinstance(op, InsertOne)
    assert op._doc == {
        "_id": "p",
        "name": "Chá",
        "stock": 7,
        "version": 1,
        "applied": {"p0": "m0", "p3": "m3"},
    }


def test_a_fold_that_updates_more_than_fields_is_never_an_insert() -> None:
    unset = Write("carts", "c", {"$unset": {"items.x": ""}}, Own(2), upsert=True)
    (only,) = fold([unset])["carts"]
    assert isinstance(only.op(missing=True), UpdateOne)
    plain = Write("products", "p", {"$inc": {"stock": 1}}, Own(2))
    (update,) = fold([plain])["products"]
    assert isinstance(update.op(missing=True), UpdateOne)  # no upsert: nothing to create
