"""The load a fault run drives: customers ordering over HTTP, a producer restocking through
the ingress gateway, an admin and sellers writing the catalogue and moving stock by hand,
new customers signing up, all behaving as well-mannered clients do.

An order, a checkout, a stock delta and a keyed creation are retried with the same
``Idempotency-Key`` (and the same ``X-Request-ID``, which becomes the event's
``correlation``, so the log can be matched to the client's ledger) after a connection
error, a timeout, a 5xx or a 409 *concurrent modification* — until they get a definite
answer: 2xx (acknowledged) or any other 4xx (refused). Some answers are lost on purpose: the
client drops a 2xx it got and asks again, as after a connection cut on the way back, so a
retry of a request that took effect happens on every run, not only when a kill lands
between the append and the answer. A restock is ``XADD``'ed again with the same event id
until Redis acknowledges it (the producer contract of ``docs/producers.md``). Everything
acknowledged is in the :class:`Ledger`.

A few requests are wrong on purpose, as a careless client's would be, and must be refused
with nothing appended: a stock decrease past anything the product can hold (409
``insufficient-stock``), and a request that reuses an earlier request's ``Idempotency-Key``
for another body (422 ``idempotency-key-reused``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.faults.harness import System

PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Product:
    product_id: str
    sku: str
    price: int
    initial_stock: int


@dataclass(frozen=True)
class Customer:
    account_id: str
    email: str
    token: str


@dataclass
class Order:
    """One order as the client sent it (``key``) and what it finally heard back."""

    key: str
    account_id: str
    lines: list[tuple[str, int]]
    """(product id, quantity) as requested."""
    attempts: int = 0
    status: int | None = None
    """The definite answer's status; ``None`` while unresolved."""
    order_id: str | None = None
    total: int | None = None
    answer: str = ""
    errors: list[str] = field(default_factory=list)
    """Why attempts were retried (first few)."""

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Checkout:
    """One lifecycle order: a cart filled, checked out (``key``) and, unless ``pay`` is
    False (left to expire), paid with ``tok_approved`` (``pay_key`` as its request id)."""

    key: str
    account_id: str
    lines: list[tuple[str, int]]
    pay: bool
    attempts: int = 0
    status: int | None = None
    """The checkout's definite answer; ``None`` while unresolved."""
    order_id: str | None = None
    total: int | None = None
    reserved_until: int | None = None
    answer: str = ""
    pay_attempts: int = 0
    pay_status: int | None = None
    """The payment's definite answer (200 paid, 409 with ``pay_current`` …)."""
    pay_current: str = ""
    """``current_status`` of a definite 409 (``paid`` after a lost 200, ``expired``)."""
    errors: list[str] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def pay_key(self) -> str:
        return f"{self.key}-pay"


@dataclass(frozen=True)
class Restock:
    event_id: str
    product_id: str
    delta: int


ALREADY_DONE = {
    "category": "category-exists",
    "seller": "duplicate-email",
    "product": "duplicate-sku",
    "forget": "account-not-found",
    "signup": "duplicate-email",
}
"""Per kind of write, the problem type a retry *without* an ``Idempotency-Key`` hears when an
earlier attempt, whose answer was lost, took effect: the slug, the email, the SKU or the
forgotten account is then what makes the retry safe. The load sends the forget (which takes
no key) and every second category unkeyed, a client that sends no key, for contrast; its
other creations carry a key, and their retry must get the first answer (201 and the first
id), never this."""


ANSWERED_ID = {"seller": "seller_id", "product": "product_id", "signup": "account_id"}
"""Per kind of write, the member of its 2xx that names what it created."""

LOST_ON_PURPOSE = "answer lost on purpose"
"""What an attempt whose 2xx the client dropped (to ask again) counts as among its retries."""


@dataclass
class Write:
    """One admin or seller write (category, seller, product, forget) or an anonymous
    sign-up, sent with one ``X-Request-ID`` (``key``, which becomes its event's
    ``correlation``) until a definite answer; ``keyed``: with ``Idempotency-Key: <key>`` too."""

    kind: str
    key: str
    subject: str
    """The slug, the seller's or the new customer's email, the SKU, or the account id
    forgotten."""
    detail: dict[str, str] = field(default_factory=dict)
    """What the event must carry besides (a product's ``category`` and ``seller_id``, and
    once answered its ``product_id``)."""
    keyed: bool = False
    attempts: int = 0
    unanswered: int = 0
    """Attempts that got no definite answer (connection error, timeout, 5xx, an answer
    lost on purpose)."""
    status: int | None = None
    problem: str = ""
    """The definite answer's problem type (its last path segment), if any."""
    result_id: str | None = None
    """The seller, product or account id answered (``None`` when a retry heard "already
    done")."""
    answer: str = ""
    """The definite answer, status and body (:func:`heard`)."""
    lost_answer: str | None = None
    """The 2xx the client dropped on purpose before asking again: a keyed retry's answer
    must be the same bytes."""
    position: str = ""
    """The position a 2xx named: the entry of the write's event."""
    errors: list[str] = field(default_factory=list)

    @property
    def retried_on_fault(self) -> bool:
        """Sent more than once besides an answer lost on purpose."""
        return self.attempts > 1 + (self.lost_answer is not None)

    @property
    def done_on_retry(self) -> bool:
        """Unkeyed only: a retry heard "already done" after an attempt without an answer,
        so that attempt took effect. A keyed retry must replay the first answer instead."""
        return not self.keyed and self.unanswered > 0 and self.problem == ALREADY_DONE[self.kind]

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and (200 <= self.status < 300 or self.done_on_retry)


