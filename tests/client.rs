//! `BureauClient` against a scripted fake bureau (axum on 127.0.0.1:0): retries, the
//! exactly-once upload rule (section 3), fault classes (section 8), answer caps, and that every
//! request is signed so a bureau can check it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use beian_gateway::bureau::client::{
    BureauAccount, BureauClient, ClientConfig, ClientError, DownloadOutcome, FaultClass, Secret,
    UploadOutcome,
};
use beian_gateway::bureau::wire::{self, Operation};
use beian_gateway::package::{self, AesKey, Packed};
use bytes::Bytes;

const PASSWORD: &str = "密码abc";
const PROVINCE: &str = "110000";

/// What the fake bureau does with the next request of an operation.
#[derive(Clone)]
enum Reply {
    /// 200 with this return document, escaped inside `return`.
    Doc(String),
    /// This status and body as they are.
    Raw(u16, String),
    /// Records the request, then answers only after this delay (past the client's timeout).
    Hang(Duration),
    /// Sends 200 headers and part of a body, then breaks the connection.
    Drop,
    /// A chunked body (no Content-Length) of this many bytes.
    Chunked(usize),
}

fn doc(code: i64) -> Reply {
    Reply::Doc(format!(
        "<return><msg_code>{code}</msg_code><msg>m{code}</msg></return>"
    ))
}

fn previous(last: i64) -> Reply {
    Reply::Doc(format!(
        "<return><msg_code>0</msg_code><msg>ok</msg><fileInfos><hashAlgorithm/><compressionFormat/><encryptAlgorithm/><dataSequence>{last}</dataSequence><return_FileName/><beianInfo/><beianInfoHash/></fileInfos></return>"
    ))
}

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    op: String,
    params: HashMap<String, String>,
    content_type: String,
    soap_action: String,
    namespace: Option<String>,
    unqualified: bool,
}

#[derive(Default)]
struct Bureau {
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    seen: Mutex<Vec<Seen>>,
    bad_signatures: Mutex<Vec<String>>,
}

impl Bureau {
    fn script(&self, op: Operation, replies: impl IntoIterator<Item = Reply>) {
        self.script
            .lock()
            .unwrap()
            .entry(op.name().to_owned())
            .or_default()
            .extend(replies);
    }

    fn seen(&self, op: Operation) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.op == op.name())
            .cloned()
            .collect()
    }

    fn total(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn assert_signed(&self) {
        let bad = self.bad_signatures.lock().unwrap();
        assert!(bad.is_empty(), "requests with a wrong pwdHash: {bad:?}");
    }
}

async fn handle(
    State(bureau): State<Arc<Bureau>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Ok(view) = wire::parse_request(&body) else {
        return (StatusCode::BAD_REQUEST, "not a SOAP request").into_response();
    };
    let params: HashMap<String, String> = view.params.iter().cloned().collect();
    // The bureau's own check of section 2.
    let rand_val = params.get("randVal").cloned().unwrap_or_default();
    let expected = package::pwd_hash(PASSWORD, &rand_val).unwrap();
    if rand_val.len() != 20 || params.get("pwdHash") != Some(&expected) {
        bureau
            .bad_signatures
            .lock()
            .unwrap()
            .push(view.operation.clone());
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    bureau.seen.lock().unwrap().push(Seen {
        path: uri.path().to_owned(),
        op: view.operation.clone(),
        params,
        content_type: header("content-type"),
        soap_action: header("soapaction"),
        namespace: view.namespace.clone(),
        unqualified: view.params_unqualified,
    });
    let reply = bureau
        .script
        .lock()
        .unwrap()
        .get_mut(&view.operation)
        .and_then(VecDeque::pop_front);
    let Some(op) = Operation::from_name(&view.operation) else {
        return (StatusCode::NOT_FOUND, "unknown operation").into_response();
    };
    match reply {
        None => (StatusCode::INTERNAL_SERVER_ERROR, "unscripted").into_response(),
        Some(Reply::Doc(d)) => {
            wire::response_envelope(wire::DEFAULT_NAMESPACE, op, &d).into_response()
        }
        Some(Reply::Raw(status, body)) => {
            (StatusCode::from_u16(status).unwrap(), body).into_response()
        }
        Some(Reply::Hang(delay)) => {
            tokio::time::sleep(delay).await;
            wire::response_envelope(
                wire::DEFAULT_NAMESPACE,
                op,
                "<return><msg_code>0</msg_code><msg>late</msg></return>",
            )
            .into_response()
        }
        Some(Reply::Drop) => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"<soap:Envelope xmlns:soap=")),
                Err(std::io::Error::other("connection lost")),
            ];
            Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
        }
        Some(Reply::Chunked(size)) => {
            let chunk = Bytes::from(vec![b' '; 1024]);
            let chunks: Vec<Result<Bytes, std::io::Error>> = (0..size.div_ceil(1024))
                .map(|_| Ok(chunk.clone()))
                .collect();
            Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
        }
    }
}

