//! Applying downloaded files (bureau-protocol.md 5 and 5.1) and the registry of bureau records.
//! One downloaded file is applied in one transaction, recorded by name, so a file served again
//! changes nothing; results that match nothing are stored and raised as alarms.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use super::{AppNumber, Reason, Result, SiteNumber, Store, fmt_time, insert_event, json_err, now};

/// The verdict a result pair carries (5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictKind {
    Approved,
    AwaitingSms,
    Expired,
    Rejected,
}

impl VerdictKind {
    fn status(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::AwaitingSms => "awaiting_sms",
            Self::Expired => "expired",
            Self::Rejected => "rejected",
        }
    }
}

/// One BAJG pair, ready to apply.
#[derive(Debug, Clone)]
pub struct ResultInput {
    pub czlx: Option<i64>,
    pub jlid: Option<i64>,
    /// (Jgdm, Dmms)
    pub codes: Vec<(i64, Option<String>)>,
    pub shyj: Option<String>,
    pub shsj: Option<String>,
    pub verdict: VerdictKind,
    pub decided_at: String,
    /// For a whole-file fault (no Jlid): the uploaded file's name from Dmms.
    pub whole_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PubIp {
    pub ip: u32,
    pub ipid: Option<i64>,
    pub isp_ipid: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PubAccess {
    pub jrid: i64,
    pub isp_jrid: Option<i64>,
    pub ips: Vec<PubIp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PubDomain {
    pub ym: String,
    pub ymid: i64,
    pub isp_ymid: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PubWebsite {
    pub wzid: i64,
    pub isp_wzid: Option<i64>,
    pub record_number: Option<String>,
    pub domains: Vec<PubDomain>,
    pub accesses: Vec<PubAccess>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PubApp {
    pub appid: i64,
    pub isp_appid: Option<i64>,
    pub record_number: Option<String>,
    pub package_name: Option<String>,
    pub accesses: Vec<PubAccess>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PubSubject {
    pub ztid: i64,
    pub isp_ztid: Option<i64>,
    pub record_number: Option<String>,
}

/// One BASJ record: a subject with its websites and apps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedInput {
    pub subject: PubSubject,
    pub websites: Vec<PubWebsite>,
    pub apps: Vec<PubApp>,
}

/// What a downloaded file carries, in store terms.
#[derive(Debug, Clone)]
pub enum DownloadContent {
    Results(Vec<ResultInput>),
    Published(Vec<PublishedInput>),
    /// (Zxlb, Jlid)
    Cancellations(Vec<(i64, i64)>),
    Codes(String),
    Other,
}

impl DownloadContent {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Results(_) => "BAJG",
            Self::Published(_) => "BASJ",
            Self::Cancellations(_) => "ZXSJ",
            Self::Codes(_) => "JCDM",
            Self::Other => "OTHER",
        }
    }
}

/// A registry entry by record number (what later changes and cancellations quote).
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryEntry {
    Subject(PubSubject),
    Website {
        subject_ztid: Option<i64>,
        website: PubWebsite,
    },
    App {
        subject_ztid: Option<i64>,
        app: PubApp,
    },
}

impl Store {
    /// Applies one downloaded file and records it, in one transaction. Returns false when the
    /// file had been applied before (nothing changes).
    pub async fn apply_download(
        &self,
        province: &str,
        file_name: &str,
        raw: &[u8],
        parts: &[DownloadContent],
    ) -> Result<bool> {
        let kind = parts
            .iter()
            .map(DownloadContent::kind)
            .collect::<Vec<_>>()
            .join(",");
        let now_s = fmt_time(now());
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO download_files (province, file_name, kind, content, received_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (province, file_name) DO NOTHING",
        )
        .bind(province)
        .bind(file_name)
        .bind(&kind)
        .bind(raw)
        .bind(&now_s)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT id, applied_at FROM download_files WHERE province = $1 AND file_name = $2",
        )
        .bind(province)
        .bind(file_name)
        .fetch_one(&mut *tx)
        .await?;
        let download_id: i64 = row.get(0);
        let applied: Option<String> = row.get(1);
        if applied.is_some() {
            return Ok(false);
        }
        for content in parts {
            match content {
                DownloadContent::Results(pairs) => {
                    if pairs.iter().any(|p| p.whole_file.is_some()) {
                        apply_results_one_by_one(&mut tx, province, download_id, pairs).await?
                    } else {
                        apply_results(&mut tx, province, download_id, pairs).await?
                    }
                }
                DownloadContent::Published(records) => {
                    apply_published(&mut tx, province, records).await?
                }
                DownloadContent::Cancellations(items) => {
                    apply_cancellations(&mut tx, province, items).await?
                }
                DownloadContent::Codes(xml) => {
                    sqlx::query(
                        "INSERT INTO code_tables (province, jcdm, received_at) VALUES ($1, $2, $3)",
                    )
                    .bind(province)
                    .bind(xml)
                    .bind(&now_s)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                    "INSERT INTO bureaus (province) VALUES ($1) ON CONFLICT (province) DO NOTHING",
                )
                .bind(province)
                .execute(&mut *tx)
                .await?;
                    sqlx::query("UPDATE bureaus SET codes_received = 1 WHERE province = $1")
                        .bind(province)
                        .execute(&mut *tx)
                        .await?;
                    insert_event(
                        &mut tx,
                        None,
                        Some(province),
                        "code_tables",
                        "bureau",
                        json!({"file": file_name}),
                    )
                    .await?;
                }
                DownloadContent::Other => {}
            }
        }
        sqlx::query("UPDATE download_files SET applied_at = $1 WHERE id = $2")
            .bind(&now_s)
            .bind(download_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Looks a record number up in the registry (not cancelled).
    pub async fn registry_lookup(
        &self,
        province: &str,
        record_number: &str,
    ) -> Result<Option<RegistryEntry>> {
        Ok(self
            .registry_lookup_many(province, &[record_number])
            .await?
            .remove(record_number))
    }

    /// Looks many record numbers up at once (500 to a query): the newest live entry of each
    /// number found.
    pub async fn registry_lookup_many(
        &self,
        province: &str,
        record_numbers: &[&str],
    ) -> Result<std::collections::HashMap<String, RegistryEntry>> {
        let mut found = std::collections::HashMap::new();
        for chunk in record_numbers.chunks(500) {
            let sql = format!(
                "SELECT record_number, kind, parent_id, data FROM registry
                 WHERE province = $1 AND record_number IN ({}) AND cancelled_at IS NULL
                 ORDER BY updated_at DESC",
                super::placeholders(2, chunk.len())
            );
            let mut q = super::batched(self.backend.name(), sql).bind(province);
            for n in chunk {
                q = q.bind(*n);
            }
            for row in q.fetch_all(&self.pool).await? {
                let number: String = row.get(0);
                if found.contains_key(&number) {
                    continue; // an older entry of the same number
                }
                let entry = registry_entry(row.get(1), row.get(2), row.get(3))?;
                found.insert(number, entry);
            }
        }
        Ok(found)
    }
}

fn registry_entry(kind: String, parent: Option<i64>, data: String) -> Result<RegistryEntry> {
    {
        Ok(match kind.as_str() {
            "subject" => RegistryEntry::Subject(
                serde_json::from_str(&data).map_err(json_err("registry subject"))?,
            ),
            "website" => RegistryEntry::Website {
                subject_ztid: parent,
                website: serde_json::from_str(&data).map_err(json_err("registry website"))?,
            },
            _ => RegistryEntry::App {
                subject_ztid: parent,
                app: serde_json::from_str(&data).map_err(json_err("registry app"))?,
            },
        })
    }
}

type Tx<'a> = super::WriteTx;

/// Pair by pair, as 5.1 reads; used when a file carries a whole-file fault (a pair with no
/// `Jlid`), which decides every open record of an uploaded file at once.
async fn apply_results_one_by_one(
    tx: &mut Tx<'_>,
    province: &str,
    download_id: i64,
    pairs: &[ResultInput],
) -> Result<()> {
    for (index, pair) in pairs.iter().enumerate() {
        let codes_json = serde_json::to_string(&pair.codes).map_err(json_err("result codes"))?;
        // The records this pair decides.
        let record_ids: Vec<(i64, String, i64)> = if let Some(name) = &pair.whole_file {
            sqlx::query(
                "SELECT r.id, r.filing_id, r.attempt_id FROM attempt_records r
                 JOIN attempts a ON a.id = r.attempt_id JOIN upload_files u ON u.id = a.upload_id
                 WHERE u.province = $1 AND u.file_name = $2 AND r.status IN ('open', 'awaiting_sms')",
            )
            .bind(province)
            .bind(name)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
        } else {
            sqlx::query(
                "SELECT id, filing_id, attempt_id FROM attempt_records
                 WHERE province = $1 AND czlx = $2 AND jlid = $3 AND status IN ('open', 'awaiting_sms') ORDER BY id LIMIT 1",
            )
            .bind(province)
            .bind(pair.czlx)
            .bind(pair.jlid)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
        };
        let first_filing = record_ids.first().map(|(_, f, _)| f.clone());
        sqlx::query(
            "INSERT INTO results (download_file_id, pair_index, province, czlx, jlid, codes, shyj, shsj, filing_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(download_id)
        .bind(index as i64)
        .bind(province)
        .bind(pair.czlx)
        .bind(pair.jlid)
        .bind(&codes_json)
        .bind(&pair.shyj)
        .bind(&pair.shsj)
        .bind(&first_filing)
        .execute(&mut **tx)
        .await?;
        if record_ids.is_empty() {
            insert_event(
                tx,
                None,
                Some(province),
                "alarm.unmatched_result",
                "bureau",
                json!({"czlx": pair.czlx, "jlid": pair.jlid, "codes": pair.codes.iter().map(|c| c.0).collect::<Vec<_>>(), "wholeFile": pair.whole_file}),
            )
            .await?;
            continue;
        }
        let reasons = pair_reasons(pair);
        let reasons_json = serde_json::to_string(&reasons).map_err(json_err("reasons"))?;
        for (record_id, filing_id, attempt_id) in &record_ids {
            // A result for an attempt proves its file arrived, even when the sender died before
            // it could record the answer (the next sender would only reconcile it).
            let upload: Option<i64> = sqlx::query_scalar(
                "SELECT u.id FROM attempts a JOIN upload_files u ON u.id = a.upload_id
                 WHERE a.id = $1 AND u.status = 'pending'",
            )
            .bind(attempt_id)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(upload) = upload {
                super::mark_arrived_in(tx, upload, "result_received").await?;
            }
            sqlx::query(
                "UPDATE attempt_records SET status = $1, codes = $2, decided_at = $3 WHERE id = $4",
            )
            .bind(pair.verdict.status())
            .bind(&reasons_json)
            .bind(&pair.decided_at)
            .bind(record_id)
            .execute(&mut **tx)
            .await?;
            settle_filing(tx, province, filing_id, *attempt_id, &pair.decided_at).await?;
        }
    }
    Ok(())
}

/// The reasons a pair's codes give (1001 and 1901 are no reasons).
fn pair_reasons(pair: &ResultInput) -> Vec<Reason> {
    pair.codes
        .iter()
        .filter(|(code, _)| *code != 1001 && *code != 1901)
        .map(|(code, dmms)| Reason {
            source: "bureau".into(),
            code: json!(code),
            field: None,
            message: [dmms.as_deref(), pair.shyj.as_deref()]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        })
        .collect()
}

/// The state a filing's current attempt gives from its records' statuses (5.1): rejected as
/// soon as any record has a final result other than 1001; awaiting SMS while any record is
/// at 1901; approved when all are 1001.
fn attempt_state<'s>(statuses: impl Iterator<Item = &'s str> + Clone) -> &'static str {
    let mut all = statuses.clone();
    let any = |s: &str| statuses.clone().any(|st| st == s);
    if any("rejected") {
        "rejected"
    } else if any("expired") {
        "expired"
    } else if any("awaiting_sms") {
        "awaiting_sms"
    } else if all.all(|st| st == "approved") {
        "approved"
    } else {
        "submitted"
    }
}

/// The results of one download file, in a fixed number of statements: the open records the
/// pairs name are read at once and matched in order in memory (a record at 1901 stays open
/// for a later pair), then results, record updates, filing states and events are written
/// with multi-row statements. Every filing is settled once, on its records' final statuses.
async fn apply_results(
    tx: &mut Tx<'_>,
    province: &str,
    download_id: i64,
    pairs: &[ResultInput],
) -> Result<()> {
    // (czlx, jlid) → [record id, filing, attempt, status], oldest record first.
    let mut jlids: Vec<i64> = pairs.iter().filter_map(|p| p.jlid).collect();
    jlids.sort_unstable();
    jlids.dedup();
    type Open = (i64, String, i64, String);
    let mut open: HashMap<(i64, i64), Vec<Open>> = HashMap::new();
    for chunk in jlids.chunks(500) {
        let sql = format!(
            "SELECT id, filing_id, attempt_id, czlx, jlid, status FROM attempt_records
             WHERE province = $1 AND status IN ('open', 'awaiting_sms') AND jlid IN ({})
             ORDER BY id",
            super::placeholders(2, chunk.len())
        );
        let mut q = super::batched(tx.backend_name(), sql).bind(province);
        for j in chunk {
            q = q.bind(*j);
        }
        for r in q.fetch_all(&mut **tx).await? {
            open.entry((r.get(3), r.get(4))).or_default().push((
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(5),
            ));
        }
    }
    // Match pair by pair in memory.
    struct RecordUpdate {
        status: &'static str,
        codes: String,
        decided_at: String,
    }
    let mut record_updates: HashMap<i64, RecordUpdate> = HashMap::new();
    let mut results: Vec<(i64, String, Option<String>)> = Vec::with_capacity(pairs.len());
    let mut alarms: Vec<String> = Vec::new();
    // filing → (attempt, decided_at of the last pair that touched it), in first-touch order.
    let mut touched: Vec<(String, i64)> = Vec::new();
    let mut decided: HashMap<String, String> = HashMap::new();
    for (index, pair) in pairs.iter().enumerate() {
        let codes_json = serde_json::to_string(&pair.codes).map_err(json_err("result codes"))?;
        let matched = match (pair.czlx, pair.jlid) {
            (Some(c), Some(j)) => open.get_mut(&(c, j)).and_then(|records| {
                records
                    .iter_mut()
                    .find(|r| r.3 == "open" || r.3 == "awaiting_sms")
            }),
            _ => None,
        };
        let Some(record) = matched else {
            results.push((index as i64, codes_json, None));
            alarms.push(
                json!({"czlx": pair.czlx, "jlid": pair.jlid, "codes": pair.codes.iter().map(|c| c.0).collect::<Vec<_>>(), "wholeFile": pair.whole_file})
                    .to_string(),
            );
            continue;
        };
        record.3 = pair.verdict.status().to_owned();
        results.push((index as i64, codes_json, Some(record.1.clone())));
        let reasons_json =
            serde_json::to_string(&pair_reasons(pair)).map_err(json_err("reasons"))?;
        record_updates.insert(
            record.0,
            RecordUpdate {
                status: pair.verdict.status(),
                codes: reasons_json,
                decided_at: pair.decided_at.clone(),
            },
        );
        if decided
            .insert(record.1.clone(), pair.decided_at.clone())
            .is_none()
        {
            touched.push((record.1.clone(), record.2));
        }
    }
    for chunk in results.chunks(300) {
        let sql = super::multi_row_insert(
            "INSERT INTO results (download_file_id, pair_index, province, czlx, jlid, codes, shyj, shsj, filing_id) VALUES ",
            9,
            chunk.len(),
            1,
        );
        let mut q = super::batched(tx.backend_name(), sql);
        for (index, codes, filing) in chunk {
            let pair = &pairs[*index as usize];
            q = q
                .bind(download_id)
                .bind(*index)
                .bind(province)
                .bind(pair.czlx)
                .bind(pair.jlid)
                .bind(codes)
                .bind(&pair.shyj)
                .bind(&pair.shsj)
                .bind(filing);
        }
        q.execute(&mut **tx).await?;
    }
    let alarm_events: Vec<super::NewEvent<'_>> = alarms
        .into_iter()
        .map(|detail| super::NewEvent {
            filing: None,
            province: Some(province),
            kind: "alarm.unmatched_result",
            actor: "bureau",
            detail,
        })
        .collect();
    super::insert_events(tx, &alarm_events).await?;
    if touched.is_empty() {
        return Ok(());
    }
    // A result for an attempt proves its file arrived, even when the sender died before it
    // could record the answer (the next sender would only reconcile it).
    let mut attempts: Vec<i64> = touched.iter().map(|(_, a)| *a).collect();
    attempts.sort_unstable();
    attempts.dedup();
    let mut pending: Vec<i64> = Vec::new();
    for chunk in attempts.chunks(500) {
        let sql = format!(
            "SELECT DISTINCT u.id FROM attempts a JOIN upload_files u ON u.id = a.upload_id
             WHERE a.id IN ({}) AND u.status = 'pending' ORDER BY u.id",
            super::placeholders(1, chunk.len())
        );
        let mut q =
            sqlx::query_scalar::<_, i64>(super::in_order(tx.backend_name(), sql)).persistent(false);
        for a in chunk {
            q = q.bind(*a);
        }
        pending.extend(q.fetch_all(&mut **tx).await?);
    }
    pending.sort_unstable();
    pending.dedup();
    for upload in pending {
        super::mark_arrived_in(tx, upload, "result_received").await?;
    }
    let updates: Vec<(&i64, &RecordUpdate)> = record_updates.iter().collect();
    for chunk in updates.chunks(300) {
        let sql = format!(
            "UPDATE attempt_records SET status = v.column2, codes = v.column3, decided_at = v.column4
             FROM ({}) AS v WHERE attempt_records.id = v.column1",
            super::multi_row_insert("VALUES ", 4, chunk.len(), 1)
        );
        let mut q = super::batched(tx.backend_name(), sql);
        for (id, u) in chunk {
            q = q
                .bind(**id)
                .bind(u.status)
                .bind(&u.codes)
                .bind(&u.decided_at);
        }
        q.execute(&mut **tx).await?;
    }
    // Settle every touched filing whose current attempt is the one decided.
    let mut current: HashMap<String, (Option<i64>, String)> = HashMap::new();
    let mut statuses: HashMap<i64, Vec<(String, String)>> = HashMap::new();
    for chunk in touched.chunks(500) {
        let sql = format!(
            "SELECT id, current_attempt, state FROM filings WHERE id IN ({})",
            super::placeholders(1, chunk.len())
        );
        let mut q = super::batched(tx.backend_name(), sql);
        for (f, _) in chunk {
            q = q.bind(f);
        }
        for r in q.fetch_all(&mut **tx).await? {
            current.insert(r.get(0), (r.get(1), r.get(2)));
        }
        let sql = format!(
            "SELECT attempt_id, status, codes FROM attempt_records WHERE attempt_id IN ({}) ORDER BY id",
            super::placeholders(1, chunk.len())
        );
        let mut q = super::batched(tx.backend_name(), sql);
        for (_, a) in chunk {
            q = q.bind(*a);
        }
        for r in q.fetch_all(&mut **tx).await? {
            statuses
                .entry(r.get(0))
                .or_default()
                .push((r.get(1), r.get(2)));
        }
    }
    let now_s = fmt_time(now());
    let mut settled: Vec<(&str, &'static str, String, Option<&str>, String)> = Vec::new();
    for (filing, attempt) in &touched {
        let Some((Some(cur), state)) = current.get(filing) else {
            continue;
        };
        if cur != attempt || super::state::is_terminal(state) {
            continue;
        }
        let records = statuses.get(attempt).map(Vec::as_slice).unwrap_or(&[]);
        let new_state = attempt_state(records.iter().map(|(s, _)| s.as_str()));
        if new_state == state {
            continue;
        }
        let mut reasons: Vec<Reason> = Vec::new();
        for (_, codes) in records {
            let mut rs: Vec<Reason> =
                serde_json::from_str(codes).map_err(json_err("record reasons"))?;
            reasons.append(&mut rs);
        }
        let codes: Vec<&serde_json::Value> = reasons.iter().map(|r| &r.code).collect();
        let detail = json!({"codes": codes}).to_string();
        let reasons_json = serde_json::to_string(&reasons).map_err(json_err("reasons"))?;
        let decided_at = super::state::is_terminal(new_state)
            .then(|| decided.get(filing).map(String::as_str))
            .flatten();
        settled.push((filing, new_state, reasons_json, decided_at, detail));
    }
    for chunk in settled.chunks(300) {
        let sql = format!(
            "UPDATE filings SET state = v.column2, reasons = v.column3,
                    decided_at = COALESCE(v.column4, filings.decided_at), updated_at = $1
             FROM ({}) AS v WHERE filings.id = v.column1",
            super::multi_row_insert("VALUES ", 4, chunk.len(), 2)
        );
        let mut q = super::batched(tx.backend_name(), sql).bind(&now_s);
        for (filing, state, reasons, decided_at, _) in chunk {
            q = q.bind(*filing).bind(*state).bind(reasons).bind(*decided_at);
        }
        q.execute(&mut **tx).await?;
    }
    let events: Vec<super::NewEvent<'_>> = settled
        .iter()
        .map(|(filing, state, _, _, detail)| super::NewEvent {
            filing: Some(filing),
            province: Some(province),
            kind: state,
            actor: "bureau",
            detail: detail.clone(),
        })
        .collect();
    super::insert_events(tx, &events).await?;
    Ok(())
}

/// Recomputes a filing's state from its current attempt's records (5.1: rejected as soon as
/// any record has a final result other than 1001; awaiting SMS while any record is at 1901;
/// approved when all are 1001).
async fn settle_filing(
    tx: &mut Tx<'_>,
    province: &str,
    filing_id: &str,
    attempt_id: i64,
    decided_at: &str,
) -> Result<()> {
    let current: Option<(Option<i64>, String)> =
        sqlx::query("SELECT current_attempt, state FROM filings WHERE id = $1")
            .bind(filing_id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| (r.get(0), r.get(1)));
    let Some((Some(current), state)) = current else {
        return Ok(());
    };
    if current != attempt_id || super::state::is_terminal(&state) {
        return Ok(());
    }
    let records: Vec<(String, String)> =
        sqlx::query("SELECT status, codes FROM attempt_records WHERE attempt_id = $1 ORDER BY id")
            .bind(attempt_id)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    let new_state = attempt_state(records.iter().map(|(s, _)| s.as_str()));
    if new_state == state {
        return Ok(());
    }
    let mut reasons: Vec<Reason> = Vec::new();
    for (_, codes) in &records {
        let mut rs: Vec<Reason> =
            serde_json::from_str(codes).map_err(json_err("record reasons"))?;
        reasons.append(&mut rs);
    }
    let terminal = super::state::is_terminal(new_state);
    sqlx::query(
        "UPDATE filings SET state = $1, reasons = $2, decided_at = CASE WHEN $3 THEN $4 ELSE decided_at END, updated_at = $5 WHERE id = $6",
    )
    .bind(new_state)
    .bind(serde_json::to_string(&reasons).map_err(json_err("reasons"))?)
    .bind(terminal)
    .bind(decided_at)
    .bind(fmt_time(now()))
    .bind(filing_id)
    .execute(&mut **tx)
    .await?;
    let codes: Vec<&serde_json::Value> = reasons.iter().map(|r| &r.code).collect();
    insert_event(
        tx,
        Some(filing_id),
        Some(province),
        new_state,
        "bureau",
        json!({"codes": codes}),
    )
    .await?;
    Ok(())
}

/// One registry row for [`upsert_registry_rows`].
struct RegistryRow<'a> {
    kind: &'static str,
    province_id: i64,
    record_number: Option<&'a str>,
    isp_id: Option<i64>,
    parent: Option<i64>,
    data: String,
}

/// Upserts registry rows with multi-row statements. A row met twice in one file is written
/// once, merged as two upserts in order would leave it (later values win; a later empty record
/// number or isp id keeps the earlier one), since one statement may not update a row twice.
async fn upsert_registry_rows(
    tx: &mut Tx<'_>,
    province: &str,
    rows: Vec<RegistryRow<'_>>,
) -> Result<()> {
    let mut merged: Vec<RegistryRow<'_>> = Vec::with_capacity(rows.len());
    let mut at: HashMap<(&'static str, i64), usize> = HashMap::new();
    for row in rows {
        match at.get(&(row.kind, row.province_id)) {
            Some(&i) => {
                let old = &mut merged[i];
                old.record_number = row.record_number.or(old.record_number);
                old.isp_id = row.isp_id.or(old.isp_id);
                old.parent = row.parent.or(old.parent);
                old.data = row.data;
            }
            None => {
                at.insert((row.kind, row.province_id), merged.len());
                merged.push(row);
            }
        }
    }
    let now_s = fmt_time(now());
    for chunk in merged.chunks(300) {
        let sql = format!(
            "INSERT INTO registry (province, kind, province_id, record_number, isp_id, parent_id, data, updated_at)
             {}
             ON CONFLICT (province, kind, province_id) DO UPDATE SET
               record_number = COALESCE(excluded.record_number, registry.record_number),
               isp_id = COALESCE(excluded.isp_id, registry.isp_id),
               parent_id = COALESCE(excluded.parent_id, registry.parent_id),
               data = excluded.data, cancelled_at = NULL, updated_at = excluded.updated_at",
            super::multi_row_insert("VALUES ", 8, chunk.len(), 1)
        );
        let mut q = super::batched(tx.backend_name(), sql);
        for r in chunk {
            q = q
                .bind(province)
                .bind(r.kind)
                .bind(r.province_id)
                .bind(r.record_number)
                .bind(r.isp_id)
                .bind(r.parent)
                .bind(&r.data)
                .bind(&now_s);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// (attempt, filing, part) of the newest live attempts that used an id, by (kind, value).
type IdHits = HashMap<(String, i64), Vec<(i64, String, String)>>;

/// Which live attempts used each of these ids (one query per 500 values): the filings that
/// published records and cancellations answer. Only filings still waiting on or approved by
/// the bureau, through their current attempt, and not cancellations themselves.
async fn match_ids(tx: &mut Tx<'_>, province: &str, ids: &[(&'static str, i64)]) -> Result<IdHits> {
    let mut by_kind: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
    for (kind, value) in ids {
        by_kind.entry(kind).or_default().push(*value);
    }
    let mut hits: IdHits = HashMap::new();
    for (kind, mut values) in by_kind {
        values.sort_unstable();
        values.dedup();
        for chunk in values.chunks(500) {
            let sql = format!(
                "SELECT i.value, a.id, a.filing_id, i.part FROM attempt_ids i JOIN attempts a ON a.id = i.attempt_id
                 JOIN filings f ON f.id = a.filing_id AND f.current_attempt = a.id
                 WHERE i.province = $1 AND i.kind = $2 AND i.value IN ({})
                   AND f.state IN ('submitted', 'awaiting_sms', 'approved')
                   AND f.filing_type NOT IN ('CANCEL_ACCESS', 'CANCEL_SITE', 'CANCEL_SUBJECT')
                 ORDER BY i.attempt_id, i.part",
                super::placeholders(3, chunk.len())
            );
            let mut q = super::batched(tx.backend_name(), sql)
                .bind(province)
                .bind(kind);
            for v in chunk {
                q = q.bind(*v);
            }
            for r in q.fetch_all(&mut **tx).await? {
                hits.entry((kind.to_owned(), r.get(0))).or_default().push((
                    r.get(1),
                    r.get(2),
                    r.get(3),
                ));
            }
        }
    }
    Ok(hits)
}

fn hits_of<'h>(hits: &'h IdHits, kind: &str, value: Option<i64>) -> &'h [(i64, String, String)] {
    value
        .and_then(|v| hits.get(&(kind.to_owned(), v)))
        .map_or(&[], Vec::as_slice)
}

/// A record number to write into a filing's outcome: a website's or an app's.
enum NumberWrite<'a> {
    Site {
        part: String,
        website: &'a PubWebsite,
        number: &'a str,
    },
    App {
        part: String,
        app: &'a PubApp,
        number: &'a str,
    },
}

/// Applies a BASJ file: every record into the registry, and its numbers into the filings it
/// answers (found through any id it carries), each with a `record_published` event. Batched:
/// the registry rows, the id lookups, the filings' number lists and the events each take a few
/// multi-row statements for the whole file; the result is that of applying the records one
/// by one in file order.
async fn apply_published(
    tx: &mut Tx<'_>,
    province: &str,
    records: &[PublishedInput],
) -> Result<()> {
    let mut rows: Vec<RegistryRow<'_>> = Vec::new();
    let mut ids: Vec<(&'static str, i64)> = Vec::new();
    for rec in records {
        let s = &rec.subject;
        rows.push(RegistryRow {
            kind: "subject",
            province_id: s.ztid,
            record_number: s.record_number.as_deref(),
            isp_id: s.isp_ztid,
            parent: None,
            data: serde_json::to_string(s).map_err(json_err("registry subject"))?,
        });
        ids.extend(s.isp_ztid.map(|v| ("isp_ztid", v)));
        ids.push(("ztid", s.ztid));
        for w in &rec.websites {
            rows.push(RegistryRow {
                kind: "website",
                province_id: w.wzid,
                record_number: w.record_number.as_deref(),
                isp_id: w.isp_wzid,
                parent: Some(s.ztid),
                data: serde_json::to_string(w).map_err(json_err("registry website"))?,
            });
            ids.extend(w.isp_wzid.map(|v| ("isp_wzid", v)));
            ids.push(("wzid", w.wzid));
            for a in &w.accesses {
                ids.extend(a.isp_jrid.map(|v| ("isp_jrid", v)));
                ids.push(("jrid", a.jrid));
            }
        }
        for app in &rec.apps {
            rows.push(RegistryRow {
                kind: "app",
                province_id: app.appid,
                record_number: app.record_number.as_deref(),
                isp_id: app.isp_appid,
                parent: Some(s.ztid),
                data: serde_json::to_string(app).map_err(json_err("registry app"))?,
            });
            ids.extend(app.isp_appid.map(|v| ("isp_appid", v)));
            ids.push(("appid", app.appid));
        }
    }
    upsert_registry_rows(tx, province, rows).await?;
    let hits = match_ids(tx, province, &ids).await?;

    // Per filing, in file order: the numbers to write, the subject number, the events.
    let mut writes: Vec<(String, NumberWrite<'_>)> = Vec::new();
    let mut subject_numbers: HashMap<String, &str> = HashMap::new();
    let mut events: Vec<(String, String)> = Vec::new(); // (filing, detail)
    for rec in records {
        let s = &rec.subject;
        let mut filings: Vec<String> = Vec::new();
        for (kind, value) in [("isp_ztid", s.isp_ztid), ("ztid", Some(s.ztid))] {
            filings.extend(
                hits_of(&hits, kind, value)
                    .iter()
                    .map(|(_, f, _)| f.clone()),
            );
        }
        for w in &rec.websites {
            let mut found: Vec<&(i64, String, String)> = Vec::new();
            found.extend(hits_of(&hits, "isp_wzid", w.isp_wzid));
            found.extend(hits_of(&hits, "wzid", Some(w.wzid)));
            for a in &w.accesses {
                found.extend(hits_of(&hits, "isp_jrid", a.isp_jrid));
                found.extend(hits_of(&hits, "jrid", Some(a.jrid)));
            }
            for (_, filing, part) in found {
                if let (Some(number), true) = (&w.record_number, part.starts_with("websites[")) {
                    writes.push((
                        filing.clone(),
                        NumberWrite::Site {
                            part: part.clone(),
                            website: w,
                            number,
                        },
                    ));
                }
                filings.push(filing.clone());
            }
        }
        for app in &rec.apps {
            let mut found: Vec<&(i64, String, String)> = Vec::new();
            found.extend(hits_of(&hits, "isp_appid", app.isp_appid));
            found.extend(hits_of(&hits, "appid", Some(app.appid)));
            for (_, filing, part) in found {
                if let Some(number) = &app.record_number {
                    writes.push((
                        filing.clone(),
                        NumberWrite::App {
                            part: part.clone(),
                            app,
                            number,
                        },
                    ));
                }
                filings.push(filing.clone());
            }
        }
        filings.sort();
        filings.dedup();
        let detail = json!({"ztid": s.ztid}).to_string();
        for filing in filings {
            if let Some(number) = &s.record_number {
                subject_numbers.insert(filing.clone(), number);
            }
            events.push((filing, detail.clone()));
        }
    }
    write_numbers(tx, &writes).await?;

    let numbers: Vec<(&String, &&str)> = subject_numbers.iter().collect();
    for chunk in numbers.chunks(400) {
        let sql = format!(
            "UPDATE filings SET subject_record_number = v.column2 FROM ({}) AS v WHERE filings.id = v.column1",
            super::multi_row_insert("VALUES ", 2, chunk.len(), 1)
        );
        let mut q = super::batched(tx.backend_name(), sql);
        for (filing, number) in chunk {
            q = q.bind(filing.as_str()).bind(**number);
        }
        q.execute(&mut **tx).await?;
    }
    let events: Vec<super::NewEvent<'_>> = events
        .iter()
        .map(|(filing, detail)| super::NewEvent {
            filing: Some(filing),
            province: Some(province),
            kind: "record_published",
            actor: "bureau",
            detail: detail.clone(),
        })
        .collect();
    super::insert_events(tx, &events).await
}

/// The websites' and apps' record numbers into their filings' outcome lists (`site_numbers`,
/// `app_numbers`): each filing read once, the writes applied in order, written back at once.
/// A number replaces the one of the same domain (the filing's website at `part`, else the
/// published website's first domain) or package name.
async fn write_numbers(tx: &mut Tx<'_>, writes: &[(String, NumberWrite<'_>)]) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut filings: Vec<&str> = writes.iter().map(|(f, _)| f.as_str()).collect();
    filings.sort_unstable();
    filings.dedup();
    // filing → (site numbers, app numbers, document)
    let mut state: HashMap<String, (Vec<SiteNumber>, Vec<AppNumber>, serde_json::Value)> =
        HashMap::new();
    for chunk in filings.chunks(500) {
        let sql = format!(
            "SELECT id, site_numbers, app_numbers, document FROM filings WHERE id IN ({})",
            super::placeholders(1, chunk.len())
        );
        let mut q = super::batched(tx.backend_name(), sql);
        for f in chunk {
            q = q.bind(*f);
        }
        for row in q.fetch_all(&mut **tx).await? {
            let sites: Vec<SiteNumber> =
                serde_json::from_str(&row.get::<String, _>(1)).map_err(json_err("site_numbers"))?;
            let apps: Vec<AppNumber> =
                serde_json::from_str(&row.get::<String, _>(2)).map_err(json_err("app_numbers"))?;
            let doc: serde_json::Value =
                serde_json::from_str(&row.get::<String, _>(3)).map_err(json_err("document"))?;
            state.insert(row.get(0), (sites, apps, doc));
        }
    }
    for (filing, write) in writes {
        let Some((sites, apps, doc)) = state.get_mut(filing) else {
            continue; // matched through a join on filings: it exists
        };
        match write {
            NumberWrite::Site {
                part,
                website,
                number,
            } => {
                let index: Option<usize> = part
                    .strip_prefix("websites[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse().ok());
                let domain = index
                    .and_then(|i| {
                        doc.get("websites")?
                            .get(i)?
                            .get("domains")?
                            .get(0)?
                            .as_str()
                            .map(str::to_owned)
                    })
                    .or_else(|| website.domains.first().map(|d| d.ym.clone()))
                    .unwrap_or_default();
                sites.retain(|n| n.domain != domain);
                sites.push(SiteNumber {
                    domain,
                    number: (*number).to_owned(),
                });
            }
            NumberWrite::App { part, app, number } => {
                let index: Option<usize> = part
                    .strip_prefix("apps[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse().ok());
                let package_name = index
                    .and_then(|i| {
                        doc.get("apps")?
                            .get(i)?
                            .get("packageName")?
                            .as_str()
                            .map(str::to_owned)
                    })
                    .or_else(|| app.package_name.clone())
                    .unwrap_or_default();
                apps.retain(|n| n.package_name != package_name);
                apps.push(AppNumber {
                    package_name,
                    number: (*number).to_owned(),
                });
            }
        }
    }
    let mut rows: Vec<(&str, String, String)> = Vec::with_capacity(filings.len());
    for f in &filings {
        if let Some((sites, apps, _)) = state.get(*f) {
            rows.push((
                f,
                serde_json::to_string(sites).map_err(json_err("site_numbers"))?,
                serde_json::to_string(apps).map_err(json_err("app_numbers"))?,
            ));
        }
    }
    for chunk in rows.chunks(300) {
        let sql = format!(
            "UPDATE filings SET site_numbers = v.column2, app_numbers = v.column3 FROM ({}) AS v WHERE filings.id = v.column1",
            super::multi_row_insert("VALUES ", 3, chunk.len(), 1)
        );
        let mut q = super::batched(tx.backend_name(), sql);
        for (f, sites, apps) in chunk {
            q = q.bind(*f).bind(sites).bind(apps);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Applies a ZXSJ file: each cancelled subject (with its websites and apps) or website is
/// marked cancelled in the registry, and a `cancellation_confirmed` event goes to the newest
/// filing that asked for it. A few statements for the whole file.
async fn apply_cancellations(tx: &mut Tx<'_>, province: &str, items: &[(i64, i64)]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let now_s = fmt_time(now());
    let subjects: Vec<i64> = items
        .iter()
        .filter(|(z, _)| *z == 0)
        .map(|(_, j)| *j)
        .collect();
    let websites: Vec<i64> = items
        .iter()
        .filter(|(z, _)| *z != 0)
        .map(|(_, j)| *j)
        .collect();
    for (kind, list) in [("subject", &subjects), ("website", &websites)] {
        for chunk in list.chunks(500) {
            let sql = format!(
                "UPDATE registry SET cancelled_at = $1 WHERE province = $2 AND kind = $3 AND province_id IN ({})",
                super::placeholders(4, chunk.len())
            );
            let mut q = super::batched(tx.backend_name(), sql)
                .bind(&now_s)
                .bind(province)
                .bind(kind);
            for j in chunk {
                q = q.bind(*j);
            }
            q.execute(&mut **tx).await?;
        }
    }
    // A cancelled subject takes its websites and apps with it.
    for chunk in subjects.chunks(500) {
        let sql = format!(
            "UPDATE registry SET cancelled_at = $1 WHERE province = $2 AND cancelled_at IS NULL AND parent_id IN ({})",
            super::placeholders(3, chunk.len())
        );
        let mut q = super::batched(tx.backend_name(), sql)
            .bind(&now_s)
            .bind(province);
        for j in chunk {
            q = q.bind(*j);
        }
        q.execute(&mut **tx).await?;
    }
    // The filing that asked: the newest record of the same operation (6 subject, 7 website).
    let mut jlids: Vec<i64> = items.iter().map(|(_, j)| *j).collect();
    jlids.sort_unstable();
    jlids.dedup();
    let mut asked: HashMap<(i64, i64), String> = HashMap::new();
    for chunk in jlids.chunks(500) {
        let sql = format!(
            "SELECT czlx, jlid, filing_id FROM attempt_records
             WHERE province = $1 AND czlx IN (6, 7) AND jlid IN ({}) ORDER BY id",
            super::placeholders(2, chunk.len())
        );
        let mut q = super::batched(tx.backend_name(), sql).bind(province);
        for j in chunk {
            q = q.bind(*j);
        }
        for r in q.fetch_all(&mut **tx).await? {
            asked.insert((r.get(0), r.get(1)), r.get(2)); // later rows win: the newest
        }
    }
    let events: Vec<super::NewEvent<'_>> = items
        .iter()
        .map(|(zxlb, jlid)| {
            let czlx = if *zxlb == 0 { 6 } else { 7 };
            super::NewEvent {
                filing: asked.get(&(czlx, *jlid)).map(String::as_str),
                province: Some(province),
                kind: "cancellation_confirmed",
                actor: "bureau",
                detail: json!({"zxlb": zxlb, "jlid": jlid}).to_string(),
            }
        })
        .collect();
    super::insert_events(tx, &events).await
}
