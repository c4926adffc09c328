//! Several instances on one database: three gateway processes started at once on a fresh
//! database (migrations race), a corpus over three bureaus, one instance killed with SIGKILL
//! mid-run. No filing claimed twice, no double case, one sender per bureau at any moment (the
//! lease log and who sent each file), and the survivors take the dead one's bureaus over and
//! finish. The bureau's rate limits hold across the three: the sandbox records every request
//! of every instance, and in every window of length W a bureau saw at most W × rate + 1 of
//! them, never more than its `concurrency` at once. Runs on PostgreSQL (the multi-instance
//! store) and on SQLite (same code path, one file shared by three processes).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use beian_gateway::store::Store;
use common::procs;
use sqlx::Row;

/// Test rates (requests per minute) that bite: unlimited, a bureau's holder sends its downloads,
/// acks and uploads within milliseconds of each other. One interval is 125–200 ms.
const RATES: [(&str, u32); 3] = [("110000", 480), ("310000", 400), ("440000", 300)];

/// Every bureau has `concurrency = 1` in config/provinces.toml.
const CONCURRENCY: usize = 1;

/// What the bureau saw of one province's requests, from the sandbox's stats.
struct Seen {
    requests: usize,
    min_gap_ms: f64,
    /// (window ms, most requests in one window, the bound W × rate + 1)
    windows: Vec<(u64, usize, u64)>,
    max_in_flight: usize,
}