struct Harness {
    bureau: Arc<Bureau>,
    base: String,
}

async fn start() -> Harness {
    let bureau = Arc::new(Bureau::default());
    let app = Router::new().fallback(handle).with_state(bureau.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Harness {
        bureau,
        base: format!("http://{addr}/{{province}}"),
    }
}

fn key() -> AesKey {
    AesKey::new(b"0123456789abcdef", b"fedcba9876543210").unwrap()
}

fn config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(400),
        max_answer_bytes: 64 * 1024,
        retry_initial: Duration::from_millis(5),
        retry_max_interval: Duration::from_millis(20),
        retry_max_elapsed: Duration::from_secs(5),
    }
}

impl Harness {
    fn client_with(&self, config: ClientConfig) -> BureauClient {
        BureauClient::new(
            BureauAccount {
                province: PROVINCE.into(),
                base_url: self.base.clone(),
                isp_id: 1100001234,
                user_name: "isp1234".into(),
                password: Secret::new(PASSWORD),
                aes: Some(key()),
                soap_namespace: wire::DEFAULT_NAMESPACE.into(),
            },
            config,
        )
        .unwrap()
    }

    fn client(&self) -> BureauClient {
        self.client_with(config())
    }
}

fn packed(seq: i64) -> Packed {
    let xml = package::encode_gbk(&format!(
        "<?xml version=\"1.0\" encoding=\"GBK\"?><UploadData version=\"V.3.0\"><ICP><Qqdwid>1100001234</Qqdwid><n>{seq}</n></ICP></UploadData>"
    ))
    .unwrap();
    package::pack(&format!("1100001234U{seq:010}.xml"), &xml, Some(&key())).unwrap()
}

/// Every upload the bureau saw carries this file and this number.
fn assert_same_file(seen: &[Seen], seq: i64, p: &Packed) {
    for s in seen {
        assert_eq!(s.params["dataSequence"], seq.to_string());
        assert_eq!(s.params["beianInfo"], p.beian_info);
        assert_eq!(s.params["beianInfoHash"], p.beian_info_hash);
        assert_eq!(s.params["encryptAlgorithm"], "1");
        assert_eq!(s.params["hashAlgorithm"], "0");
        assert_eq!(s.params["compressionFormat"], "0");
    }
}

#[tokio::test]
async fn refused_15_then_accepted_resends_same_bytes_and_number() {
    let h = start().await;
    h.bureau
        .script(Operation::Upload, [doc(15), doc(15), doc(0)]);
    let p = packed(7);
    let outcome = h.client().upload_exactly_once(7, &p).await.unwrap();
    assert_eq!(outcome, UploadOutcome::Accepted);
    let uploads = h.bureau.seen(Operation::Upload);
    assert_eq!(uploads.len(), 3);
    assert_same_file(&uploads, 7, &p);
    // Fresh randVal per call.
    assert_ne!(uploads[0].params["randVal"], uploads[1].params["randVal"]);
    assert!(h.bureau.seen(Operation::QueryPreviousUpload).is_empty());
    h.bureau.assert_signed();
}

