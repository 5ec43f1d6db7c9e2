"""Exactly once under real faults: each process of the system is ``kill -9``'ed in turn and
PostgreSQL is cut while customers order and sign up over HTTP and stock is moved by hand;
then every acknowledged order, sign-up and stock delta must be in the log once and in every
view once, what was refused (stock past what there is, a reused Idempotency-Key) nowhere,
and every operator check must pass.

One run (the module fixture) feeds every test; each test is one promise. A failure names
the order, the view and the field. The run is made twice: on ``make run``'s single Redis
node (figures: ``.data/faults/latest.json``) and on a three-primary Redis Cluster whose
primaries are ``kill -9``'ed and restarted from their AOF under saga load
(``.data/faults/cluster.json``); a test of load the cluster run does not drive
(categories, sign-ups, forgets, the archive) is skipped there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.faults import conftest
from tests.faults.checks import (
    PAYMENT_CHECK,
    REUSE_CHECK,
    SAGA_CHECK,
    SIGNUP_CHECK,
    STOCK_CHECK,
    STOCK_DELTA_CHECK,
    WRITES_CHECK,
)
from tests.faults.scenario import Outcome, run
from workers.views import VIEWS

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]


@pytest.fixture(scope="module", params=["single", "cluster"])
async def outcome(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Outcome]:
    cluster = request.param == "cluster"
    result = await run(tmp_path_factory.mktemp(f"faults-{request.param}"), cluster=cluster)
    conftest._RAN.append(request.param)
    yield result


def _single_node_only(outcome: Outcome) -> None:
    if outcome.figures["cluster"]:
        pytest.skip("the cluster run drives no categories, sign-ups, forgets or archive runs")


def _require(outcome: Outcome, name: str) -> None:
    """Fail with the check's own diagnosis (which order, which view, which field)."""
    check = outcome.check(name)
    if check.ok:
        return
    exits = outcome.figures["unexpected_exits"]
    extra = f"\nunexpected exits: {exits}" if exits else ""
    pytest.fail(f"{check.report()}{extra}\nprocess logs: {outcome.logs}", pytrace=False)


def test_the_projector_catches_up_after_the_faults(outcome: Outcome) -> None:
    name = "projector caught up"
    _require(outcome, name)


def test_every_acknowledged_order_is_in_the_log_exactly_once(outcome: Outcome) -> None:
    assert outcome.ledger.acknowledged(), "the run acknowledged no order at all"
    name = "log: every acknowledged order exactly once"
    _require(outcome, name)


def test_every_acknowledged_checkout_is_in_the_log_exactly_once(outcome: Outcome) -> None:
    assert outcome.ledger.acknowledged_checkouts(), "the run acknowledged no checkout at all"
    _require(outcome, "log: every acknowledged checkout exactly once")


def test_paid_orders_are_paid_exactly_once_and_unpaid_ones_expire_exactly_once(
    outcome: Outcome,
) -> None:
    acked = outcome.ledger.acknowledged_checkouts()
    assert any(c.pay_status == 200 for c in acked), "no checkout was paid with a 200"
    assert any(not c.pay for c in acked), "no checkout was left unpaid to expire"
    _require(outcome, PAYMENT_CHECK)


def test_stock_and_reserved_on_the_write_side_and_in_the_read_models_add_up(
    outcome: Outcome,
) -> None:
    _require(outcome, STOCK_CHECK)


def test_every_acknowledged_stock_delta_moved_the_stock_once_and_a_retry_heard_the_first_answer(
    outcome: Outcome,
) -> None:
    """``POST /products/{id}/stock`` with an Idempotency-Key, up and down, retried across
    the kills and with answers lost on purpose: each acknowledged delta is in the log once,
    where its answer said (the stock check holds every view to them)."""
    _require(outcome, STOCK_DELTA_CHECK)
    acked = outcome.ledger.acknowledged_deltas()
    assert any(d.delta > 0 for d in acked), "no stock increase was acknowledged"
    assert any(d.delta < 0 for d in acked), "no stock decrease was acknowledged"
    assert any(d.lost_answer is not None for d in acked), "no answer of a delta was lost"
    retried = [d for d in acked if d.retried_on_fault]
    assert retried, "no stock delta was retried after a fault: the faults missed them"
    if not outcome.figures["cluster"]:
        actors = {d.actor for d in acked}
        assert actors == {"admin", "seller"}, f"stock moved by {actors} only"


def test_a_stock_decrease_past_any_stock_is_refused_409_and_moves_nothing(
    outcome: Outcome,
) -> None:
    """Decreases past the most a product can hold, under the faults: each answered 409
    ``insufficient-stock`` naming the delta, none in the log, and the stock in every view
    is still initial + restocks + acknowledged deltas - sold."""
    _require(outcome, STOCK_DELTA_CHECK)
    _require(outcome, STOCK_CHECK)
    beyond = [d for d in outcome.ledger.stock_deltas if d.beyond]
    assert any(d.refused for d in beyond), f"no delta beyond the stock was refused: {beyond}"


