-- Activity and groups (DESIGN 14). `activity` holds each person's events as the
-- providers sent them (Malomo events, Sendwithus email logs), one row per event
-- (deduplicated by the provider's id); `activity_marks` is, per customer and source,
-- where its stream was last read to (a Malomo cursor, the newest Sendwithus log) and
-- when; `group_members` is what custsync knows of each owned group's memberships.
-- All three are erased with the person by `forget`.

CREATE TABLE activity (
    id           INTEGER PRIMARY KEY,
    tenant       TEXT NOT NULL,
    provider     TEXT NOT NULL,         -- the provider NAME
    customer_id  INTEGER NOT NULL REFERENCES customers(id),
    remote_id    TEXT NOT NULL,         -- the event's id in the provider
    type         TEXT NOT NULL,
    label        TEXT NOT NULL,
    occurred_at  TEXT,                  -- RFC 3339 UTC, when the provider says so
    raw          TEXT NOT NULL,         -- JSON: the event as sent
    fetched_at   TEXT NOT NULL
);
CREATE UNIQUE INDEX activity_remote ON activity(tenant, provider, remote_id);
CREATE INDEX activity_customer ON activity(customer_id, occurred_at);

CREATE TABLE activity_marks (
    tenant       TEXT NOT NULL,
    provider     TEXT NOT NULL,
    customer_id  INTEGER NOT NULL REFERENCES customers(id),
    cursor       TEXT,                  -- where the next read starts (Malomo: a page path)
    newest_at    TEXT,                  -- the newest event seen
    refreshed_at TEXT NOT NULL,
    PRIMARY KEY (tenant, provider, customer_id)
);

CREATE TABLE group_members (
    tenant       TEXT NOT NULL,
    provider     TEXT NOT NULL,         -- a sendwithus provider NAME
    group_id     TEXT NOT NULL,
    customer_id  INTEGER NOT NULL REFERENCES customers(id),
    remote_id    TEXT NOT NULL,         -- the record (email) the membership is about
    member       INTEGER NOT NULL,      -- 1 in the group, 0 not
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (tenant, provider, group_id, customer_id)
);
