//! The store: every row the gateway keeps, and every SQL statement it runs (SQLite, WAL).
//!
//! Owns: SQL and transactions. Each method is one short transaction — never one held across a
//! network call. Must not talk to bureaus, build XML or read attachments. The methods are the
//! behaviour a PostgreSQL store must share (same names, same guarantees).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Row};

use crate::domain::Filing;

pub mod admin;
pub mod deadlines;
pub mod leases;
pub mod registry;

pub use leases::{BureauLease, LeaseLogEntry, PendingUpload};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "filing {id}: already imported with a different document (revision {revision}); refusing the conflicting re-import"
    )]
    Conflict { id: String, revision: i64 },
    #[error("stored JSON is malformed in {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "bureau {province}: the upload stream moved (expected last dataSequence {expected}, found {found})"
    )]
    StreamMoved {
        province: String,
        expected: i64,
        found: i64,
    },
    #[error(
        "bureau {province}: instance {owner} no longer holds the bureau's lease (another instance took it over)"
    )]
    LeaseLost { province: String, owner: String },
    #[error("database URL {0:?} is not supported by this store (sqlite:PATH or postgres://…)")]
    Url(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Filing states (filing-format.md "Out").
pub mod state {
    pub const REVIEWED: &str = "reviewed";
    pub const QUEUED: &str = "queued";
    pub const SUBMITTING: &str = "submitting";
    pub const SUBMITTED: &str = "submitted";
    pub const AWAITING_SMS: &str = "awaiting_sms";
    pub const APPROVED: &str = "approved";
    pub const REJECTED: &str = "rejected";
    pub const EXPIRED: &str = "expired";
    pub const NEEDS_CORRECTION: &str = "needs_correction";
    pub const HELD: &str = "held";
    pub const ALL: [&str; 10] = [
        REVIEWED,
        QUEUED,
        SUBMITTING,
        SUBMITTED,
        AWAITING_SMS,
        APPROVED,
        REJECTED,
        EXPIRED,
        NEEDS_CORRECTION,
        HELD,
    ];
    pub fn is_terminal(s: &str) -> bool {
        matches!(s, APPROVED | REJECTED | EXPIRED | NEEDS_CORRECTION)
    }
}

/// Asia/Shanghai has had no DST since 1991: a fixed +08:00 is exact for every time we handle.
const SHANGHAI: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("+08:00 is a valid offset"),
};

pub fn tz() -> FixedOffset {
    SHANGHAI
}

pub fn now() -> DateTime<FixedOffset> {
    chrono::Utc::now().with_timezone(&tz())
}

pub fn fmt_time(t: DateTime<FixedOffset>) -> String {
    t.with_timezone(&tz())
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// A reason on a filing (filing-format.md): preflight findings and bureau results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub source: String,
    pub code: serde_json::Value,
    pub field: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteNumber {
    pub domain: String,
    pub number: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppNumber {
    pub package_name: String,
    pub number: String,
}

/// One line of `export --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub id: String,
    pub state: String,
    pub deadline: Option<String>,
    pub submitted_at: Option<String>,
    pub attempts: i64,
    pub upload: Option<UploadRef>,
    pub subject_record_number: Option<String>,
    pub site_record_numbers: Vec<SiteNumber>,
    pub app_record_numbers: Vec<AppNumber>,
    pub reasons: Vec<Reason>,
    pub decided_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRef {
    pub data_sequence: i64,
    pub file: String,
}

/// A queued filing ready to be built.
#[derive(Debug, Clone)]
pub struct QueuedFiling {
    pub filing: Filing,
    pub revision: i64,
    pub attempts: i64,
}

/// A stored upload file.
#[derive(Debug, Clone)]
pub struct UploadFile {
    pub id: i64,
    pub province: String,
    pub data_sequence: i64,
    pub file_name: String,
    pub zip: Vec<u8>,
    pub status: String,
}

/// One attempt to be stored with the file that carries it.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub filing_id: String,
    pub revision: i64,
    pub attempt_no: i64,
    pub ids_json: String,
    /// (Czlx, Jlid, part): the results the bureau will send for this attempt.
    pub records: Vec<(i64, i64, String)>,
    /// (kind, value, part): every id the attempt used, for matching BASJ records.
    pub id_keys: Vec<(&'static str, i64, String)>,
}

#[derive(Debug, Clone)]
pub struct NewUploadFile {
    pub data_sequence: i64,
    pub file_name: String,
    pub zip: Vec<u8>,
    pub record_count: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    pub new: usize,
    pub unchanged: usize,
}

#[derive(Debug, Clone, Default)]
pub struct BureauRow {
    pub last_sequence: i64,
    pub codes_received: bool,
    pub paused_reason: Option<String>,
}

/// Which database a store runs on. The SQL is shared (`$n` placeholders, portable syntax);
/// where the two differ, the store branches on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The name sqlx gives the backend (`AnyConnection::backend_name`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite: write transactions of this process take turns here. SQLite has one writer at a
    /// time, and a writer that finds the lock taken sleeps in its busy handler (1, 2, 5 … 100
    /// ms) however soon the lock is free; 31 bureaus' claims and result files queued that way.
    /// Waiting here wakes the next writer as the last one commits. Other processes on the same
    /// file still meet the busy handler (busy_timeout), as before.
    write_gate: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    write_turns: std::sync::Arc<WriteTurns>,
}

/// A write transaction (`Store::begin`): derefs to its connection like `sqlx::Transaction`;
/// on SQLite it holds the process's write turn until it is committed or dropped (rolled back).
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<Held>,
}

