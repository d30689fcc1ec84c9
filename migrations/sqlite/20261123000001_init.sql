-- custsync's store: canonical customers, their links to provider records (with the
-- snapshot each three-way merge starts from), listing cursors, the outbox of pushes,
-- runs and the audit trail.

CREATE TABLE customers (
    id            INTEGER PRIMARY KEY,
    email         TEXT,                 -- normalized; NULL once forgotten
    fields        TEXT NOT NULL,        -- JSON: the canonical projection
    updated_at    TEXT NOT NULL,        -- RFC 3339: when a change was last applied
    created_at    TEXT NOT NULL,
    tombstoned_at TEXT,                 -- deleted everywhere that can delete
    email_hash    TEXT                  -- sha256 of the email, kept by `forget`
);
CREATE UNIQUE INDEX customers_email ON customers(email) WHERE email IS NOT NULL;
CREATE INDEX customers_email_hash ON customers(email_hash) WHERE email_hash IS NOT NULL;

CREATE TABLE links (
    provider      TEXT NOT NULL,
    remote_id     TEXT NOT NULL,
    customer_id   INTEGER NOT NULL REFERENCES customers(id),
    snapshot      TEXT,                 -- JSON projection: what custsync last saw or wrote
    observed      TEXT,                 -- JSON projection listed this run, not merged yet
    observed_at   TEXT,                 -- remote updated_at, or when first seen
    seen_run      INTEGER,              -- last run whose listing returned the record
    gone          INTEGER NOT NULL DEFAULT 0,  -- deleted remotely; nothing more is pushed
    PRIMARY KEY (provider, remote_id)
);
CREATE UNIQUE INDEX links_customer ON links(provider, customer_id);
CREATE INDEX links_by_customer ON links(customer_id);

CREATE TABLE cursors (
    provider   TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    provider        TEXT NOT NULL,
    customer_id     INTEGER NOT NULL REFERENCES customers(id),
    op              TEXT NOT NULL,      -- create | update | delete
    remote_id       TEXT,
    payload         TEXT NOT NULL,      -- JSON projection to write
    changed         TEXT NOT NULL,      -- JSON list of fields
    state           TEXT NOT NULL,      -- pending | in_flight | failed | parked
    attempts        INTEGER NOT NULL DEFAULT 0,
    maybe_applied   INTEGER NOT NULL DEFAULT 0, -- a failed attempt may have reached the provider
    next_attempt_at TEXT,
    last_error      TEXT,
    run_id          INTEGER,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX outbox_provider_state ON outbox(provider, state, id);
CREATE INDEX outbox_customer ON outbox(customer_id);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    mode        TEXT NOT NULL,          -- once | daemon | dry-run
    status      TEXT NOT NULL,          -- running | converged | failed | interrupted
    report      TEXT                    -- JSON report
);

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER,
    at          TEXT NOT NULL,
    customer_id INTEGER,
    provider    TEXT,
    action      TEXT NOT NULL,          -- merge | conflict | create | update | delete | tombstone | held | forget
    detail      TEXT NOT NULL           -- JSON
);
CREATE INDEX audit_customer ON audit(customer_id);
