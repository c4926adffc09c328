//! Operating the real binary (issue 6): `run` with short schedules against a sandbox bureau in
//! its own process, SIGTERM mid-batch and a restart; `once` exit codes and its work lock;
//! `config check`; no PII in debug logs of a full run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_beian-gateway")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The environment every gateway process of a test gets: the sandbox's credentials, short
/// schedules, fast retries, its own admin port.
fn gateway_env(bureau_port: u16) -> Vec<(String, String)> {
    let fx = common::fixtures();
    [
        (
            "BEIAN__BUREAU__URL",
            format!("http://127.0.0.1:{bureau_port}/{{province}}"),
        ),
        ("BEIAN__BUREAU__PASSWORD", "sandbox-password".into()),
        ("BEIAN__BUREAU__AES_KEY", "0123456789abcdef".into()),
        ("BEIAN__BUREAU__AES_IV", "fedcba9876543210".into()),
        ("BEIAN__BUREAU__EXTENSIONS", "app,sms".into()),
        ("BEIAN__BUREAU__RETRY_INITIAL_MS", "20".into()),
        ("BEIAN__BUREAU__RETRY_MAX_INTERVAL_SECS", "1".into()),
        ("BEIAN__BUREAU__RETRY_MAX_ELAPSED_SECS", "2".into()),
        ("BEIAN__BUREAU__REQUEST_TIMEOUT_SECS", "5".into()),
        ("BEIAN__BUREAU__RATE_LIMITS", "false".into()),
        (
            "BEIAN__ATTACHMENTS__DIR",
            fx.join("attachments").display().to_string(),
        ),
        ("BEIAN__SCHEDULE__SUBMIT", "*/1 * * * * *".into()),
        ("BEIAN__SCHEDULE__POLL", "*/1 * * * * *".into()),
        ("BEIAN__SCHEDULE__RECONCILE", "*/5 * * * * *".into()),
        ("BEIAN__DAEMON__TICK_SECS", "1".into()),
        ("BEIAN__DAEMON__LOCK_TTL_SECS", "5".into()),
        ("BEIAN__DAEMON__LOCK_WAIT_SECS", "1".into()),
        ("BEIAN__DAEMON__SHUTDOWN_GRACE_SECS", "10".into()),
        (
            "BEIAN__DAEMON__ADMIN_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn command(db: &Path, env: &[(String, String)], args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("--database-url")
        .arg(format!("sqlite:{}", db.display()))
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    c
}

fn run_to_end(db: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    command(db, env, args).output().expect("the binary runs")
}

/// The sandbox bureau as its own process, killed on drop.
struct SandboxProcess {
    child: Child,
    port: u16,
}

impl SandboxProcess {
    fn start() -> Self {
        let port = free_port();
        let fx = common::fixtures();
        let child = Command::new(bin())
            .args(["sandbox", "--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .env("BEIAN__SANDBOX__DECISION_DELAY_MS", "150")
            .env("BEIAN__SANDBOX__SMS_CONFIRM_DELAY_MS", "250")
            .env("BEIAN__SANDBOX__SMS_TIME_FACTOR", "0.0000231")
            .env(
                "BEIAN__SANDBOX__SEED",
                fx.join("bureau/sandbox-seed.json").display().to_string(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sandbox starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "sandbox listens"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    async fn stats(&self) -> serde_json::Value {
        reqwest::get(format!("http://127.0.0.1:{}/_sandbox/stats", self.port))
            .await
            .expect("stats answer")
            .json_or_text()
            .await
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

trait JsonOrText {
    async fn json_or_text(self) -> serde_json::Value;
}

impl JsonOrText for reqwest::Response {
    async fn json_or_text(self) -> serde_json::Value {
        let text = self.text().await.expect("body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON: {e}: {text}"))
    }
}

fn exported(db: &Path, env: &[(String, String)]) -> BTreeMap<String, serde_json::Value> {
    let out = run_to_end(db, env, &["export", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .map(|v| (v["id"].as_str().unwrap_or_default().to_owned(), v))
        .collect()
}

fn expected_outcomes() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(common::fixtures().join("expected-outcomes.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object().unwrap().clone()
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{name}");
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn admin_url(env: &[(String, String)], path: &str) -> String {
    let addr = env
        .iter()
        .find(|(k, _)| k == "BEIAN__DAEMON__ADMIN_LISTEN")
        .map(|(_, v)| v.clone())
        .unwrap();
    format!("http://{addr}{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_gracefully_mid_batch_and_a_restart_finishes_every_filing_once() {
    let sandbox = SandboxProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let mut env = gateway_env(sandbox.port);
    // One filing per file: many files, so a signal lands mid-batch.
    env.push(("BEIAN__BATCH__MAX_RECORDS".into(), "1".into()));
    let imported = run_to_end(
        &db,
        &env,
        &[
            "import",
            &common::fixtures().join("filings").display().to_string(),
        ],
    );
    assert!(imported.status.success());

    let log = dir.path().join("run1.log");
    let mut first = command(&db, &env, &["run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Ready: /healthz answers 200 once migrations ran and the scheduler is up.
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(admin_url(&env, "/healthz")).await
            && r.status() == 200
        {
            let body = r.json_or_text().await;
            assert_eq!(body["ready"], true, "{body}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "healthz ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Mid-batch: some filings submitted, others still queued.
    let started = Instant::now();
    loop {
        let outcomes = exported(&db, &env);
        let sent = outcomes
            .values()
            .filter(|o| o["upload"].is_object())
            .count();
        if sent >= 2 {
            assert!(sent < outcomes.len(), "the signal comes mid-batch");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "uploads begin");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = reqwest::get(admin_url(&env, "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "beian_filings",
        "beian_deadline_overdue",
        "beian_calendar_coverage_days",
    ] {
        assert!(metrics.contains(name), "{name} in /metrics:\n{metrics}");
    }
    signal(&first, "TERM");
    let status = wait_with_timeout(&mut first, Duration::from_secs(20));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "graceful stop exits 0:\n{log_text}");
    assert!(log_text.contains("shutting down gracefully"), "{log_text}");

    // A graceful stop leaves no claim unsent: a filing still `submitting` is in a file that
    // went out (its outcome is settled with the bureau on the restart); the rest are queued.
    let after_stop = exported(&db, &env);
    for (id, o) in &after_stop {
        if o["state"] == "submitting" {
            let show = run_to_end(&db, &env, &["show", id, "--json"]);
            let t: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
            let last = t["attempts"].as_array().unwrap().last().unwrap().clone();
            assert!(
                last["upload"]["sentAt"].is_string(),
                "{id}: claimed but unsent: {t}"
            );
        }
    }

    let mut second = command(&db, &env, &["run", "--exit-when-done"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_with_timeout(&mut second, Duration::from_secs(120));
    assert!(status.success());

    let outcomes = exported(&db, &env);
    for (id, want) in expected_outcomes() {
        let got = &outcomes[&id];
        assert_eq!(got["state"], want["state"], "{id}: {got}");
        assert_eq!(got["attempts"], 1, "{id} submitted once: {got}");
    }
    let stats = sandbox.stats().await;
    let cases = stats["cases_by_identity"].as_object().unwrap();
    assert!(!cases.is_empty());
    for (identity, n) in cases {
        assert_eq!(n, 1, "{identity} became {n} bureau cases");
    }
    let sequences = stats["accepted_by_province"].as_object().unwrap();
    for (province, seqs) in sequences {
        let seqs: Vec<i64> = seqs
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let want: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, want, "{province}: one gapless stream");
    }
}

/// A copy of first.json reviewed just now (so it is not overdue), written to `dir`.
fn fresh_first(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(common::fixtures().join("filings/first.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let now = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    v["reviewedAt"] = serde_json::json!(now);
    let path = dir.join("fresh-first.json");
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exit_codes_0_1_2_3() {
    let sandbox = SandboxProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let env = gateway_env(sandbox.port);
    let dead_env = gateway_env(free_port());
    let fresh = fresh_first(dir.path()).display().to_string();
    let old = common::fixtures()
        .join("filings/first.json")
        .display()
        .to_string();

    // 3: configuration error, naming the key.
    let mut bad = env.clone();
    bad.push(("BEIAN__SCHEDULE__POLL".into(), "*/5 * * * *".into()));
    let out = run_to_end(&dir.path().join("c.db"), &bad, &["once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("schedule.poll"), "{stderr}");

    // 0: a fresh filing submitted, nothing overdue.
    let db0 = dir.path().join("ok.db");
    assert!(run_to_end(&db0, &env, &["import", &fresh]).status.success());
    let out = run_to_end(&db0, &env, &["once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(exported(&db0, &env)["F-FIRST-001"]["state"], "submitted");

    // 1: the bureau does not answer; the fresh filing is not overdue yet.
    let db1 = dir.path().join("err.db");
    assert!(
        run_to_end(&db1, &dead_env, &["import", &fresh])
            .status
            .success()
    );
    let out = run_to_end(&db1, &dead_env, &["once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");

    // 2: the bureau does not answer and a filing reviewed in March is past its deadline.
    let db2 = dir.path().join("late.db");
    assert!(
        run_to_end(&db2, &dead_env, &["import", &old])
            .status
            .success()
    );
    let out = run_to_end(&db2, &dead_env, &["once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("overdue: F-FIRST-001"), "{stderr}");
    let status = run_to_end(&db2, &dead_env, &["status", "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(view["overdue"][0]["id"], "F-FIRST-001", "{view}");
    assert_eq!(view["byProvince"]["110000"]["queued"], 1, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_beside_a_running_daemon_waits_briefly_then_exits_with_a_clear_message() {
    let sandbox = SandboxProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let env = gateway_env(sandbox.port);
    let mut daemon = command(&db, &env, &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !matches!(reqwest::get(admin_url(&env, "/healthz")).await, Ok(r) if r.status() == 200) {
        assert!(started.elapsed() < Duration::from_secs(30), "daemon ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = Instant::now();
    let out = run_to_end(&db, &env, &["once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another beian-gateway is working on this database")
            && stderr.contains("run:"),
        "{stderr}"
    );
    assert!(t.elapsed() >= Duration::from_secs(1), "it waited briefly");
    signal(&daemon, "TERM");
    assert!(wait_with_timeout(&mut daemon, Duration::from_secs(20)).success());
    // The daemon released its lease: once works now.
    let out = run_to_end(&db, &env, &["once"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_lock_lets_runs_share_and_keeps_once_alone() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_database_url(dir.path()).await;
    let store = beian_gateway::store::Store::open(&url, 2).await.unwrap();
    let now = 1_000_000;
    assert!(
        store
            .acquire_work_lock("once:a", "once", now, 5_000)
            .await
            .unwrap()
            .is_none()
    );
    let blocked = store
        .acquire_work_lock("once:b", "once", now, 5_000)
        .await
        .unwrap();
    assert_eq!(blocked.unwrap().holder, "once:a");
    assert!(
        store
            .acquire_work_lock("run:c", "run", now, 5_000)
            .await
            .unwrap()
            .is_some()
    );
    // A crashed holder's lease lapses.
    assert!(
        store
            .acquire_work_lock("run:c", "run", now + 6_000, 5_000)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .acquire_work_lock("run:d", "run", now + 6_000, 5_000)
            .await
            .unwrap()
            .is_none(),
        "two daemons may share the database"
    );
    assert_eq!(
        store
            .acquire_work_lock("once:e", "once", now + 6_000, 5_000)
            .await
            .unwrap()
            .map(|h| h.kind),
        Some("run".to_owned())
    );
    store.release_work_lock("run:c").await.unwrap();
    store.release_work_lock("run:d").await.unwrap();
    assert!(
        store
            .acquire_work_lock("once:e", "once", now + 6_000, 5_000)
            .await
            .unwrap()
            .is_none()
    );
}

#[test]
fn config_check_prints_the_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("pw");
    std::fs::write(&secret_file, "very-secret-pw\n").unwrap();
    let out = Command::new(bin())
        .args(["config", "check"])
        .env("BEIAN__BUREAU__PASSWORD_FILE", &secret_file)
        .env("BEIAN__BUREAU__AES_KEY", "0123456789abcdef")
        .env(
            "BEIAN__DATABASE__URL",
            "postgres://gw:db-secret-pw@127.0.0.1/beian",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["bureau"]["password"], "***");
    assert_eq!(v["bureau"]["aes_key"], "***");
    assert_eq!(v["database"]["url"], "postgres://gw:***@127.0.0.1/beian");
    assert!(!stdout.contains("very-secret-pw") && !stdout.contains("0123456789abcdef"));
    assert!(!stdout.contains("db-secret-pw"));
    assert_eq!(v["schedule"]["deadline_report"], "0 0 9 * * *");

    let bad = Command::new(bin())
        .args(["config", "check"])
        .env("BEIAN__SCHEDULE__RECONCILE", "every five minutes")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("schedule.reconcile"));
}

/// Every string a fixture carries about a person or a company: ID numbers, phones, names,
/// addresses, e-mail.
fn pii_values() -> Vec<String> {
    fn walk(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
        const PII: [&str; 8] = [
            "name",
            "idNumber",
            "idAddress",
            "address",
            "investor",
            "officePhone",
            "mobile",
            "email",
        ];
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    // A website's or app's name is not about a person; the subject and
                    // every principal are.
                    let inside = key == "subject" || key == "principal";
                    if inside
                        && PII.contains(&k.as_str())
                        && let Some(s) = v.as_str()
                    {
                        out.push(s.to_owned());
                    }
                    walk(v, k, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, key, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(common::fixtures().join("filings")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        walk(&v, "", &mut out);
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn no_pii_from_the_fixtures_in_debug_logs_of_a_full_run() {
    let pii = pii_values();
    assert!(
        pii.len() > 20,
        "the fixtures carry PII to look for: {pii:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let out = Command::new(bin())
        .arg("--database-url")
        .arg(format!("sqlite:{}", db.display()))
        .args([
            "run",
            "--sandbox",
            "--import",
            &common::fixtures().join("filings").display().to_string(),
            "--exit-when-done",
        ])
        .env("RUST_LOG", "debug")
        .env("BEIAN__DAEMON__ADMIN_LISTEN", "127.0.0.1:0")
        .env("BEIAN__SANDBOX__DECISION_DELAY_MS", "150")
        .env("BEIAN__SANDBOX__SMS_CONFIRM_DELAY_MS", "250")
        .env("BEIAN__SANDBOX__SMS_TIME_FACTOR", "0.0000231")
        .env(
            "BEIAN__ATTACHMENTS__DIR",
            common::fixtures().join("attachments"),
        )
        .output()
        .unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{logs}");
    assert!(
        logs.contains("DEBUG") || logs.contains("\"level\":\"DEBUG\""),
        "debug logs on"
    );
    assert!(
        logs.contains("F-FIRST-REJ") && logs.contains("approved"),
        "a full run"
    );
    for value in &pii {
        assert!(
            !logs.contains(value.as_str()),
            "PII {value:?} appears in the logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_while_the_first_waits_for_uploads() {
    // A bureau that accepts connections and never answers: the submit job hangs in flight.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let mut env = gateway_env(port);
    env.push(("BEIAN__BUREAU__REQUEST_TIMEOUT_SECS".into(), "120".into()));
    env.push(("BEIAN__DAEMON__SHUTDOWN_GRACE_SECS".into(), "120".into()));
    let fresh = fresh_first(dir.path()).display().to_string();
    assert!(run_to_end(&db, &env, &["import", &fresh]).status.success());
    let mut daemon = command(&db, &env, &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !matches!(reqwest::get(admin_url(&env, "/healthz")).await, Ok(r) if r.status() == 200) {
        assert!(started.elapsed() < Duration::from_secs(30), "daemon ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&daemon, "TERM");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the first signal waits for the job in flight"
    );
    let t = Instant::now();
    signal(&daemon, "INT");
    let status = wait_with_timeout(&mut daemon, Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert!(t.elapsed() < Duration::from_secs(5), "at once");
    drop(silent);
}
