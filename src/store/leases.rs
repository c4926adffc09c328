//! Leases: what lets several gateway instances share one database (PostgreSQL) without two of
//! them claiming the same filing or sending to the same bureau.
//!
//! - **Bureau lease** (`bureau_leases`, one row per bureau): the one instance that may send to a
//!   bureau, download from it and acknowledge. The holder renews it while it works; when it dies
//!   the lease runs out and another instance takes the bureau over. Each takeover raises the
//!   row's `token` (a fencing token): a file is stored only under the current token, so an
//!   instance that lost the bureau while it was stalled cannot extend the stream.
//! - **Filing leases** (`filings.lease_owner/lease_until_ms`): queued filings are leased with
//!   `FOR UPDATE SKIP LOCKED` (PostgreSQL) in one short transaction before a batch is built;
//!   only leased filings can be claimed into a file.
//! - **Upload leases** (`upload_files.lease_owner/lease_until_ms`): a stored, unconfirmed file
//!   belongs to its sender; once that lease expires the bureau's sender adopts the file and
//!   reconciles it (`isp_querypreviousupload`, then arrived or the same file again).
//!
//! Times come from the database's clock, so instances on hosts whose clocks drift agree.
//! Owns: the lease SQL. Must not talk to bureaus.

use serde_json::json;
use sqlx::Row;

use super::{Backend, QueuedFiling, Result, Store, StoreError, UploadFile, insert_event, json_err};

/// A bureau lease held by this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BureauLease {
    pub province: String,
    pub owner: String,
    /// Raised by one at every takeover by another instance.
    pub token: i64,
    pub expires_ms: i64,
    /// This acquisition took the bureau (its first lease, or a takeover from another instance),
    /// rather than renewing a lease this owner already held: nothing is known of the requests
    /// the bureau saw last.
    pub taken: bool,
}

/// One takeover of a bureau (`bureau_lease_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseLogEntry {
    pub province: String,
    pub owner: String,
    pub token: i64,
    pub acquired_ms: i64,
    pub previous_owner: Option<String>,
    pub previous_expires_ms: Option<i64>,
}

/// The oldest unconfirmed file of a bureau, as seen by its sender.
#[derive(Debug, Clone)]
pub enum PendingUpload {
    /// No file waits.
    None,
    /// The oldest file is still leased by another instance (it may be sending it right now):
    /// nothing later may be sent before it.
    Busy { owner: String },
    /// The file, now leased by the caller. `adopted_from` names the instance whose lease ran
    /// out: that instance may have sent it, so the outcome is unknown and must be reconciled.
    File {
        file: UploadFile,
        adopted_from: Option<String>,
    },
}

const NOW_MS_SQLITE: &str = "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
const NOW_MS_POSTGRES: &str = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

const LEASE_QUEUED_SQLITE: &str = "UPDATE filings SET lease_owner = $1, lease_until_ms = $2
     WHERE id IN (SELECT id FROM filings
                  WHERE state = 'queued' AND province = $3
                    AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until_ms < $4)
                  ORDER BY deadline, id LIMIT $5)
     RETURNING document, revision, attempts, deadline, id";
// The same, with the rows locked and rows another transaction holds skipped: two instances
// leasing at once get disjoint sets without waiting on each other.
const LEASE_QUEUED_POSTGRES: &str = "UPDATE filings SET lease_owner = $1, lease_until_ms = $2
     WHERE id IN (SELECT id FROM filings
                  WHERE state = 'queued' AND province = $3
                    AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until_ms < $4)
                  ORDER BY deadline, id LIMIT $5
                  FOR UPDATE SKIP LOCKED)
     RETURNING document, revision, attempts, deadline, id";

impl Store {
    /// Milliseconds since the epoch on the database's clock.
    pub async fn db_now_ms(&self) -> Result<i64> {
        let sql = match self.backend {
            Backend::Sqlite => NOW_MS_SQLITE,
            Backend::Postgres => NOW_MS_POSTGRES,
        };
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }

    /// Takes the bureau's lease for `owner`, or renews it when `owner` holds it. `None` while
    /// another instance holds an unexpired lease. A takeover is logged and raises the token.
    pub async fn acquire_bureau_lease(
        &self,
        province: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<BureauLease>> {
        let now = self.db_now_ms().await?;
        let mut tx = self.begin().await?;
        let before =
            sqlx::query("SELECT owner, token, expires_ms FROM bureau_leases WHERE province = $1")
                .bind(province)
                .fetch_optional(&mut *tx)
                .await?;
        let row = sqlx::query(
            "INSERT INTO bureau_leases (province, owner, token, acquired_ms, expires_ms)
             VALUES ($1, $2, 1, $3, $4)
             ON CONFLICT (province) DO UPDATE SET
                 token = CASE WHEN bureau_leases.owner = excluded.owner
                              THEN bureau_leases.token ELSE bureau_leases.token + 1 END,
                 acquired_ms = CASE WHEN bureau_leases.owner = excluded.owner
                                    THEN bureau_leases.acquired_ms ELSE excluded.acquired_ms END,
                 owner = excluded.owner,
                 expires_ms = excluded.expires_ms
             WHERE bureau_leases.owner = excluded.owner OR bureau_leases.expires_ms < $3
             RETURNING token, acquired_ms",
        )
        .bind(province)
        .bind(owner)
        .bind(now)
        .bind(now + lease_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let token: i64 = row.get(0);
        let acquired_ms: i64 = row.get(1);
        let previous: Option<(String, i64, i64)> = before.map(|r| (r.get(0), r.get(1), r.get(2)));
        let taken_over = previous.as_ref().is_none_or(|(_, t, _)| *t != token);
        if taken_over {
            sqlx::query(
                "INSERT INTO bureau_lease_log (province, owner, token, acquired_ms, previous_owner, previous_expires_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(province)
            .bind(owner)
            .bind(token)
            .bind(acquired_ms)
            .bind(previous.as_ref().map(|(o, _, _)| o.clone()))
            .bind(previous.as_ref().map(|(_, _, e)| *e))
            .execute(&mut *tx)
            .await?;
            insert_event(
                &mut tx,
                None,
                Some(province),
                "bureau_lease_taken",
                owner,
                json!({"token": token, "previousOwner": previous.as_ref().map(|(o, _, _)| o)}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(BureauLease {
            province: province.to_owned(),
            owner: owner.to_owned(),
            token,
            expires_ms: now + lease_ms,
            taken: taken_over,
        }))
    }

    /// Extends a held lease. False when another instance took the bureau over (the token moved):
    /// the caller must stop sending to that bureau at once.
    pub async fn renew_bureau_lease(&self, lease: &BureauLease, lease_ms: i64) -> Result<bool> {
        let _turn = self.turn().await;
        let now = self.db_now_ms().await?;
        let done = sqlx::query(
            "UPDATE bureau_leases SET expires_ms = $1 WHERE province = $2 AND owner = $3 AND token = $4",
        )
        .bind(now + lease_ms)
        .bind(&lease.province)
        .bind(&lease.owner)
        .bind(lease.token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a bureau up at once (graceful stop), so another instance need not wait a lease out.
    pub async fn release_bureau_lease(&self, lease: &BureauLease) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query(
            "UPDATE bureau_leases SET expires_ms = 0 WHERE province = $1 AND owner = $2 AND token = $3",
        )
        .bind(&lease.province)
        .bind(&lease.owner)
        .bind(lease.token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives up every bureau lease `owner` holds (graceful stop).
    pub async fn release_bureau_leases_of(&self, owner: &str) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("UPDATE bureau_leases SET expires_ms = 0 WHERE owner = $1")
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every bureau takeover in order (for `status` and the several-instances test).
    pub async fn bureau_lease_log(&self) -> Result<Vec<LeaseLogEntry>> {
        let rows = sqlx::query(
            "SELECT province, owner, token, acquired_ms, previous_owner, previous_expires_ms
             FROM bureau_lease_log ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| LeaseLogEntry {
                province: r.get(0),
                owner: r.get(1),
                token: r.get(2),
                acquired_ms: r.get(3),
                previous_owner: r.get(4),
                previous_expires_ms: r.get(5),
            })
            .collect())
    }

    /// Leases up to `limit` queued filings of a bureau for `owner`, earliest deadline first, in
    /// one short transaction. Filings leased by another live instance are skipped.
    pub async fn lease_queued(
        &self,
        province: &str,
        owner: &str,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<QueuedFiling>> {
        let now = self.db_now_ms().await?;
        let sql = match self.backend {
            Backend::Sqlite => LEASE_QUEUED_SQLITE,
            Backend::Postgres => LEASE_QUEUED_POSTGRES,
        };
        let mut tx = self.begin().await?;
        let rows = sqlx::query(sql)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(province)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut leased = rows
            .into_iter()
            .map(|r| {
                let doc: String = r.get(0);
                let deadline: Option<String> = r.get(3);
                let id: String = r.get(4);
                let filing = serde_json::from_str(&doc).map_err(json_err("filings.document"))?;
                Ok((
                    (deadline, id),
                    QueuedFiling {
                        filing,
                        revision: r.get(1),
                        attempts: r.get(2),
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // RETURNING keeps no order: earliest deadline first again.
        leased.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(leased.into_iter().map(|(_, q)| q).collect())
    }

    /// Drops `owner`'s leases on filings that are still queued (not chosen for a file).
    pub async fn release_queued_leases(&self, province: &str, owner: &str) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query(
            "UPDATE filings SET lease_owner = NULL, lease_until_ms = NULL
             WHERE province = $1 AND lease_owner = $2 AND state = 'queued'",
        )
        .bind(province)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The oldest unconfirmed file of a bureau, leased to `owner` (the bureau's sender). A file
    /// whose previous sender's lease ran out is adopted (and said so, with an event).
    pub async fn adopt_pending_upload(
        &self,
        province: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<PendingUpload> {
        let now = self.db_now_ms().await?;
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT id, province, data_sequence, file_name, zip, status, lease_owner, lease_until_ms, sent_at
             FROM upload_files WHERE province = $1 AND status = 'pending' ORDER BY data_sequence LIMIT 1",
        )
        .bind(province)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(PendingUpload::None);
        };
        let previous: Option<String> = row.get(6);
        let until: Option<i64> = row.get(7);
        let sent_at: Option<String> = row.get(8);
        let file = UploadFile {
            id: row.get(0),
            province: row.get(1),
            data_sequence: row.get(2),
            file_name: row.get(3),
            zip: row.get(4),
            status: row.get(5),
        };
        let adopted_from = match previous {
            Some(p) if p != owner => {
                if until.is_some_and(|u| u >= now) {
                    tx.rollback().await?;
                    return Ok(PendingUpload::Busy { owner: p });
                }
                Some(p)
            }
            // Ours from before a restart of this very instance, or never leased: the outcome
            // is unknown when it was ever sent.
            _ => sent_at.map(|_| owner.to_owned()),
        };
        // Compare-and-set on the previous lease: two instances adopting at once cannot both win.
        let previous: Option<String> = row.get(6);
        let was_ours = previous.as_deref() == Some(owner);
        let done = match previous {
            Some(previous) => {
                sqlx::query(
                    "UPDATE upload_files SET lease_owner = $1, lease_until_ms = $2
                     WHERE id = $3 AND status = 'pending' AND lease_owner = $4",
                )
                .bind(owner)
                .bind(now + lease_ms)
                .bind(file.id)
                .bind(previous)
                .execute(&mut *tx)
                .await?
            }
            None => {
                sqlx::query(
                    "UPDATE upload_files SET lease_owner = $1, lease_until_ms = $2
                     WHERE id = $3 AND status = 'pending' AND lease_owner IS NULL",
                )
                .bind(owner)
                .bind(now + lease_ms)
                .bind(file.id)
                .execute(&mut *tx)
                .await?
            }
        };
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(PendingUpload::Busy {
                owner: "(changed)".into(),
            });
        }
        // The file's filings name their sender. A file that was already ours (stored by this
        // instance) has them leased to us since the claim; only a file taken from another
        // owner, or never leased, moves them (a filing lease gates queued filings only).
        if !was_ours {
            sqlx::query(
                "UPDATE filings SET lease_owner = $1, lease_until_ms = $2
                 WHERE id IN (SELECT f.id FROM upload_file_filings u JOIN filings f ON f.id = u.filing_id
                              WHERE u.upload_id = $3 AND f.state = 'submitting')",
            )
            .bind(owner)
            .bind(now + lease_ms)
            .bind(file.id)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(from) = adopted_from.as_deref().filter(|f| *f != owner) {
            insert_event(
                &mut tx,
                None,
                Some(province),
                "upload_adopted",
                owner,
                json!({"dataSequence": file.data_sequence, "from": from}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(PendingUpload::File { file, adopted_from })
    }

    /// Fails unless `lease` is still the bureau's current lease (inside the caller's
    /// transaction; on PostgreSQL the row stays locked until it commits, so a takeover waits).
    pub(crate) async fn check_bureau_lease(
        tx: &mut super::WriteTx,
        lease: &BureauLease,
    ) -> Result<()> {
        let held = sqlx::query(
            "UPDATE bureau_leases SET token = token WHERE province = $1 AND owner = $2 AND token = $3",
        )
        .bind(&lease.province)
        .bind(&lease.owner)
        .bind(lease.token)
        .execute(&mut **tx)
        .await?;
        if held.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost {
                province: lease.province.clone(),
                owner: lease.owner.clone(),
            })
        }
    }
}
