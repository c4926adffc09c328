//! Nothing lost, nothing sent twice, whatever dies: the real gateway binary on a generated
//! corpus against a sandbox bureau process, killed with SIGKILL at random moments and restarted
//! each time; then run to the end and checked (`common::procs::check_guarantees`).
//!
//! CI runs 20 crash points on 500 filings over three bureaus. More on demand:
//! `BEIAN_CRASH_POINTS=200 BEIAN_CRASH_FILINGS=2000 bash tests/crash-loop` (add
//! `BEIAN_TEST_POSTGRES=postgres://…` for PostgreSQL).

mod common;

use std::time::{Duration, Instant};

use beian_gateway::store::Store;
use common::procs;
use rand::RngExt;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_sends_nothing_twice() {
    let points = env_usize("BEIAN_CRASH_POINTS", 20);
    let n = env_usize("BEIAN_CRASH_FILINGS", 500);
    let dir = tempfile::tempdir().unwrap();
    let db = common::fresh_database_url(dir.path()).await;
    let log = dir.path().join("gateway.log");
    let corpus = dir.path().join("corpus.jsonl");
    let provinces = ["110000", "310000", "440000"];
    let mut ids = procs::write_corpus(&corpus, n, &provinces);
    let sandbox = procs::SandboxProcess::start(dir.path()).await;
    procs::import(&db, sandbox.port, &corpus, &log);

    let started = Instant::now();
    let mut rng = rand::rng();
    let mut killed = 0;
    let mut restarts = 0;
    while killed < points {
        let mut child = procs::gateway(&db, sandbox.port, &log)
            .args(["run", "--exit-when-done"])
            .spawn()
            .unwrap();
        restarts += 1;
        // Anywhere from start-up (migrations, lease takeover) to the middle of a send.
        let moment = Duration::from_millis(rng.random_range(150..2_500));
        tokio::time::sleep(moment).await;
        match child.try_wait().unwrap() {
            Some(_) => {
                // All work done before this crash point: more filings, so that every crash
                // point lands while there is work.
                let more = dir.path().join(format!("more-{}.jsonl", ids.len()));
                ids.extend(procs::write_corpus_from(&more, ids.len(), 60, &provinces));
                procs::import(&db, sandbox.port, &more, &log);
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "crash loop within 10 minutes"
        );
    }
    let crash_phase = started.elapsed();
    // The last start runs to the end.
    let mut child = procs::gateway(&db, sandbox.port, &log)
        .args(["run", "--exit-when-done"])
        .spawn()
        .unwrap();
    let finish = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if finish.elapsed() > Duration::from_secs(300) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the gateway did not finish within 5 minutes after the crashes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let store = Store::open(&db, 2).await.unwrap();
    procs::flush_acks(&db, sandbox.port, &log, &store).await;
    let stats = sandbox.stats().await;
    let fig = procs::check_guarantees(&store, &ids, &stats).await;
    println!(
        "crash test ({}): {killed} kill -9 crash points over {restarts} starts, {} filings, {} terminal, lost {}, double cases {}, bureau cases {}, upload files {}, downloads {}; crash phase {:.0?}, finish {:.0?}",
        if db.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        fig.filings,
        fig.terminal,
        fig.lost,
        fig.double_cases,
        fig.cases,
        fig.files,
        fig.downloads,
        crash_phase,
        finish.elapsed(),
    );
}