#[tokio::test]
async fn requests_go_to_the_right_endpoint_with_soap_headers() {
    let h = start().await;
    h.bureau.script(Operation::Upload, [doc(0)]);
    h.bureau.script(
        Operation::QueryBeianStatus,
        [Reply::Doc(
            "<return><msg_code>0</msg_code><msg/><StatusInfo><Cxtjlx>0</Cxtjlx><Cxtj>example.cn</Cxtj><Bazt>0</Bazt></StatusInfo></return>".into(),
        )],
    );
    let client = h.client();
    client.upload_exactly_once(1, &packed(1)).await.unwrap();
    let status = client.query_beian_status(0, "example.cn").await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].bazt, Some(0));
    let all = h.bureau.seen.lock().unwrap().clone();
    assert_eq!(all[0].path, "/110000/ISPWebService/upDownLoad");
    assert_eq!(
        all[1].path,
        "/110000/BeianStatusWebService/queryBeianStatus"
    );
    for s in &all {
        assert_eq!(s.content_type, "text/xml; charset=utf-8");
        assert_eq!(s.soap_action, "\"\"");
        assert_eq!(s.namespace.as_deref(), Some(wire::DEFAULT_NAMESPACE));
        assert!(s.unqualified);
        assert_eq!(s.params["ispId"], "1100001234");
        assert_eq!(s.params["userName"], "isp1234");
    }
    assert_eq!(all[1].params["queryConditionType"], "0");
    assert_eq!(all[1].params["queryCondition"], "example.cn");
    h.bureau.assert_signed();
}

#[tokio::test]
async fn lost_answer_and_bureau_has_the_number_is_already_arrived() {
    let h = start().await;
    h.bureau
        .script(Operation::Upload, [Reply::Hang(Duration::from_secs(2))]);
    h.bureau
        .script(Operation::QueryPreviousUpload, [previous(42)]);
    let outcome = h
        .client()
        .upload_exactly_once(42, &packed(42))
        .await
        .unwrap();
    assert_eq!(outcome, UploadOutcome::AlreadyArrived);
    assert_eq!(
        h.bureau.seen(Operation::Upload).len(),
        1,
        "no second upload"
    );
    assert_eq!(h.bureau.seen(Operation::QueryPreviousUpload).len(), 1);
    h.bureau.assert_signed();
}

#[tokio::test]
async fn dropped_connection_and_bureau_one_behind_resends_same_file() {
    let h = start().await;
    h.bureau.script(Operation::Upload, [Reply::Drop, doc(0)]);
    h.bureau
        .script(Operation::QueryPreviousUpload, [previous(9)]);
    let p = packed(10);
    let outcome = h.client().upload_exactly_once(10, &p).await.unwrap();
    assert_eq!(outcome, UploadOutcome::Accepted);
    let uploads = h.bureau.seen(Operation::Upload);
    assert_eq!(uploads.len(), 2);
    assert_same_file(&uploads, 10, &p);
    h.bureau.assert_signed();
}

#[tokio::test]
async fn unknown_outcome_waits_for_a_working_query_and_never_resends_blind() {
    let h = start().await;
    h.bureau
        .script(Operation::Upload, [Reply::Raw(503, "busy".into())]);
    h.bureau.script(
        Operation::QueryPreviousUpload,
        [doc(901), Reply::Raw(502, "<html/>".into()), previous(5)],
    );
    let outcome = h.client().upload_exactly_once(5, &packed(5)).await.unwrap();
    assert_eq!(outcome, UploadOutcome::AlreadyArrived);
    assert_eq!(h.bureau.seen(Operation::Upload).len(), 1);
    assert_eq!(h.bureau.seen(Operation::QueryPreviousUpload).len(), 3);
}

#[tokio::test]
async fn unknown_outcome_with_an_unrelated_bureau_number_is_a_mismatch() {
    let h = start().await;
    h.bureau.script(Operation::Upload, [Reply::Drop]);
    h.bureau
        .script(Operation::QueryPreviousUpload, [previous(3)]);
    let err = h
        .client()
        .upload_exactly_once(8, &packed(8))
        .await
        .unwrap_err();
    match &err {
        ClientError::ReconcileMismatch {
            data_sequence,
            bureau_last,
            ..
        } => assert_eq!((*data_sequence, *bureau_last), (8, 3)),
        other => panic!("expected a reconcile mismatch, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains('8') && message.contains('3'), "{message}");
    assert_eq!(h.bureau.seen(Operation::Upload).len(), 1);
}

#[tokio::test]
async fn soap_fault_on_upload_is_an_unknown_outcome() {
    let h = start().await;
    let fault = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/bureau/answers/soap-fault.xml"
    ))
    .unwrap();
    h.bureau
        .script(Operation::Upload, [Reply::Raw(500, fault), doc(0)]);
    h.bureau
        .script(Operation::QueryPreviousUpload, [previous(0)]);
    let outcome = h.client().upload_exactly_once(1, &packed(1)).await.unwrap();
    assert_eq!(outcome, UploadOutcome::Accepted);
    assert_eq!(h.bureau.seen(Operation::Upload).len(), 2);
    assert_eq!(h.bureau.seen(Operation::QueryPreviousUpload).len(), 1);
}

