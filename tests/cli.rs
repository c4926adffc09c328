//! The command line on bad input: a clear error naming the file, the filing and the field, and
//! nothing imported from that file. `export --json` prints JSON Lines and nothing else.

mod common;

use std::process::Command;
use std::time::Duration;

/// Runs the binary on `db`, a URL from `common::fresh_database_url` (SQLite or PostgreSQL).
fn gateway(db: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_beian-gateway"))
        .arg("--database-url")
        .arg(db)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

fn bad(name: &str) -> String {
    common::fixtures()
        .join("bad")
        .join(name)
        .display()
        .to_string()
}

fn exported(db: &str) -> Vec<serde_json::Value> {
    let out = gateway(db, &["export", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect()
}

#[tokio::test]
async fn bad_files_are_refused_whole_with_file_filing_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::fresh_database_url(dir.path()).await;
    let db = db.as_str();
    for (file, filing, field) in [
        ("malformed.json", "#0", "(document)"),
        (
            "unknown-field.json",
            "F-BAD-003",
            "subject.principal.wechat",
        ),
        ("wrong-enum.json", "F-BAD-004", "websites[0].serviceContent"),
    ] {
        let out = gateway(db, &["import", &bad(file)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(stderr.contains(file), "{file}: names the file: {stderr}");
        assert!(
            stderr.contains(&format!("filing {filing}")),
            "{file}: names the filing: {stderr}"
        );
        assert!(stderr.contains(field), "{file}: names the field: {stderr}");
    }
    assert!(
        exported(db).is_empty(),
        "nothing was imported, not even the good half of a file"
    );
}

#[tokio::test]
async fn identical_reimport_is_a_no_op_and_a_conflicting_one_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::fresh_database_url(dir.path()).await;
    let db = db.as_str();
    let first = common::fixtures()
        .join("filings")
        .join("first.json")
        .display()
        .to_string();
    assert!(gateway(db, &["import", &first]).status.success());
    let again = gateway(db, &["import", &first]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("imported 0 filings (1 unchanged"));
    let conflict = gateway(db, &["import", &bad("conflicting-first.json")]);
    let stderr = String::from_utf8_lossy(&conflict.stderr);
    assert_eq!(conflict.status.code(), Some(1));
    assert!(
        stderr.contains("F-FIRST-001") && stderr.contains("different document"),
        "{stderr}"
    );
    let rows = exported(db);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], "F-FIRST-001");
    assert_eq!(rows[0]["state"], "reviewed");
    for key in [
        "deadline",
        "submittedAt",
        "attempts",
        "upload",
        "subjectRecordNumber",
        "siteRecordNumbers",
        "appRecordNumbers",
        "reasons",
        "decidedAt",
    ] {
        assert!(rows[0].get(key).is_some(), "export carries {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_attachment_is_a_finding_naming_the_field_and_nothing_is_sent() {
    let env = common::start(|_| {}).await;
    let (new, _, failed) = beian_gateway::commands::import(
        &env.store,
        &[common::fixtures()
            .join("bad")
            .join("missing-attachment.json")],
    )
    .await
    .unwrap();
    assert_eq!((new, failed), (1, 0));
    env.settle(Duration::from_secs(20)).await;
    let o = &env.outcomes().await["F-BAD-005"];
    assert_eq!(o.state, "needs_correction");
    assert!(o.upload.is_none(), "never sent");
    assert!(
        o.reasons
            .iter()
            .any(|r| r.source == "preflight" && r.field.as_deref() == Some("attachments[0].path")),
        "{:?}",
        o.reasons
    );
    assert!(env.sandbox.stats().accepted_sequences("110000").is_empty());
}
