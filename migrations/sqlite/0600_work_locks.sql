-- Who is working on this database (issue 6): `once` runs exclusively; `run` daemons exclude a
-- `once` but not each other. A row is a lease: its holder refreshes expires_ms while it lives;
-- a crashed holder's row is ignored (and removed) once it has expired.
CREATE TABLE work_locks (
    holder       TEXT PRIMARY KEY,   -- kind:host:pid:nonce
    kind         TEXT NOT NULL,      -- run | once
    acquired_at  TEXT NOT NULL,
    expires_ms   INTEGER NOT NULL    -- Unix milliseconds
);
-- One row every acquirer updates first, so acquisitions are serialized on both stores.
CREATE TABLE work_lock_gate (
    id     INTEGER PRIMARY KEY,
    bumps  INTEGER NOT NULL
);
INSERT INTO work_lock_gate (id, bumps) VALUES (1, 0);
