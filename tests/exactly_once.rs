//! Never submitted twice: a lost upload answer, a process stopped between claim and upload, and
//! a gap the bureau claims all end with every filing one bureau case and the dataSequence
//! stream without gap or reuse.

mod common;

use std::time::Duration;

use beian_gateway::bureau::sandbox::{Fault, FaultRule};
use beian_gateway::calendar::Calendar;
use beian_gateway::commands;
use beian_gateway::pipeline::{CycleReport, Gateway};

async fn import(env: &common::TestEnv, names: &[&str]) {
    let paths: Vec<_> = names
        .iter()
        .map(|n| common::fixtures().join("filings").join(n))
        .collect();
    let (new, _, failed) = commands::import(&env.store, &paths).await.unwrap();
    assert_eq!((new, failed), (names.len(), 0));
}

fn assert_one_case_each(env: &common::TestEnv) {
    let stats = env.sandbox.stats();
    assert!(!stats.cases_by_identity.is_empty());
    for (identity, n) in &stats.cases_by_identity {
        assert_eq!(*n, 1, "{identity} became {n} bureau cases");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_upload_answer_ends_in_one_case_and_the_next_file_gets_the_next_number() {
    let env = common::start(|_| {}).await;
    env.sandbox
        .faults()
        .add(FaultRule::new(Fault::LoseAnswer, 1).province("110000"));
    import(&env, &["first.json"]).await;
    env.settle(Duration::from_secs(30)).await;
    let first = &env.outcomes().await["F-FIRST-001"];
    assert_eq!(first.state, "approved");
    assert_eq!(first.upload.as_ref().unwrap().data_sequence, 1);

    import(&env, &["first-rejected.json"]).await;
    env.settle(Duration::from_secs(30)).await;
    let second = &env.outcomes().await["F-FIRST-REJ"];
    assert_eq!(second.state, "rejected");
    assert_eq!(second.upload.as_ref().unwrap().data_sequence, 2);

    let stats = env.sandbox.stats();
    assert_eq!(stats.accepted_sequences("110000"), vec![1, 2]);
    assert!(stats.faults_applied >= 1, "the answer was really lost");
    assert_one_case_each(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_stopped_between_claim_and_upload_resumes_with_the_same_file_and_number() {
    let env = common::start(|_| {}).await;
    import(&env, &["first.json"]).await;
    // The bureau's code tables first (section 7.1), then a claim that is never sent: the
    // process "dies" here.
    env.gateway.intake().await.unwrap();
    env.gateway.poll_province("110000").await.unwrap();
    let mut report = CycleReport::default();
    assert!(env.gateway.claim("110000", &mut report).await.unwrap());
    let stored = env
        .store
        .pending_upload("110000")
        .await
        .unwrap()
        .expect("file stored before sending");
    assert_eq!(stored.data_sequence, 1);
    assert_eq!(env.outcomes().await["F-FIRST-001"].state, "submitting");
    assert!(
        env.sandbox.stats().accepted_sequences("110000").is_empty(),
        "nothing was sent"
    );

    // A new process on the same database.
    let restarted = Gateway::new(
        env.store.clone(),
        env.settings.clone(),
        Calendar::weekdays_only(),
    );
    // The dead process still holds the bureau's lease: the new one takes the bureau over once
    // the lease runs out, adopts the unconfirmed file and reconciles it.
    let started = std::time::Instant::now();
    loop {
        restarted.submit_province("110000").await.unwrap();
        let file = env.store.upload_by_sequence("110000", 1).await.unwrap();
        if file.is_some_and(|f| f.status == "arrived")
            || started.elapsed() > Duration::from_secs(20)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before the dead process's lease ran out"
    );
    let after = env
        .store
        .upload_by_sequence("110000", 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.zip, stored.zip, "the same bytes");
    assert_eq!(after.file_name, stored.file_name, "the same file");
    assert_eq!(after.status, "arrived");
    assert_eq!(env.sandbox.stats().accepted_sequences("110000"), vec![1]);
    env.settle(Duration::from_secs(30)).await;
    assert_eq!(env.outcomes().await["F-FIRST-001"].state, "approved");
    assert_one_case_each(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_repaired_by_resending_the_missing_file_never_by_skipping() {
    let env = common::start(|_| {}).await;
    import(&env, &["first.json"]).await;
    env.settle(Duration::from_secs(30)).await;
    assert_eq!(env.sandbox.stats().accepted_sequences("110000"), vec![1]);

    // The bureau claims it lacks file 1 when file 2 arrives.
    env.sandbox
        .faults()
        .add(FaultRule::new(Fault::GapClaim { missing: Some(1) }, 1).province("110000"));
    import(&env, &["first-rejected.json"]).await;
    env.settle(Duration::from_secs(30)).await;
    let outcomes = env.outcomes().await;
    assert_eq!(outcomes["F-FIRST-REJ"].state, "rejected");
    assert_eq!(
        outcomes["F-FIRST-REJ"]
            .upload
            .as_ref()
            .unwrap()
            .data_sequence,
        2
    );
    let stats = env.sandbox.stats();
    assert_eq!(
        stats.accepted_sequences("110000"),
        vec![1, 2],
        "no number skipped or reused"
    );
    // Processed uploads: file 1, file 1 again (answered 999, then confirmed through
    // isp_querypreviousupload), file 2. The faulted call is not counted as processed.
    assert_eq!(
        stats.calls.get("isp_upload"),
        Some(&3),
        "file 1 was resent: {:?}",
        stats.calls
    );
    assert_eq!(
        stats.calls.get("isp_querypreviousupload"),
        Some(&1),
        "{:?}",
        stats.calls
    );
    assert_eq!(stats.faults_applied, 1);
    assert_one_case_each(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_refusals_are_retried_with_the_same_file_and_number() {
    let env = common::start(|_| {}).await;
    env.sandbox
        .faults()
        .add(FaultRule::new(Fault::MsgCode { code: 15 }, 2).province("110000"));
    env.sandbox.faults().add(
        FaultRule::new(Fault::Http { status: 503 }, 1)
            .province("110000")
            .operation("isp_upload"),
    );
    import(&env, &["first.json"]).await;
    env.settle(Duration::from_secs(30)).await;
    assert_eq!(env.outcomes().await["F-FIRST-001"].state, "approved");
    assert_eq!(env.sandbox.stats().accepted_sequences("110000"), vec![1]);
    assert_one_case_each(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_fault_pauses_the_bureau_and_sends_nothing_more() {
    let env = common::start(|_| {}).await;
    env.sandbox
        .faults()
        .add(FaultRule::new(Fault::MsgCode { code: 5 }, 1).province("110000"));
    import(&env, &["first.json"]).await;
    let report = env.gateway.cycle().await;
    assert!(!report.errors.is_empty());
    let bureau = env.store.bureau("110000").await.unwrap();
    assert!(bureau.paused_reason.is_some(), "paused with a reason");
    // Further cycles do not send while paused.
    env.gateway.cycle().await;
    assert!(env.sandbox.stats().accepted_sequences("110000").is_empty());
    assert_eq!(env.outcomes().await["F-FIRST-001"].state, "submitting");
}
