//! The raw limits the bench compares the pipeline with, measured in the same run:
//! - the database: the same number of rows taken through the same state changes (claim with
//!   the file insert, submitted, decided with a record number) by plain batched SQL, batch by
//!   batch as the bureaus' batch sizes give, on scratch tables of the bench database;
//! - the packaging chain: the data files the pipeline stored, zipped, hashed, encrypted and
//!   base64-encoded again with nothing else around it.

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::Row;

use crate::config::Settings;
use crate::package::{self, AesKey};
use crate::store::{Backend, Store};

/// Plain batched SQL over `n` rows; returns the time the state changes took.
pub async fn database(
    store: &Store,
    backend: Backend,
    n: usize,
    settings: &Settings,
) -> anyhow::Result<Duration> {
    let pool = store.pool();
    let blob = match backend {
        Backend::Sqlite => "BLOB",
        Backend::Postgres => "BYTEA",
    };
    for ddl in [
        "DROP TABLE IF EXISTS bench_raw".to_owned(),
        "DROP TABLE IF EXISTS bench_raw_files".to_owned(),
        "CREATE TABLE bench_raw (id TEXT PRIMARY KEY, province TEXT NOT NULL, state TEXT NOT NULL,
            deadline TEXT NOT NULL, upload_id BIGINT, record_number TEXT, updated_at TEXT)"
            .to_owned(),
        "CREATE INDEX bench_raw_queue ON bench_raw (province, state, deadline)".to_owned(),
        "CREATE INDEX bench_raw_upload ON bench_raw (upload_id)".to_owned(),
        format!(
            "CREATE TABLE bench_raw_files (id BIGINT PRIMARY KEY, province TEXT NOT NULL,
                data_sequence BIGINT NOT NULL, zip {blob} NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL)"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(pool).await?;
    }
    let provinces: Vec<String> = settings.provinces.iter().map(|p| p.code.clone()).collect();
    // Untimed: the rows, queued, spread over the bureaus as the generated filings are.
    const ROWS_PER_INSERT: usize = 200;
    let mut i = 0;
    while i < n {
        let end = (i + ROWS_PER_INSERT).min(n);
        let values: Vec<String> = (i..end)
            .map(|k| {
                format!(
                    "('R{k:09}', '{}', 'queued', '2026-01-05T18:00:00+08:00')",
                    provinces[k % provinces.len()]
                )
            })
            .collect();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO bench_raw (id, province, state, deadline) VALUES {}",
            values.join(",")
        )))
        .execute(pool)
        .await?;
        i = end;
    }
    let avg_zip: Option<f64> =
        sqlx::query("SELECT CAST(AVG(LENGTH(zip)) AS DOUBLE PRECISION) FROM upload_files")
            .fetch_one(pool)
            .await
            .ok()
            .and_then(|r| r.try_get::<f64, _>(0).ok());
    let zip = vec![0x5au8; avg_zip.unwrap_or(1000.0).max(1.0) as usize];

    let started = Instant::now();
    let mut upload_id: i64 = 0;
    for province in &provinces {
        let batch = settings.batch_size(province).max(1) as i64;
        let mut sequence = 0i64;
        loop {
            upload_id += 1;
            sequence += 1;
            let now = crate::store::fmt_time(crate::store::now());
            let mut tx = pool.begin().await?;
            let claimed = sqlx::query(
                "UPDATE bench_raw SET state = 'submitting', upload_id = $1, updated_at = $2
                 WHERE id IN (SELECT id FROM bench_raw WHERE province = $3 AND state = 'queued'
                              ORDER BY deadline, id LIMIT $4)",
            )
            .bind(upload_id)
            .bind(&now)
            .bind(province)
            .bind(batch)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                tx.rollback().await?;
                break;
            }
            sqlx::query(
                "INSERT INTO bench_raw_files (id, province, data_sequence, zip, status, created_at)
                 VALUES ($1, $2, $3, $4, 'pending', $5)",
            )
            .bind(upload_id)
            .bind(province)
            .bind(sequence)
            .bind(&zip)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;

            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE bench_raw_files SET status = 'arrived' WHERE id = $1")
                .bind(upload_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE bench_raw SET state = 'submitted', updated_at = $1 WHERE upload_id = $2",
            )
            .bind(&now)
            .bind(upload_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;

            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE bench_raw SET state = 'approved', record_number = 'ICP' || id, updated_at = $1
                 WHERE upload_id = $2",
            )
            .bind(&now)
            .bind(upload_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
    }
    let took = started.elapsed();
    let approved: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM bench_raw WHERE state = 'approved'")
            .fetch_one(pool)
            .await?;
    if approved as usize != n {
        anyhow::bail!("raw database pass approved {approved} of {n} rows");
    }
    for ddl in ["DROP TABLE bench_raw", "DROP TABLE bench_raw_files"] {
        sqlx::query(ddl).execute(pool).await?;
    }
    Ok(took)
}

/// Every stored data file once more through zip, MD5, AES and base64; returns (time, GBK
/// bytes). One file in memory at a time.
pub async fn packaging(store: &Store, settings: &Settings) -> anyhow::Result<(Duration, u64)> {
    let pool = store.pool();
    let b = &settings.bureau;
    let key = AesKey::new(b.aes_key.expose().as_bytes(), b.aes_iv.expose().as_bytes())
        .context("the bureau AES key")?;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM upload_files ORDER BY id")
        .fetch_all(pool)
        .await?;
    let mut took = Duration::ZERO;
    let mut bytes = 0u64;
    for id in ids {
        let zip: Vec<u8> = sqlx::query_scalar("SELECT zip FROM upload_files WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
        let (name, gbk) = package::unzip_one(&zip, 64 << 20)
            .with_context(|| format!("stored upload file {id}"))?;
        drop(zip);
        let started = Instant::now();
        let zip = package::zip_one(&name, &gbk).context("zip")?;
        let packed = package::pack_zip(zip, Some(&key));
        took += started.elapsed();
        bytes += gbk.len() as u64;
        std::hint::black_box(packed.beian_info.len());
    }
    Ok((took, bytes))
}
