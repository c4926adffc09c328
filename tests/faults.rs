//! Bureau faults, one at a time and all together, against the sandbox bureau: each one's
//! expected behaviour (retry with backoff and the same file and number; reconcile an unknown
//! outcome; pause the bureau; a clear error) is asserted, and every test ends with one bureau
//! case per filing and a dataSequence stream with no gap and no reuse. The lost answer, the gap
//! claim (14), msg_code 15 and 5 are in `exactly_once.rs`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use beian_gateway::bureau::sandbox::{Fault, FaultRule};
use beian_gateway::commands;
use beian_gateway::config::Settings;
use sqlx::Row;

async fn import(env: &common::TestEnv, names: &[&str]) {
    let paths: Vec<_> = names
        .iter()
        .map(|n| common::fixtures().join("filings").join(n))
        .collect();
    let (new, _, failed) = commands::import(&env.store, &paths).await.unwrap();
    assert_eq!((new, failed), (names.len(), 0));
}

async fn start_with(faults: Vec<FaultRule>, mutate: impl FnOnce(&mut Settings)) -> common::TestEnv {
    let env = common::start(mutate).await;
    for f in faults {
        env.sandbox.faults().add(f);
    }
    env
}

/// The end state every fault test must reach: per bureau the accepted dataSequences are
/// 1, 2, …, n exactly once each and match the stored files, all arrived; every filing identity
/// is one bureau case; every filing was claimed into exactly one file.
async fn assert_stream_and_cases(env: &common::TestEnv) {
    let stats = env.sandbox.stats();
    for (identity, n) in &stats.cases_by_identity {
        assert_eq!(*n, 1, "{identity} became {n} bureau cases");
    }
    let rows = sqlx::query(
        "SELECT province, data_sequence, status FROM upload_files ORDER BY province, data_sequence",
    )
    .fetch_all(env.store.pool())
    .await
    .unwrap();
    let mut stored: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in rows {
        let status: String = r.get(2);
        assert_eq!(status, "arrived", "every stored file arrived");
        stored.entry(r.get(0)).or_default().push(r.get(1));
    }
    for (province, seqs) in &stored {
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, &expected, "{province}: stored stream has no gap");
        assert_eq!(
            stats.accepted_sequences(province),
            expected,
            "{province}: the bureau accepted each number once, in order"
        );
    }
    for (province, seqs) in &stats.accepted_by_province {
        assert!(
            stored.contains_key(province) || seqs.is_empty(),
            "{province}: accepted a file the gateway never stored"
        );
    }
    for (id, o) in env.outcomes().await {
        if o.upload.is_some() {
            assert_eq!(o.attempts, 1, "{id} was claimed into exactly one file");
        }
    }
}

