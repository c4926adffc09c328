//! Admin commands on the real binary beside an in-process gateway: a rejected filing is
//! corrected (`import --revise`), resubmitted (the admin flag) and approved on a second attempt
//! with new provider ids in a new file; refusals name the filing, its state and why; `show`
//! tells the whole story.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn admin(db_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_beian-gateway"))
        .arg("--database-url")
        .arg(db_url)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// first-rejected.json with the website name the bureau refused (测试) corrected.
fn corrected(dir: &Path) -> String {
    let text =
        std::fs::read_to_string(common::fixtures().join("filings/first-rejected.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["websites"][0]["name"] = serde_json::json!("示例站点");
    let path = dir.join("first-rejected-corrected.json");
    std::fs::write(&path, v.to_string()).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmit_after_rejection_is_approved_once_the_document_is_corrected() {
    let env = common::start(|_| {}).await;
    let url = env.settings.database.url.clone();
    let id = "F-FIRST-REJ";
    let (new, _, failed) = beian_gateway::commands::import(
        &env.store,
        &[common::fixtures().join("filings/first-rejected.json")],
    )
    .await
    .unwrap();
    assert_eq!((new, failed), (1, 0));
    env.settle(Duration::from_secs(30)).await;
    let first = env.outcomes().await[id].clone();
    assert_eq!(first.state, "rejected");
    let first_upload = first.upload.clone().expect("first attempt uploaded");

    // Refusals: hold after the bureau had it; resubmit without a reason is a usage error.
    let out = admin(&url, &["hold", id, "--reason", "look at it"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("filing {id}: cannot hold from state rejected")),
        "{}",
        stderr(&out)
    );
    assert!(!admin(&url, &["resubmit", id]).status.success());

    // The corrected document becomes revision 2; then the admin flag.
    let out = admin(
        &url,
        &[
            "import",
            "--revise",
            &corrected(env.dir.path()),
            "--operator",
            "alice",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("revision 2"), "{}", stderr(&out));
    let out = admin(
        &url,
        &[
            "resubmit",
            id,
            "--reason",
            "website name corrected",
            "--operator",
            "alice",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // A second resubmit while it waits is refused.
    let out = admin(&url, &["resubmit", id, "--reason", "again"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already waiting"), "{}", stderr(&out));

    env.settle(Duration::from_secs(30)).await;
    let second = env.outcomes().await[id].clone();
    assert_eq!(second.state, "approved", "{second:?}");
    assert_eq!(second.attempts, 2);
    assert!(second.reasons.is_empty(), "{:?}", second.reasons);
    assert!(second.subject_record_number.is_some());
    let second_upload = second.upload.clone().unwrap();
    assert_ne!(second_upload.data_sequence, first_upload.data_sequence);
    assert_ne!(second_upload.file, first_upload.file);

    // Each attempt is its own bureau case (new provider ids), none twice.
    let stats = env.sandbox.stats();
    assert_eq!(
        stats.cases_by_identity.len(),
        2,
        "{:?}",
        stats.cases_by_identity
    );
    assert!(stats.cases_by_identity.values().all(|n| *n == 1));

    // An approved filing cannot be resubmitted: the bureau's record exists.
    let out = admin(&url, &["resubmit", id, "--reason", "oops"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("approved"), "{}", stderr(&out));

    // `show --json`: both attempts with their files, the admin actions with who and why.
    let out = admin(&url, &["show", id, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts[0]["upload"]["dataSequence"],
        first_upload.data_sequence
    );
    assert_eq!(
        attempts[1]["upload"]["dataSequence"],
        second_upload.data_sequence
    );
    assert_eq!(attempts[0]["records"][0]["status"], "rejected");
    assert_eq!(attempts[1]["records"][0]["status"], "approved");
    let events = t["events"].as_array().unwrap();
    let resubmit = events
        .iter()
        .find(|e| e["kind"] == "admin.resubmit")
        .expect("resubmit event");
    assert_eq!(resubmit["actor"], "alice");
    assert_eq!(resubmit["detail"]["reason"], "website name corrected");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "revised" && e["actor"] == "alice")
    );
    assert!(
        !t["results"].as_array().unwrap().is_empty(),
        "downloads listed"
    );
    let human = admin(&url, &["show", id]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("admin.resubmit") && text.contains("dataSequence"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_release_before_the_bureau_has_it() {
    let env = common::start(|_| {}).await;
    let url = env.settings.database.url.clone();
    beian_gateway::commands::import(&env.store, &[common::fixtures().join("filings/first.json")])
        .await
        .unwrap();
    let out = admin(
        &url,
        &[
            "hold",
            "F-FIRST-001",
            "--reason",
            "customer asked",
            "--operator",
            "bob",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    env.gateway.cycle().await;
    let o = env.outcomes().await["F-FIRST-001"].clone();
    assert_eq!(o.state, "held");
    assert!(o.upload.is_none(), "a held filing is not sent");
    let out = admin(&url, &["resubmit", "F-FIRST-001", "--reason", "x"]);
    assert!(
        stderr(&out).contains("release it instead"),
        "{}",
        stderr(&out)
    );
    let out = admin(
        &url,
        &[
            "release",
            "F-FIRST-001",
            "--reason",
            "go ahead",
            "--operator",
            "bob",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    env.settle(Duration::from_secs(30)).await;
    assert_eq!(env.outcomes().await["F-FIRST-001"].state, "approved");
    let events = env.store.events("F-FIRST-001").await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert!(
        kinds.contains(&"admin.hold") && kinds.contains(&"admin.release"),
        "{kinds:?}"
    );
    let status = admin(&url, &["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("approved"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_never_sent_is_released_and_sent_later_under_the_same_number() {
    let env = common::start(|s| s.bureau.allow_default_codes = true).await;
    beian_gateway::commands::import(&env.store, &[common::fixtures().join("filings/first.json")])
        .await
        .unwrap();
    env.gateway.intake().await.unwrap();
    let mut report = beian_gateway::pipeline::CycleReport::default();
    assert!(env.gateway.claim("110000", &mut report).await.unwrap());
    assert_eq!(env.outcomes().await["F-FIRST-001"].state, "submitting");
    // Not stale yet: nothing released.
    let long_ago = "2000-01-01T00:00:00+08:00";
    assert!(
        env.store
            .release_unsent("110000", long_ago)
            .await
            .unwrap()
            .is_empty()
    );
    let released = env.store.release_unsent("110000", "9999").await.unwrap();
    assert_eq!(released, vec!["F-FIRST-001".to_owned()]);
    let o = env.outcomes().await["F-FIRST-001"].clone();
    assert_eq!((o.state.as_str(), o.attempts), ("queued", 0), "{o:?}");
    assert_eq!(env.store.bureau("110000").await.unwrap().last_sequence, 0);
    env.settle(Duration::from_secs(30)).await;
    let o = env.outcomes().await["F-FIRST-001"].clone();
    assert_eq!((o.state.as_str(), o.attempts), ("approved", 1), "{o:?}");
    assert_eq!(
        o.upload.unwrap().data_sequence,
        1,
        "the number was reused: the bureau never saw it"
    );
    assert_eq!(env.sandbox.stats().accepted_sequences("110000"), vec![1]);
    let kinds: Vec<String> = env
        .store
        .events("F-FIRST-001")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(kinds.contains(&"released".to_owned()), "{kinds:?}");
}
