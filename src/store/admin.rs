//! Store queries for operating the gateway: admin transitions (resubmit, hold, release, a
//! revised document), a filing's timeline, status and deadline lists, the work lock that keeps
//! a `once` from running beside another worker, and releasing claims that were never sent.
//!
//! Owns: this SQL only (`$n` placeholders, portable between SQLite and PostgreSQL; columns read
//! as i64, String, bool or Option of them). Must not decide policy: which state may go where is
//! `crate::admin`'s; these methods apply a decision atomically (`WHERE state = …`) and record it
//! as an event with the operator and the reason.

use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use super::{Result, Store, fmt_time, insert_event, json_err, now};
use crate::domain::Filing;

/// States in which the bureau has not received the filing yet: what "not submitted" means for
/// deadlines (at risk, overdue).
pub const NOT_SUBMITTED: [&str; 5] = [
    "reviewed",
    "queued",
    "submitting",
    "held",
    "needs_correction",
];

/// The head of a filing row, for admin decisions and `show`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilingBrief {
    pub id: String,
    pub filing_type: String,
    pub province: String,
    pub state: String,
    pub revision: i64,
    pub attempts: i64,
    pub reviewed_at: String,
    pub deadline: Option<String>,
    pub resubmit_requested: bool,
    pub updated_at: String,
}

