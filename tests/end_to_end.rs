//! Every bundled fixture against the sandbox bureau reaches the outcome section 5 predicts
//! (fixtures/expected-outcomes.json), with record numbers and reasons in the export.

mod common;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_reaches_its_predicted_outcome() {
    let env = common::start(|_| {}).await;
    env.import_fixtures().await;
    let report = env.settle(Duration::from_secs(60)).await;
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("expected-outcomes.json")).unwrap(),
    )
    .unwrap();
    let outcomes = env.outcomes().await;
    let expected = expected.as_object().unwrap();
    assert_eq!(outcomes.len(), expected.len(), "one outcome per fixture");
    for (id, want) in expected {
        let got = &outcomes[id];
        assert_eq!(
            got.state,
            want["state"].as_str().unwrap(),
            "{id}: {got:?}; cycle errors {:?}",
            report.errors
        );
        assert_eq!(got.attempts, 1, "{id} submitted once");
        let upload = got
            .upload
            .as_ref()
            .unwrap_or_else(|| panic!("{id} has an upload"));
        assert!(
            upload
                .file
                .ends_with(&format!("U{:010}.xml", upload.data_sequence))
        );
        match got.state.as_str() {
            "approved" => {
                let abbrev = if got.id == "F-APP-001" {
                    "粤"
                } else if got.id == "F-CANSITE-001" {
                    "沪"
                } else {
                    "京"
                };
                if want["subject"].as_bool() == Some(true) {
                    let n = got
                        .subject_record_number
                        .as_deref()
                        .unwrap_or_else(|| panic!("{id} has a subject number"));
                    assert!(
                        n.starts_with(&format!("{abbrev}ICP备")) && n.ends_with('号'),
                        "{id}: {n}"
                    );
                } else {
                    assert!(
                        got.subject_record_number.is_none(),
                        "{id}: cancellations publish no numbers"
                    );
                }
                let domains: Vec<&str> = got
                    .site_record_numbers
                    .iter()
                    .map(|s| s.domain.as_str())
                    .collect();
                let want_sites: Vec<&str> = want["sites"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                assert_eq!(
                    domains.len(),
                    want_sites.len(),
                    "{id}: {:?}",
                    got.site_record_numbers
                );
                for d in want_sites {
                    let n = got
                        .site_record_numbers
                        .iter()
                        .find(|s| s.domain == d)
                        .unwrap_or_else(|| panic!("{id}: number for {d}"));
                    assert!(
                        n.number.contains("ICP备") && n.number.contains("号-"),
                        "{id}: {}",
                        n.number
                    );
                }
                if let Some(apps) = want.get("apps") {
                    let app = &got.app_record_numbers;
                    assert_eq!(app.len(), apps.as_array().unwrap().len(), "{id}");
                    assert!(
                        app[0].number.ends_with('A'),
                        "{id}: app numbers end in -nA: {}",
                        app[0].number
                    );
                }
                assert!(got.reasons.is_empty(), "{id}: {:?}", got.reasons);
                assert!(got.decided_at.is_some());
            }
            "rejected" => {
                let codes: Vec<i64> = got.reasons.iter().filter_map(|r| r.code.as_i64()).collect();
                let want_codes: Vec<i64> = want["codes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect();
                assert_eq!(codes, want_codes, "{id}");
                assert!(
                    got.reasons
                        .iter()
                        .all(|r| r.source == "bureau" && !r.message.is_empty()),
                    "{id}: {:?}",
                    got.reasons
                );
            }
            "expired" => assert!(got.decided_at.is_some()),
            other => panic!("{id}: unexpected {other}"),
        }
    }
    // The stream of every bureau has no gap and no reuse; every filing is one bureau case.
    let stats = env.sandbox.stats();
    for (identity, n) in &stats.cases_by_identity {
        assert_eq!(*n, 1, "{identity} became {n} bureau cases");
    }
}
