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
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/miit-v3")
        .join(name);
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
        assert!(
            kinds.contains(k),
            "a {k} file was served and checked: {kinds:?}"
        );
    }
}

/// The package round trip on the sandbox's code path: every file the gateway stored for the
/// bundled fixtures, packed as it is sent (AES), unpacks, passes the sandbox's own schema check
/// and yields exactly the (Czlx, Jlid) results the gateway waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_upload_files_unpack_and_parse_on_the_sandbox_code_path() {
    use beian_gateway::bureau::sandbox::inspect_upload;
    use beian_gateway::package::{AesKey, pack_zip};
    let env = common::start(|_| {}).await;
    env.import_fixtures().await;
    env.settle(Duration::from_secs(60)).await;
    let key = AesKey::new(
        env.settings.bureau.aes_key.expose().as_bytes(),
        env.settings.bureau.aes_iv.expose().as_bytes(),
    )
    .unwrap();
    let files = sqlx::query("SELECT id, province, zip FROM upload_files ORDER BY id")
        .fetch_all(env.store.pool())
        .await
        .unwrap();
    assert!(files.len() >= 3, "files for several bureaus");
    for row in &files {
        let id: i64 = row.get(0);
        let province: String = row.get(1);
        let zip: Vec<u8> = row.get(2);
        let packed = pack_zip(zip, Some(&key));
        let mut seen = inspect_upload(
            &packed.beian_info,
            &packed.beian_info_hash,
            Some(&key),
            env.settings.bureau.isp_id,
            true,
        )
        .unwrap_or_else(|e| panic!("file {id} ({province}): {e}"));
        let mut expected: Vec<(i64, i64)> = sqlx::query(
            "SELECT r.czlx, r.jlid FROM attempt_records r JOIN attempts a ON a.id = r.attempt_id WHERE a.upload_id = $1",
        )
        .bind(id)
        .fetch_all(env.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected, "file {id} ({province})");
    }
}
