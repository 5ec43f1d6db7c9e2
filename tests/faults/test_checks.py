"""The fault suite's judges on plain data: a consistent run passes every check, and each kind
of damage is caught and named (order, view, field). Pure, fast, part of ``make test``."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from tests.faults.checks import (
    ARCHIVE_CHECK,
    FORGET_CHECK,
    PAYMENT_CHECK,
    REUSE_CHECK,
    SIGNUP_CHECK,
    STOCK_CHECK,
    STOCK_DELTA_CHECK,
    WRITES_CHECK,
    LoggedDelta,
    LoggedOrder,
    LoggedWrite,
    Observed,
    judge,
)
from tests.faults.load import (
    ArchiveRuns,
    Checkout,
    Customer,
    Ledger,
    Order,
    Product,
    Restock,
    Reuse,
    StockDelta,
    Write,
)

P1, P2, P3, ACCOUNT, SHOPPER, FORGOTTEN = "p-1", "p-2", "p-3", "a-1", "s-1", "f-1"
NEWCOMER = "n-1"
PRODUCT_ANSWER = f'201 {{"product_id":"{P3}","position":"2-6-0"}}'
SIGNUP_ANSWER = f'201 {{"account_id":"{NEWCOMER}","position":"3-9-0"}}'
PROBLEMS = "https://streamshop.dev/problems/"
BEYOND_ANSWER = (
    f'409 {{"type":"{PROBLEMS}insufficient-stock","title":"Insufficient stock","status":409,'
    f'"detail":"product {P1} has 44 in stock, cannot remove 5044","field":"delta",'
    f'"product_id":"{P1}"}}'
)
REUSED_ANSWER = (
    f'422 {{"type":"{PROBLEMS}idempotency-key-reused","title":"Idempotency key reused with a '
    'different request","status":422,"detail":"this Idempotency-Key was used for a different '
    'request","field":"Idempotency-Key"}'
)


def consistent() -> tuple[Ledger, Observed]:
    """Two acknowledged orders, one refused, one restock, three checkouts (one paid, one
    paid whose 200 was lost so the retry heard 409 *paid*, one left to expire), and views
    that agree with them."""
    ledger = Ledger(
        products={P1: Product(P1, "SKU-1", 100, 50), P2: Product(P2, "SKU-2", 200, 50)},
        customers=[Customer(ACCOUNT, "a@example.com", "token")],
        orders=[
            Order("k-1", ACCOUNT, [(P1, 2), (P2, 1)], status=201, order_id="o-1", total=400),
            Order("k-2", ACCOUNT, [(P1, 3)], status=201, order_id="o-2", total=300),
            Order("k-3", ACCOUNT, [(P2, 99)], status=409),
        ],
        restocks=[Restock("r-1", P2, 10)],
        shoppers=[Customer(SHOPPER, "s@example.com", "token")],
        checkouts=[
            Checkout("c-1", SHOPPER, [(P1, 1)], True, 1, 201, "o-3", 100, 10, pay_status=200),
            Checkout(
                "c-2",
                SHOPPER,
                [(P2, 2)],
                True,
                1,
                201,
                "o-4",
                400,
                10,
                pay_status=409,
                pay_current="paid",
            ),
            Checkout("c-3", SHOPPER, [(P1, 4)], False, 1, 201, "o-5", 400, 10),
        ],
    )
    observed = Observed(
        caught_up_s=0.5,
        orders_in_log=[
            LoggedOrder("p0/1-0", "e-1", "k-1", "o-1", ACCOUNT, [(P1, 2), (P2, 1)], 400),
            LoggedOrder("p1/2-0", "e-2", "k-2", "o-2", ACCOUNT, [(P1, 3)], 300),
        ],
        placed_in_log=[
            LoggedOrder("p0/3-0", "e-3", "c-1", "o-3", SHOPPER, [(P1, 1)], 100),
            LoggedOrder("p1/3-0", "e-4", "c-2", "o-4", SHOPPER, [(P2, 2)], 400),
            LoggedOrder("p2/3-0", "e-5", "c-3", "o-5", SHOPPER, [(P1, 4)], 400),
        ],
        paid_in_log={"o-3": [("pay-3", "e-6", "p0/4-0")], "o-4": [("pay-4", "e-7", "p1/4-0")]},
        expired_in_log={"o-5": [("e-8", "p2/4-0")]},
        restocks_in_log=Counter({"r-1": 1}),
        write_stock={P1: 44, P2: 57},
        write_reserved={P1: 0, P2: 0},
        versions={"read_models": "", "audit": "", "warehouse": ""},
        rm_stock={P1: 44, P2: 57},
        rm_reserved={P1: 0, P2: 0},
        rm_orders={
            "o-1": {
                "account_id": ACCOUNT,
                "lines": [{"product_id": P1, "quantity": 2}, {"product_id": P2, "quantity": 1}],
            },
            "o-2": {"account_id": ACCOUNT, "lines": [{"product_id": P1, "quantity": 3}]},
            "o-3": {"status": "paid", "lines": [{"product_id": P1, "quantity": 1}]},
            "o-4": {"status": "paid", "lines": [{"product_id": P2, "quantity": 2}]},
            "o-5": {"status": "expired", "lines": [{"product_id": P1, "quantity": 4}]},
        },
        rm_accounts={
            ACCOUNT: {"orders_count": 2, "total_spent": 700},
            SHOPPER: {"orders_count": 2, "total_spent": 500},
        },
        dw_lines={
            "o-1": [(0, P1, 2), (1, P2, 1)],
            "o-2": [(0, P1, 3)],
            "o-3": [(0, P1, 1)],
            "o-4": [(0, P2, 2)],
        },
        audit_rows=Counter({f"e-{n}": 1 for n in range(1, 9)} | {"r-1": 1}),
        verify={
            "read_models": (0, "OK"),
            "audit": (0, "OK"),
            "warehouse": (0, "OK"),
            "state": (0, "OK"),
        },
        audit_verify=(0, "audit log OK"),
        dlq_list=(0, ""),
        dlq_streams={},
        log_ids={0: ["1-0", "3-0", "4-0"], 1: ["2-0", "3-0", "4-0"], 2: ["3-0", "4-0"], 3: ["5-0"]},
        entries_added={0: 3, 1: 3, 2: 2, 3: 1},
        live_entries={0: 1, 1: 3, 2: 2, 3: 1},
        archive_markers={0: "3-0"},
        archive_segments={0: [("1-0", "1-0", 1), ("3-0", "3-0", 1)], 1: [], 2: [], 3: []},
    )
    add_catalog_and_a_forget(ledger, observed)
    add_stock_deltas(ledger, observed)
    add_a_sign_up_and_refusals(ledger, observed)
    ledger.archive = ArchiveRuns(
        runs=3, completed=2, entries=2, segments=2, kills=["commit at 4s: between"], final=0
    )
    return ledger, observed


def add_catalog_and_a_forget(ledger: Ledger, observed: Observed) -> None:
    """A category, a seller, its product P3 in that category, a customer who ordered P3
    and was then forgotten; the log and views agree."""
    ledger.products[P3] = Product(P3, "SKU-3", 300, 10)
    ledger.forgettable = [Customer(FORGOTTEN, "f@example.com", "token")]
    ledger.people[FORGOTTEN] = ("f@example.com", "Zuleica Esquecida")
    ledger.orders.append(Order("k-4", FORGOTTEN, [(P3, 1)], status=201, order_id="o-6", total=300))
    seller = {"category": "cat-1", "seller_id": "sel-1"}
    ledger.writes = [
        Write("category", "w-cat", "cat-1", status=201),
        Write("seller", "w-seller", "s@example.com", status=201, result_id="sel-1"),
        Write(
            "product",
            "w-prod",
            "SKU-3",
            detail=seller | {"product_id": P3},
            keyed=True,
            attempts=2,
            unanswered=1,
            status=201,
            result_id=P3,
            answer=PRODUCT_ANSWER,
            lost_answer=PRODUCT_ANSWER,
            position="2-6-0",
        ),
        Write("forget", "w-forget", FORGOTTEN, status=200),
    ]
    observed.writes_in_log = {
        "w-cat": [LoggedWrite("category", "cat-1", "p0/6-0", "e-20")],
        "w-seller": [LoggedWrite("seller", "sel-1", "p1/6-0", "e-21")],
        "w-prod": [LoggedWrite("product", "SKU-3", "p2/6-0", "e-22", seller | {"product_id": P3})],
        "w-forget": [LoggedWrite("forget", FORGOTTEN, "p3/6-0", "e-23")],
    }
    observed.forgets_in_log = Counter({FORGOTTEN: 1})
    observed.orders_in_log.append(
        LoggedOrder("p3/7-0", "e-24", "k-4", "o-6", FORGOTTEN, [(P3, 1)], 300)
    )
    observed.audit_rows["e-24"] = 1
    observed.rm_orders["o-6"] = {
        "account_id": FORGOTTEN,
        "lines": [{"product_id": P3, "quantity": 1}],
    }
    observed.rm_accounts[FORGOTTEN] = {
        "orders_count": 1,
        "total_spent": 300,
        "forgotten": True,
        "email": "",
        "name": "",
    }
    observed.dw_lines["o-6"] = [(0, P3, 1)]
    for stock in (observed.write_stock, observed.rm_stock):
        stock[P3] = 9
    for reserved in (observed.write_reserved, observed.rm_reserved):
        reserved[P3] = 0


def add_stock_deltas(ledger: Ledger, observed: Observed) -> None:
    """Three deltas over HTTP: the admin adds 5 to P2, P3's seller takes 2 off (its first
    200 lost on purpose and heard again alike), and a decrease of P2 refused as below zero;
    the log and views agree."""
    lost = '200 {"product_id":"p-3","position":"1-8-0"}'
    ledger.stock_deltas = [
        StockDelta("w-stock-1", P2, 5, "admin", 1, 200, answer="200 {}", position="0-8-0"),
        StockDelta(
            "w-stock-2",
            P3,
            -2,
            "seller",
            2,
            200,
            answer=lost,
            lost_answer=lost,
            position="1-8-0",
        ),
        StockDelta("w-stock-3", P2, -999, "admin", 1, 409, "insufficient-stock"),
    ]
    observed.deltas_in_log = {
        "w-stock-1": [LoggedDelta(P2, 5, "p0/8-0", "e-30")],
        "w-stock-2": [LoggedDelta(P3, -2, "p1/8-0", "e-31")],
        "r-1": [LoggedDelta(P2, 10, "p2/2-0", "r-1")],  # the ingress restock
    }
    observed.restocks_in_log.update({"e-30": 1, "e-31": 1})
    observed.audit_rows.update({"e-30": 1, "e-31": 1})
    for stock in (observed.write_stock, observed.rm_stock):
        stock[P2] += 5
        stock[P3] -= 2


def add_a_sign_up_and_refusals(ledger: Ledger, observed: Observed) -> None:
    """A sign-up whose 201 was lost on purpose and heard again alike, that logged in and is
    in the read models; a decrease of P1 past any stock it can hold, refused 409; and the
    keys of w-stock-1 and of the sign-up reused for other bodies, refused 422. The log and
    views agree."""
    ledger.writes.append(
        Write(
            "signup",
            "w-signup",
            "n@example.com",
            keyed=True,
            attempts=2,
            unanswered=1,
            status=201,
            result_id=NEWCOMER,
            answer=SIGNUP_ANSWER,
            lost_answer=SIGNUP_ANSWER,
            position="3-9-0",
        )
    )
    observed.writes_in_log["w-signup"] = [LoggedWrite("signup", NEWCOMER, "p3/9-0", "e-40")]
    ledger.newcomers = [Customer(NEWCOMER, "n@example.com", "token")]
    observed.rm_accounts[NEWCOMER] = {
        "email": "n@example.com",
        "role": "customer",
        "orders_count": 0,
        "total_spent": 0,
    }
    ledger.stock_deltas.append(
        StockDelta(
            "w-stock-8",
            P1,
            -5044,
            "admin",
            attempts=1,
            status=409,
            problem="insufficient-stock",
            answer=BEYOND_ANSWER,
            beyond=True,
        )
    )
    ledger.reuses = [
        Reuse(
            "stock delta",
            "w-stock-1",
            "reuse-stock-9",
            "delta +5 -> +6",
            attempts=1,
            status=422,
            problem="idempotency-key-reused",
            at_fault="Idempotency-Key",
            media_type="application/problem+json",
            answer=REUSED_ANSWER,
        ),
        Reuse(
            "sign-up",
            "w-signup",
            "reuse-signup",
            "email o@example.com",
            attempts=2,
            status=422,
            problem="idempotency-key-reused",
            at_fault="Idempotency-Key",
            media_type="application/problem+json",
            answer=REUSED_ANSWER,
        ),
    ]


def failures(ledger: Ledger, observed: Observed) -> dict[str, list[str]]:
    checks, _ = judge(ledger, observed, catch_up_s=10)
    return {c.name: c.problems for c in checks if not c.ok}


def test_a_consistent_run_passes_every_check() -> None:
    ledger, observed = consistent()
    checks, counts = judge(ledger, observed, catch_up_s=10)
    assert [c.report() for c in checks if not c.ok] == []
    assert counts == {"lost": 0, "duplicated": 0, "paid": 2, "expired": 1, "archived_orders": 2}


def test_an_acknowledged_order_missing_from_the_log_is_lost() -> None:
    ledger, observed = consistent()
    del observed.orders_in_log[1]
    checks, counts = judge(ledger, observed, catch_up_s=10)
    assert counts["lost"] == 1
    problems = {c.name: c.problems for c in checks}["log: every acknowledged order exactly once"]
    assert problems == [
        f"LOST: order k-2 (order_id o-2, account {ACCOUNT}, lines [('{P1}', 3)]) "
        "got 201 but is not in the log"
    ]


def test_an_order_twice_in_the_log_is_duplicated_and_a_refused_one_is_a_phantom() -> None:
    ledger, observed = consistent()
    again = dataclasses.replace(observed.orders_in_log[1], entry="3-0", order_id="o-9")
    refused = LoggedOrder("4-0", "e-4", "k-3", "o-3", ACCOUNT, [(P2, 99)], 19800)
    observed.orders_in_log += [again, refused]
    checks, counts = judge(ledger, observed, catch_up_s=10)
    assert counts["duplicated"] == 1
    problems = {c.name: c.problems for c in checks}["log: every acknowledged order exactly once"]
    assert any(p.startswith("DUPLICATED: order k-2") and "o-9@3-0" in p for p in problems)
    assert any(p.startswith("PHANTOM: order k-3") and "refused with 409" in p for p in problems)


def test_a_lost_stock_decrement_in_the_read_models_names_product_and_field() -> None:
    ledger, observed = consistent()
    observed.rm_stock[P1] = 48
    found = failures(ledger, observed)
    assert found == {
        STOCK_CHECK: [
            f"read_models products product {P1} (SKU-1) field stock: 48, expected 44 "
            "(initial 50 + restocked 0 + adjusted 0 - bill-now 5 - paid 1 - reserved 0)"
        ]
    }


def test_write_side_stock_is_checked_too() -> None:
    ledger, observed = consistent()
    observed.write_stock[P2] = 60
    problems = failures(ledger, observed)[STOCK_CHECK]
    assert problems[0].startswith(f"write side (Redis state) product {P2} (SKU-2) field stock: 60")


def test_account_counters_and_missing_order_documents_are_named() -> None:
    ledger, observed = consistent()
    observed.rm_accounts[ACCOUNT] = {"orders_count": 1, "total_spent": 400}
    del observed.rm_orders["o-2"]
    problems = failures(ledger, observed)[
        "read_models: orders and account counters = acknowledged orders"
    ]
    assert problems == [
        f"read_models orders: order k-2 (order_id o-2, account {ACCOUNT}, lines [('{P1}', 3)]) "
        "is missing (log entry p1/2-0)",
        f"read_models accounts {ACCOUNT} field orders_count: 1, expected 2",
        f"read_models accounts {ACCOUNT} field total_spent: 400, expected 700",
    ]


def test_warehouse_missing_line_shows_in_lines_and_units_sold() -> None:
    ledger, observed = consistent()
    observed.dw_lines["o-1"] = [(0, P1, 2)]
    problems = failures(ledger, observed)[
        "warehouse: order lines and units sold = acknowledged orders"
    ]
    assert problems[0] == f"warehouse fact_order_line o-1 lines: [('{P1}', 2)], expected " + str(
        sorted([(P1, 2), (P2, 1)])
    )
    assert problems[1].startswith(f"warehouse product {P2} (SKU-2) units sold: 2, expected 3")


def test_an_audit_row_missing_for_an_acknowledged_order_is_named() -> None:
    ledger, observed = consistent()
    del observed.audit_rows["e-2"]
    problems = failures(ledger, observed)["audit: one row per acknowledged event"]
    assert problems == [
        f"audit events: order k-2 (order_id o-2, account {ACCOUNT}, lines [('{P1}', 3)]) "
        "event e-2 has 0 rows"
    ]


@pytest.mark.parametrize("view", ["read_models", "audit", "warehouse", "state"])
def test_a_failing_verify_fails_its_check_with_the_cli_output(view: str) -> None:
    ledger, observed = consistent()
    observed.verify[view] = (1, f'{view} (base): DIFFERS in 1 place(s)\n  products "x": differs')
    problems = failures(ledger, observed)[f"streamshop verify {view}"]
    assert problems == [
        "exit 1",
        f"{view} (base): DIFFERS in 1 place(s)",
        '  products "x": differs',
    ]


def test_a_broken_audit_chain_fails() -> None:
    ledger, observed = consistent()
    observed.audit_verify = (1, "BROKEN: partition 0 row 3")
    assert failures(ledger, observed) == {
        "streamshop audit verify": ["exit 1", "BROKEN: partition 0 row 3"]
    }


def test_a_dead_letter_left_fails_with_its_cause() -> None:
    ledger, observed = consistent()
    observed.dlq_streams = {"faults:x:dlq:read_models": 1}
    observed.dlq_list = (
        0,
        '{"projection": "read_models", "entry_id": "5-0", "type": "OrderBilled", '
        '"partition": 2, "attempts": 5, "error": "boom"}\n',
    )
    assert failures(ledger, observed) == {
        "no dead letter left": [
            "DLQ stream faults:x:dlq:read_models holds 1 entries",
            "dead letter read_models 5-0 OrderBilled p2 after 5 attempts: boom",
        ]
    }


def test_a_projector_that_never_caught_up_names_view_and_partition() -> None:
    ledger, observed = consistent()
    observed.caught_up_s = None
    observed.behind = ["warehouse p3: checkpoint 1-0 < head 2-0"]
    assert failures(ledger, observed) == {
        "projector caught up": ["not within 10s: warehouse p3: checkpoint 1-0 < head 2-0"]
    }


def test_the_consistent_run_with_checkouts_passes_every_check() -> None:
    ledger, observed = consistent()
    assert failures(ledger, observed) == {}


def test_a_second_order_paid_for_one_checkout_is_charged_twice() -> None:
    ledger, observed = consistent()
    observed.paid_in_log["o-3"].append(("pay-3b", "e-9", "p0/5-0"))
    problems = failures(ledger, observed)[PAYMENT_CHECK]
    assert problems == [
        f"CHARGED TWICE: checkout c-1 (order_id o-3, account {SHOPPER}, lines [('{P1}', 1)]) "
        "has 2 OrderPaid: pay-3@p0/4-0, pay-3b@p0/5-0"
    ]


def test_a_payment_told_200_but_missing_from_the_log_is_lost() -> None:
    ledger, observed = consistent()
    del observed.paid_in_log["o-3"]
    problems = failures(ledger, observed)[PAYMENT_CHECK]
    assert problems[0].startswith("LOST PAYMENT: checkout c-1 (order_id o-3")


def test_an_unpaid_checkout_that_never_expired_keeps_its_stock_reserved() -> None:
    ledger, observed = consistent()
    del observed.expired_in_log["o-5"]
    observed.rm_orders["o-5"]["status"] = "awaiting_payment"
    found = failures(ledger, observed)
    assert found[PAYMENT_CHECK][0].startswith("NOT EXPIRED: checkout c-3 (order_id o-5")
    # Still reserved, the units would have to be in ``reserved``, not back in ``stock``.
    why = "(initial 50 + restocked 0 + adjusted 0 - bill-now 5 - paid 1 - reserved 4)"
    assert found[STOCK_CHECK] == [
        f"write side (Redis state) product {P1} (SKU-1) field stock: 44, expected 40 {why}",
        f"read_models products product {P1} (SKU-1) field stock: 44, expected 40 {why}",
        f"write side (Redis state) product {P1} (SKU-1) field reserved: 0, expected 4 {why}",
        f"read_models products product {P1} (SKU-1) field reserved: 0, expected 4 {why}",
    ]


def test_an_expired_checkout_whose_stock_did_not_return_is_named() -> None:
    ledger, observed = consistent()
    observed.write_stock[P1] = 40
    problems = failures(ledger, observed)[STOCK_CHECK]
    assert problems == [
        f"write side (Redis state) product {P1} (SKU-1) field stock: 40, expected 44 "
        "(initial 50 + restocked 0 + adjusted 0 - bill-now 5 - paid 1 - reserved 0)"
    ]


def test_a_checkout_in_the_log_twice_is_duplicated() -> None:
    ledger, observed = consistent()
    observed.placed_in_log.append(
        LoggedOrder("p3/9-0", "e-10", "c-1", "o-9", SHOPPER, [(P1, 1)], 100)
    )
    checks, counts = judge(ledger, observed, catch_up_s=10)
    problems = {c.name: c.problems for c in checks if not c.ok}
    assert problems["log: every acknowledged checkout exactly once"][0].startswith(
        "DUPLICATED: checkout c-1"
    )
    assert counts["duplicated"] == 1


def test_an_entry_read_twice_through_archive_and_live_is_duplicated() -> None:
    ledger, observed = consistent()
    observed.log_ids[0] = ["1-0", "3-0", "3-0", "4-0"]  # archived, and read from Redis again
    assert failures(ledger, observed) == {
        ARCHIVE_CHECK: [
            "DUPLICATED: partition 0 reads 3-0 after 3-0",
            "DUPLICATED: partition 0 reads 4 entries through archive + live, Redis appended 3 "
            "(1 still in Redis, 2 in the archive)",
        ]
    }


def test_an_entry_trimmed_from_redis_and_missing_from_the_archive_is_lost() -> None:
    ledger, observed = consistent()
    observed.entries_added[0] = 4
    assert failures(ledger, observed) == {
        ARCHIVE_CHECK: [
            "LOST: partition 0 reads 3 entries through archive + live, Redis appended 4 "
            "(1 still in Redis, 2 in the archive)"
        ]
    }


def test_overlapping_segments_and_a_commit_never_trimmed_are_named() -> None:
    ledger, observed = consistent()
    observed.archive_segments[0].append(("3-0", "4-0", 2))
    observed.archive_leftovers = ["p0/seg-4-0-4-0.parquet.tmp-run"]
    assert failures(ledger, observed) == {
        ARCHIVE_CHECK: [
            "partition 0: segment 3-0..4-0 overlaps the one ending at 3-0",
            "partition 0: the archive ends at 4-0, Redis's marker is 3-0 (committed, never trimmed)",
            "files of an interrupted run left in the archive: ['p0/seg-4-0-4-0.parquet.tmp-run']",
        ]
    }


def test_an_archive_never_killed_nor_completed_nor_holding_an_order_proves_nothing() -> None:
    ledger, observed = consistent()
    ledger.archive.kills, ledger.archive.final = [], 3
    observed.archive_markers = {}
    observed.archive_segments = {}
    assert failures(ledger, observed) == {
        ARCHIVE_CHECK: [
            "no archive run was killed (the faults missed the archive)",
            "the archive run after the load did not complete: exit 3",
            "no acknowledged order was archived: the log checks read none",
        ]
    }


def test_an_acknowledged_category_missing_from_the_log_is_lost() -> None:
    ledger, observed = consistent()
    del observed.writes_in_log["w-cat"]
    checks, counts = judge(ledger, observed, catch_up_s=10)
    assert counts["lost"] == 1
    assert {c.name: c.problems for c in checks if not c.ok} == {
        WRITES_CHECK: [
            "LOST: category cat-1 (request w-cat, 0 attempt(s), told 201) is not in the log"
        ]
    }


def test_a_forget_appended_twice_is_duplicated() -> None:
    ledger, observed = consistent()
    observed.writes_in_log["w-forget"].append(LoggedWrite("forget", FORGOTTEN, "p3/8-0", "e-25"))
    observed.forgets_in_log[FORGOTTEN] = 2
    checks, counts = judge(ledger, observed, catch_up_s=10)
    assert counts["duplicated"] == 1
    assert {c.name: c.problems for c in checks if not c.ok} == {
        WRITES_CHECK: [
            f"DUPLICATED: forget {FORGOTTEN} (request w-forget, 0 attempt(s), told 200) is in "
            "the log 2 times: p3/6-0, p3/8-0",
            f"DUPLICATED: account {FORGOTTEN} is forgotten 2 times in the log",
        ]
    }


def test_already_exists_heard_by_a_retry_is_acknowledged_but_on_a_first_try_is_refused() -> None:
    ledger, observed = consistent()
    seller = dataclasses.replace(
        ledger.writes[1], attempts=2, unanswered=1, status=409, problem="duplicate-email"
    )
    seller.result_id = None  # the 201 with the id was the answer lost
    ledger.writes[1] = seller
    assert failures(ledger, observed) == {}
    seller.attempts, seller.unanswered = 1, 0  # refused on its first try: not done by us
    told = "request w-seller, 1 attempt(s), told 409 duplicate-email"
    assert failures(ledger, observed) == {
        WRITES_CHECK: [
            f"REFUSED: seller s@example.com ({told})",
            f"PHANTOM: seller s@example.com ({told}) was refused but is in the log (p1/6-0)",
        ]
    }


def test_a_product_logged_in_another_category_is_named() -> None:
    ledger, observed = consistent()
    observed.writes_in_log["w-prod"] = [
        LoggedWrite(
            "product",
            "SKU-3",
            "p2/6-0",
            "e-22",
            {"category": "", "seller_id": "sel-1", "product_id": P3},
        )
    ]
    assert failures(ledger, observed) == {
        WRITES_CHECK: [
            "product SKU-3 (request w-prod, keyed, 2 attempt(s), told 201) field category: the "
            "log has '', expected 'cat-1'"
        ]
    }


def test_a_forgotten_customer_still_named_or_leaked_or_whose_orders_went_is_named() -> None:
    ledger, observed = consistent()
    observed.rm_accounts[FORGOTTEN].update(forgotten=False, name="Zuleica Esquecida")
    observed.leaks[FORGOTTEN] = ["pg_dump: email", "archive: name"]
    del observed.dw_lines["o-6"]
    problems = failures(ledger, observed)[FORGET_CHECK]
    assert problems == [
        f"read_models accounts {FORGOTTEN} field forgotten: False, expected True",
        f"read_models accounts {FORGOTTEN} field name: 'Zuleica Esquecida', expected ''",
        f"warehouse fact_order_line: order k-4 (order_id o-6, account {FORGOTTEN}, lines "
        f"[('{P3}', 1)]) of forgotten account {FORGOTTEN} is gone",
        f"LEAK: forgotten account {FORGOTTEN}'s email is in clear in pg_dump",
        f"LEAK: forgotten account {FORGOTTEN}'s name is in clear in archive",
    ]


def test_a_run_that_forgot_nobody_proves_nothing_about_forgetting() -> None:
    ledger, observed = consistent()
    ledger.writes = [w for w in ledger.writes if w.kind != "forget"]
    del observed.writes_in_log["w-forget"]
    assert failures(ledger, observed)[FORGET_CHECK] == ["no forget was acknowledged"]


def _rec(partition: int, entry: str, event: object) -> object:
    from datetime import UTC, datetime

    from events.codec import RecordedEvent

    return RecordedEvent(
        entry_id=entry,
        partition=partition,
        id=entry,
        type=type(event).__name__,
        schema=1,
        aggregate="x",
        seq=1,
        at=datetime.now(UTC),
        actor="",
        correlation="",
        causation="",
        source="",
        event=event,  # type: ignore[arg-type]
    )


def test_a_saga_read_with_its_reserve_before_its_start_is_one_settled_saga() -> None:
    """The log is read partition by partition: a product's ``StockReserved`` may be read
    before the order's ``OrderBillingStarted``; it is still that saga (it was reported as
    "saga events without OrderBillingStarted" on the cluster fault run)."""
    from events.types import OrderBillingStarted, OrderLine, OrderPlaced, StockReserved
    from tests.faults.checks import SagaLog, check_sagas, saga_step

    line = OrderLine(product_id=P1, name="x", quantity=2, unit_price=100, line_total=200)
    sagas: dict[str, SagaLog] = {}
    for rec in (
        _rec(0, "1-0", StockReserved(product_id=P1, order_id="o", quantity=2, reserved_until=9)),
        _rec(
            1,
            "2-0",
            OrderBillingStarted(
                order_id="o",
                account_id=SHOPPER,
                lines=[line],
                total=200,
                reserved_until=9,
                place=True,
            ),
        ),
        _rec(
            1,
            "3-0",
            OrderPlaced(
                order_id="o",
                account_id=SHOPPER,
                lines=[line],
                total=200,
                reserved_until=9,
                reserved=True,
            ),
        ),
    ):
        saga_step(sagas, rec)  # type: ignore[arg-type]
    assert sagas["o"].entry == "p1/2-0" and sagas["o"].place and sagas["o"].settled()
    check = check_sagas(Ledger(), Observed(sagas=sagas))
    assert check.ok, check.report()


# -- stock deltas over HTTP, keyed creations -------------------------------------------------

DELTA_2 = "stock delta w-stock-2 (-2 p-3 by the seller, 2 attempt(s), told 200)"
WHY_P3 = "(initial 10 + restocked 0 + adjusted -2 - bill-now 1 - paid 0 - reserved 0)"


def test_a_stock_delta_applied_twice_is_duplicated_and_its_stock_is_off_in_every_view() -> None:
    """What the stock route without its key did: the retry after the lost answer moved the
    stock a second time, and answered with the second entry."""
    ledger, observed = consistent()
    observed.deltas_in_log["w-stock-2"].append(LoggedDelta(P3, -2, "p1/9-0", "e-32"))
    observed.audit_rows["e-32"] = 1
    ledger.stock_deltas[1].answer = '200 {"product_id":"p-3","position":"1-9-0"}'
    ledger.stock_deltas[1].position = "1-9-0"
    for stock in (observed.write_stock, observed.rm_stock):
        stock[P3] -= 2
    checks, counts = judge(ledger, observed, catch_up_s=10)
    assert counts["duplicated"] == 1
    assert {c.name: c.problems for c in checks if not c.ok} == {
        STOCK_DELTA_CHECK: [
            f"DUPLICATED: {DELTA_2} is in the log 2 times: p1/8-0, p1/9-0",
            f"{DELTA_2} answered position '1-9-0', its event is at p1/8-0",
            f"ANSWER CHANGED: {DELTA_2}: the answer lost was "
            """'200 {"product_id":"p-3","position":"1-8-0"}', the retry heard """
            """'200 {"product_id":"p-3","position":"1-9-0"}'""",
        ],
        STOCK_CHECK: [
            f"write side (Redis state) product {P3} (SKU-3) field stock: 5, expected 7 {WHY_P3}",
            f"read_models products product {P3} (SKU-3) field stock: 5, expected 7 {WHY_P3}",
        ],
    }


def test_a_stock_delta_the_ledger_counts_twice_fails_the_stock_check_in_every_view() -> None:
    """The ledger side of the same: two acknowledged deltas, one event and one move."""
    ledger, observed = consistent()
    ledger.stock_deltas.append(dataclasses.replace(ledger.stock_deltas[1], key="w-stock-4"))
    checks, counts = judge(ledger, observed, catch_up_s=10)
    assert counts["lost"] == 1
    why = "(initial 10 + restocked 0 + adjusted -4 - bill-now 1 - paid 0 - reserved 0)"
    assert {c.name: c.problems for c in checks if not c.ok} == {
        STOCK_DELTA_CHECK: [
            "LOST: stock delta w-stock-4 (-2 p-3 by the seller, 2 attempt(s), told 200) "
            "is not in the log"
        ],
        STOCK_CHECK: [
            f"write side (Redis state) product {P3} (SKU-3) field stock: 7, expected 5 {why}",
            f"read_models products product {P3} (SKU-3) field stock: 7, expected 5 {why}",
        ],
    }


def test_a_stock_delta_the_ledger_lacks_is_unknown_and_off_in_every_view() -> None:
    ledger, observed = consistent()
    del ledger.stock_deltas[0]
    why = "(initial 50 + restocked 10 + adjusted 0 - bill-now 1 - paid 2 - reserved 0)"
    assert failures(ledger, observed) == {
        STOCK_DELTA_CHECK: ["UNKNOWN: the log has ['p0/8-0'] under request 'w-stock-1'"],
        STOCK_CHECK: [
            f"write side (Redis state) product {P2} (SKU-2) field stock: 62, expected 57 {why}",
            f"read_models products product {P2} (SKU-2) field stock: 62, expected 57 {why}",
        ],
    }


def test_an_acknowledged_stock_delta_missing_from_the_log_is_lost() -> None:
    ledger, observed = consistent()
    del observed.deltas_in_log["w-stock-1"]
    for stock in (observed.write_stock, observed.rm_stock):
        stock[P2] -= 5
    checks, counts = judge(ledger, observed, catch_up_s=10)
    assert counts["lost"] == 1
    problems = {c.name: c.problems for c in checks if not c.ok}
    assert problems[STOCK_DELTA_CHECK] == [
        "LOST: stock delta w-stock-1 (+5 p-2 by the admin, 1 attempt(s), told 200) "
        "is not in the log"
    ]
    assert len(problems[STOCK_CHECK]) == 2


def test_a_refused_stock_delta_in_the_log_is_a_phantom_and_another_refusal_a_finding() -> None:
    ledger, observed = consistent()
    observed.deltas_in_log["w-stock-3"] = [LoggedDelta(P2, -999, "p0/9-0", "e-33")]
    ledger.stock_deltas.append(
        StockDelta("w-stock-5", P1, 3, "seller", 1, 404, "product-not-found", answer="404 {}")
    )
    problems = failures(ledger, observed)[STOCK_DELTA_CHECK]
    assert problems == [
        "PHANTOM: stock delta w-stock-3 (-999 p-2 by the admin, 1 attempt(s), told 409 "
        "insufficient-stock) was refused but is in the log (p0/9-0)",
        "REFUSED: stock delta w-stock-5 (+3 p-1 by the seller, 1 attempt(s), told 404 "
        "product-not-found): 404 {}",
    ]


def test_the_floor_for_a_decrease_counts_every_unit_asked_for_and_every_unanswered_decrease() -> (
    None
):
    ledger, _ = consistent()
    # P2: 50 + restock 10 + acknowledged +5; orders and checkouts ask 1 + 99 + 2 units.
    assert ledger.stock_floor(P2) == 50 + 10 + 5 - 1 - 99 - 2
    ledger.stock_deltas.append(StockDelta("w-stock-6", P2, -4, "admin"))  # not answered yet
    ledger.stock_deltas.append(StockDelta("w-stock-7", P2, 9, "admin"))  # may never apply
    assert ledger.stock_floor(P2) == 50 + 10 + 5 - 1 - 99 - 2 - 4


def test_a_keyed_retry_that_hears_already_done_did_not_replay() -> None:
    ledger, observed = consistent()
    product = ledger.writes[2]
    product.status, product.problem, product.result_id = 409, "duplicate-sku", None
    told = "request w-prod, keyed, 2 attempt(s), told 409 duplicate-sku"
    assert failures(ledger, observed)[WRITES_CHECK] == [
        f"NOT REPLAYED: product SKU-3 ({told}): a retry with its Idempotency-Key must get the "
        "first answer",
        f"PHANTOM: product SKU-3 ({told}) was refused but is in the log (p2/6-0)",
    ]


def test_a_keyed_creation_answered_another_id_or_position_than_the_log_is_named() -> None:
    ledger, observed = consistent()
    product = ledger.writes[2]
    product.result_id = product.detail["product_id"] = "p-9"
    product.position = "2-7-0"
    product.answer = '201 {"product_id":"p-9","position":"2-7-0"}'
    what = "product SKU-3 (request w-prod, keyed, 2 attempt(s), told 201)"
    assert failures(ledger, observed)[WRITES_CHECK] == [
        f"{what} field product_id: the log has '{P3}', expected 'p-9'",
        f"{what} answered position '2-7-0', its event is at p2/6-0",
        f"ANSWER CHANGED: {what}: the answer lost was {PRODUCT_ANSWER!r}, the retry heard "
        """'201 {"product_id":"p-9","position":"2-7-0"}'""",
    ]


def test_a_sku_created_twice_under_two_requests_is_duplicated() -> None:
    ledger, observed = consistent()
    observed.writes_in_log["w-other"] = [LoggedWrite("product", "SKU-3", "p2/9-0", "e-34")]
    assert failures(ledger, observed)[WRITES_CHECK] == [
        "UNKNOWN: the log has ['p2/9-0'] under request 'w-other'",
        "DUPLICATED: the log creates product SKU-3 2 times",
    ]


def test_an_unkeyed_category_whose_lost_answer_a_retry_hears_as_already_done_is_acknowledged() -> (
    None
):
    ledger, observed = consistent()
    category = ledger.writes[0]
    category.lost_answer = '201 {"slug":"cat-1","position":"0-6-0"}'
    category.attempts, category.unanswered = 2, 1
    category.status, category.problem = 409, "category-exists"
    assert category.acknowledged
    assert failures(ledger, observed) == {}
    category.keyed = True  # keyed, the same retry did not replay
    assert failures(ledger, observed)[WRITES_CHECK][0].startswith("NOT REPLAYED: category cat-1")


# -- sign-ups under the faults ----------------------------------------------------------------

SIGNUP = "signup n@example.com (request w-signup, keyed, 2 attempt(s), told 201)"


def test_a_sign_up_whose_retry_heard_duplicate_email_did_not_replay_and_is_a_phantom() -> None:
    """What the sign-up route without its key does: the first attempt created the account,
    its 201 was lost, and the retry hears the email taken."""
    ledger, observed = consistent()
    signup = ledger.writes[-1]
    signup.status, signup.problem, signup.result_id = 409, "duplicate-email", None
    signup.answer = f'409 {{"type":"{PROBLEMS}duplicate-email"}}'
    told = "request w-signup, keyed, 2 attempt(s), told 409 duplicate-email"
    assert failures(ledger, observed) == {
        WRITES_CHECK: [
            f"NOT REPLAYED: signup n@example.com ({told}): a retry with its Idempotency-Key "
            "must get the first answer",
            f"PHANTOM: signup n@example.com ({told}) was refused but is in the log (p3/9-0)",
        ]
    }


def test_a_sign_up_whose_retry_created_a_second_account_is_duplicated_and_answered_anew() -> None:
    ledger, observed = consistent()
    observed.writes_in_log["w-signup"].append(LoggedWrite("signup", "n-2", "p1/9-0", "e-41"))
    signup = ledger.writes[-1]
    signup.answer = '201 {"account_id":"n-2","position":"1-9-0"}'
    signup.result_id, signup.position = "n-2", "1-9-0"
    assert failures(ledger, observed)[WRITES_CHECK] == [
        f"DUPLICATED: {SIGNUP} is in the log 2 times: p3/9-0, p1/9-0",
        f"{SIGNUP}: the log has {NEWCOMER}",
        f"{SIGNUP} answered position '1-9-0', its event is at p3/9-0",
        f"ANSWER CHANGED: {SIGNUP}: the answer lost was {SIGNUP_ANSWER!r}, the retry heard "
        """'201 {"account_id":"n-2","position":"1-9-0"}'""",
    ]


def test_an_acknowledged_sign_up_missing_from_the_log_is_lost() -> None:
    ledger, observed = consistent()
    del observed.writes_in_log["w-signup"]
    checks, counts = judge(ledger, observed, catch_up_s=10)
    assert counts["lost"] == 1
    assert {c.name: c.problems for c in checks if not c.ok} == {
        WRITES_CHECK: [f"LOST: {SIGNUP} is not in the log"]
    }


def test_a_sign_up_that_cannot_log_in_or_logs_in_as_another_account_is_named() -> None:
    ledger, observed = consistent()
    ledger.newcomers = []
    ledger.refused_logins["n@example.com"] = '401 {"type":"invalid-credentials"}'
    assert failures(ledger, observed) == {
        SIGNUP_CHECK: [
            f"CANNOT LOG IN: {SIGNUP}: the login heard 401 "
            """{"type":"invalid-credentials"}"""
        ]
    }
    ledger.newcomers = [Customer("n-9", "n@example.com", "token")]
    assert failures(ledger, observed) == {
        SIGNUP_CHECK: [f"{SIGNUP} answered account {NEWCOMER}, its login is account n-9"]
    }


def test_a_sign_up_the_read_models_lack_or_hold_as_a_login_stub_is_named() -> None:
    ledger, observed = consistent()
    observed.rm_accounts[NEWCOMER] = {"version": 0, "orders_count": 0, "total_spent": 0}
    assert failures(ledger, observed) == {
        SIGNUP_CHECK: [
            f"read_models accounts {NEWCOMER} field email: None, expected 'n@example.com' "
            f"({SIGNUP})",
            f"read_models accounts {NEWCOMER} field role: None, expected 'customer' ({SIGNUP})",
        ]
    }


# -- refusals under the faults: stock past what there is, a reused key ------------------------

BEYOND = "stock delta w-stock-8 (-5044 p-1 by the admin, 1 attempt(s), told {told})"


def test_a_decrease_beyond_the_stock_that_was_applied_is_named_in_the_log_and_every_view() -> None:
    """What a stock route without its floor does: the decrease is taken, the stock negative."""
    ledger, observed = consistent()
    delta = ledger.stock_deltas[-1]
    delta.status, delta.problem, delta.answer = 200, "", '200 {"product_id":"p-1"}'
    observed.deltas_in_log["w-stock-8"] = [LoggedDelta(P1, -5044, "p0/9-0", "e-42")]
    for stock in (observed.write_stock, observed.rm_stock):
        stock[P1] -= 5044
    found = failures(ledger, observed)
    assert found[STOCK_DELTA_CHECK] == [
        f"NOT REFUSED: {BEYOND.format(told=200)} asked for more than the product can hold: "
        """200 {"product_id":"p-1"}""",
        f"PHANTOM: {BEYOND.format(told=200)} asked for more than the product can hold but is "
        "in the log (p0/9-0)",
    ]
    why = "(initial 50 + restocked 0 + adjusted 0 - bill-now 5 - paid 1 - reserved 0)"
    assert found[STOCK_CHECK] == [
        f"write side (Redis state) product {P1} (SKU-1) field stock: -5000, expected 44 {why}",
        f"read_models products product {P1} (SKU-1) field stock: -5000, expected 44 {why}",
    ]


def test_a_refusal_beyond_the_stock_must_name_the_delta_and_the_stock() -> None:
    ledger, observed = consistent()
    delta = ledger.stock_deltas[-1]
    delta.answer = f'409 {{"type":"{PROBLEMS}insufficient-stock","detail":"no"}}'
    told = BEYOND.format(told="409 insufficient-stock")
    assert failures(ledger, observed) == {
        STOCK_DELTA_CHECK: [
            f"{told}: the refusal names no delta and stock: {delta.answer}",
        ]
    }


def test_a_decrease_beyond_the_stock_refused_otherwise_is_not_refused_as_it_must_be() -> None:
    ledger, observed = consistent()
    delta = ledger.stock_deltas[-1]
    delta.status, delta.problem, delta.answer = 400, "validation-error", "400 {}"
    told = BEYOND.format(told="400 validation-error")
    assert failures(ledger, observed) == {
        STOCK_DELTA_CHECK: [
            f"NOT REFUSED: {told} asked for more than the product can hold: 400 {{}}",
        ]
    }


def test_the_ceiling_counts_every_restock_and_increase_sent_and_the_floor_no_beyond() -> None:
    ledger, _ = consistent()
    # P2: 50 + restock 10 + the +5 of w-stock-1 (the -999 refused does not lower a ceiling).
    assert ledger.stock_ceiling(P2) == 50 + 10 + 5
    ledger.unacked_restocks.append(Restock("r-2", P2, 7))  # Redis may have it
    ledger.stock_deltas.append(StockDelta("w-stock-9", P2, 9, "admin", status=503))
    assert ledger.stock_ceiling(P2) == 50 + 10 + 5 + 7 + 9
    floor = ledger.stock_floor(P2)
    ledger.stock_deltas.append(StockDelta("w-stock-10", P2, -(10**6), "admin", beyond=True))
    assert ledger.stock_floor(P2) == floor  # unanswered, yet a correct shop never takes it


REUSE_1 = (
    "stock delta reuse-stock-9 (the key of w-stock-1, delta +5 -> +6, 1 attempt(s), told {told})"
)


def test_a_reused_key_answered_with_the_first_answer_is_not_refused() -> None:
    """What a route that does not compare a replay with the request does: the reuse hears
    the first delta's 200."""
    ledger, observed = consistent()
    reuse = ledger.reuses[0]
    reuse.status, reuse.problem, reuse.at_fault = 200, "", ""
    reuse.media_type, reuse.answer = "application/json", '200 {"product_id":"p-2"}'
    assert failures(ledger, observed) == {
        REUSE_CHECK: [
            f"NOT REFUSED: {REUSE_1.format(told=200)} as application/json naming no field: "
            """200 {"product_id":"p-2"}"""
        ]
    }