/// The SQLite write turn, held: adds how long it was held to the store's total when dropped.
pub(crate) struct Held {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    since: std::time::Instant,
    total: std::sync::Arc<WriteTurns>,
}

impl Drop for Held {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.total
            .nanos
            .fetch_add(self.since.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.total.turns.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long this process held SQLite's write turn, and how many times (for `bench`).
#[derive(Debug, Default)]
pub struct WriteTurns {
    nanos: std::sync::atomic::AtomicU64,
    turns: std::sync::atomic::AtomicU64,
}

impl WriteTurns {
    /// (time held in all, turns taken).
    pub fn read(&self) -> (std::time::Duration, u64) {
        use std::sync::atomic::Ordering;
        (
            std::time::Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
            self.turns.load(Ordering::Relaxed),
        )
    }
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

fn json_err(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> StoreError {
    let what = what.into();
    move |source| StoreError::Json { what, source }
}

impl Store {
    /// Opens the database (`sqlite:PATH`, created when missing, WAL; or `postgres://…`) and
    /// applies the embedded migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (backend, connect_url) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            let file = path.split('?').next().unwrap_or(path);
            if file != ":memory:"
                && let Some(dir) = Path::new(file).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Db(sqlx::Error::Configuration(
                        format!("cannot create {}: {e}", dir.display()).into(),
                    ))
                })?;
            }
            (Backend::Sqlite, format!("sqlite:{file}?mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::Url(url.to_owned()));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 30000").await?;
                        // 8 MiB of page cache per connection (the default 2 MiB re-read the
                        // filings' pages from the OS on every batch), and a checkpoint every
                        // ~32 MiB of WAL instead of 4: a page written by several commits in
                        // between is copied back once (measured: commits 5-50 ms → 3-4 ms).
                        conn.execute("PRAGMA cache_size = -8192").await?;
                        conn.execute("PRAGMA wal_autocheckpoint = 8000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await?;
        // Several instances may start at once. PostgreSQL: sqlx's migrator holds a
        // pg_advisory_lock from before it creates its table until it is done. SQLite: its lock
        // is a no-op, so the instances on one file take turns through a lock file beside it.
        match backend {
            Backend::Sqlite => {
                let _turn = sqlite_migration_lock(&connect_url)?;
                sqlx::migrate!("migrations/sqlite").run(&pool).await?
            }
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        let write_gate =
            (backend == Backend::Sqlite).then(|| std::sync::Arc::new(tokio::sync::Mutex::new(())));
        Ok(Self {
            pool,
            backend,
            write_gate,
            write_turns: Default::default(),
        })
    }

    /// A write transaction. SQLite: `BEGIN IMMEDIATE`, so a transaction that reads before it
    /// writes waits for the write lock (busy_timeout) instead of failing with SQLITE_BUSY when
    /// another process wrote in between — several processes may share one file.
    async fn begin(&self) -> Result<WriteTx> {
        let turn = self.turn().await;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _turn: turn })
    }

    /// This process's write turn on SQLite (see `write_gate`), for a write statement run
    /// outside a transaction; `None` on PostgreSQL.
    pub(crate) async fn turn(&self) -> Option<Held> {
        match &self.write_gate {
            Some(gate) => Some(Held {
                _guard: gate.clone().lock_owned().await,
                since: std::time::Instant::now(),
                total: self.write_turns.clone(),
            }),
            None => None,
        }
    }

    /// How long this process held SQLite's write turn so far (zero on PostgreSQL).
    pub fn write_turns(&self) -> &WriteTurns {
        &self.write_turns
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    // ---- import ----

    /// Imports the filings of one file, all or nothing: one lookup of the known ids, then
    /// multi-row inserts of the new filings and their events.
    pub async fn import(&self, filings: &[Filing], actor: &str) -> Result<ImportSummary> {
        let now = fmt_time(now());
        let mut summary = ImportSummary {
            new: 0,
            unchanged: 0,
        };
        let mut tx = self.begin().await?;
        // id → (stored document, revision), for the ids of this file already in the store.
        let mut known: HashMap<String, (String, i64)> = HashMap::new();
        for chunk in filings.chunks(500) {
            let sql = format!(
                "SELECT id, document, revision FROM filings WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = batched(tx.backend_name(), sql);
            for f in chunk {
                q = q.bind(&f.id);
            }
            for row in q.fetch_all(&mut *tx).await? {
                known.insert(row.get(0), (row.get(1), row.get(2)));
            }
        }
        let mut fresh: Vec<(&Filing, String)> = Vec::new();
        for f in filings {
            let doc = f.canonical_json();
            if let Some((stored, revision)) = known.get(&f.id) {
                if *stored == doc {
                    summary.unchanged += 1;
                    continue;
                }
                return Err(StoreError::Conflict {
                    id: f.id.clone(),
                    revision: *revision,
                });
            }
            // A second copy of an id within the file compares with the first.
            known.insert(f.id.clone(), (doc.clone(), 1));
            fresh.push((f, doc));
        }
        for chunk in fresh.chunks(400) {
            let sql = multi_row_insert(
                "INSERT INTO filings (id, filing_type, province, state, document, reviewed_at, created_at, updated_at) VALUES ",
                8,
                chunk.len(),
                1,
            );
            let mut q = batched(tx.backend_name(), sql);
            for (f, doc) in chunk {
                q = q
                    .bind(&f.id)
                    .bind(f.filing_type.as_str())
                    .bind(&f.province)
                    .bind("reviewed")
                    .bind(doc)
                    .bind(fmt_time(f.reviewed_at))
                    .bind(&now)
                    .bind(&now);
            }
            q.execute(&mut *tx).await?;
        }
        let events: Vec<NewEvent<'_>> = fresh
            .iter()
            .map(|(f, _)| NewEvent {
                filing: Some(&f.id),
                province: Some(&f.province),
                kind: "imported",
                actor,
                detail: json!({"type": f.filing_type.as_str()}).to_string(),
            })
            .collect();
        insert_events(&mut tx, &events).await?;
        summary.new = fresh.len();
        tx.commit().await?;
        Ok(summary)
    }

    // ---- intake ----

    /// Reviewed filings (oldest first), for intake.
    pub async fn reviewed(&self, limit: i64) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT id, reviewed_at, document FROM filings WHERE state = 'reviewed' ORDER BY reviewed_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// reviewed → queued with its deadline: one multi-row update per 400 filings (a filing no
    /// longer reviewed is left alone), and an event for each one queued.
    pub async fn queue(&self, items: &[(String, DateTime<FixedOffset>)]) -> Result<()> {
        let now = fmt_time(now());
        let mut tx = self.begin().await?;
        let mut queued: Vec<(String, String, String)> = Vec::with_capacity(items.len());
        for chunk in items.chunks(400) {
            let sql = format!(
                "UPDATE filings SET state = 'queued', deadline = v.column2, updated_at = $1
                 FROM ({}) AS v
                 WHERE filings.id = v.column1 AND filings.state = 'reviewed'
                 RETURNING filings.id, filings.province, filings.deadline",
                multi_row_insert("VALUES ", 2, chunk.len(), 2)
            );
            let mut q = batched(tx.backend_name(), sql).bind(&now);
            for (id, deadline) in chunk {
                q = q.bind(id).bind(fmt_time(*deadline));
            }
            for row in q.fetch_all(&mut *tx).await? {
                queued.push((row.get(0), row.get(1), row.get(2)));
            }
        }
        let events: Vec<NewEvent<'_>> = queued
            .iter()
            .map(|(id, province, deadline)| NewEvent {
                filing: Some(id),
                province: Some(province),
                kind: "queued",
                actor: "gateway",
                detail: json!({"deadline": deadline}).to_string(),
            })
            .collect();
        insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks a filing `needs_correction` with all its findings (from reviewed or queued).
    pub async fn needs_correction(&self, id: &str, reasons: &[Reason]) -> Result<()> {
        let now = fmt_time(now());
        let mut tx = self.begin().await?;
        let reasons_json = serde_json::to_string(reasons).map_err(json_err("reasons"))?;
        let done = sqlx::query(
            "UPDATE filings SET state = 'needs_correction', reasons = $1, decided_at = NULL, updated_at = $2,
                    lease_owner = NULL, lease_until_ms = NULL
             WHERE id = $3 AND state IN ('reviewed', 'queued')",
        )
        .bind(&reasons_json)
        .bind(&now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            let codes: Vec<&serde_json::Value> = reasons.iter().map(|r| &r.code).collect();
            insert_event(
                &mut tx,
                Some(id),
                None,
                "needs_correction",
                "gateway",
                json!({"codes": codes}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- bureaus ----

    pub async fn bureau(&self, province: &str) -> Result<BureauRow> {
        let select =
            "SELECT last_sequence, codes_received, paused_reason FROM bureaus WHERE province = $1";
        let row = match sqlx::query(select)
            .bind(province)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(row) => row,
            None => {
                let _turn = self.turn().await;
                sqlx::query(
                    "INSERT INTO bureaus (province) VALUES ($1) ON CONFLICT (province) DO NOTHING",
                )
                .bind(province)
                .execute(&self.pool)
                .await?;
                sqlx::query(select)
                    .bind(province)
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        Ok(BureauRow {
            last_sequence: row.get(0),
            codes_received: row.get::<i64, _>(1) != 0,
            paused_reason: row.get(2),
        })
    }

    /// Reserves `n` provider ids for a bureau; returns the first. Ids are never reused.
    pub async fn allocate_provider_ids(&self, province: &str, n: i64) -> Result<i64> {
        let _turn = self.turn().await;
        let first: i64 = sqlx::query_scalar(
            "UPDATE bureaus SET next_provider_id = next_provider_id + $1 WHERE province = $2 RETURNING next_provider_id - $3",
        )
        .bind(n)
        .bind(province)
        .bind(n)
        .fetch_one(&self.pool)
        .await?;
        Ok(first)
    }

    pub async fn pause_bureau(&self, province: &str, reason: &str) -> Result<()> {
        let now = fmt_time(now());
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE bureaus SET paused_reason = $1, paused_at = $2 WHERE province = $3")
            .bind(reason)
            .bind(&now)
            .bind(province)
            .execute(&mut *tx)
            .await?;
        insert_event(
            &mut tx,
            None,
            Some(province),
            "alarm.bureau_paused",
            "gateway",
            json!({"reason": reason}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn resume_bureau(&self, province: &str, actor: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE bureaus SET paused_reason = NULL, paused_at = NULL WHERE province = $1",
        )
        .bind(province)
        .execute(&mut *tx)
        .await?;
        insert_event(
            &mut tx,
            None,
            Some(province),
            "bureau_resumed",
            actor,
            json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An alarm without a state change (stored as an event).
    pub async fn alarm(
        &self,
        province: Option<&str>,
        filing: Option<&str>,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_event(
            &mut tx,
            filing,
            province,
            &format!("alarm.{kind}"),
            "gateway",
            detail,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Provinces with anything to do: queued filings, unsent files, open results or a download
    /// applied but not yet acknowledged (a crash between the two).
    ///
    /// `known` are the configured provinces; every bureau the store has a row for is asked as
    /// well. Each is one indexed probe per condition, so the cost does not grow with the
    /// backlog (a `SELECT DISTINCT province` over the open filings would read all of them).
    pub async fn active_provinces(&self, known: &[String]) -> Result<Vec<String>> {
        let mut candidates: std::collections::BTreeSet<String> = known.iter().cloned().collect();
        let rows = sqlx::query("SELECT province FROM bureaus")
            .fetch_all(&self.pool)
            .await?;
        candidates.extend(rows.into_iter().map(|r| r.get::<String, _>(0)));
        let candidates: Vec<String> = candidates.into_iter().collect();
        let mut active = Vec::new();
        for chunk in candidates.chunks(200) {
            let sql = format!(
                "SELECT c.column1 FROM ({}) AS c
                 WHERE EXISTS (SELECT 1 FROM filings f WHERE f.state IN ('queued', 'submitting', 'submitted', 'awaiting_sms') AND f.province = c.column1)
                    OR EXISTS (SELECT 1 FROM upload_files u WHERE u.province = c.column1 AND u.status = 'pending')
                    OR EXISTS (SELECT 1 FROM download_files d WHERE d.province = c.column1 AND d.acked_at IS NULL)
                 ORDER BY 1",
                multi_row_insert("VALUES ", 1, chunk.len(), 1)
            );
            let mut q = batched(self.backend.name(), sql);
            for p in chunk {
                q = q.bind(p);
            }
            active.extend(
                q.fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(|r| r.get::<String, _>(0)),
            );
        }
        Ok(active)
    }

    /// Provinces with queued filings, earliest deadline first.
    pub async fn queued_provinces(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT province, MIN(deadline) AS d FROM filings WHERE state = 'queued' GROUP BY province ORDER BY d",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Queued filings of a province, earliest deadline first.
    pub async fn queued(&self, province: &str, limit: i64) -> Result<Vec<QueuedFiling>> {
        let rows = sqlx::query(
            "SELECT document, revision, attempts FROM filings WHERE state = 'queued' AND province = $1
             ORDER BY deadline, id LIMIT $2",
        )
        .bind(province)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let doc: String = r.get(0);
                let filing: Filing =
                    serde_json::from_str(&doc).map_err(json_err("filings.document"))?;
                Ok(QueuedFiling {
                    filing,
                    revision: r.get(1),
                    attempts: r.get(2),
                })
            })
            .collect()
    }

    /// Province ids (Ztid for BGBA; (Zxlb, Jlid) for ZXBA) with an unresolved record: a later
    /// change or cancellation of the same record waits (bureau-protocol.md 5.1).
    pub async fn open_keys(&self, province: &str) -> Result<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT czlx, jlid FROM attempt_records WHERE province = $1 AND czlx IN (4, 5, 6, 7) AND status IN ('open', 'awaiting_sms')",
        )
        .bind(province)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Claims filings and stores the file that carries them, in one transaction, before any
    /// byte is sent. Fails without effect when the stream moved or a filing changed.
    /// Only the holder of the bureau's current lease can store a file (fencing), and only
    /// filings it leased can be claimed.
    pub async fn store_upload(
        &self,
        lease: &BureauLease,
        expected_last: i64,
        file: &NewUploadFile,
        attempts: &[NewAttempt],
        lease_ms: i64,
    ) -> Result<i64> {
        let province = lease.province.as_str();
        let until = self.db_now_ms().await? + lease_ms;
        let now = fmt_time(now());
        let mut tx = self.begin().await?;
        Self::check_bureau_lease(&mut tx, lease).await?;
        let moved = sqlx::query(
            "UPDATE bureaus SET last_sequence = $1 WHERE province = $2 AND last_sequence = $3",
        )
        .bind(file.data_sequence)
        .bind(province)
        .bind(expected_last)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 || file.data_sequence != expected_last + 1 {
            let found: i64 =
                sqlx::query_scalar("SELECT last_sequence FROM bureaus WHERE province = $1")
                    .bind(province)
                    .fetch_one(&mut *tx)
                    .await?;
            return Err(StoreError::StreamMoved {
                province: province.to_owned(),
                expected: expected_last,
                found,
            });
        }
        let upload_id: i64 = sqlx::query_scalar(
            "INSERT INTO upload_files (province, data_sequence, file_name, zip, record_count, status, created_at, lease_owner, lease_until_ms)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8) RETURNING id",
        )
        .bind(province)
        .bind(file.data_sequence)
        .bind(&file.file_name)
        .bind(&file.zip)
        .bind(file.record_count)
        .bind(&now)
        .bind(&lease.owner)
        .bind(until)
        .fetch_one(&mut *tx)
        .await?;
        for chunk in attempts.chunks(500) {
            let sql = multi_row_insert(
                "INSERT INTO attempts (filing_id, attempt_no, province, ids, upload_id, created_at) VALUES ",
                6,
                chunk.len(),
                1,
            ) + " ON CONFLICT (filing_id, attempt_no) DO NOTHING";
            let mut q = batched(tx.backend_name(), sql);
            for a in chunk {
                q = q
                    .bind(&a.filing_id)
                    .bind(a.attempt_no)
                    .bind(province)
                    .bind(&a.ids_json)
                    .bind(upload_id)
                    .bind(&now);
            }
            q.execute(&mut *tx).await?;
        }
        let attempt_ids: HashMap<String, i64> =
            sqlx::query("SELECT filing_id, id FROM attempts WHERE upload_id = $1")
                .bind(upload_id)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
        // The claim: every filing still queued, at the revision built, leased by this
        // instance — or nothing at all. Its attempt is stored first, so that one update of the
        // filing row claims it and points it at the attempt.
        let mut claimed = 0usize;
        let stream_moved = || StoreError::StreamMoved {
            province: province.to_owned(),
            expected: expected_last,
            found: expected_last,
        };
        for chunk in attempts.chunks(250) {
            let sql = format!(
                "UPDATE filings SET state = 'submitting', attempts = v.column2, current_attempt = v.column4,
                        reasons = '[]', updated_at = $1, lease_until_ms = $2
                 FROM ({}) AS v
                 WHERE filings.id = v.column1 AND filings.state = 'queued' AND filings.revision = v.column3
                   AND filings.lease_owner = ${}
                 RETURNING filings.id",
                multi_row_insert("VALUES ", 4, chunk.len(), 3),
                3 + 4 * chunk.len()
            );
            let mut q = batched(tx.backend_name(), sql).bind(&now).bind(until);
            for a in chunk {
                // An attempt number already taken means the filing moved on: no claim.
                let attempt_id = attempt_ids
                    .get(&a.filing_id)
                    .copied()
                    .ok_or_else(stream_moved)?;
                q = q
                    .bind(&a.filing_id)
                    .bind(a.attempt_no)
                    .bind(a.revision)
                    .bind(attempt_id);
            }
            q = q.bind(&lease.owner);
            claimed += q.fetch_all(&mut *tx).await?.len();
        }
        if claimed != attempts.len() {
            // Changed under us (held, corrected): give the whole claim up; nothing was sent.
            return Err(stream_moved());
        }
        sqlx::query(
            "INSERT INTO upload_file_filings (upload_id, filing_id, attempt_id)
             SELECT upload_id, filing_id, id FROM attempts WHERE upload_id = $1",
        )
        .bind(upload_id)
        .execute(&mut *tx)
        .await?;
        let attempt_of = |a: &NewAttempt| -> Result<i64> {
            attempt_ids.get(&a.filing_id).copied().ok_or_else(|| {
                StoreError::Db(sqlx::Error::Protocol(format!(
                    "attempt of filing {} not found after insert",
                    a.filing_id
                )))
            })
        };
        let mut records = Vec::new();
        let mut keys = Vec::new();
        for a in attempts {
            let attempt_id = attempt_of(a)?;
            for r in &a.records {
                records.push((attempt_id, a.filing_id.as_str(), r));
            }
            for k in &a.id_keys {
                keys.push((attempt_id, k));
            }
        }
        for chunk in records.chunks(500) {
            let sql = multi_row_insert(
                "INSERT INTO attempt_records (attempt_id, filing_id, province, czlx, jlid, part) VALUES ",
                6,
                chunk.len(),
                1,
            );
            let mut q = batched(tx.backend_name(), sql);
            for (attempt_id, filing_id, (czlx, jlid, part)) in chunk {
                q = q
                    .bind(*attempt_id)
                    .bind(*filing_id)
                    .bind(province)
                    .bind(*czlx)
                    .bind(*jlid)
                    .bind(part);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in keys.chunks(500) {
            let sql = multi_row_insert(
                "INSERT INTO attempt_ids (province, kind, value, attempt_id, part) VALUES ",
                5,
                chunk.len(),
                1,
            );
            let mut q = batched(tx.backend_name(), sql);
            for (attempt_id, (kind, value, part)) in chunk {
                q = q
                    .bind(province)
                    .bind(*kind)
                    .bind(*value)
                    .bind(*attempt_id)
                    .bind(part);
            }
            q.execute(&mut *tx).await?;
        }
        let events: Vec<NewEvent<'_>> = attempts
            .iter()
            .map(|a| NewEvent {
                filing: Some(&a.filing_id),
                province: Some(province),
                kind: "claimed",
                actor: "gateway",
                detail: json!({"attempt": a.attempt_no, "dataSequence": file.data_sequence, "file": file.file_name})
                    .to_string(),
            })
            .collect();
        insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(upload_id)
    }

    /// The oldest stored file of a bureau whose arrival is not confirmed.
    pub async fn pending_upload(&self, province: &str) -> Result<Option<UploadFile>> {
        let row = sqlx::query(
            "SELECT id, province, data_sequence, file_name, zip, status FROM upload_files
             WHERE province = $1 AND status = 'pending' ORDER BY data_sequence LIMIT 1",
        )
        .bind(province)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(upload_from_row))
    }

    pub async fn upload_by_sequence(&self, province: &str, seq: i64) -> Result<Option<UploadFile>> {
        let row = sqlx::query(
            "SELECT id, province, data_sequence, file_name, zip, status FROM upload_files WHERE province = $1 AND data_sequence = $2",
        )
        .bind(province)
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(upload_from_row))
    }

    pub async fn filings_in_upload(&self, upload_id: i64) -> Result<usize> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM upload_file_filings WHERE upload_id = $1")
                .bind(upload_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(n as usize)
    }

    /// Records that `lease`'s holder is about to send the file (it may reach the bureau from
    /// here on: the outcome is unknown until confirmed).
    pub async fn mark_sent(&self, upload_id: i64, lease: &BureauLease) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("UPDATE upload_files SET sent_at = COALESCE(sent_at, $1), sent_by = $2, sent_token = $3 WHERE id = $4")
            .bind(fmt_time(now()))
            .bind(&lease.owner)
            .bind(lease.token)
            .bind(upload_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The bureau has the file: its filings are `submitted`.
    pub async fn mark_arrived(&self, upload_id: i64, how: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        mark_arrived_in(&mut tx, upload_id, how).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- downloads ----

    /// Whether a downloaded file was already applied (a re-served file changes nothing).
    pub async fn download_applied(&self, province: &str, file_name: &str) -> Result<bool> {
        let applied: Option<Option<String>> = sqlx::query_scalar(
            "SELECT applied_at FROM download_files WHERE province = $1 AND file_name = $2",
        )
        .bind(province)
        .bind(file_name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(matches!(applied, Some(Some(_))))
    }

    pub async fn mark_acked(&self, province: &str, file_name: &str) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query(
            "UPDATE download_files SET acked_at = $1 WHERE province = $2 AND file_name = $3",
        )
        .bind(fmt_time(now()))
        .bind(province)
        .bind(file_name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The bureau has nothing left to serve: every applied file of it is acknowledged.
    pub async fn confirm_acked(&self, province: &str) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query(
            "UPDATE download_files SET acked_at = $1 WHERE province = $2 AND acked_at IS NULL AND applied_at IS NOT NULL",
        )
        .bind(fmt_time(now()))
        .bind(province)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Code tables of a bureau: the bundled default merged with every JCDM it sent, in order.
    /// Which JCDM documents a bureau has stored: (how many, the newest id). Changes whenever
    /// one is added, so a cache of the parsed tables knows when to parse again.
    pub async fn code_tables_version(&self, province: &str) -> Result<(i64, Option<i64>)> {
        let row = sqlx::query("SELECT COUNT(*), MAX(id) FROM code_tables WHERE province = $1")
            .bind(province)
            .fetch_one(&self.pool)
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    pub async fn code_tables(&self, province: &str) -> Result<Vec<String>> {
        let docs: Vec<String> =
            sqlx::query_scalar("SELECT jcdm FROM code_tables WHERE province = $1 ORDER BY id")
                .bind(province)
                .fetch_all(&self.pool)
                .await?;
        Ok(docs)
    }

    // ---- export ----

    pub async fn export(&self, id: Option<&str>, state: Option<&str>) -> Result<Vec<Outcome>> {
        let rows = sqlx::query(
            "SELECT f.id, f.state, f.deadline, f.submitted_at, f.attempts, u.data_sequence, u.file_name,
                    f.subject_record_number, f.site_numbers, f.app_numbers, f.reasons, f.decided_at
             FROM filings f
             LEFT JOIN attempts a ON a.id = f.current_attempt
             LEFT JOIN upload_files u ON u.id = a.upload_id
             WHERE ($1 IS NULL OR f.id = $1) AND ($2 IS NULL OR f.state = $2)
             ORDER BY f.id",
        )
        .bind(id)
        .bind(state)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let fid: String = r.get(0);
                let seq: Option<i64> = r.get(5);
                let file: Option<String> = r.get(6);
                let sites: String = r.get(8);
                let apps: String = r.get(9);
                let reasons: String = r.get(10);
                Ok(Outcome {
                    state: r.get(1),
                    deadline: r.get(2),
                    submitted_at: r.get(3),
                    attempts: r.get(4),
                    upload: seq.zip(file).map(|(data_sequence, file)| UploadRef {
                        data_sequence,
                        file,
                    }),
                    subject_record_number: r.get(7),
                    site_record_numbers: serde_json::from_str(&sites)
                        .map_err(json_err(format!("filing {fid} site_numbers")))?,
                    app_record_numbers: serde_json::from_str(&apps)
                        .map_err(json_err(format!("filing {fid} app_numbers")))?,
                    reasons: serde_json::from_str(&reasons)
                        .map_err(json_err(format!("filing {fid} reasons")))?,
                    decided_at: r.get(11),
                    id: fid,
                })
            })
            .collect()
    }

    /// Counts of filings per state (all states listed).
    pub async fn counts(&self) -> Result<BTreeMap<String, i64>> {
        let mut out: BTreeMap<String, i64> =
            state::ALL.iter().map(|s| (s.to_string(), 0)).collect();
        let rows = sqlx::query("SELECT state, COUNT(*) FROM filings GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            out.insert(r.get(0), r.get(1));
        }
        Ok(out)
    }

    /// Events of a filing in order (kind, at, actor, detail).
    pub async fn events(&self, filing_id: &str) -> Result<Vec<(String, String, String, String)>> {
        let rows = sqlx::query(
            "SELECT kind, at, actor, detail FROM events WHERE filing_id = $1 ORDER BY id",
        )
        .bind(filing_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }
}

/// An exclusive lock on `DB.migrate-lock` (released when the file is dropped); none for an
/// in-memory database.
fn sqlite_migration_lock(connect_url: &str) -> Result<Option<std::fs::File>> {
    let path = connect_url.trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if path == ":memory:" {
        return Ok(None);
    }
    let io = |e: std::io::Error| {
        StoreError::Db(sqlx::Error::Configuration(
            format!("migration lock beside {path}: {e}").into(),
        ))
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{path}.migrate-lock"))
        .map_err(io)?;
    file.lock().map_err(io)?;
    Ok(Some(file))
}

fn upload_from_row(r: sqlx::any::AnyRow) -> UploadFile {
    UploadFile {
        id: r.get(0),
        province: r.get(1),
        data_sequence: r.get(2),
        file_name: r.get(3),
        zip: r.get(4),
        status: r.get(5),
    }
}

/// The bureau has a file (inside the caller's transaction): the file is `arrived` and its
/// filings still `submitting` are `submitted`. A no-op for a file already arrived.
pub(crate) async fn mark_arrived_in(tx: &mut WriteTx, upload_id: i64, how: &str) -> Result<()> {
    let now = fmt_time(now());
    let file =
        sqlx::query("SELECT province, data_sequence, file_name FROM upload_files WHERE id = $1")
            .bind(upload_id)
            .fetch_one(&mut **tx)
            .await?;
    let province: String = file.get(0);
    let seq: i64 = file.get(1);
    sqlx::query("UPDATE upload_files SET status = 'arrived', arrived_at = $1, lease_owner = NULL, lease_until_ms = NULL WHERE id = $2 AND status = 'pending'")
        .bind(&now)
        .bind(upload_id)
        .execute(&mut **tx)
        .await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "UPDATE filings SET state = 'submitted', submitted_at = $1, updated_at = $1, lease_owner = NULL, lease_until_ms = NULL
         WHERE id IN (
             SELECT f.id FROM upload_file_filings u JOIN filings f ON f.id = u.filing_id AND f.current_attempt = u.attempt_id
             WHERE u.upload_id = $2 AND f.state = 'submitting')
         RETURNING id",
    )
    .bind(&now)
    .bind(upload_id)
    .fetch_all(&mut **tx)
    .await?;
    let detail = json!({"dataSequence": seq, "how": how}).to_string();
    let events: Vec<NewEvent<'_>> = ids
        .iter()
        .map(|id| NewEvent {
            filing: Some(id),
            province: Some(&province),
            kind: "submitted",
            actor: "gateway",
            detail: detail.clone(),
        })
        .collect();
    insert_events(tx, &events).await?;
    Ok(())
}

/// One event row for [`insert_events`].
pub(crate) struct NewEvent<'a> {
    pub filing: Option<&'a str>,
    pub province: Option<&'a str>,
    pub kind: &'a str,
    pub actor: &'a str,
    pub detail: String,
}

/// Appends many events with multi-row INSERTs (500 rows, 3000 parameters a statement: under
/// SQLite's and PostgreSQL's limits). The same rows as [`insert_event`] one by one.
pub(crate) async fn insert_events(tx: &mut WriteTx, events: &[NewEvent<'_>]) -> Result<()> {
    let at = fmt_time(now());
    for chunk in events.chunks(500) {
        let sql = multi_row_insert(
            "INSERT INTO events (filing_id, province, at, kind, actor, detail) VALUES ",
            6,
            chunk.len(),
            1,
        );
        let mut q = batched(tx.backend_name(), sql);
        for e in chunk {
            q = q
                .bind(e.filing)
                .bind(e.province)
                .bind(&at)
                .bind(e.kind)
                .bind(e.actor)
                .bind(&e.detail);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A generated statement with many parameters, ready for its connection. SQLite finds a
/// named parameter (`$n`) by a linear scan of the statement's names, and sqlx asks for the
/// name of every parameter when it binds, so binding k of them costs O(k²): a 3,000-parameter
/// insert spent more time there than executing. Anonymous `?` have no names. On SQLite, when
/// the statement's placeholders are exactly `$1, $2, … $k` in the order they appear (each
/// once), they become `?`; any other statement, and every PostgreSQL one, is unchanged.
pub(crate) fn in_order(backend_name: &str, sql: String) -> sqlx::AssertSqlSafe<String> {
    if backend_name != "SQLite" {
        return sqlx::AssertSqlSafe(sql);
    }
    match anonymous_placeholders(&sql) {
        Some(rewritten) => sqlx::AssertSqlSafe(rewritten),
        None => {
            debug_assert!(
                false,
                "placeholders out of order in a batched statement: {sql}"
            );
            sqlx::AssertSqlSafe(sql)
        }
    }
}

/// A generated multi-row statement ([`in_order`]), not kept in the connection's statement
/// cache: its text changes with the row count, and a cached 3,000-parameter program is
/// hundreds of KB per connection that would rarely be used again.
pub(crate) fn batched<'q>(
    backend_name: &str,
    sql: String,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(in_order(backend_name, sql)).persistent(false)
}

/// `$1 … $k` in order, each once, outside string literals → `?`; otherwise `None`.
fn anonymous_placeholders(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut next = 1usize;
    let mut in_literal = false;
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\'' {
            in_literal = !in_literal;
        } else if b == b'$' && !in_literal {
            let digits = bytes[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits > 0 {
                let n: usize = sql[i + 1..i + 1 + digits].parse().ok()?;
                if n != next {
                    return None;
                }
                next += 1;
                out.push_str(&sql[copied..i]);
                out.push('?');
                i += 1 + digits;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&sql[copied..]);
    Some(out)
}

/// `$first, $first+1, …` (`n` of them), for `IN (…)`.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|k| format!("${k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `head` followed by `rows` groups of `columns` numbered placeholders from `$first`:
/// `($1, $2), ($3, $4)`. Only placeholders are generated; values are always bound.
pub(crate) fn multi_row_insert(head: &str, columns: usize, rows: usize, first: usize) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(head.len() + rows * columns * 6);
    sql.push_str(head);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", first + r * columns + c);
        }
        sql.push(')');
    }
    sql
}

pub(crate) async fn insert_event(
    tx: &mut WriteTx,
    filing: Option<&str>,
    province: Option<&str>,
    kind: &str,
    actor: &str,
    detail: serde_json::Value,
) -> Result<()> {
    sqlx::query("INSERT INTO events (filing_id, province, at, kind, actor, detail) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(filing)
        .bind(province)
        .bind(fmt_time(now()))
        .bind(kind)
        .bind(actor)
        .bind(detail.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_in_order_become_anonymous_on_sqlite() {
        let sql = format!(
            "UPDATE t SET a = $1 FROM ({}) AS v WHERE t.b = $6 AND t.c = '$7'",
            multi_row_insert("VALUES ", 2, 2, 2)
        );
        assert_eq!(
            in_order("SQLite", sql.clone()).0,
            "UPDATE t SET a = ? FROM (VALUES (?, ?), (?, ?)) AS v WHERE t.b = ? AND t.c = '$7'"
        );
        assert_eq!(in_order("PostgreSQL", sql.clone()).0, sql);
    }

    #[test]
    fn placeholders_out_of_order_or_repeated_are_kept() {
        assert_eq!(anonymous_placeholders("SELECT $2, $1"), None);
        assert_eq!(anonymous_placeholders("SELECT $1 WHERE x = $1"), None);
        assert_eq!(
            anonymous_placeholders("SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11")
                .as_deref(),
            Some("SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?")
        );
    }
}
