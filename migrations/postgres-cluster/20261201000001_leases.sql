-- The leases of every tenant, in the `custsync` schema that every tenant's
-- connections also see (DESIGN 4c, 13). Text compares bytewise (COLLATE "C"), as
-- SQLite's does: the RFC 3339 times order as text.
CREATE TABLE leases (
    tenant      TEXT COLLATE "C" PRIMARY KEY,
    worker      TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    started     BIGINT,
    token       BIGINT NOT NULL,
    acquired_at TEXT COLLATE "C" NOT NULL,
    renewed_at  TEXT COLLATE "C" NOT NULL,
    expires_at  TEXT COLLATE "C" NOT NULL,
    released    BIGINT NOT NULL DEFAULT 0,
    last_started TEXT COLLATE "C"       -- when a worker last claimed it for a cycle
);