#[tokio::test]
async fn soap_fault_on_download_is_transient_and_retried() {
    let h = start().await;
    let fault = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/bureau/answers/soap-fault.xml"
    ))
    .unwrap();
    h.bureau.script(
        Operation::Download,
        [Reply::Raw(500, fault.clone()), doc(2)],
    );
    assert_eq!(
        h.client().download().await.unwrap(),
        DownloadOutcome::Nothing
    );
    assert_eq!(h.bureau.seen(Operation::Download).len(), 2);

    // With no budget left the fault itself is reported, classed transient.
    h.bureau
        .script(Operation::Download, [Reply::Raw(500, fault)]);
    let err = h
        .client_with(ClientConfig {
            retry_max_elapsed: Duration::ZERO,
            ..config()
        })
        .download()
        .await
        .unwrap_err();
    assert_eq!(err.class(), FaultClass::Transient);
    match err {
        ClientError::RetriesExhausted { last, .. } => {
            assert!(last.to_string().contains("NullPointerException"), "{last}")
        }
        other => panic!("expected exhausted retries, got {other}"),
    }
}

#[tokio::test]
async fn gap_14_returns_the_missing_numbers_at_once() {
    let h = start().await;
    h.bureau.script(
        Operation::Upload,
        [Reply::Doc(
            "<return><msg_code>14</msg_code><msg>缺号</msg><dataSequences><dataSequence>501</dataSequence><dataSequence>502</dataSequence></dataSequences></return>".into(),
        )],
    );
    let err = h
        .client()
        .upload_exactly_once(503, &packed(503))
        .await
        .unwrap_err();
    assert_eq!(err.class(), FaultClass::Gap(vec![501, 502]));
    assert_eq!(err.msg_code(), Some(14));
    assert_eq!(h.bureau.total(), 1);
}

#[tokio::test]
async fn wrong_password_5_is_configuration_after_one_request() {
    let h = start().await;
    h.bureau.script(Operation::Upload, [doc(5), doc(0)]);
    let err = h
        .client()
        .upload_exactly_once(1, &packed(1))
        .await
        .unwrap_err();
    assert_eq!(err.class(), FaultClass::Configuration);
    assert_eq!(err.msg_code(), Some(5));
    assert_eq!(h.bureau.total(), 1, "exactly one request");
    let message = format!("{err} {err:?}");
    assert!(!message.contains(PASSWORD), "{message}");
}

#[tokio::test]
async fn at_or_below_last_999_asks_the_bureau() {
    let h = start().await;
    h.bureau.script(Operation::Upload, [doc(999), doc(999)]);
    h.bureau
        .script(Operation::QueryPreviousUpload, [previous(4), previous(6)]);
    let client = h.client();
    // The bureau holds 4: our earlier send of 4 had arrived.
    assert_eq!(
        client.upload_exactly_once(4, &packed(4)).await.unwrap(),
        UploadOutcome::AlreadyArrived
    );
    // The bureau is at 6: 4 is below it and was not ours to send.
    let err = client.upload_exactly_once(4, &packed(4)).await.unwrap_err();
    assert_eq!(err.class(), FaultClass::AtOrBelowLast);
    assert!(matches!(
        err,
        ClientError::AtOrBelowLast {
            data_sequence: 4,
            bureau_last: 6,
            ..
        }
    ));
    assert_eq!(h.bureau.seen(Operation::Upload).len(), 2);
}

#[tokio::test]
async fn retries_stop_at_the_budget_and_name_the_last_cause() {
    let h = start().await;
    h.bureau
        .script(Operation::Upload, std::iter::repeat_n(doc(20), 1000));
    let err = h
        .client_with(ClientConfig {
            retry_max_elapsed: Duration::from_millis(150),
            ..config()
        })
        .upload_exactly_once(3, &packed(3))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, ClientError::RetriesExhausted { .. }),
        "{message}"
    );
    assert!(message.contains("msg_code 20"), "{message}");
    let uploads = h.bureau.seen(Operation::Upload);
    assert!(uploads.len() >= 2, "retried: {}", uploads.len());
    assert_same_file(&uploads, 3, &packed(3));
}

