//! Several instances on one database: three gateway processes started at once on a fresh
//! database (migrations race), a corpus over three bureaus, one instance killed with SIGKILL
//! mid-run. No filing claimed twice, no double case, one sender per bureau at any moment (the
//! lease log and who sent each file), and the survivors take the dead one's bureaus over and
//! finish. Runs on PostgreSQL (the multi-instance store) and on SQLite (same code path, one
//! file shared by three processes).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use beian_gateway::store::Store;
use common::procs;
use sqlx::Row;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_work_and_survive_one_killed() {
    let n = 300;
    let dir = tempfile::tempdir().unwrap();
    let db = common::fresh_database_url(dir.path()).await;
    let log = dir.path().join("gateway.log");
    let provinces = ["110000", "310000", "440000"];
    let corpus = dir.path().join("corpus.jsonl");
    let ids = procs::write_corpus(&corpus, n, &provinces);
    let sandbox = procs::SandboxProcess::start(dir.path()).await;

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
            procs::gateway(&db, sandbox.port, &log)
                .args(["run", "--exit-when-done"])
                .spawn()
                .unwrap()
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
}
