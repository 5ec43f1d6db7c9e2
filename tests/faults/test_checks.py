"""The fault suite's judges on plain data: a consistent run passes every check, and each kind
of damage is caught and named (order, view, field). Pure, fast, part of ``make test``."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from tests.faults.checks import LoggedOrder, Observed, judge
from tests.faults.load import Customer, Ledger, Order, Product, Restock

P1, P2, ACCOUNT = "p-1", "p-2", "a-1"


def consistent() -> tuple[Ledger, Observed]:
    """Two acknowledged orders, one refused, one restock, and views that agree with them."""
    ledger = Ledger(
        products={P1: Product(P1, "SKU-1", 100, 50), P2: Product(P2, "SKU-2", 200, 50)},
        customers=[Customer(ACCOUNT, "a@example.com", "token")],
        orders=[
            Order("k-1", ACCOUNT, [(P1, 2), (P2, 1)], status=201, order_id="o-1", total=400),
            Order("k-2", ACCOUNT, [(P1, 3)], status=201, order_id="o-2", total=300),
            Order("k-3", ACCOUNT, [(P2, 99)], status=409),
        ],
        restocks=[Restock("r-1", P2, 10)],
    )
    observed = Observed(
        caught_up_s=0.5,
        orders_in_log=[
            LoggedOrder("p0/1-0", "e-1", "k-1", "o-1", ACCOUNT, [(P1, 2), (P2, 1)], 400),
            LoggedOrder("p1/2-0", "e-2", "k-2", "o-2", ACCOUNT, [(P1, 3)], 300),
        ],
        restocks_in_log=Counter({"r-1": 1}),
        write_stock={P1: 45, P2: 59},
        versions={"read_models": "", "audit": "", "warehouse": ""},
        rm_stock={P1: 45, P2: 59},
        rm_orders={
            "o-1": {
                "account_id": ACCOUNT,
                "lines": [{"product_id": P1, "quantity": 2}, {"product_id": P2, "quantity": 1}],
            },
            "o-2": {"account_id": ACCOUNT, "lines": [{"product_id": P1, "quantity": 3}]},
        },
        rm_accounts={ACCOUNT: {"orders_count": 2, "total_spent": 700}},
        dw_lines={"o-1": [(0, P1, 2), (1, P2, 1)], "o-2": [(0, P1, 3)]},
        audit_rows=Counter({"e-1": 1, "e-2": 1, "r-1": 1}),
        verify={"read_models": (0, "OK"), "audit": (0, "OK"), "warehouse": (0, "OK")},
        audit_verify=(0, "audit log OK"),
        dlq_list=(0, ""),
        dlq_streams={},
    )
    return ledger, observed


def failures(ledger: Ledger, observed: Observed) -> dict[str, list[str]]:
    checks, _ = judge(ledger, observed, catch_up_s=10)
    return {c.name: c.problems for c in checks if not c.ok}


def test_a_consistent_run_passes_every_check() -> None:
    ledger, observed = consistent()
    checks, counts = judge(ledger, observed, catch_up_s=10)
    assert [c.report() for c in checks if not c.ok] == []
    assert counts == {"lost": 0, "duplicated": 0}


def test_an_acknowledged_order_missing_from_the_log_is_lost() -> None:
    ledger, observed = consistent()
    observed.orders_in_log = observed.orders_in_log[:1]
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
        "stock: write side and read models = initial + restocks - acknowledged": [
            f"read_models products product {P1} (SKU-1) field stock: 48, expected 45 "
            "(initial 50 + restocked 0 - acknowledged 5)"
        ]
    }


def test_write_side_stock_is_checked_too() -> None:
    ledger, observed = consistent()
    observed.write_stock[P2] = 60
    problems = failures(ledger, observed)[
        "stock: write side and read models = initial + restocks - acknowledged"
    ]
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
    assert problems[1].startswith(f"warehouse product {P2} (SKU-2) units sold: 0, expected 1")


def test_an_audit_row_missing_for_an_acknowledged_order_is_named() -> None:
    ledger, observed = consistent()
    del observed.audit_rows["e-2"]
    problems = failures(ledger, observed)["audit: one row per acknowledged event"]
    assert problems == [
        f"audit events: order k-2 (order_id o-2, account {ACCOUNT}, lines [('{P1}', 3)]) "
        "event e-2 has 0 rows"
    ]


@pytest.mark.parametrize("view", ["read_models", "audit", "warehouse"])
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
