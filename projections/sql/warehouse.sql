-- The warehouse: a star schema fed by the log. {schema} is replaced by the quoted schema name.
-- Keys are natural or derived from the log (never sequences), so a rebuild is identical.

CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.dim_date (
    date_key    integer  PRIMARY KEY,          -- yyyymmdd (UTC)
    date        date     NOT NULL UNIQUE,
    year        smallint NOT NULL,
    quarter     smallint NOT NULL,
    month       smallint NOT NULL,
    day         smallint NOT NULL,
    iso_year    smallint NOT NULL,
    iso_week    smallint NOT NULL,
    weekday     smallint NOT NULL,             -- ISO: 1 = Monday
    week_start  date     NOT NULL,
    month_start date     NOT NULL
);

CREATE TABLE IF NOT EXISTS {schema}.dim_account (
    account_id   text        PRIMARY KEY,
    email_digest text        NOT NULL,         -- pseudonym: the same digest login events carry
    role         text        NOT NULL,
    created_at   timestamptz NOT NULL,
    created_date_key integer NOT NULL
);
-- true once the customer was forgotten (its email_digest is then empty); added in place.
ALTER TABLE {schema}.dim_account ADD COLUMN IF NOT EXISTS forgotten boolean NOT NULL DEFAULT false;

-- Slowly changing dimension, type 2: a name, price or currency change opens a new version.
CREATE TABLE IF NOT EXISTS {schema}.dim_product (
    product_id  text        NOT NULL,
    version     integer     NOT NULL,          -- 1, 2, … per product
    sku         text        NOT NULL,
    name        text        NOT NULL,
    category    text        NOT NULL,
    price       bigint      NOT NULL,
    currency    text        NOT NULL,
    valid_from  timestamptz NOT NULL,
    valid_to    timestamptz,                   -- NULL: still valid
    is_current  boolean     NOT NULL,
    deleted     boolean     NOT NULL DEFAULT false,
    opened_by_seq bigint    NOT NULL,          -- the product event that opened this version
    PRIMARY KEY (product_id, version)
);
CREATE INDEX IF NOT EXISTS dim_product_validity ON {schema}.dim_product (product_id, valid_from);

CREATE TABLE IF NOT EXISTS {schema}.fact_order_line (
    order_id        text        NOT NULL,
    line_no         smallint    NOT NULL,
    date_key        integer     NOT NULL,
    billed_at       timestamptz NOT NULL,
    account_id      text        NOT NULL,
    product_id      text        NOT NULL,
    product_name    text        NOT NULL,      -- as billed
    product_version integer,                   -- the dim_product version valid at billed_at
    quantity        integer     NOT NULL,
    unit_price      bigint      NOT NULL,
    revenue         bigint      NOT NULL,
    currency        text        NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX IF NOT EXISTS fact_order_line_date ON {schema}.fact_order_line (date_key);
CREATE INDEX IF NOT EXISTS fact_order_line_billed ON {schema}.fact_order_line (billed_at);
CREATE INDEX IF NOT EXISTS fact_order_line_product
    ON {schema}.fact_order_line (product_id, billed_at);

CREATE TABLE IF NOT EXISTS {schema}.fact_login (
    date_key     integer NOT NULL,
    email_digest text    NOT NULL,             -- the login aggregate (one per email)
    account_id   text,                         -- NULL for unknown emails
    successes    integer NOT NULL DEFAULT 0,
    failures     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (date_key, email_digest)
);

-- The order lifecycle. Keys come from the log (order id + the event's seq, or its own ids).
CREATE TABLE IF NOT EXISTS {schema}.fact_order_status (
    order_id text        NOT NULL,
    seq      integer     NOT NULL,             -- the event's version in the order's stream
    date_key integer     NOT NULL,
    at       timestamptz NOT NULL,
    status   text        NOT NULL,             -- awaiting_payment, paid, shipped, delivered,
                                               -- partially_refunded, refunded, cancelled, expired
    PRIMARY KEY (order_id, seq)
);
CREATE INDEX IF NOT EXISTS fact_order_status_date ON {schema}.fact_order_status (date_key, status);

CREATE TABLE IF NOT EXISTS {schema}.fact_cart_day (
    date_key   integer NOT NULL,               -- a day on which the account filled its cart
    account_id text    NOT NULL,
    PRIMARY KEY (date_key, account_id)
);

CREATE TABLE IF NOT EXISTS {schema}.fact_payment (
    order_id text        NOT NULL,
    attempt  integer     NOT NULL,
    date_key integer     NOT NULL,
    at       timestamptz NOT NULL,
    status   text        NOT NULL,             -- captured | declined
    amount   bigint,                           -- NULL for a decline
    currency text,
    provider text        NOT NULL,
    PRIMARY KEY (order_id, attempt)
);

CREATE TABLE IF NOT EXISTS {schema}.fact_refund (
    order_id  text        NOT NULL,
    refund_id text        NOT NULL,            -- <order>-r<n>, or <order>:cancel
    date_key  integer     NOT NULL,
    at        timestamptz NOT NULL,
    amount    bigint      NOT NULL,
    reason    text        NOT NULL,
    PRIMARY KEY (order_id, refund_id)
);
CREATE INDEX IF NOT EXISTS fact_refund_date ON {schema}.fact_refund (date_key);

CREATE TABLE IF NOT EXISTS {schema}.fact_shipment (
    order_id    text        NOT NULL,
    shipment_id text        NOT NULL,
    date_key    integer     NOT NULL,
    at          timestamptz NOT NULL,
    carrier     text        NOT NULL,
    PRIMARY KEY (order_id, shipment_id)
);

CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
    partition integer PRIMARY KEY,
    entry_id  text    NOT NULL
);

-- The last seq applied of each aggregate whose effects are not idempotent by themselves
-- (products: SCD-2 versions; logins: counters). With it, an event is applied exactly once
-- whatever the partition checkpoint says: a re-driven dead letter lies behind it.
CREATE TABLE IF NOT EXISTS {schema}.aggregate_versions (
    aggregate text   PRIMARY KEY,
    seq       bigint NOT NULL
);

-- Sellers and categories (issue 15). A seller is an account with the role `seller`; no
-- name or email here (the same pseudonymity as dim_account).
CREATE TABLE IF NOT EXISTS {schema}.dim_seller (
    seller_id        text        PRIMARY KEY,  -- the seller's account id
    created_at       timestamptz NOT NULL,
    created_date_key integer     NOT NULL
);

-- Which seller owns a product (set once, at creation; the shop's own products have no row).
CREATE TABLE IF NOT EXISTS {schema}.product_seller (
    product_id text PRIMARY KEY,
    seller_id  text NOT NULL
);
CREATE INDEX IF NOT EXISTS product_seller_seller ON {schema}.product_seller (seller_id);

-- Slowly changing dimension, type 2: a rename opens a new version; products carry the
-- slug (dim_product.category), so the name valid at any time is a join away.
CREATE TABLE IF NOT EXISTS {schema}.dim_category (
    slug          text        NOT NULL,
    version       integer     NOT NULL,        -- 1, 2, … per slug
    name          text        NOT NULL,
    parent        text,                        -- the parent's slug; NULL at the root
    valid_from    timestamptz NOT NULL,
    valid_to      timestamptz,                 -- NULL: still valid
    is_current    boolean     NOT NULL,
    deleted       boolean     NOT NULL DEFAULT false,
    opened_by_seq bigint      NOT NULL,
    PRIMARY KEY (slug, version)
);
-- Sales by seller: fact_order_line JOIN product_seller USING (product_id) (see
-- app/queries/analytics.py; no SQL view, so the lake export sees base tables only).