/// Checks the rate bound in every window (each request opens one) and the concurrency bound.
fn seen_by_bureau(stats: &serde_json::Value, province: &str, rpm: u32) -> Seen {
    let mut starts: Vec<f64> = stats["requests_by_province"][province]
        .as_array()
        .unwrap_or_else(|| panic!("{province}: the bureau saw requests"))
        .iter()
        .map(|span| span[0].as_f64().unwrap())
        .collect();
    starts.sort_by(f64::total_cmp);
    let interval_ms = 60_000 / u64::from(rpm);
    let mut windows = Vec::new();
    for window_ms in [interval_ms, 4 * interval_ms, 10_000, 60_000] {
        let bound = u64::from(rpm) * window_ms / 60_000 + 1;
        let most = (0..starts.len())
            .map(|i| {
                starts[i..]
                    .iter()
                    .take_while(|t| **t - starts[i] <= window_ms as f64)
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert!(
            most as u64 <= bound,
            "{province}: {most} requests within {window_ms} ms, the limit {rpm}/min allows {bound}"
        );
        windows.push((window_ms, most, bound));
    }
    let max_in_flight = stats["max_in_flight"][province].as_u64().unwrap() as usize;
    assert!(
        max_in_flight <= CONCURRENCY,
        "{province}: {max_in_flight} requests in flight at once"
    );
    Seen {
        requests: starts.len(),
        min_gap_ms: starts
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(f64::INFINITY, f64::min),
        windows,
        max_in_flight,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_work_and_survive_one_killed() {
    let n = 300;
    let dir = tempfile::tempdir().unwrap();
    let db = common::fresh_database_url(dir.path()).await;
    let log = dir.path().join("gateway.log");
    let provinces = ["110000", "310000", "440000"];
    let corpus = dir.path().join("corpus.jsonl");
    let ids = procs::write_corpus(&corpus, n, &provinces);
    // Answers take 20 ms, so two requests at once would overlap at the bureau.
    let sandbox =
        procs::SandboxProcess::start_with(dir.path(), &[("BEIAN__SANDBOX__ANSWER_DELAY_MS", "20")])
            .await;

    // Three imports at once on the fresh database: the migrations must not collide.
    let lines: Vec<String> = std::fs::read_to_string(&corpus)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut importers = Vec::new();
    for part in 0..3 {
        let path = dir.path().join(format!("part-{part}.jsonl"));
        let chunk: String = lines
            .iter()
            .skip(part)
            .step_by(3)
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, chunk).unwrap();
        importers.push(
            procs::gateway(&db, sandbox.port, &log)
                .arg("import")
                .arg(&path)
                .spawn()
                .unwrap(),
        );
    }
    for mut i in importers {
        assert!(
            i.wait().unwrap().success(),
            "concurrent start-up and import"
        );
    }

    let mut daemons: Vec<_> = (0..3)
        .map(|_| {
            let mut c = procs::gateway(&db, sandbox.port, &log);
            c.args(["run", "--exit-when-done"])
                .env("BEIAN__BUREAU__RATE_LIMITS", "true");
            for (province, rpm) in RATES {
                c.env(
                    format!("BEIAN__BUREAU__PROVINCES__{province}__REQUESTS_PER_MINUTE"),
                    rpm.to_string(),
                );
            }
            c.spawn().unwrap()
        })
        .collect();
    let pids: Vec<u32> = daemons.iter().map(|c| c.id()).collect();
    let store = Store::open(&db, 2).await.unwrap();

    // Kill the instance that holds a bureau, once some work is under way.
    let started = Instant::now();
    let victim = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let holders: Vec<String> =
            sqlx::query_scalar("SELECT owner FROM bureau_leases ORDER BY province")
                .fetch_all(store.pool())
                .await
                .unwrap();
        let sent: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM upload_files WHERE sent_at IS NOT NULL")
                .fetch_one(store.pool())
                .await
                .unwrap();
        let holder = pids
            .iter()
            .position(|pid| holders.iter().any(|o| o.contains(&format!("-{pid}-"))));
        if let (Some(i), true) = (holder, sent >= 2) {
            break i;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the instances start working"
        );
    };
    daemons[victim].kill().unwrap();
    daemons[victim].wait().unwrap();
    let killed_at = started.elapsed();

    for (i, d) in daemons.iter_mut().enumerate() {
        if i == victim {
            continue;
        }
        let finish = Instant::now();
        loop {
            if let Some(status) = d.try_wait().unwrap() {
                assert!(status.code().is_some(), "instance {i} exited by itself");
                break;
            }
            if finish.elapsed() > Duration::from_secs(300) {
                d.kill().unwrap();
                panic!("instance {i} did not finish");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The three daemons' traffic as the bureau saw it (before the unlimited `once` runs that
    // flush the acks).
    let traffic = sandbox.stats().await;
    let seen: Vec<(&str, Seen)> = RATES
        .iter()
        .map(|(province, rpm)| (*province, seen_by_bureau(&traffic, province, *rpm)))
        .collect();
    procs::flush_acks(&db, sandbox.port, &log, &store).await;
    let stats = sandbox.stats().await;
    let fig = procs::check_guarantees(&store, &ids, &stats).await;

    // No filing in two files.
    let twice: Vec<String> = sqlx::query_scalar(
        "SELECT filing_id FROM upload_file_filings GROUP BY filing_id HAVING COUNT(*) > 1",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert!(twice.is_empty(), "claimed by two: {twice:?}");

    // One sender per bureau at any moment: every takeover came after the previous holder's
    // lease ran out, tokens only go up, and each file was sent under the token its sender held.
    let log_rows = store.bureau_lease_log().await.unwrap();
    let mut holder_of: HashMap<(String, i64), String> = HashMap::new();
    let mut last_token: HashMap<String, i64> = HashMap::new();
    for e in &log_rows {
        let prev = last_token.insert(e.province.clone(), e.token).unwrap_or(0);
        assert!(e.token > prev, "{}: tokens go up: {e:?}", e.province);
        if let (Some(p), Some(expires)) = (&e.previous_owner, e.previous_expires_ms)
            && p != &e.owner
        {
            assert!(
                e.acquired_ms > expires,
                "{}: taken over only after the lease ran out: {e:?}",
                e.province
            );
        }
        holder_of.insert((e.province.clone(), e.token), e.owner.clone());
    }
    let files =
        sqlx::query("SELECT province, data_sequence, sent_by, sent_token FROM upload_files")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let mut senders: HashMap<String, usize> = HashMap::new();
    for f in files {
        let province: String = f.get(0);
        let seq: i64 = f.get(1);
        let by: Option<String> = f.get(2);
        let token: Option<i64> = f.get(3);
        let (Some(by), Some(token)) = (by, token) else {
            continue; // confirmed through a result before its (dead) sender recorded the send
        };
        assert_eq!(
            holder_of.get(&(province.clone(), token)),
            Some(&by),
            "{province} file {seq} was sent by the lease holder of token {token}"
        );
        *senders.entry(by).or_default() += 1;
    }
    let victim_tag = format!("-{}-", pids[victim]);
    let taken_from_victim = log_rows
        .iter()
        .filter(|e| {
            e.previous_owner
                .as_deref()
                .is_some_and(|p| p.contains(&victim_tag))
                && !e.owner.contains(&victim_tag)
        })
        .count();
    assert!(
        taken_from_victim >= 1,
        "the survivors took the killed instance's bureaus over: {log_rows:?}"
    );
    println!(
        "several instances ({}): 3 instances, {} filings over {} bureaus, {} terminal, lost {}, double cases {}, files {} by {} senders, {} takeovers ({} from the instance killed at {:.1?}), total {:.1?}",
        if db.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        fig.filings,
        provinces.len(),
        fig.terminal,
        fig.lost,
        fig.double_cases,
        fig.files,
        senders.len(),
        log_rows.len(),
        taken_from_victim,
        killed_at,
        started.elapsed(),
    );
    for (province, s) in &seen {
        let windows: Vec<String> = s
            .windows
            .iter()
            .map(|(w, most, bound)| format!("{w} ms: {most} ≤ {bound}"))
            .collect();
        println!(
            "  bureau {province}: {} requests, closest two {:.0} ms apart, most in flight {}, windows {}",
            s.requests,
            s.min_gap_ms,
            s.max_in_flight,
            windows.join(", ")
        );
    }
}
