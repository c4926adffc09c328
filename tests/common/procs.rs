//! The real binaries as separate processes (for kill -9 and several-instance tests): a sandbox
//! bureau process, gateway processes, a corpus generator, and the checks every such test ends
//! with (nothing lost, nothing sent twice, no gap, events consistent with states).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use beian_gateway::store::{Store, state};
use sqlx::Row;

pub const BIN: &str = env!("CARGO_BIN_EXE_beian-gateway");

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `n` reviewed filings generated from the FIRST fixtures with new ids, spread over
/// `provinces` (a county of the province as region, access in the province); every fifth one is the
/// fixture the sandbox rejects. JSON Lines.
pub fn write_corpus(path: &Path, n: usize, provinces: &[&str]) -> Vec<String> {
    write_corpus_from(path, 0, n, provinces)
}

/// [`write_corpus`] numbering the filings from `first` (more of the same corpus).
pub fn write_corpus_from(path: &Path, first: usize, n: usize, provinces: &[&str]) -> Vec<String> {
    let read = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(super::fixtures().join("filings").join(name)).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let approved = read("first.json");
    let rejected = read("first-rejected.json");
    let mut lines = String::new();
    let mut ids = Vec::with_capacity(n);
    for i in first..first + n {
        let mut f = if i % 5 == 4 {
            rejected.clone()
        } else {
            approved.clone()
        };
        let province = provinces[i % provinces.len()];
        let id = format!("C-{province}-{i:05}");
        f["id"] = id.clone().into();
        f["province"] = province.into();
        // A county of the province (the bureau's Qy_xx table).
        let region = match province {
            "310000" => "310101",
            "440000" => "440106",
            _ => "110108",
        };
        f["subject"]["region"] = region.into();
        let site = &mut f["websites"][0];
        site["domains"] = serde_json::json!([format!("crash{i}-example.com")]);
        site["homeUrls"] = serde_json::json!([format!("www.crash{i}-example.com")]);
        site["access"]["location"] = province.into();
        lines.push_str(&serde_json::to_string(&f).unwrap());
        lines.push('\n');
        ids.push(id);
    }
    std::fs::write(path, lines).unwrap();
    ids
}

/// A free port on 127.0.0.1 (bound and released; the sandbox binds it next).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `beian-gateway sandbox` as its own process, with short decision delays.
pub struct SandboxProcess {
    child: Child,
    pub port: u16,
}

impl SandboxProcess {
    pub async fn start(log_dir: &Path) -> Self {
        Self::start_with(log_dir, &[]).await
    }