async fn alarms(env: &common::TestEnv, kind: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT detail FROM events WHERE kind = $1 ORDER BY id")
        .bind(format!("alarm.{kind}"))
        .fetch_all(env.store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_codes_20_901_902_are_retried_with_the_same_file_and_number() {
    let env = start_with(
        [20, 901, 902]
            .into_iter()
            .map(|code| FaultRule::new(Fault::MsgCode { code }, 1).province("110000"))
            .collect(),
        |_| {},
    )
    .await;
    import(&env, &["first.json"]).await;
    env.settle(Duration::from_secs(30)).await;
    assert_eq!(env.outcomes().await["F-FIRST-001"].state, "approved");
    let stats = env.sandbox.stats();
    assert_eq!(stats.faults_applied, 3, "all three refusals were met");
    assert_eq!(
        stats.calls.get("isp_upload"),
        Some(&1),
        "refused sends were retried until the one file was processed once: {:?}",
        stats.calls
    );
    assert_stream_and_cases(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500_503_and_a_soap_fault_are_retried_with_backoff() {
    let env = start_with(
        vec![
            FaultRule::new(Fault::Http { status: 500 }, 1)
                .province("110000")
                .operation("isp_upload"),
            FaultRule::new(Fault::SoapFault, 1)
                .province("110000")
                .operation("isp_upload"),
            FaultRule::new(Fault::Http { status: 503 }, 2)
                .province("110000")
                .operation("isp_download"),
            FaultRule::new(Fault::SoapFault, 1)
                .province("110000")
                .operation("isp_downloadack"),
        ],
        |_| {},
    )
    .await;
    import(&env, &["first.json"]).await;
    env.settle(Duration::from_secs(30)).await;
    assert_eq!(env.outcomes().await["F-FIRST-001"].state, "approved");
    assert_eq!(env.sandbox.stats().faults_applied, 5);
    assert!(env.sandbox.faults().pending().is_empty());
    assert_stream_and_cases(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_is_reconciled_before_the_same_file_is_sent_again() {
    let env = start_with(
        vec![
            FaultRule::new(Fault::Reset, 1)
                .province("110000")
                .operation("isp_upload"),
        ],
        |_| {},
    )
    .await;
    import(&env, &["first.json"]).await;
    env.settle(Duration::from_secs(30)).await;
    assert_eq!(env.outcomes().await["F-FIRST-001"].state, "approved");
    let stats = env.sandbox.stats();
    assert!(
        stats
            .calls
            .get("isp_querypreviousupload")
            .copied()
            .unwrap_or(0)
            >= 1,
        "an unknown outcome is asked about, never resent blind: {:?}",
        stats.calls
    );
    assert_stream_and_cases(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_slower_than_the_clients_timeout_is_reconciled_not_duplicated() {
    let env = start_with(
        vec![
            FaultRule::new(Fault::Slow { millis: 2_500 }, 1)
                .province("110000")
                .operation("isp_upload"),
        ],
        |s| s.bureau.request_timeout_secs = 1,
    )
    .await;
    import(&env, &["first.json", "first-rejected.json"]).await;
    env.settle(Duration::from_secs(40)).await;
    let outcomes = env.outcomes().await;
    assert_eq!(outcomes["F-FIRST-001"].state, "approved");
    assert_eq!(outcomes["F-FIRST-REJ"].state, "rejected");
    let stats = env.sandbox.stats();
    assert_eq!(stats.faults_applied, 1);
    assert!(
        stats
            .calls
            .get("isp_querypreviousupload")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{:?}",
        stats.calls
    );
    assert_stream_and_cases(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_with_a_bad_hash_is_not_acknowledged_and_applied_once_when_served_again() {
    let env = start_with(
        vec![FaultRule::new(Fault::WrongHash, 2).province("110000")],
        |_| {},
    )
    .await;
    import(&env, &["first.json"]).await;
    env.settle(Duration::from_secs(30)).await;
    assert_eq!(env.outcomes().await["F-FIRST-001"].state, "approved");
    let unreadable = alarms(&env, "download_unreadable").await;
    assert_eq!(
        unreadable.len(),
        2,
        "each bad file is an alarm: {unreadable:?}"
    );
    assert!(
        unreadable.iter().all(|d| d.contains("hash")),
        "the alarm says what is wrong: {unreadable:?}"
    );
    let rows = sqlx::query("SELECT file_name, applied_at, acked_at FROM download_files")
        .fetch_all(env.store.pool())
        .await
        .unwrap();
    let stats = env.sandbox.stats();
    assert_eq!(
        rows.len(),
        stats.files_acked,
        "every acked file applied once"
    );
    for r in rows {
        let name: String = r.get(0);
        assert!(r.get::<Option<String>, _>(1).is_some(), "{name} applied");
        assert!(r.get::<Option<String>, _>(2).is_some(), "{name} acked");
    }
    assert_stream_and_cases(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_answers_are_clear_errors_then_the_same_file_goes_again() {
    for fault in [Fault::Malformed, Fault::Oversized { bytes: 2_000_000 }] {
        let env = start_with(
            vec![
                FaultRule::new(fault.clone(), 10_000)
                    .province("110000")
                    .operation("isp_upload"),
            ],
            |s| {
                s.bureau.max_answer_bytes = 1_000_000;
                s.bureau.retry_max_elapsed_secs = 1;
            },
        )
        .await;
        import(&env, &["first.json"]).await;
        let report = env.gateway.cycle().await;
        let errors = report.errors.join("\n");
        assert!(
            errors.contains("110000"),
            "{fault:?}: names the bureau: {errors}"
        );
        let failed = alarms(&env, "upload_failed").await;
        assert_eq!(failed.len(), 1, "{fault:?}: {failed:?}");
        let want = match fault {
            Fault::Malformed => "not well-formed",
            _ => "larger",
        };
        assert!(
            failed[0].to_lowercase().contains(want) || errors.to_lowercase().contains(want),
            "{fault:?}: the error says what was wrong: {errors} / {failed:?}"
        );
        let pending = env.store.pending_upload("110000").await.unwrap();
        assert_eq!(
            pending.map(|f| f.data_sequence),
            Some(1),
            "{fault:?}: the file waits with its number"
        );
        env.sandbox.faults().clear();
        env.settle(Duration::from_secs(30)).await;
        assert_eq!(env.outcomes().await["F-FIRST-001"].state, "approved");
        assert_stream_and_cases(&env).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_refusal_12_pauses_the_bureau_until_resumed() {
    let env = start_with(
        vec![FaultRule::new(Fault::MsgCode { code: 12 }, 1).province("110000")],
        |_| {},
    )
    .await;
    import(&env, &["first.json"]).await;
    let report = env.gateway.cycle().await;
    assert!(!report.errors.is_empty());
    let paused = env.store.bureau("110000").await.unwrap().paused_reason;
    assert!(paused.is_some(), "paused with a reason");
    env.gateway.cycle().await;
    assert!(env.sandbox.stats().accepted_sequences("110000").is_empty());
    env.store
        .resume_bureau("110000", "test-operator")
        .await
        .unwrap();
    env.settle(Duration::from_secs(30)).await;
    assert_eq!(env.outcomes().await["F-FIRST-001"].state, "approved");
    assert_stream_and_cases(&env).await;
}

/// Every fixture against a bureau that misbehaves in every way at once, on every province.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_faults_ends_with_the_predicted_outcomes_one_case_each_and_no_gap() {
    let faults = vec![
        FaultRule::new(Fault::MsgCode { code: 15 }, 2),
        FaultRule::new(Fault::MsgCode { code: 20 }, 1),
        FaultRule::new(Fault::MsgCode { code: 901 }, 1),
        FaultRule::new(Fault::MsgCode { code: 902 }, 1),
        FaultRule::new(Fault::Http { status: 500 }, 2),
        FaultRule::new(Fault::Http { status: 503 }, 2),
        FaultRule::new(Fault::SoapFault, 2),
        FaultRule::new(Fault::Reset, 2),
        FaultRule::new(Fault::Malformed, 2),
        FaultRule::new(Fault::LoseAnswer, 2),
        FaultRule::new(Fault::WrongHash, 2),
        FaultRule::new(Fault::Slow { millis: 1_500 }, 1).operation("isp_upload"),
        FaultRule::new(Fault::GapClaim { missing: Some(1) }, 1).province("110000"),
    ];
    let armed = faults.iter().map(|f| f.count).sum::<usize>();
    let env = start_with(faults, |s| s.bureau.request_timeout_secs = 1).await;
    env.import_fixtures().await;
    env.settle(Duration::from_secs(90)).await;
    let expected: BTreeMap<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("expected-outcomes.json")).unwrap(),
    )
    .unwrap();
    let outcomes = env.outcomes().await;
    for (id, want) in &expected {
        assert_eq!(
            outcomes[id].state, want["state"],
            "{id}: {:?}",
            outcomes[id].reasons
        );
    }
    let stats = env.sandbox.stats();
    assert!(
        stats.faults_applied >= armed - 3,
        "the faults were met ({} of {armed})",
        stats.faults_applied
    );
    assert_stream_and_cases(&env).await;
}