def test_a_reused_idempotency_key_is_refused_422_and_appends_nothing(outcome: Outcome) -> None:
    """An acknowledged stock delta's key (and on one node a sign-up's) sent again for
    another body, under the faults: 422 ``idempotency-key-reused`` naming Idempotency-Key,
    and no event carries the request."""
    _require(outcome, REUSE_CHECK)
    refused = {r.kind for r in outcome.ledger.reuses if r.refused}
    want = {"stock delta"} if outcome.figures["cluster"] else {"stock delta", "sign-up"}
    assert refused == want, outcome.figures["reuses_by_final_status"]


def test_every_acknowledged_sign_up_is_one_account_that_logs_in_and_is_in_the_read_models(
    outcome: Outcome,
) -> None:
    """``POST /accounts`` with an Idempotency-Key under the faults, some 201s lost on
    purpose: one ``AccountCreated`` each, of the account its answer named, heard again
    byte for byte (the writes check); that account logs in and has its read-model document."""
    _single_node_only(outcome)
    _require(outcome, WRITES_CHECK)
    _require(outcome, SIGNUP_CHECK)
    signups = outcome.ledger.acknowledged_writes("signup")
    assert signups, "no sign-up was acknowledged"
    assert any(w.lost_answer for w in signups), "no sign-up's answer was lost and heard again"


def test_read_models_hold_each_acknowledged_order_and_the_account_totals(outcome: Outcome) -> None:
    name = "read_models: orders and account counters = acknowledged orders"
    _require(outcome, name)


def test_warehouse_holds_each_acknowledged_order_line_once(outcome: Outcome) -> None:
    name = "warehouse: order lines and units sold = acknowledged orders"
    _require(outcome, name)


def test_audit_log_holds_each_acknowledged_event_once(outcome: Outcome) -> None:
    name = "audit: one row per acknowledged event"
    _require(outcome, name)


@pytest.mark.parametrize("view", [*VIEWS, "state"])
def test_streamshop_verify_passes(outcome: Outcome, view: str) -> None:
    name = f"streamshop verify {view}"
    _require(outcome, name)


def test_streamshop_audit_verify_passes(outcome: Outcome) -> None:
    name = "streamshop audit verify"
    _require(outcome, name)


def test_no_dead_letter_is_left(outcome: Outcome) -> None:
    name = "no dead letter left"
    _require(outcome, name)


def test_every_fault_of_the_schedule_was_injected(outcome: Outcome) -> None:
    from tests.faults.scenario import CLUSTER_SCHEDULE, SCHEDULE

    schedule = CLUSTER_SCHEDULE if outcome.figures["cluster"] else SCHEDULE
    assert outcome.figures["faults_injected"] == len(schedule), outcome.figures["faults"]


def test_no_saga_is_left_half_done_after_its_deadline(outcome: Outcome) -> None:
    """Cluster only: orders and checkouts spanning slots ran as sagas, and after the load
    and the reservations' deadlines each ended once with its reservations taken, released
    or handed to the order (the stock check then holds the counters to that)."""
    if not outcome.figures["cluster"]:
        pytest.skip("no saga on one node: every order is one atomic append")
    sagas = outcome.figures["sagas"]
    assert any(k.startswith("billing") for k in sagas), f"no billing saga ran: {sagas}"
    assert any(k.startswith("checkout") for k in sagas), f"no checkout saga ran: {sagas}"
    _require(outcome, SAGA_CHECK)


def test_the_archive_killed_under_load_loses_and_duplicates_nothing(outcome: Outcome) -> None:
    from tests.faults.checks import ARCHIVE_CHECK

    _single_node_only(outcome)
    _require(outcome, ARCHIVE_CHECK)


def test_every_acknowledged_category_seller_product_forget_and_sign_up_is_in_the_log_once(
    outcome: Outcome,
) -> None:
    _single_node_only(outcome)
    _require(outcome, WRITES_CHECK)  # first: a keyed retry refused is its finding, named there
    acked = {w.kind for w in outcome.ledger.writes if w.acknowledged}
    kinds = {"category", "seller", "product", "forget", "signup"}
    assert acked == kinds, outcome.figures["writes_sent"]
    retried = [w for w in outcome.ledger.writes if w.retried_on_fault]
    assert retried, "no write was retried after a fault: the faults missed them"
    replayed = {w.kind for w in outcome.ledger.writes if w.keyed and w.lost_answer}
    assert replayed == kinds - {"forget"}, f"keyed answers lost: {replayed}"
    unkeyed = [w for w in outcome.ledger.writes if w.kind == "category" and w.done_on_retry]
    assert unkeyed, "no unkeyed category's retry heard 'already done'"


def test_forgotten_customers_are_forgotten_everywhere_and_their_orders_stay(
    outcome: Outcome,
) -> None:
    from tests.faults.checks import FORGET_CHECK

    _single_node_only(outcome)
    _require(outcome, FORGET_CHECK)
