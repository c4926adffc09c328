-- The records still waiting for the bureau's answer (issue 10). Matching a result file and
-- listing the records with an open change or cancellation (`open_keys`) read only these, not
-- every record ever sent: `attempt_records_match` cannot seek past czlx and jlid to the
-- status, so those reads grew with the history. The status comes before jlid so that
-- `open_keys` (no jlid) seeks as far as the status too.
CREATE INDEX attempt_records_open ON attempt_records (province, czlx, status, jlid)
    WHERE status IN ('open', 'awaiting_sms');