@dataclass
class StockDelta:
    """One ``POST /products/{id}/stock`` by whoever may (the admin; a seller for its own
    products), sent with ``Idempotency-Key`` and ``X-Request-ID`` ``key`` (its
    ``StockAdjusted``'s ``correlation``) until a definite answer."""

    key: str
    product_id: str
    delta: int
    actor: str
    """``admin`` or ``seller`` (the stored key is scoped per actor)."""
    attempts: int = 0
    status: int | None = None
    problem: str = ""
    answer: str = ""
    lost_answer: str | None = None
    """As :attr:`Write.lost_answer`."""
    position: str = ""
    beyond: bool = False
    """Sent to be refused: a decrease past the most the product can hold
    (:meth:`Ledger.stock_ceiling`), which a correct shop answers 409 ``insufficient-stock``."""
    errors: list[str] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retried_on_fault(self) -> bool:
        """Sent more than once besides an answer lost on purpose."""
        return self.attempts > 1 + (self.lost_answer is not None)

    @property
    def refused(self) -> bool:
        """A definite refusal a valid delta may get (it would take the stock below zero),
        and the one a delta :attr:`beyond` the stock must get."""
        return self.status == 409 and self.problem == "insufficient-stock"


REUSED = "idempotency-key-reused"
"""The problem type of a request whose ``Idempotency-Key`` an earlier, other request holds."""


@dataclass
class Reuse:
    """A request sent on purpose with the ``Idempotency-Key`` of an earlier acknowledged one
    (``key``) but another body, under an ``X-Request-ID`` of its own (``request_id``, the
    ``correlation`` of anything it appended), until a definite answer. It must be refused,
    422 ``idempotency-key-reused`` as problem+json naming ``Idempotency-Key``, and append
    nothing."""

    kind: str
    """``stock delta`` or ``sign-up``."""
    key: str
    request_id: str
    change: str
    """What differs from the request that holds the key (``delta +5 -> +6``, the email)."""
    attempts: int = 0
    status: int | None = None
    problem: str = ""
    at_fault: str = ""
    """The answer's ``field`` member (the input at fault), if it is a problem."""
    media_type: str = ""
    answer: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return (
            self.status == 422
            and self.problem == REUSED
            and self.at_fault == "Idempotency-Key"
            and self.media_type == "application/problem+json"
        )


@dataclass
class ArchiveRuns:
    """What the operator's ``streamshop archive`` runs were told (exit codes, figures)."""

    runs: int = 0
    completed: int = 0
    """Runs that exited 0."""
    entries: int = 0
    """Entries archived, as the completed runs reported them."""
    segments: int = 0
    kills: list[str] = field(default_factory=list)
    """Per ``kill -9``: the point aimed at, when, and what it left (mid-segment, committed
    but not trimmed, between segments)."""
    missed_kills: list[str] = field(default_factory=list)
    """Runs that ended before the point they were to be killed at."""
    refused: dict[str, int] = field(default_factory=dict)
    """Exit 3 by reason (the lock a killed run left, a consumer group still needing the log)."""
    errors: list[str] = field(default_factory=list)
    """Other exits (a store down mid-run), with the last line of output."""
    final: int | None = None
    """Exit code of the run after the load (0: it completed)."""
    keep: int = 0