#[tokio::test]
async fn oversized_answers_are_refused() {
    let h = start().await;
    let big = "x".repeat(config().max_answer_bytes + 1);
    let no_budget = ClientConfig {
        retry_max_elapsed: Duration::ZERO,
        ..config()
    };
    for reply in [
        Reply::Raw(200, big),
        Reply::Chunked(config().max_answer_bytes * 4),
    ] {
        h.bureau.script(Operation::Download, [reply]);
        let err = h
            .client_with(no_budget.clone())
            .download()
            .await
            .unwrap_err();
        match err {
            ClientError::RetriesExhausted { last, .. } => {
                assert!(matches!(*last, ClientError::TooLarge { .. }), "{last}")
            }
            other => panic!("expected a refused answer, got {other}"),
        }
    }
    // With a budget, an oversized answer is just retried.
    h.bureau.script(
        Operation::Download,
        [Reply::Chunked(config().max_answer_bytes * 2), doc(2)],
    );
    assert_eq!(
        h.client().download().await.unwrap(),
        DownloadOutcome::Nothing
    );
}

#[tokio::test]
async fn download_unpack_and_ack() {
    let h = start().await;
    let data = package::encode_gbk(
        "<?xml version=\"1.0\" encoding=\"GBK\"?><DownloadData version=\"V.3.0\"><ICP><BAJG/></ICP></DownloadData>",
    )
    .unwrap();
    let p = package::pack("BAJG0001.xml", &data, Some(&key())).unwrap();
    let file_doc = |code: i64, hash: &str| {
        Reply::Doc(format!(
            "<return><msg_code>{code}</msg_code><msg>ok</msg><fileInfos><hashAlgorithm>0</hashAlgorithm><compressionFormat>0</compressionFormat><encryptAlgorithm>1</encryptAlgorithm><return_FileName>BAJG0001.xml</return_FileName><beianInfo>{}</beianInfo><beianInfoHash>{hash}</beianInfoHash></fileInfos></return>",
            p.beian_info
        ))
    };
    h.bureau.script(
        Operation::Download,
        [
            doc(15),
            file_doc(3, &p.beian_info_hash),
            file_doc(1, "AAAAAAAAAAAAAAAAAAAAAA=="),
        ],
    );
    h.bureau.script(Operation::DownloadAck, [doc(0)]);
    let client = h.client();

    let DownloadOutcome::File(file) = client.download().await.unwrap() else {
        panic!("expected a file");
    };
    assert!(file.more);
    assert_eq!(file.file_name, "BAJG0001.xml");
    let (name, bytes) = client.unpack_download(&file).unwrap();
    assert_eq!(
        (name.as_str(), bytes.as_slice()),
        ("BAJG0001.xml", data.as_slice())
    );
    client.download_ack(&file.file_name).await.unwrap();
    let acks = h.bureau.seen(Operation::DownloadAck);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].params["fileName"], "BAJG0001.xml");

    let DownloadOutcome::File(tampered) = client.download().await.unwrap() else {
        panic!("expected a file");
    };
    assert!(!tampered.more);
    let err = client.unpack_download(&tampered).unwrap_err();
    assert!(
        matches!(err, ClientError::DownloadHashMismatch { .. }),
        "{err}"
    );
    assert_eq!(err.class(), FaultClass::Integrity);
    assert!(!err.to_string().contains(&p.beian_info));
    h.bureau.assert_signed();
}

#[tokio::test]
async fn query_previous_upload_reads_none_as_zero() {
    let h = start().await;
    h.bureau.script(
        Operation::QueryPreviousUpload,
        [
            Reply::Doc("<return><msg_code>0</msg_code><msg>none</msg></return>".into()),
            previous(17),
        ],
    );
    let client = h.client();
    let none = client.query_previous_upload().await.unwrap();
    assert_eq!((none.data_sequence, none.file_name), (0, None));
    assert_eq!(
        client.query_previous_upload().await.unwrap().data_sequence,
        17
    );
}
