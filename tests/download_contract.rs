//! The sandbox's side of the contract: every download file it served in a full run (JCDM,
//! BAJG, BASJ, ZXSJ), exactly as the gateway stored it (GBK bytes), is valid against
//! ../shared/miit-v3/download-data-ext.xsd — so the client's parser and the sandbox's builder
//! cannot agree on a shape the bureau's schema does not have.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sqlx::Row;

fn schema(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/miit-v3").join(name);
    assert!(p.exists(), "schema expected at {}", p.display());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_download_file_is_valid_against_the_download_schema() {
    let xsd = schema("download-data-ext.xsd");
    assert!(
        Command::new("xmllint").arg("--version").output().is_ok(),
        "xmllint not found: install libxml2-utils"
    );
    let env = common::start(|_| {}).await;
    env.import_fixtures().await;
    env.settle(Duration::from_secs(60)).await;
    let rows = sqlx::query("SELECT file_name, kind, content FROM download_files ORDER BY id")
        .fetch_all(env.store.pool())
        .await
        .unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for row in &rows {
        let name: String = row.get(0);
        let kind: String = row.get(1);
        let content: Vec<u8> = row.get(2);
        let path = env.dir.path().join(&name);
        std::fs::write(&path, &content).unwrap();
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(&xsd)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} ({kind}) is not valid against download-data-ext.xsd:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        kinds.insert(kind);
    }
    for k in ["JCDM", "BAJG", "BASJ", "ZXSJ"] {
        assert!(kinds.contains(k), "a {k} file was served and checked: {kinds:?}");
    }
}
