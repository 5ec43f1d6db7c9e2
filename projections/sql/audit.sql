-- The audit log: one row per log entry, append-only, hash-chained per partition.
-- The hash covers the entry's fields as stored in the log (projections/audit.py says how).
-- {schema} is replaced by the (quoted) schema name; the file is idempotent.

CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.events (
    partition    integer     NOT NULL,
    n            bigint      NOT NULL,  -- position in this partition's chain, from 1
    entry_id     text        NOT NULL,  -- the log entry (Redis stream id)
    event_id     text        NOT NULL UNIQUE,  -- undecodable:<partition>:<entry_id> if undecodable
    type         text        NOT NULL,
    schema_version integer   NOT NULL,  -- as stored (format 1 rows: the upcast one)
    aggregate    text        NOT NULL,
    seq          bigint      NOT NULL,
    actor        text        NOT NULL,
    source       text        NOT NULL,
    correlation  text        NOT NULL,
    causation    text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    payload      jsonb       NOT NULL,  -- the data as stored, secrets removed
    prev_hash    text        NOT NULL,
    hash         text        NOT NULL,  -- sha256(prev_hash || record), hex
    hash_format  smallint    NOT NULL DEFAULT 1,  -- 2: record of the stored bytes
    stored       bytea,                 -- the entry's fields as stored (data as its sha256)
    undecodable  boolean     NOT NULL DEFAULT false,
    error        text,                  -- why an undecodable entry does not decode
    PRIMARY KEY (partition, n)
);

-- An audit log made before the hash covered the stored bytes: its rows stay format 1.
ALTER TABLE {schema}.events ADD COLUMN IF NOT EXISTS hash_format smallint NOT NULL DEFAULT 1;
ALTER TABLE {schema}.events ADD COLUMN IF NOT EXISTS stored bytea;
ALTER TABLE {schema}.events ADD COLUMN IF NOT EXISTS undecodable boolean NOT NULL DEFAULT false;
ALTER TABLE {schema}.events ADD COLUMN IF NOT EXISTS error text;

CREATE INDEX IF NOT EXISTS events_occurred ON {schema}.events (occurred_at, event_id);
CREATE INDEX IF NOT EXISTS events_actor ON {schema}.events (actor, occurred_at);
CREATE INDEX IF NOT EXISTS events_type ON {schema}.events (type, occurred_at);
CREATE INDEX IF NOT EXISTS events_aggregate ON {schema}.events (aggregate, occurred_at);

-- Checkpoint and chain head per partition, written in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
    partition integer PRIMARY KEY,
    entry_id  text    NOT NULL,
    n         bigint  NOT NULL,
    hash      text    NOT NULL
);

CREATE OR REPLACE FUNCTION {schema}.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on %.% is refused',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE OR REPLACE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON {schema}.events
    FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_change();

CREATE OR REPLACE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON {schema}.events
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_change();
