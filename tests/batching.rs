//! Upload files respect the configured record and size limits: filings that do not fit wait for
//! the next file (numbers stay contiguous), and a filing too large alone is a finding.

mod common;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_record_per_file_still_brings_every_filing_home() {
    let env = common::start(|s| s.batch.max_records = 1).await;
    env.import_fixtures().await;
    env.settle(Duration::from_secs(60)).await;
    let outcomes = env.outcomes().await;
    let beijing: Vec<i64> = outcomes
        .values()
        .filter(|o| o.upload.is_some() && !o.id.contains("APP") && o.id != "F-CANSITE-001")
        .map(|o| o.upload.as_ref().unwrap().data_sequence)
        .collect();
    let mut sorted = beijing.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), beijing.len(), "one filing per file");
    assert_eq!(
        env.sandbox.stats().accepted_sequences("110000"),
        (1..=sorted.len() as i64).collect::<Vec<_>>()
    );
    assert!(
        outcomes
            .values()
            .all(|o| matches!(o.state.as_str(), "approved" | "rejected" | "expired"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filing_too_large_alone_is_a_finding_and_the_rest_goes_through() {
    // The fixtures with five scans make data files of about 200 KB; the limit lets smaller ones pass.
    let env = common::start(|s| s.batch.max_bytes = 120_000).await;
    env.import_fixtures().await;
    env.settle(Duration::from_secs(60)).await;
    let outcomes = env.outcomes().await;
    let first = &outcomes["F-FIRST-001"];
    assert_eq!(first.state, "needs_correction");
    assert_eq!(first.reasons[0].code, "DATAFILE_TOO_LARGE");
    assert!(first.upload.is_none());
    assert_eq!(outcomes["F-CANSUBJ-001"].state, "approved");
    assert_eq!(outcomes["F-CHGACC-001"].state, "approved");
}