@dataclass
class Ledger:
    """What the clients were told: the truth the views are checked against."""

    products: dict[str, Product] = field(default_factory=dict)
    customers: list[Customer] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    shoppers: list[Customer] = field(default_factory=list)
    """The lifecycle customers (one cart each, so one client each)."""
    checkouts: list[Checkout] = field(default_factory=list)
    restocks: list[Restock] = field(default_factory=list)
    unacked_restocks: list[Restock] = field(default_factory=list)
    restock_retries: int = 0
    archive: ArchiveRuns = field(default_factory=ArchiveRuns)
    writes: list[Write] = field(default_factory=list)
    """Categories, sellers, products and forgets written during the load."""
    forgettable: list[Customer] = field(default_factory=list)
    """Customers who order a few times, then are forgotten by an admin under the load."""
    people: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Account id → (email, name) of every customer, to scan for after a forget."""
    stock_deltas: list[StockDelta] = field(default_factory=list)
    """Stock moved by hand over HTTP during the load."""
    reuses: list[Reuse] = field(default_factory=list)
    """Requests that reused an earlier one's Idempotency-Key for another body."""
    newcomers: list[Customer] = field(default_factory=list)
    """Customers who signed up under the faults and logged in after the load (their
    account id as the login answered it)."""
    refused_logins: dict[str, str] = field(default_factory=dict)
    """Email of an acknowledged sign-up → the answer its login heard instead of 200."""

    def acknowledged_writes(self, kind: str) -> list[Write]:
        return [w for w in self.writes if w.kind == kind and w.acknowledged]

    def forgotten(self) -> list[str]:
        """Account ids whose forget was acknowledged."""
        return [w.subject for w in self.acknowledged_writes("forget")]

    def acknowledged(self) -> list[Order]:
        return [o for o in self.orders if o.acknowledged]

    def sold(self) -> dict[str, int]:
        """Product → quantity of acknowledged orders."""
        sold = dict.fromkeys(self.products, 0)
        for order in self.acknowledged():
            for product_id, quantity in order.lines:
                sold[product_id] += quantity
        return sold

    def restocked(self) -> dict[str, int]:
        """Product → units the ingress restocks Redis acknowledged added."""
        added = dict.fromkeys(self.products, 0)
        for restock in self.restocks:
            added[restock.product_id] += restock.delta
        return added

    def acknowledged_deltas(self) -> list[StockDelta]:
        return [d for d in self.stock_deltas if d.acknowledged]

    def adjusted(self) -> dict[str, int]:
        """Product → the sum of its acknowledged stock deltas (a refused one moved nothing,
        nor does one :attr:`~StockDelta.beyond` the stock: a correct shop refuses it, so one
        taken shows in every view's stock)."""
        moved = dict.fromkeys(self.products, 0)
        for d in self.acknowledged_deltas():
            moved[d.product_id] += 0 if d.beyond else d.delta
        return moved

    def expected_stock(
        self, paid: dict[str, int] | None = None, held: dict[str, int] | None = None
    ) -> dict[str, int]:
        """initial + restocks + stock deltas - bill-now - ``paid`` - ``held`` (still
        reserved) per product."""
        sold, added, moved = self.sold(), self.restocked(), self.adjusted()
        paid, held = paid or {}, held or {}
        return {
            pid: p.initial_stock
            + added[pid]
            + moved[pid]
            - sold[pid]
            - paid.get(pid, 0)
            - held.get(pid, 0)
            for pid, p in self.products.items()
        }

    def stock_floor(self, product_id: str) -> int:
        """The least the product's stock can be now, whatever the requests not answered yet
        do: initial + acknowledged restocks and deltas, less every unit an order or checkout
        asked for (answered or not) and every decrease not answered. A decrease within it
        cannot be refused."""
        floor = self.products[product_id].initial_stock + sum(
            r.delta for r in self.restocks if r.product_id == product_id
        )
        for d in self.stock_deltas:
            # One beyond the stock moves nothing in a correct shop (else the checks say so).
            if d.product_id == product_id and not d.beyond and (d.acknowledged or d.status is None):
                floor += d.delta if d.acknowledged else min(d.delta, 0)
        for request in (*self.orders, *self.checkouts):
            floor -= sum(q for pid, q in request.lines if pid == product_id)
        return floor

    def stock_ceiling(self, product_id: str) -> int:
        """The most the product's stock can be now, whatever the requests not answered yet
        do: initial + every restock sent (acknowledged or not) + every increase sent
        (answered or not); orders and checkouts only take from it. A decrease past it,
        plus what one restock in flight adds (at most 20), must be refused."""
        ceiling = self.products[product_id].initial_stock
        for r in (*self.restocks, *self.unacked_restocks):
            ceiling += r.delta if r.product_id == product_id else 0
        for d in self.stock_deltas:
            ceiling += d.delta if d.product_id == product_id and d.delta > 0 else 0
        return ceiling

    def acknowledged_checkouts(self) -> list[Checkout]:
        return [c for c in self.checkouts if c.acknowledged]


