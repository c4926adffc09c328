-- Leases for several instances (the same tables as migrations/postgres/0002_leases.sql).
-- Times in *_ms are milliseconds since the Unix epoch, read from the database's clock.

-- A filing's claim: the instance building or sending it, and until when that holds.
ALTER TABLE filings ADD COLUMN lease_owner TEXT;
ALTER TABLE filings ADD COLUMN lease_until_ms INTEGER;

-- A stored upload file's sender and its lease; an expired lease is adopted by the bureau's
-- current sender (reconcile: isp_querypreviousupload, then arrived or the same file again).
ALTER TABLE upload_files ADD COLUMN lease_owner TEXT;
ALTER TABLE upload_files ADD COLUMN lease_until_ms INTEGER;
ALTER TABLE upload_files ADD COLUMN sent_by TEXT;
ALTER TABLE upload_files ADD COLUMN sent_token INTEGER;

-- One sender per bureau across instances: the holder renews expires_ms while it works; the
-- token goes up by one each time another instance takes the bureau over (a fencing token).
CREATE TABLE bureau_leases (
    province     TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    token        INTEGER NOT NULL,
    acquired_ms  INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL
);

-- Append-only history of bureau takeovers (what the several-instances test checks).
CREATE TABLE bureau_lease_log (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    province             TEXT NOT NULL,
    owner                TEXT NOT NULL,
    token                INTEGER NOT NULL,
    acquired_ms          INTEGER NOT NULL,
    previous_owner       TEXT,
    previous_expires_ms  INTEGER
);
CREATE INDEX filings_lease ON filings (province, state, lease_owner);
