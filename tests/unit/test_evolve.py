"""Decision states with plain data: given events, the fold; and what an append derives from it."""

from __future__ import annotations

import pytest

from events.states import (
    AccountState,
    LoginState,
    OrderState,
    ProductState,
    decode_state,
    encode_state,
    fold,
)
from events.store import Append, Guard, StateChange, derive_writes
from events.types import (
    AccountCreated,
    LoginFailed,
    LoginSucceeded,
    OrderBilled,
    OrderLine,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    StockAdjusted,
)

AT = "2026-12-01T12:00:00.000Z"
CREATED = ProductCreated(
    product_id="p1", sku="MUG", name="Caneca", description="Azul", price=2590, stock=5
)


def billed(*lines: tuple[str, int], order_id: str = "o1") -> OrderBilled:
    order_lines = [
        OrderLine(product_id=p, name=p, quantity=q, unit_price=100, line_total=100 * q)
        for p, q in lines
    ]
    return OrderBilled(
        order_id=order_id,
        account_id="a1",
        lines=order_lines,
        total=sum(ln.line_total for ln in order_lines),
    )


def test_a_product_is_the_fold_of_its_events_and_of_the_orders_that_take_its_stock() -> None:
    state = fold(
        "product:p1",
        [
            CREATED,
            ProductUpdated(product_id="p1", price=2990, description="Verde"),
            StockAdjusted(product_id="p1", delta=3),
            billed(("p1", 2), ("p2", 9), ("p1", 1)),
            ProductDeleted(product_id="p1"),
        ],
    )
    assert state == ProductState(
        v=4,
        sku="MUG",
        name="Caneca",
        description="Verde",
        price=2990,
        stock=5,
        deleted=True,
    )


def test_an_order_remembers_its_account_lines_and_total() -> None:
    event = billed(("p1", 2))
    state = fold("order:o1", [event])
    assert state == OrderState(
        v=1, status="billed", account_id="a1", lines=tuple(event.lines), total=200
    )


def test_login_failures_count_until_a_success_and_a_refusal_by_the_limit_does_not_count() -> None:
    failed = LoginFailed(email_digest="d", reason="wrong_password")
    limited = LoginFailed(email_digest="d", reason="rate_limited")
    assert fold("login:d", [(failed, 10), (limited, 11), (failed, 12)]) == LoginState(
        v=3, failures=(10, 12)
    )
    ok = LoginSucceeded(account_id="a1", email_digest="d")
    assert fold("login:d", [(failed, 10), (ok, 11)]) == LoginState(v=2)


@pytest.mark.parametrize(
    ("aggregate", "events"),
    [
        ("product:p1", [CREATED, ProductDeleted(product_id="p1")]),
        ("order:o1", [billed(("p1", 2), ("p2", 1))]),
        ("login:d", [(LoginFailed(email_digest="d", reason="unknown_email"), 7)]),
        (
            "account:a1",
            [AccountCreated(account_id="a1", email="e@x.co", name="1", password_hash="h")],
        ),
    ],
)
def test_every_state_survives_its_hash(aggregate: str, events: list[object]) -> None:
    state = fold(aggregate, events)  # type: ignore[arg-type]
    assert decode_state(aggregate, encode_state(state)) == state


def test_a_hash_written_before_a_field_existed_decodes_with_its_default() -> None:
    old = {"v": "2", "sku": "MUG", "name": "Caneca", "price": "2590", "stock": "4"}
    assert decode_state("product:p1", old) == ProductState(
        v=2, sku="MUG", name="Caneca", price=2590, stock=4
    )


def test_an_order_derives_a_guarded_decrement_of_each_products_stock() -> None:
    mug = fold("product:p1", [CREATED])
    changes, guards = derive_writes(
        {"order:o1": OrderState(), "product:p1": mug},
        [billed(("p1", 2), ("p1", 1))],
        {"order:o1": 0, "product:p1": 1},
        AT,
    )
    assert changes["product:p1"] == StateChange(incr={"stock": -3})
    assert guards == [Guard("product:p1", "stock", 3)]
    assert changes["order:o1"].set["status"] == "billed"


def test_adding_stock_needs_no_guard() -> None:
    mug = fold("product:p1", [CREATED])
    changes, guards = derive_writes(
        {"product:p1": mug}, [StockAdjusted(product_id="p1", delta=4)], {}, AT
    )
    assert (changes, guards) == ({"product:p1": StateChange(incr={"stock": 4})}, [])


def test_setting_a_field_without_expecting_the_version_is_a_bug() -> None:
    mug = fold("product:p1", [CREATED])
    with pytest.raises(ValueError, match="without expecting"):
        derive_writes({"product:p1": mug}, [ProductUpdated(product_id="p1", name="x")], {}, AT)


def test_an_aggregate_the_decision_did_not_read_may_only_change_its_counters() -> None:
    append = Append(
        events=[billed(("p1", 1))], expect={"order:o1": 0}, seen={"order:o1": OrderState()}
    )
    assert append.state["product:p1"] == StateChange(incr={"stock": -1})
    assert append.guards == [Guard("product:p1", "stock", 1)]
    with pytest.raises(ValueError, match="without expecting"):
        Append(events=[ProductUpdated(product_id="p1", name="x")], seen={})


def test_a_login_failure_is_recorded_at_the_appends_time() -> None:
    append = Append(
        events=[LoginFailed(email_digest="d", reason="wrong_password")],
        expect={"login:d": 1},
        seen={"login:d": LoginState(v=1, failures=(5,))},
        at=AT,
    )
    assert append.state["login:d"].set == {"failures": "5,1796126400"}


def test_an_account_state_keeps_what_login_needs() -> None:
    created = AccountCreated(
        account_id="a1", email="e@x.co", name="Ana", password_hash="h", role="admin"
    )
    assert fold("account:a1", [created]) == AccountState(
        v=1, email="e@x.co", name="Ana", role="admin", password_hash="h"
    )