class Shop:
    """Sets the shop up over HTTP and the CLI, then drives the load."""

    def __init__(self, system: System, ledger: Ledger, seed: int, min_lines: int = 1) -> None:
        self.system = system
        self.min_lines = min_lines
        """Fewest products per bill-now order (2 on the cluster run: lines in other
        partitions than the order, so each order is a saga)."""
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.http = httpx.AsyncClient(base_url=system.api_url, timeout=httpx.Timeout(15.0))
        self.stop = asyncio.Event()
        self._checkouts = 0
        self.in_flight: Counter[str] = Counter()
        """Requests in flight right now by kind (``payment``; ``write``: a category, seller,
        product or forget; ``stock``): the schedule kills the API during one."""
        self.admin_token = ""
        self._requests: dict[str, tuple[str, str, Any, str]] = {}
        """A write's key → (method, url, body, token), to send it again in :meth:`resolve`."""
        self.stock_tokens: dict[str, tuple[str, str]] = {}
        """Product id → (actor, token) of who moves its stock: the admin, or its seller."""

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- set-up (no faults yet: a failure here is a harness error) ------------------------

    async def setup(self, customers: int, products: int, stock: int, shoppers: int = 0) -> None:
        email = f"admin-{self.system.run_id}@example.com"
        code, out = await self.system.streamshop(
            "create-admin", "--email", email, "--password", PASSWORD
        )
        if code != 0:
            raise RuntimeError(f"create-admin failed ({code}): {out}")
        admin = self.admin_token = await self._login(email)
        for n in range(products):
            sku = f"FLT-{self.system.run_id}-{n}"
            price = 100 * (n + 1) + 90
            resp = await self.http.post(
                "/products",
                json={"sku": sku, "name": f"Produto {n}", "price": price, "stock": stock},
                headers={"Authorization": f"Bearer {admin}"},
            )
            if resp.status_code != 201:
                raise RuntimeError(f"create product {sku}: {resp.status_code} {resp.text}")
            pid = resp.json()["product_id"]
            self.ledger.products[pid] = Product(pid, sku, price, stock)
            self.stock_tokens[pid] = ("admin", admin)
        for n in range(customers):
            email = f"c{n}-{self.system.run_id}@example.com"
            resp = await self.http.post(
                "/accounts", json={"name": f"Cliente {n}", "email": email, "password": PASSWORD}
            )
            if resp.status_code != 201:
                raise RuntimeError(f"sign-up {email}: {resp.status_code} {resp.text}")
            account_id = resp.json()["account_id"]
            self.ledger.customers.append(Customer(account_id, email, await self._login(email)))
        for n in range(shoppers):
            email = f"s{n}-{self.system.run_id}@example.com"
            resp = await self.http.post(
                "/accounts", json={"name": f"Comprador {n}", "email": email, "password": PASSWORD}
            )
            if resp.status_code != 201:
                raise RuntimeError(f"sign-up {email}: {resp.status_code} {resp.text}")
            account_id = resp.json()["account_id"]
            self.ledger.shoppers.append(Customer(account_id, email, await self._login(email)))

    async def add_forgettable(self, n: int) -> None:
        """Sign up ``n`` customers with names and emails found nowhere else (so a scan for
        them after their forget cannot be fooled by anyone else's data)."""
        for i in range(n):
            email = f"esquecida{i}.{self.system.run_id}@example.com"
            name = f"Zuleica Esquecida {i} {self.system.run_id}"
            resp = await self.http.post(
                "/accounts", json={"name": name, "email": email, "password": PASSWORD}
            )
            if resp.status_code != 201:
                raise RuntimeError(f"sign-up {email}: {resp.status_code} {resp.text}")
            account_id = resp.json()["account_id"]
            self.ledger.forgettable.append(Customer(account_id, email, await self._login(email)))
            self.ledger.people[account_id] = (email, name)

    async def _login(self, email: str) -> str:
        resp = await self.http.post("/auth/login", json={"email": email, "password": PASSWORD})
        if resp.status_code != 200:
            raise RuntimeError(f"login {email}: {resp.status_code} {resp.text}")
        return str(resp.json()["access_token"])

    # -- orders ---------------------------------------------------------------------------

    def new_order(self, customer: Customer) -> Order:
        chosen = self.rng.sample(sorted(self.ledger.products), self.rng.randint(self.min_lines, 3))
        lines = [(pid, self.rng.randint(1, 3)) for pid in chosen]
        order = Order(
            key=f"flt-{self.system.run_id}-{len(self.ledger.orders)}",
            account_id=customer.account_id,
            lines=lines,
        )
        self.ledger.orders.append(order)
        return order

    async def place(self, order: Order, token: str, deadline_s: float) -> None:
        """Send ``order`` until a definite answer or ``deadline_s``; then it stays unresolved."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        headers = {
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": order.key,
            "X-Request-ID": order.key,
        }
        body = {"lines": [{"product_id": p, "quantity": q} for p, q in order.lines]}
        delay = 0.05
        while True:
            order.attempts += 1
            why = ""
            try:
                resp = await self.http.post("/orders", json=body, headers=headers)
            except httpx.TransportError as exc:
                why = f"{type(exc).__name__}"
            else:
                if 200 <= resp.status_code < 300:
                    data = resp.json()
                    order.status, order.order_id = resp.status_code, data["order_id"]
                    order.total = data["total"]
                    return
                retry = resp.status_code >= 500 or _concurrent_modification(resp)
                if not retry:
                    order.status, order.answer = resp.status_code, resp.text[:300]
                    return
                why = f"{resp.status_code} {resp.text[:120]}"
            if len(order.errors) < 5:
                order.errors.append(why)
            if loop.time() + delay > deadline:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def customer_loop(self, customer: Customer, pause_s: float, deadline_s: float) -> None:
        while not self.stop.is_set():
            await self.place(self.new_order(customer), customer.token, deadline_s)
            await asyncio.sleep(pause_s)

    async def resolve(self, deadline_s: float) -> None:
        """Send every unresolved order, checkout, payment, write, stock delta and reused key
        again (same key) now that everything is up."""
        everyone = self.ledger.customers + self.ledger.shoppers + self.ledger.forgettable
        tokens = {c.account_id: c.token for c in everyone}
        pending = [o for o in self.ledger.orders if o.status is None]
        await asyncio.gather(*(self.place(o, tokens[o.account_id], deadline_s) for o in pending))
        waiting = [c for c in self.ledger.checkouts if c.status is None]
        await asyncio.gather(
            *(self.check_out(c, tokens[c.account_id], deadline_s) for c in waiting)
        )
        unpaid = [
            c for c in self.ledger.checkouts if c.pay and c.acknowledged and c.pay_status is None
        ]
        await asyncio.gather(*(self.pay(c, tokens[c.account_id], deadline_s) for c in unpaid))
        for w in [w for w in self.ledger.writes if w.status is None]:
            await self.write(w, *self._requests[w.key], deadline_s)
        for d in [d for d in self.ledger.stock_deltas if d.status is None]:
            await self.adjust(d, self.stock_tokens[d.product_id][1], deadline_s)
        for r in [r for r in self.ledger.reuses if r.status is None]:
            _, url, body, token = self._requests[r.request_id]
            await self.reuse(r, url, body, token, deadline_s)
        client = self.system.redis(socket_timeout=5)
        stream = self.system.settings.redis.keys.ingest("faults")
        try:
            for restock in list(self.ledger.unacked_restocks):
                if await self._publish(client, stream, restock, deadline_s):
                    self.ledger.unacked_restocks.remove(restock)
                    self.ledger.restocks.append(restock)
        finally:
            await client.aclose()

    # -- categories, sellers, their products; forgetting customers -----------------------

    async def write(
        self,
        w: Write,
        method: str,
        url: str,
        body: Any,
        token: str,
        deadline_s: float,
        lose_answer: bool = False,
    ) -> httpx.Response | None:
        """Send ``w`` (same ``X-Request-ID``, and if keyed ``Idempotency-Key``, every time)
        until a definite answer or the deadline; the answer (``None``: none). ``token``
        ``""``: anonymous (a sign-up). ``lose_answer``: drop a first 2xx and ask again
        (:meth:`_deliver`)."""
        if w not in self.ledger.writes:
            self.ledger.writes.append(w)
        self._requests[w.key] = (method, url, body, token)
        deadline = asyncio.get_running_loop().time() + deadline_s
        headers = {"X-Request-ID": w.key} | _auth(token)
        if w.keyed:
            headers["Idempotency-Key"] = w.key
        resp, why, lost = await self._deliver(
            method, url, body, headers, deadline, busy="write", lose_answer=lose_answer
        )
        if lost is not None:
            w.lost_answer = lost
        w.attempts += len(why) + (resp is not None)
        w.unanswered += sum(1 for y in why if not y.startswith("409"))
        w.errors += why[: max(0, 5 - len(w.errors))]
        if resp is None:
            return None
        w.status, w.answer = resp.status_code, heard(resp)
        if resp.status_code >= 300:
            w.problem = _problem(resp)
        else:
            w.position = _position(resp)
            if w.kind in ANSWERED_ID:
                w.result_id = str(resp.json()[ANSWERED_ID[w.kind]])
        return resp

    async def catalog_loop(
        self, rounds: int, categories: int, stock: int, pause_s: float, deadline_s: float
    ) -> None:
        """Per round, as the faults go on: an admin creates ``categories`` categories and a
        seller; the seller logs in and creates one product in each category. Every creation
        loses its first 2xx on purpose and asks again: a keyed one (every product and seller,
        every first category) must hear the first answer again, the unkeyed category
        "already done". An acknowledged product whose id is known joins the catalogue the
        customers order from, and its seller then moves its stock too."""
        run = self.system.run_id
        for r in range(rounds):
            slugs = []
            for n in range(categories):
                slug = f"cat-{run}-{r}-{n}"
                w = Write("category", f"w-{run}-cat-{r}-{n}", slug, keyed=n % 2 == 0)
                body = {"slug": slug, "name": f"Categoria {r}.{n}"}
                await self.write(
                    w, "POST", "/categories", body, self.admin_token, deadline_s, lose_answer=True
                )
                if w.acknowledged:
                    slugs.append(slug)
                await self._pause(pause_s)
            email = f"seller{r}.{run}@example.com"
            w = Write("seller", f"w-{run}-seller-{r}", email, keyed=True)
            body = {"email": email, "name": f"Vendedor {r}", "password": PASSWORD}
            await self.write(
                w, "POST", "/sellers", body, self.admin_token, deadline_s, lose_answer=True
            )
            if not w.acknowledged:
                continue
            token = await self._login_retrying(email, deadline_s)
            if token is None:
                continue
            for n, slug in enumerate(slugs):
                await self._pause(pause_s)
                sku = f"SLR-{run}-{r}-{n}"
                price = 250 + 10 * n
                w = Write(
                    "product",
                    f"w-{run}-product-{r}-{n}",
                    sku,
                    detail={"category": slug, "seller_id": self._seller_id(r) or ""},
                    keyed=True,
                )
                body = {"sku": sku, "name": f"Produto {sku}", "price": price, "stock": stock}
                body["category"] = slug
                resp = await self.write(
                    w, "POST", "/products", body, token, deadline_s, lose_answer=True
                )
                if resp is not None and resp.status_code == 201 and w.result_id is not None:
                    pid = w.detail["product_id"] = w.result_id
                    self.ledger.products[pid] = Product(pid, sku, price, stock)
                    self.stock_tokens[pid] = ("seller", token)
            if self.stop.is_set():
                return

    def _seller_id(self, r: int) -> str | None:
        key = f"w-{self.system.run_id}-seller-{r}"
        return next((w.result_id for w in self.ledger.writes if w.key == key), None)

    async def _pause(self, pause_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), pause_s)

    async def _login_retrying(self, email: str, deadline_s: float) -> str | None:
        deadline = asyncio.get_running_loop().time() + deadline_s
        body = {"email": email, "password": PASSWORD}
        resp, _ = await self._send("POST", "/auth/login", body, {}, deadline)
        if resp is None or resp.status_code != 200:
            return None
        return str(resp.json()["access_token"])

    async def forget_loop(self, orders_each: int, pause_s: float, deadline_s: float) -> None:
        """Each forgettable customer orders until ``orders_each`` orders are acknowledged
        (or as many tries), then an admin forgets it (``DELETE /accounts/{id}``), under the
        faults; ``pause_s`` between customers spreads the forgets over the schedule."""
        for customer in self.ledger.forgettable:
            for _ in range(orders_each * 2):
                await self.place(self.new_order(customer), customer.token, deadline_s)
                mine = [o for o in self.ledger.orders if o.account_id == customer.account_id]
                if sum(o.acknowledged for o in mine) >= orders_each or self.stop.is_set():
                    break
            key = f"w-{self.system.run_id}-forget-{customer.account_id}"
            w = Write("forget", key, customer.account_id)
            await self.write(
                w, "DELETE", f"/accounts/{customer.account_id}", None, self.admin_token, deadline_s
            )
            await self._pause(pause_s)
            if self.stop.is_set():
                return

    # -- new customers signing up --------------------------------------------------------

    async def signup_loop(
        self, count: int, pause_s: float, lose_every: int, reuse_every: int, deadline_s: float
    ) -> None:
        """``count`` new customers sign up (``POST /accounts``) under the faults, each with an
        Idempotency-Key of its own, ``pause_s`` apart (spread over the schedule). Every
        ``lose_every``-th loses its first 201 on purpose and asks again, and after every
        ``reuse_every``-th acknowledged one its key is sent again for another email
        (:meth:`reuse`). They log in after the load (:meth:`log_in_newcomers`)."""
        run = self.system.run_id
        for n in range(count):
            email = f"novo{n}.{run}@example.com"
            w = Write("signup", f"w-{run}-signup-{n}", email, keyed=True)
            body = {"name": f"Cliente Novo {n}", "email": email, "password": PASSWORD}
            lose = n % lose_every == 0
            await self.write(w, "POST", "/accounts", body, "", deadline_s, lose_answer=lose)
            if w.acknowledged and n % reuse_every == reuse_every - 1:
                other = f"outro{n}.{run}@example.com"
                r = Reuse("sign-up", w.key, f"reuse-{run}-signup-{n}", f"email {other}")
                await self.reuse(r, "/accounts", body | {"email": other}, "", deadline_s)
            await self._pause(pause_s)
            if self.stop.is_set():
                return

    async def log_in_newcomers(self, deadline_s: float) -> None:
        """Each acknowledged sign-up logs in (``POST /auth/login``), after the load. A 429 is
        waited out as its ``Retry-After`` says, as a well-mannered client does."""
        loop = asyncio.get_running_loop()
        for w in self.ledger.acknowledged_writes("signup"):
            deadline = loop.time() + deadline_s
            body = {"email": w.subject, "password": PASSWORD}
            while True:
                resp, _ = await self._send("POST", "/auth/login", body, {}, deadline)
                wait = resp is not None and resp.status_code == 429
                after = float(resp.headers.get("Retry-After", "1")) if wait and resp else 0.0
                if not wait or loop.time() + after > deadline:
                    break
                await asyncio.sleep(after)
            if resp is not None and resp.status_code == 200:
                data = resp.json()
                customer = Customer(str(data["account_id"]), w.subject, str(data["access_token"]))
                self.ledger.newcomers.append(customer)
            else:
                self.ledger.refused_logins[w.subject] = "no answer" if resp is None else heard(resp)

    # -- an Idempotency-Key reused for another request ------------------------------------

    async def reuse(
        self, r: Reuse, url: str, body: Any, token: str, deadline_s: float, busy: str = "write"
    ) -> None:
        """``POST`` ``body`` to ``url`` under ``r``'s borrowed key until a definite answer or
        the deadline (then it stays unresolved, for :meth:`resolve`)."""
        if r not in self.ledger.reuses:
            self.ledger.reuses.append(r)
        self._requests[r.request_id] = ("POST", url, body, token)
        deadline = asyncio.get_running_loop().time() + deadline_s
        headers = {"Idempotency-Key": r.key, "X-Request-ID": r.request_id} | _auth(token)
        resp, why = await self._send("POST", url, body, headers, deadline, busy)
        r.attempts += len(why) + (resp is not None)
        r.errors += why[: max(0, 5 - len(r.errors))]
        if resp is None:
            return
        r.status, r.answer = resp.status_code, heard(resp)
        r.media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        if resp.status_code >= 300:
            r.problem = _problem(resp)
            with contextlib.suppress(ValueError, AttributeError):
                r.at_fault = str(resp.json().get("field") or "")

    # -- the lifecycle: cart, checkout, payment ------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        body: Any,
        headers: dict[str, str],
        deadline: float,
        busy: str | None = None,
    ) -> tuple[httpx.Response | None, list[str]]:
        """Send until a definite answer (2xx, or a 4xx other than *concurrent modification*)
        or ``deadline`` (loop time); the answer (``None`` if none) and why it was retried.
        ``busy``: the kind counted in :attr:`in_flight` while an attempt is."""
        loop = asyncio.get_running_loop()
        why: list[str] = []
        delay = 0.05
        while True:
            if busy:
                self.in_flight[busy] += 1
            try:
                resp = await self.http.request(method, url, json=body, headers=headers)
            except httpx.TransportError as exc:
                why.append(type(exc).__name__)
            else:
                if resp.status_code < 500 and not _concurrent_modification(resp):
                    return resp, why
                why.append(f"{resp.status_code} {resp.text[:120]}")
            finally:
                if busy:
                    self.in_flight[busy] -= 1
            if loop.time() + delay > deadline:
                return None, why
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _deliver(
        self,
        method: str,
        url: str,
        body: Any,
        headers: dict[str, str],
        deadline: float,
        busy: str,
        lose_answer: bool,
    ) -> tuple[httpx.Response | None, list[str], str | None]:
        """:meth:`_send`; with ``lose_answer``, a 2xx it gets is dropped, as a cut connection
        would drop it after the effect, and the same request is sent again: (the answer heard
        last, why attempts were retried, the answer lost or ``None``)."""
        resp, why = await self._send(method, url, body, headers, deadline, busy)
        if not lose_answer or resp is None or resp.status_code >= 300:
            return resp, why, None
        lost = heard(resp)
        resp, again = await self._send(method, url, body, headers, deadline, busy)
        return resp, [*why, LOST_ON_PURPOSE, *again], lost

    async def fill_cart(self, checkout: Checkout, token: str, deadline_s: float) -> bool:
        """``PUT`` each line's quantity (idempotent by nature); False if one got no answer."""
        deadline = asyncio.get_running_loop().time() + deadline_s
        auth = {"Authorization": f"Bearer {token}"}
        for pid, quantity in checkout.lines:
            resp, _ = await self._send(
                "PUT", f"/cart/items/{pid}", {"quantity": quantity}, auth, deadline
            )
            if resp is None or resp.status_code != 200:
                checkout.errors.append(f"cart {pid}: {resp and resp.status_code}")
                return False
        return True

    async def empty_cart(self, checkout: Checkout, token: str, deadline_s: float) -> bool:
        """After a refused checkout (e.g. ``409 billing-abandoned``: its saga passed its
        deadline during an outage) the cart still holds its lines: remove them, so the next
        checkout is of its own lines only. False if one got no answer."""
        deadline = asyncio.get_running_loop().time() + deadline_s
        auth = {"Authorization": f"Bearer {token}"}
        for pid, _ in checkout.lines:
            resp, _ = await self._send("DELETE", f"/cart/items/{pid}", None, auth, deadline)
            if resp is None or resp.status_code != 200:
                checkout.errors.append(f"empty cart {pid}: {resp and resp.status_code}")
                return False
        return True

    async def check_out(self, checkout: Checkout, token: str, deadline_s: float) -> None:
        """``POST /checkout`` with the same ``Idempotency-Key`` until a definite answer."""
        deadline = asyncio.get_running_loop().time() + deadline_s
        headers = {
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": checkout.key,
            "X-Request-ID": checkout.key,
        }
        resp, why = await self._send("POST", "/checkout", None, headers, deadline)
        checkout.attempts += len(why) + (resp is not None)
        checkout.errors += why[: max(0, 5 - len(checkout.errors))]
        if resp is None:
            return
        checkout.status = resp.status_code
        if 200 <= resp.status_code < 300:
            data = resp.json()
            checkout.order_id, checkout.total = data["order_id"], data["total"]
            checkout.reserved_until = data["reserved_until"]
        else:
            checkout.answer = resp.text[:300]

    async def pay(self, checkout: Checkout, token: str, deadline_s: float) -> None:
        """``POST /orders/{id}/payment`` with ``tok_approved``, retried on connection errors,
        5xx and *concurrent modification*; a definite 409 keeps its ``current_status``."""
        deadline = asyncio.get_running_loop().time() + deadline_s
        headers = {"Authorization": f"Bearer {token}", "X-Request-ID": checkout.pay_key}
        resp, why = await self._send(
            "POST",
            f"/orders/{checkout.order_id}/payment",
            {"card_token": "tok_approved"},
            headers,
            deadline,
            busy="payment",
        )
        checkout.pay_attempts += len(why) + (resp is not None)
        checkout.errors += why[: max(0, 5 - len(checkout.errors))]
        if resp is None:
            return
        checkout.pay_status = resp.status_code
        if resp.status_code == 409:
            with contextlib.suppress(ValueError):
                checkout.pay_current = str(resp.json().get("current_status", ""))
        if resp.status_code != 200:
            checkout.answer = resp.text[:300]

    async def shopper_loop(
        self, shopper: Customer, unpaid_every: int, pause_s: float, deadline_s: float
    ) -> None:
        """Fill the cart, check out, pay; every ``unpaid_every``-th checkout is left unpaid
        (to expire). One client per shopper: a cart is per account. A checkout without an
        answer ends the loop (its cart may still hold the lines; ``resolve`` retries it)."""
        while not self.stop.is_set():
            n = self._checkouts
            self._checkouts += 1
            chosen = self.rng.sample(sorted(self.ledger.products), self.rng.randint(1, 2))
            checkout = Checkout(
                key=f"chk-{self.system.run_id}-{n}",
                account_id=shopper.account_id,
                lines=[(pid, self.rng.randint(1, 3)) for pid in chosen],
                pay=(n % unpaid_every) != unpaid_every - 1,
            )
            if not await self.fill_cart(checkout, shopper.token, deadline_s):
                return  # the cart's content is unknown now: stop this shopper
            self.ledger.checkouts.append(checkout)
            await self.check_out(checkout, shopper.token, deadline_s)
            if checkout.status is None:
                return
            if not checkout.acknowledged and not await self.empty_cart(
                checkout, shopper.token, deadline_s
            ):
                return
            if checkout.acknowledged and checkout.pay:
                await self.pay(checkout, shopper.token, deadline_s)
            await asyncio.sleep(pause_s)

    # -- stock moved by hand over HTTP ----------------------------------------------------

    async def stock_loop(
        self,
        pause_s: float,
        lose_every: int,
        deadline_s: float,
        beyond_every: int = 0,
        reuse_every: int = 0,
    ) -> None:
        """Whoever may moves a catalogue product's stock (``POST /products/{id}/stock``), one
        delta at a time under the faults: the admin the products it created, a seller its
        own. Up by 1-20, or down by 1-10 where :meth:`Ledger.stock_floor` says that cannot
        go below zero; every ``lose_every``-th loses its first 200 on purpose. Every
        ``beyond_every``-th is instead a decrease past :meth:`Ledger.stock_ceiling` (to be
        refused, 409), and every ``reuse_every``-th request sends an acknowledged delta's
        key again with another delta (to be refused, 422); ``0``: never."""
        run = self.system.run_id
        n = 0
        while not self.stop.is_set():
            earlier = self.ledger.acknowledged_deltas()
            if reuse_every and n % reuse_every == reuse_every - 1 and earlier:
                await self.reuse_delta(self.rng.choice(earlier), n, deadline_s)
            else:
                pid = self.rng.choice(sorted(self.stock_tokens))
                actor, token = self.stock_tokens[pid]
                down = self.rng.randint(1, 10)
                lower = self.rng.random() < 0.4 and self.ledger.stock_floor(pid) >= down
                delta = -down if lower else self.rng.randint(1, 20)
                beyond = bool(beyond_every) and n % beyond_every == beyond_every - 1
                if beyond:
                    delta = -(self.ledger.stock_ceiling(pid) + self.rng.randint(21, 1000))
                d = StockDelta(f"w-{run}-stock-{n}", pid, delta, actor, beyond=beyond)
                self.ledger.stock_deltas.append(d)
                lose = n % lose_every == lose_every - 1 and not beyond
                await self.adjust(d, token, deadline_s, lose_answer=lose)
            n += 1
            await self._pause(pause_s)

    async def reuse_delta(self, first: StockDelta, n: int, deadline_s: float) -> None:
        """``first``'s key, by the same actor on the same product (a key is scoped per actor
        and, on a cluster, stored in the product's partition), for a delta one unit
        further."""
        delta = first.delta + (1 if first.delta > 0 else -1)
        r = Reuse(
            "stock delta",
            first.key,
            f"reuse-{self.system.run_id}-stock-{n}",
            f"delta {first.delta:+d} -> {delta:+d}",
        )
        url = f"/products/{first.product_id}/stock"
        body = {"delta": delta, "reason": "faults"}
        token = self.stock_tokens[first.product_id][1]
        await self.reuse(r, url, body, token, deadline_s, busy="stock")

    async def adjust(
        self, d: StockDelta, token: str, deadline_s: float, lose_answer: bool = False
    ) -> None:
        """Send ``d`` with the same ``Idempotency-Key`` until a definite answer or the
        deadline (then it stays unresolved, for :meth:`resolve`)."""
        deadline = asyncio.get_running_loop().time() + deadline_s
        headers = {
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": d.key,
            "X-Request-ID": d.key,
        }
        body = {"delta": d.delta, "reason": "faults"}
        url = f"/products/{d.product_id}/stock"
        resp, why, lost = await self._deliver(
            "POST", url, body, headers, deadline, busy="stock", lose_answer=lose_answer
        )
        if lost is not None:
            d.lost_answer = lost
        d.attempts += len(why) + (resp is not None)
        d.errors += why[: max(0, 5 - len(d.errors))]
        if resp is None:
            return
        d.status, d.answer = resp.status_code, heard(resp)
        if resp.status_code >= 300:
            d.problem = _problem(resp)
        else:
            d.position = _position(resp)

    # -- restocks through the ingress gateway ---------------------------------------------

    async def restock_loop(self, every_s: float, deadline_s: float) -> None:
        client = self.system.redis(socket_timeout=5)
        stream = self.system.settings.redis.keys.ingest("faults")
        try:
            while not self.stop.is_set():
                restock = Restock(
                    str(uuid.uuid4()),
                    self.rng.choice(sorted(self.ledger.products)),
                    self.rng.randint(5, 20),
                )
                if await self._publish(client, stream, restock, deadline_s):
                    self.ledger.restocks.append(restock)
                else:
                    self.ledger.unacked_restocks.append(restock)
                await asyncio.sleep(every_s)
        finally:
            await client.aclose()

    async def _publish(
        self, client: aioredis.Redis, stream: str, restock: Restock, deadline_s: float
    ) -> bool:
        fields: dict[Any, Any] = {
            "id": restock.event_id,
            "type": "StockAdjusted",
            "schema": "1",
            "actor": "faults",
            "data": msgspec.json.encode(
                {"product_id": restock.product_id, "delta": restock.delta, "reason": "restock"}
            ),
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        while True:
            try:
                await client.xadd(stream, fields)
                return True
            except (RedisError, OSError):
                self.ledger.restock_retries += 1
                if loop.time() > deadline:
                    return False
                await asyncio.sleep(0.2)


def _auth(token: str) -> dict[str, str]:
    """The ``Authorization`` header of ``token``; none for ``""`` (anonymous)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def heard(resp: httpx.Response) -> str:
    """An answer as compared byte for byte with another: its status and body."""
    return f"{resp.status_code} {resp.text}"


def _problem(resp: httpx.Response) -> str:
    """A problem answer's type, its last path segment (``""`` if the body is no problem)."""
    try:
        return str(resp.json().get("type", "")).rsplit("/", 1)[-1]
    except (ValueError, AttributeError):
        return ""


def _position(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("position", ""))
    except (ValueError, AttributeError):
        return ""


def _concurrent_modification(resp: httpx.Response) -> bool:
    """409 *concurrent modification* says "try again"; other 409s (stock) are definite."""
    if resp.status_code != 409:
        return False
    try:
        return "concurrent-modification" in str(resp.json().get("type", ""))
    except ValueError:
        return False
