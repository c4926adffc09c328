-- Indexes that keep a cycle's cost proportional to its batch, not to the table (issue 10):
-- a stored file's attempts, the reviewed filings in review order, and the unacknowledged
-- downloads of a bureau.
CREATE INDEX attempts_by_upload ON attempts (upload_id);
CREATE INDEX filings_reviewed ON filings (state, reviewed_at);
CREATE INDEX download_files_unacked ON download_files (province) WHERE acked_at IS NULL;
