-- Leases (DESIGN 4c, 13): one reconciliation of a tenant at a time. `token` grows by
-- one at every take and fences every claim of outbox work.
CREATE TABLE leases (
    tenant      TEXT PRIMARY KEY,
    worker      TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started     INTEGER,               -- the holder's process start time, where known
    token       INTEGER NOT NULL,
    acquired_at TEXT NOT NULL,
    renewed_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    released    INTEGER NOT NULL DEFAULT 0
);