    /// [`SandboxProcess::start`] with more `BEIAN__SANDBOX__…` settings.
    pub async fn start_with(log_dir: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = std::fs::File::create(log_dir.join("sandbox.log")).unwrap();
        let child = Command::new(BIN)
            .current_dir(manifest_dir())
            .args(["--log-format", "json", "sandbox", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("BEIAN__SANDBOX__DECISION_DELAY_MS", "100")
            .env("BEIAN__SANDBOX__SMS_CONFIRM_DELAY_MS", "200")
            // The 24 h SMS window lasts 10 minutes: no filing expires while the gateway is down.
            .env("BEIAN__SANDBOX__SMS_TIME_FACTOR", "0.00694")
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let me = Self { child, port };
        let started = Instant::now();
        while me.stats_opt().await.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "sandbox answers"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        me
    }

    async fn stats_opt(&self) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/_sandbox/stats", self.port);
        let r = reqwest::get(&url).await.ok()?;
        let body = r.bytes().await.ok()?;
        serde_json::from_slice(&body).ok()
    }

    pub async fn stats(&self) -> serde_json::Value {
        self.stats_opt().await.expect("sandbox stats")
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway command on `db` against the sandbox on `port`, fast schedules and short leases.
pub fn gateway(db: &str, port: u16, log: &Path) -> Command {
    let mut c = Command::new(BIN);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    c.current_dir(manifest_dir())
        .args(["--log-format", "json", "--database-url", db])
        .env(
            "BEIAN__BUREAU__URL",
            format!("http://127.0.0.1:{port}/{{province}}"),
        )
        .env("BEIAN__BUREAU__PASSWORD", "sandbox-password")
        .env("BEIAN__BUREAU__AES_KEY", "0123456789abcdef")
        .env("BEIAN__BUREAU__AES_IV", "fedcba9876543210")
        .env("BEIAN__BUREAU__EXTENSIONS", "app,sms")
        .env("BEIAN__BUREAU__RETRY_INITIAL_MS", "50")
        .env("BEIAN__BUREAU__RETRY_MAX_INTERVAL_SECS", "1")
        .env("BEIAN__BUREAU__RETRY_MAX_ELAPSED_SECS", "10")
        .env("BEIAN__BUREAU__REQUEST_TIMEOUT_SECS", "10")
        .env("BEIAN__BATCH__MAX_RECORDS", "20")
        .env("BEIAN__DATABASE__LEASE_SECS", "2")
        .env("BEIAN__SCHEDULE__SUBMIT", "*/1 * * * * *")
        .env("BEIAN__SCHEDULE__POLL", "*/1 * * * * *")
        // Several processes on one host: no shared /metrics port.
        .env("BEIAN__DAEMON__ADMIN_LISTEN", "")
        // Fast; the several-instances test turns the limits back on with its own rates.
        .env("BEIAN__BUREAU__RATE_LIMITS", "false")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    c
}

/// `once` until no applied download waits for its acknowledgement: a `run --exit-when-done`
/// may stop once every filing is settled while the ack of a file applied just before a crash
/// is still to be sent (the bureau serves it again; the next cycle acks it without applying).
pub async fn flush_acks(db: &str, port: u16, log: &Path, store: &Store) {
    for _ in 0..10 {
        let unacked: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM download_files WHERE acked_at IS NULL")
                .fetch_one(store.pool())
                .await
                .unwrap();
        if unacked == 0 {
            return;
        }
        let _ = gateway(db, port, log).arg("once").status().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("applied downloads still unacknowledged after ten cycles");
}

pub fn import(db: &str, port: u16, corpus: &Path, log: &Path) {
    let status = gateway(db, port, log)
        .arg("import")
        .arg(corpus)
        .status()
        .unwrap();
    assert!(status.success(), "corpus imports");
}

/// What the end checks found, for the closing figures.
#[derive(Debug, Default)]
pub struct Figures {
    pub filings: usize,
    pub terminal: usize,
    pub lost: usize,
    pub double_cases: usize,
    pub cases: usize,
    pub files: usize,
    pub downloads: usize,
}

/// The guarantees after any number of crashes: every filing terminal and none lost; every
/// filing identity one bureau case; per bureau the accepted dataSequences 1..n once each,
/// equal to the stored files, all arrived; every downloaded file applied and acked, every
/// decision applied once; each filing's last state event names its state.
pub async fn check_guarantees(store: &Store, ids: &[String], stats: &serde_json::Value) -> Figures {
    let mut fig = Figures {
        filings: ids.len(),
        ..Figures::default()
    };
    let outcomes: HashMap<String, _> = store
        .export(None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.id.clone(), o))
        .collect();
    for id in ids {
        match outcomes.get(id) {
            None => fig.lost += 1,
            Some(o) if state::is_terminal(&o.state) => fig.terminal += 1,
            Some(_) => {}
        }
    }
    let not_terminal: Vec<_> = outcomes
        .values()
        .filter(|o| !state::is_terminal(&o.state))
        .map(|o| (o.id.clone(), o.state.clone()))
        .take(10)
        .collect();
    assert_eq!(fig.lost, 0, "no filing lost");
    assert_eq!(
        fig.terminal,
        ids.len(),
        "every filing terminal: {not_terminal:?}"
    );

    // One bureau case per identity, and exactly as many cases as claimed attempts carried.
    let cases = stats["cases_by_identity"].as_object().unwrap();
    fig.cases = cases.len();
    fig.double_cases = cases.values().filter(|n| n.as_u64() != Some(1)).count();
    assert_eq!(fig.double_cases, 0, "no filing became two bureau cases");
    for (id, o) in &outcomes {
        let want = if o.state == state::NEEDS_CORRECTION {
            0
        } else {
            1
        };
        assert_eq!(
            o.attempts, want,
            "{id} ({}) was claimed into exactly one file: {:?}",
            o.state, o.reasons
        );
    }
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        cases.len() as i64,
        attempts,
        "one bureau case per attempt, no more"
    );

    // The stream: stored files 1..n, all arrived, and the bureau accepted exactly those.
    let rows = sqlx::query(
        "SELECT province, data_sequence, status FROM upload_files ORDER BY province, data_sequence",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut stored: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in rows {
        let status: String = r.get(2);
        assert_eq!(status, "arrived");
        stored.entry(r.get(0)).or_default().push(r.get(1));
        fig.files += 1;
    }
    let accepted = stats["accepted_by_province"].as_object().unwrap();
    assert_eq!(
        accepted.keys().cloned().collect::<Vec<_>>(),
        stored.keys().cloned().collect::<Vec<_>>()
    );
    for (province, seqs) in &stored {
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, &expected, "{province}: no gap in the stored stream");
        let got: Vec<i64> = accepted[province]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(got, expected, "{province}: no gap, no reuse at the bureau");
    }

    // Downloads: each applied and acked; each decision applied once.
    let rows = sqlx::query("SELECT file_name, applied_at, acked_at FROM download_files")
        .fetch_all(store.pool())
        .await
        .unwrap();
    for r in &rows {
        let name: String = r.get(0);
        assert!(r.get::<Option<String>, _>(1).is_some(), "{name} applied");
        assert!(r.get::<Option<String>, _>(2).is_some(), "{name} acked");
    }
    let served = stats["files_served"].as_u64().unwrap_or(0) as usize;
    assert!(
        served >= rows.len(),
        "every stored download came from the bureau"
    );
    fig.downloads = rows.len();
    let decisions = sqlx::query(
        "SELECT filing_id, COUNT(*) FROM events WHERE kind IN ('approved', 'rejected', 'expired') GROUP BY filing_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    for r in decisions {
        let id: String = r.get(0);
        let n: i64 = r.get(1);
        assert_eq!(n, 1, "{id}: its decision was applied once");
    }

    // The event log tells the same story as the states.
    let last = sqlx::query(
        "SELECT e.filing_id, e.kind FROM events e
         WHERE e.id = (SELECT MAX(x.id) FROM events x WHERE x.filing_id = e.filing_id
                       AND x.kind IN ('imported', 'queued', 'claimed', 'submitted', 'awaiting_sms',
                                      'approved', 'rejected', 'expired', 'needs_correction'))",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut seen = 0;
    for r in last {
        let id: String = r.get(0);
        let kind: String = r.get(1);
        let want = match kind.as_str() {
            "imported" => "reviewed",
            "claimed" => "submitting",
            other => other,
        };
        assert_eq!(outcomes[&id].state, want, "{id}: last event {kind}");
        seen += 1;
    }
    assert_eq!(seen, outcomes.len(), "every filing has its events");
    fig
}