def test_a_reused_key_refused_without_naming_the_header_is_not_refused_as_it_must_be() -> None:
    ledger, observed = consistent()
    reuse = ledger.reuses[1]
    reuse.at_fault = "email"
    problems = failures(ledger, observed)[REUSE_CHECK]
    assert problems == [
        "NOT REFUSED: sign-up reuse-signup (the key of w-signup, email o@example.com, 2 "
        "attempt(s), told 422 idempotency-key-reused) as application/problem+json naming "
        f"email: {REUSED_ANSWER[:160]}"
    ]


def test_a_reused_key_whose_request_appended_is_named_whatever_it_appended() -> None:
    """What a route that ignores the key does: the other delta is applied as a new one."""
    ledger, observed = consistent()
    reuse = ledger.reuses[0]
    reuse.status, reuse.problem, reuse.at_fault = 200, "", ""
    reuse.media_type, reuse.answer = "application/json", '200 {"product_id":"p-2"}'
    observed.appended_by["reuse-stock-9"] = ["p0/9-0 StockAdjusted"]
    observed.deltas_in_log["reuse-stock-9"] = [LoggedDelta(P2, 6, "p0/9-0", "e-43")]
    observed.audit_rows["e-43"] = 1
    for stock in (observed.write_stock, observed.rm_stock):
        stock[P2] += 6
    found = failures(ledger, observed)
    assert found[REUSE_CHECK][1] == (
        f"APPENDED: {REUSE_1.format(told=200)}: the log has ['p0/9-0 StockAdjusted']"
    )
    assert len(found[STOCK_CHECK]) == 2
    assert set(found) == {REUSE_CHECK, STOCK_CHECK}


def test_an_unanswered_reuse_that_appended_nothing_passes() -> None:
    ledger, observed = consistent()
    reuse = ledger.reuses[0]
    reuse.status, reuse.problem, reuse.answer = None, "", ""
    assert failures(ledger, observed) == {}
