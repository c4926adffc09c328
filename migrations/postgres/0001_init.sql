-- beian-gateway schema (PostgreSQL; the same tables as migrations/sqlite). Times are RFC 3339 text with +08:00 unless named *_ms.
-- Documents are kept as the canonical JSON of filing-format.md.

CREATE TABLE filings (
    id                    TEXT PRIMARY KEY,
    filing_type           TEXT NOT NULL,
    province              TEXT NOT NULL,
    state                 TEXT NOT NULL,
    document              TEXT NOT NULL,
    revision              BIGINT NOT NULL DEFAULT 1,
    reviewed_at           TEXT NOT NULL,
    deadline              TEXT,
    attempts              BIGINT NOT NULL DEFAULT 0,
    current_attempt       BIGINT,
    reasons               TEXT NOT NULL DEFAULT '[]',
    subject_record_number TEXT,
    site_numbers          TEXT NOT NULL DEFAULT '[]',
    app_numbers           TEXT NOT NULL DEFAULT '[]',
    submitted_at          TEXT,
    decided_at            TEXT,
    resubmit_requested    BIGINT NOT NULL DEFAULT 0,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
);
CREATE INDEX filings_by_state ON filings (state, province, deadline);

-- The upload stream of each bureau: a file is stored before any byte is sent.
CREATE TABLE upload_files (
    id             BIGSERIAL PRIMARY KEY,
    province       TEXT NOT NULL,
    data_sequence  BIGINT NOT NULL,
    file_name      TEXT NOT NULL,
    zip            BYTEA NOT NULL,
    record_count   BIGINT NOT NULL,
    status         TEXT NOT NULL,   -- pending (stored, outcome unknown), arrived
    created_at     TEXT NOT NULL,
    sent_at        TEXT,
    arrived_at     TEXT,
    UNIQUE (province, data_sequence)
);
CREATE INDEX upload_files_pending ON upload_files (province, status);

-- One submission of a filing: the ids its records carry (datafile::ids::RecordIds as JSON).
CREATE TABLE attempts (
    id          BIGSERIAL PRIMARY KEY,
    filing_id   TEXT NOT NULL REFERENCES filings (id),
    attempt_no  BIGINT NOT NULL,
    province    TEXT NOT NULL,
    ids         TEXT NOT NULL,
    upload_id   BIGINT REFERENCES upload_files (id),
    created_at  TEXT NOT NULL,
    UNIQUE (filing_id, attempt_no)
);

-- Every record of an attempt the bureau will answer for, keyed as BAJG names it (Czlx, Jlid).
CREATE TABLE attempt_records (
    id          BIGSERIAL PRIMARY KEY,
    attempt_id  BIGINT NOT NULL REFERENCES attempts (id),
    filing_id   TEXT NOT NULL,
    province    TEXT NOT NULL,
    czlx        BIGINT NOT NULL,
    jlid        BIGINT NOT NULL,
    part        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'open',   -- open, awaiting_sms, approved, rejected, expired
    codes       TEXT NOT NULL DEFAULT '[]',
    decided_at  TEXT
);
CREATE INDEX attempt_records_match ON attempt_records (province, czlx, jlid, status);
CREATE INDEX attempt_records_attempt ON attempt_records (attempt_id);

-- Ids (provider and province) each attempt used, so BASJ records find their filing.
CREATE TABLE attempt_ids (
    province    TEXT NOT NULL,
    kind        TEXT NOT NULL,   -- isp_ztid, ztid, isp_wzid, wzid, isp_appid, appid, isp_jrid, jrid
    value       BIGINT NOT NULL,
    attempt_id  BIGINT NOT NULL REFERENCES attempts (id),
    part        TEXT NOT NULL    -- subject, websites[N], apps[N]
);
CREATE INDEX attempt_ids_lookup ON attempt_ids (province, kind, value);

CREATE TABLE upload_file_filings (
    upload_id   BIGINT NOT NULL REFERENCES upload_files (id),
    filing_id   TEXT NOT NULL,
    attempt_id  BIGINT NOT NULL,
    PRIMARY KEY (upload_id, filing_id)
);

-- Per bureau: the stream position, the provider-id counter, pause (circuit) state.
CREATE TABLE bureaus (
    province          TEXT PRIMARY KEY,
    last_sequence     BIGINT NOT NULL DEFAULT 0,   -- last number given to a stored file
    next_provider_id  BIGINT NOT NULL DEFAULT 1,
    codes_received    BIGINT NOT NULL DEFAULT 0,
    paused_reason     TEXT,
    paused_at         TEXT
);

-- Downloaded files; a file is applied once (applied_at) and then acked (acked_at).
CREATE TABLE download_files (
    id           BIGSERIAL PRIMARY KEY,
    province     TEXT NOT NULL,
    file_name    TEXT NOT NULL,
    kind         TEXT NOT NULL,
    content      BYTEA NOT NULL,
    received_at  TEXT NOT NULL,
    applied_at   TEXT,
    acked_at     TEXT,
    UNIQUE (province, file_name)
);

-- Every BAJG result pair as received, matched or not.
CREATE TABLE results (
    id                BIGSERIAL PRIMARY KEY,
    download_file_id  BIGINT NOT NULL REFERENCES download_files (id),
    pair_index        BIGINT NOT NULL,
    province          TEXT NOT NULL,
    czlx              BIGINT,
    jlid              BIGINT,
    codes             TEXT NOT NULL,
    shyj              TEXT,
    shsj              TEXT,
    filing_id         TEXT,
    UNIQUE (download_file_id, pair_index)
);

-- JCDM code tables as received, applied in order.
CREATE TABLE code_tables (
    id          BIGSERIAL PRIMARY KEY,
    province    TEXT NOT NULL,
    jcdm        TEXT NOT NULL,
    received_at TEXT NOT NULL
);

-- The registry of bureau records (BASJ): what later changes and cancellations quote.
CREATE TABLE registry (
    province       TEXT NOT NULL,
    kind           TEXT NOT NULL,   -- subject, website, app
    province_id    BIGINT NOT NULL,
    record_number  TEXT,
    isp_id         BIGINT,
    parent_id      BIGINT,         -- a website's or app's subject (Ztid)
    data           TEXT NOT NULL,   -- domains, accesses, IPs (JSON)
    cancelled_at   TEXT,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (province, kind, province_id)
);
CREATE INDEX registry_by_number ON registry (record_number);

-- Append-only: every transition and admin action.
CREATE TABLE events (
    id         BIGSERIAL PRIMARY KEY,
    filing_id  TEXT,
    province   TEXT,
    at         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_filing ON events (filing_id, id);
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END;
$$;
CREATE TRIGGER events_append_only_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