/// What `import --revise` did with one filing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    /// Identical to the stored document.
    Unchanged,
    /// Stored as this revision; the filing is now in `state`.
    Revised { revision: i64, state: String },
    /// Not a known filing (import it normally).
    Unknown,
    /// The filing is in a state where its document must not change.
    Refused { state: String },
    /// The revised document names another province.
    ProvinceChanged { stored: String },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEvent {
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineUpload {
    pub data_sequence: i64,
    pub file: String,
    pub status: String,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub arrived_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineRecord {
    pub czlx: i64,
    pub jlid: i64,
    pub part: String,
    pub status: String,
    pub codes: serde_json::Value,
    pub decided_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineAttempt {
    pub attempt: i64,
    pub province: String,
    pub created_at: String,
    pub upload: Option<TimelineUpload>,
    pub records: Vec<TimelineRecord>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineResult {
    pub file: String,
    pub kind: String,
    pub received_at: String,
    pub applied_at: Option<String>,
    pub acked_at: Option<String>,
    pub czlx: Option<i64>,
    pub jlid: Option<i64>,
    pub codes: serde_json::Value,
    pub opinion: Option<String>,
    pub decided_at: Option<String>,
}

/// A filing's whole history, oldest first in each list.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub filing: FilingBrief,
    pub events: Vec<TimelineEvent>,
    pub attempts: Vec<TimelineAttempt>,
    pub results: Vec<TimelineResult>,
}

/// One filing on a deadline list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeadlineItem {
    pub id: String,
    pub province: String,
    pub state: String,
    pub deadline: String,
}

/// Who holds the work lock when it cannot be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub holder: String,
    pub kind: String,
    pub acquired_at: String,
    pub expires_ms: i64,
}

fn parse_json(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(json_err(what))
}

fn brief_from_row(r: &sqlx::any::AnyRow) -> FilingBrief {
    FilingBrief {
        id: r.get(0),
        filing_type: r.get(1),
        province: r.get(2),
        state: r.get(3),
        revision: r.get(4),
        attempts: r.get(5),
        reviewed_at: r.get(6),
        deadline: r.get(7),
        resubmit_requested: r.get::<i64, _>(8) != 0,
        updated_at: r.get(9),
    }
}

const BRIEF_COLUMNS: &str = "SELECT id, filing_type, province, state, revision, attempts, reviewed_at, deadline, resubmit_requested, updated_at FROM filings WHERE id = $1";

impl Store {
    pub async fn filing_brief(&self, id: &str) -> Result<Option<FilingBrief>> {
        let row = sqlx::query(BRIEF_COLUMNS)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(brief_from_row))
    }

    /// Whether the document was revised after the filing's latest `needs_correction` (or ever,
    /// when it has none).
    pub async fn corrected_since_findings(&self, id: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT MAX(CASE WHEN kind = 'revised' THEN id END), MAX(CASE WHEN kind = 'needs_correction' THEN id END)
             FROM events WHERE filing_id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        let revised: Option<i64> = row.get(0);
        let findings: Option<i64> = row.get(1);
        Ok(match (revised, findings) {
            (Some(r), Some(f)) => r > f,
            (Some(_), None) => true,
            (None, _) => false,
        })
    }

    /// Replaces a filing's document with a corrected one (the next revision), when its state
    /// is one of `allowed`. A queued filing goes back to `reviewed` so intake checks it again.
    pub async fn revise(&self, filing: &Filing, allowed: &[&str], actor: &str) -> Result<Revision> {
        let now = fmt_time(now());
        let doc = filing.canonical_json();
        let mut tx = self.begin().await?;
        let Some(row) =
            sqlx::query("SELECT document, revision, state, province FROM filings WHERE id = $1")
                .bind(&filing.id)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(Revision::Unknown);
        };
        let stored: String = row.get(0);
        let revision: i64 = row.get(1);
        let state: String = row.get(2);
        let province: String = row.get(3);
        if stored == doc {
            return Ok(Revision::Unchanged);
        }
        if province != filing.province {
            return Ok(Revision::ProvinceChanged { stored: province });
        }
        if !allowed.contains(&state.as_str()) {
            return Ok(Revision::Refused { state });
        }
        let new_state = if state == "queued" {
            "reviewed"
        } else {
            &state
        };
        let done = sqlx::query(
            "UPDATE filings SET document = $1, revision = $2, filing_type = $3, reviewed_at = $4, state = $5, updated_at = $6
             WHERE id = $7 AND revision = $8 AND state = $9",
        )
        .bind(&doc)
        .bind(revision + 1)
        .bind(filing.filing_type.as_str())
        .bind(fmt_time(filing.reviewed_at))
        .bind(new_state)
        .bind(&now)
        .bind(&filing.id)
        .bind(revision)
        .bind(&state)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            // Claimed or changed between the read and the write: refuse, nothing changed.
            return Ok(Revision::Refused { state });
        }
        insert_event(
            &mut tx,
            Some(&filing.id),
            Some(&province),
            "revised",
            actor,
            json!({"revision": revision + 1, "from": state, "state": new_state}),
        )
        .await?;
        tx.commit().await?;
        Ok(Revision::Revised {
            revision: revision + 1,
            state: new_state.to_owned(),
        })
    }

    /// The admin flag: `from` → `reviewed` with `resubmit_requested` set and a new review time
    /// (the resubmission is due one business day after it). Intake queues it and the next
    /// claim makes a new attempt with new provider ids in a new file. False when the filing
    /// was no longer in `from`.
    pub async fn resubmit(
        &self,
        id: &str,
        from: &str,
        operator: &str,
        reason: &str,
    ) -> Result<bool> {
        let now = fmt_time(now());
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE filings SET state = 'reviewed', resubmit_requested = 1, reviewed_at = $1, deadline = NULL, updated_at = $2
             WHERE id = $3 AND state = $4",
        )
        .bind(&now)
        .bind(&now)
        .bind(id)
        .bind(from)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_event(
            &mut tx,
            Some(id),
            None,
            "admin.resubmit",
            operator,
            json!({"reason": reason, "from": from}),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// `from` (reviewed or queued) → `held`. False when the filing was no longer in `from`.
    pub async fn hold(&self, id: &str, from: &str, operator: &str, reason: &str) -> Result<bool> {
        self.admin_move(id, from, "held", "admin.hold", operator, reason)
            .await
    }

    /// `held` → `reviewed`: intake queues it again with the deadline of its review.
    pub async fn release(&self, id: &str, operator: &str, reason: &str) -> Result<bool> {
        self.admin_move(id, "held", "reviewed", "admin.release", operator, reason)
            .await
    }

    async fn admin_move(
        &self,
        id: &str,
        from: &str,
        to: &str,
        kind: &str,
        operator: &str,
        reason: &str,
    ) -> Result<bool> {
        let now = fmt_time(now());
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE filings SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4",
        )
        .bind(to)
        .bind(&now)
        .bind(id)
        .bind(from)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_event(
            &mut tx,
            Some(id),
            None,
            kind,
            operator,
            json!({"reason": reason, "from": from, "state": to}),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Everything the gateway knows about one filing, with times.
    pub async fn timeline(&self, id: &str) -> Result<Option<Timeline>> {
        let Some(filing) = self.filing_brief(id).await? else {
            return Ok(None);
        };
        let mut events = Vec::new();
        for r in sqlx::query(
            "SELECT at, kind, actor, detail FROM events WHERE filing_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        {
            let detail: String = r.get(3);
            events.push(TimelineEvent {
                at: r.get(0),
                kind: r.get(1),
                actor: r.get(2),
                detail: parse_json(&detail, "events.detail")?,
            });
        }
        let mut attempts = Vec::new();
        for r in sqlx::query(
            "SELECT a.id, a.attempt_no, a.province, a.created_at,
                    u.data_sequence, u.file_name, u.status, u.created_at, u.sent_at, u.arrived_at
             FROM attempts a LEFT JOIN upload_files u ON u.id = a.upload_id
             WHERE a.filing_id = $1 ORDER BY a.attempt_no",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        {
            let attempt_id: i64 = r.get(0);
            let seq: Option<i64> = r.get(4);
            let upload = seq.map(|data_sequence| TimelineUpload {
                data_sequence,
                file: r.get::<Option<String>, _>(5).unwrap_or_default(),
                status: r.get::<Option<String>, _>(6).unwrap_or_default(),
                created_at: r.get::<Option<String>, _>(7).unwrap_or_default(),
                sent_at: r.get(8),
                arrived_at: r.get(9),
            });
            let mut records = Vec::new();
            for rr in sqlx::query(
                "SELECT czlx, jlid, part, status, codes, decided_at FROM attempt_records WHERE attempt_id = $1 ORDER BY id",
            )
            .bind(attempt_id)
            .fetch_all(&self.pool)
            .await?
            {
                let codes: String = rr.get(4);
                records.push(TimelineRecord {
                    czlx: rr.get(0),
                    jlid: rr.get(1),
                    part: rr.get(2),
                    status: rr.get(3),
                    codes: parse_json(&codes, "attempt_records.codes")?,
                    decided_at: rr.get(5),
                });
            }
            attempts.push(TimelineAttempt {
                attempt: r.get(1),
                province: r.get(2),
                created_at: r.get(3),
                upload,
                records,
            });
        }
        let mut results = Vec::new();
        for r in sqlx::query(
            "SELECT d.file_name, d.kind, d.received_at, d.applied_at, d.acked_at, r.czlx, r.jlid, r.codes, r.shyj, r.shsj
             FROM results r JOIN download_files d ON d.id = r.download_file_id
             WHERE r.filing_id = $1 ORDER BY r.id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        {
            let codes: String = r.get(7);
            results.push(TimelineResult {
                file: r.get(0),
                kind: r.get(1),
                received_at: r.get(2),
                applied_at: r.get(3),
                acked_at: r.get(4),
                czlx: r.get(5),
                jlid: r.get(6),
                codes: parse_json(&codes, "results.codes")?,
                opinion: r.get(8),
                decided_at: r.get(9),
            });
        }
        Ok(Some(Timeline {
            filing,
            events,
            attempts,
            results,
        }))
    }

    /// (state, province, count) for every pair with filings.
    pub async fn counts_by_state_province(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT state, province, COUNT(*) FROM filings GROUP BY state, province ORDER BY state, province",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Filings not yet submitted whose deadline is at or after `from` (when given) and before
    /// `until` (RFC 3339 +08:00 texts compare in time order), earliest deadline first.
    pub async fn not_submitted_due(
        &self,
        from: Option<&str>,
        until: &str,
    ) -> Result<Vec<DeadlineItem>> {
        let rows = sqlx::query(
            "SELECT id, province, state, deadline FROM filings
             WHERE state IN ($1, $2, $3, $4, $5) AND deadline IS NOT NULL
               AND ($6 IS NULL OR deadline >= $6) AND deadline < $7
             ORDER BY deadline, id",
        )
        .bind(NOT_SUBMITTED[0])
        .bind(NOT_SUBMITTED[1])
        .bind(NOT_SUBMITTED[2])
        .bind(NOT_SUBMITTED[3])
        .bind(NOT_SUBMITTED[4])
        .bind(from)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| DeadlineItem {
                id: r.get(0),
                province: r.get(1),
                state: r.get(2),
                deadline: r.get(3),
            })
            .collect())
    }

    // ---- the work lock ----

    /// Takes a work lock lease for `holder`: a `once` only when nobody else works on the
    /// database, a `run` when no `once` does. Expired leases (crashed holders) are removed
    /// first. Returns the live holder that prevents it, if any.
    pub async fn acquire_work_lock(
        &self,
        holder: &str,
        kind: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<LockHolder>> {
        let mut tx = self.begin().await?;
        // Serializes every acquisition: the row lock (PostgreSQL) or the write lock (SQLite).
        sqlx::query("UPDATE work_lock_gate SET bumps = bumps + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM work_locks WHERE expires_ms < $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let blocker = sqlx::query(
            "SELECT holder, kind, acquired_at, expires_ms FROM work_locks
             WHERE holder <> $1 AND ($2 = 'once' OR kind = 'once') ORDER BY acquired_at LIMIT 1",
        )
        .bind(holder)
        .bind(kind)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = blocker {
            return Ok(Some(LockHolder {
                holder: r.get(0),
                kind: r.get(1),
                acquired_at: r.get(2),
                expires_ms: r.get(3),
            }));
        }
        sqlx::query(
            "INSERT INTO work_locks (holder, kind, acquired_at, expires_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (holder) DO UPDATE SET expires_ms = $4",
        )
        .bind(holder)
        .bind(kind)
        .bind(fmt_time(now()))
        .bind(now_ms + ttl_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(None)
    }

    /// Extends a lease; false when it was lost (expired and removed by another process).
    pub async fn renew_work_lock(&self, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let _turn = self.turn().await;
        let done = sqlx::query("UPDATE work_locks SET expires_ms = $1 WHERE holder = $2")
            .bind(now_ms + ttl_ms)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn release_work_lock(&self, holder: &str) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("DELETE FROM work_locks WHERE holder = $1")
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- claims that were never sent ----

    /// Gives back the newest stored file of a bureau when no byte of it was ever sent
    /// (`sent_at` empty) and it was stored before `older_than`: its filings return to `queued`,
    /// the file, its attempts and their records are removed and the stream number is reused —
    /// safe because the bureau never saw it. Returns the filings released (empty when nothing
    /// qualified). Files that were sent stay: the next cycle reconciles them.
    pub async fn release_unsent(&self, province: &str, older_than: &str) -> Result<Vec<String>> {
        let now = fmt_time(now());
        let mut tx = self.begin().await?;
        let Some(file) = sqlx::query(
            "SELECT u.id, u.data_sequence, u.file_name FROM upload_files u JOIN bureaus b ON b.province = u.province
             WHERE u.province = $1 AND u.data_sequence = b.last_sequence AND u.status = 'pending'
               AND u.sent_at IS NULL AND u.created_at < $2",
        )
        .bind(province)
        .bind(older_than)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Vec::new());
        };
        let upload_id: i64 = file.get(0);
        let seq: i64 = file.get(1);
        let file_name: String = file.get(2);
        let claimed: Vec<(String, i64, i64)> = sqlx::query(
            "SELECT u.filing_id, u.attempt_id, a.attempt_no FROM upload_file_filings u JOIN attempts a ON a.id = u.attempt_id
             WHERE u.upload_id = $1 ORDER BY u.filing_id",
        )
        .bind(upload_id)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
        let mut released = Vec::new();
        for (filing_id, attempt_id, attempt_no) in &claimed {
            let previous: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM attempts WHERE filing_id = $1 AND attempt_no < $2 ORDER BY attempt_no DESC LIMIT 1",
            )
            .bind(filing_id)
            .bind(attempt_no)
            .fetch_optional(&mut *tx)
            .await?;
            let done = sqlx::query(
                "UPDATE filings SET state = 'queued', attempts = $1, current_attempt = $2, updated_at = $3
                 WHERE id = $4 AND state = 'submitting' AND current_attempt = $5",
            )
            .bind(attempt_no - 1)
            .bind(previous)
            .bind(&now)
            .bind(filing_id)
            .bind(attempt_id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                // The filing moved on: something else owns this file. Leave it all alone.
                return Ok(Vec::new());
            }
            for sql in [
                "DELETE FROM attempt_ids WHERE attempt_id = $1",
                "DELETE FROM attempt_records WHERE attempt_id = $1",
            ] {
                sqlx::query(sql).bind(attempt_id).execute(&mut *tx).await?;
            }
            insert_event(
                &mut tx,
                Some(filing_id),
                Some(province),
                "released",
                "gateway",
                json!({"attempt": attempt_no, "dataSequence": seq, "file": file_name, "why": "claimed but never sent"}),
            )
            .await?;
            released.push(filing_id.clone());
        }
        sqlx::query("DELETE FROM upload_file_filings WHERE upload_id = $1")
            .bind(upload_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM attempts WHERE upload_id = $1")
            .bind(upload_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM upload_files WHERE id = $1")
            .bind(upload_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE bureaus SET last_sequence = $1 WHERE province = $2 AND last_sequence = $3",
        )
        .bind(seq - 1)
        .bind(province)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(released)
    }

    /// Provinces with a stored file whose arrival is not confirmed, created before `before`.
    pub async fn provinces_with_stale_uploads(&self, before: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT province FROM upload_files WHERE status = 'pending' AND created_at < $1 ORDER BY province",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Whether the database answers (for `/healthz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }
}
