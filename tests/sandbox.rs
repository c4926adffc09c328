//! The sandbox bureau over real HTTP with hand-written SOAP (no client code on purpose: the
//! client and the sandbox meet only at the protocol).

use std::path::PathBuf;
use std::time::Duration;

use beian_gateway::bureau::sandbox::{self, Fault, SandboxConfig, SandboxHandle};
use beian_gateway::package::{self, AesKey};

const NS: &str = "http://webservice.isp.beian.miit.gov.cn/";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn start(cfg: SandboxConfig) -> SandboxHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    sandbox::start(listener, cfg).await.unwrap()
}

fn test_cfg() -> SandboxConfig {
    SandboxConfig {
        decision_delay: Duration::from_millis(30),
        sms_confirm_delay: Duration::from_millis(30),
        sms_time_factor: 0.1 / 86_400.0,
        seed_path: Some(root().join("fixtures/bureau/sandbox-seed.json")),
        ..SandboxConfig::default()
    }
}

struct Bureau {
    url: String,
    http: reqwest::Client,
    password: String,
}

impl Bureau {
    fn new(h: &SandboxHandle, province: &str) -> Self {
        Self {
            url: format!("http://{}/{province}", h.local_addr()),
            http: reqwest::Client::new(),
            password: "sandbox-password".into(),
        }
    }

    fn envelope(&self, op: &str, rand_val: &str, extra: &[(&str, String)]) -> String {
        let hash = package::pwd_hash(&self.password, rand_val).unwrap();
        let mut params = format!(
            "<ispId>1100001234</ispId><userName>isp1234</userName><randVal>{rand_val}</randVal>\
             <pwdHash>{hash}</pwdHash>"
        );
        for (k, v) in extra {
            params.push_str(&format!("<{k}>{v}</{k}>"));
        }
        format!(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:ws=\"{NS}\"><soapenv:Body><ws:{op}>{params}</ws:{op}></soapenv:Body>\
             </soapenv:Envelope>"
        )
    }

    async fn post(&self, path: &str, body: String) -> Result<(u16, String), reqwest::Error> {
        let resp = self
            .http
            .post(format!("{}/{path}", self.url))
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", "\"\"")
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    /// Calls an operation; returns the unescaped return document.
    async fn call(&self, op: &str, extra: &[(&str, String)]) -> String {
        self.try_call(op, extra).await.unwrap()
    }

    async fn try_call(&self, op: &str, extra: &[(&str, String)]) -> Result<String, reqwest::Error> {
        let mut extra = extra.to_vec();
        extra.insert(0, ("hashAlgorithm", "0".into()));
        let body = self.envelope(op, &package::rand_val(), &extra);
        let path = if op == "isp_querybeianstatus" {
            "BeianStatusWebService/queryBeianStatus"
        } else {
            "ISPWebService/upDownLoad"
        };
        let (status, text) = self.post(path, body).await?;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains(&format!("{op}Response")));
        let start = text.find("<return>").unwrap() + "<return>".len();
        let end = text.rfind("</return>").unwrap();
        Ok(quick_xml::escape::unescape(&text[start..end])
            .unwrap()
            .into_owned())
    }

    async fn upload(&self, seq: i64, xml: &str) -> String {
        let name = format!("1100001234U{seq:010}.xml");
        let gbk_text = xml.replacen("encoding=\"UTF-8\"", "encoding=\"GBK\"", 1);
        let gbk = package::encode_gbk(&gbk_text).unwrap();
        let key = AesKey::new(b"0123456789abcdef", b"fedcba9876543210").unwrap();
        let p = package::pack(&name, &gbk, Some(&key)).unwrap();
        self.call(
            "isp_upload",
            &[
                ("beianInfo", p.beian_info),
                ("beianInfoHash", p.beian_info_hash),
                ("dataSequence", seq.to_string()),
                ("encryptAlgorithm", "1".into()),
                ("compressionFormat", "0".into()),
            ],
        )
        .await
    }

    /// Downloads: (msg_code, file name, decoded content).
    async fn download(&self) -> (String, String, String) {
        let doc = self.call("isp_download", &[]).await;
        let code = between(&doc, "msg_code");
        if code == "2" {
            return (code, String::new(), String::new());
        }
        let key = AesKey::new(b"0123456789abcdef", b"fedcba9876543210").unwrap();
        let k = (between(&doc, "encryptAlgorithm") == "1").then_some(&key);
        let (name, bytes) = package::unpack(
            &between(&doc, "beianInfo"),
            &between(&doc, "beianInfoHash"),
            k,
            1 << 26,
        )
        .unwrap();
        assert_eq!(name, between(&doc, "return_FileName"));
        (code, name, package::decode_gbk(&bytes).unwrap())
    }

    async fn ack(&self, name: &str) -> String {
        between(
            &self
                .call("isp_downloadack", &[("fileName", name.to_owned())])
                .await,
            "msg_code",
        )
    }
}

fn between(doc: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let Some(s) = doc.find(&open) else {
        return String::new();
    };
    let rest = &doc[s + open.len()..];
    rest[..rest.find(&format!("</{tag}>")).unwrap()].to_owned()
}

fn minimal() -> String {
    std::fs::read_to_string(root().join("fixtures/bureau/uploads/xzba-minimal.xml")).unwrap()
}

#[tokio::test]
async fn authentication_failures() {
    let h = start(test_cfg()).await;
    let mut b = Bureau::new(&h, "110000");
    b.password = "wrong".into();
    assert_eq!(between(&b.call("isp_download", &[]).await, "msg_code"), "5");
    let b = Bureau::new(&h, "110000");
    let body = b.envelope("isp_download", "short", &[]);
    let (_, text) = b.post("ISPWebService/upDownLoad", body).await.unwrap();
    assert!(text.contains("&lt;msg_code&gt;16&lt;/msg_code&gt;"));
    let body = b
        .envelope("isp_download", &package::rand_val(), &[])
        .replace("isp1234<", "nobody<");
    let (_, text) = b.post("ISPWebService/upDownLoad", body).await.unwrap();
    assert!(text.contains("&lt;msg_code&gt;4&lt;/msg_code&gt;"));
    h.shutdown().await;
}

#[tokio::test]
async fn upload_sequence_download_and_ack() {
    let h = start(test_cfg()).await;
    let b = Bureau::new(&h, "110000");
    assert_eq!(between(&b.upload(1, &minimal()).await, "msg_code"), "0");
    let gap = b.upload(3, &minimal()).await;
    assert_eq!(between(&gap, "msg_code"), "14");
    assert!(gap.contains("<dataSequences><dataSequence>2</dataSequence></dataSequences>"));
    assert_eq!(between(&b.upload(1, &minimal()).await, "msg_code"), "999");
    let prev = b.call("isp_querypreviousupload", &[]).await;
    assert_eq!(between(&prev, "dataSequence"), "1");
    assert_eq!(
        between(&prev, "return_FileName"),
        "1100001234U0000000001.xml"
    );

    tokio::time::sleep(Duration::from_millis(80)).await;
    // JCDM first, served again until acked.
    let (code, jcdm, text) = b.download().await;
    assert_eq!(code, "3");
    assert!(jcdm.contains("JCDM") && text.contains("<JCDM>"));
    assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"GBK\"?>"));
    assert_eq!(b.download().await.1, jcdm);
    assert_eq!(b.ack(&jcdm).await, "0");
    assert_eq!(b.ack(&jcdm).await, "999");
    assert_eq!(b.ack("").await, "21");

    let (code, bajg, text) = b.download().await;
    assert_eq!(code, "3");
    assert!(bajg.contains("BAJG"), "{bajg}");
    assert!(text.contains("<Jgdm>1001</Jgdm>"), "{text}");
    assert!(
        text.contains("<Shjg>1</Shjg><Czlx>1</Czlx><Jlid>101</Jlid>"),
        "{text}"
    );
    assert_eq!(b.ack(&bajg).await, "0");

    let (code, basj, text) = b.download().await;
    assert_eq!(code, "1");
    assert!(basj.contains("BASJ"));
    let year = chrono::Utc::now().format("%Y").to_string();
    let number = format!("京ICP备{year}000001号");
    assert!(text.contains(&format!("<Baxh>{number}</Baxh>")), "{text}");
    assert!(text.contains(&format!("<Baxh>{number}-1</Baxh>")), "{text}");
    assert!(text.contains("<IspZtid>101</IspZtid>") && text.contains("<IspWzid>201</IspWzid>"));
    assert_eq!(b.ack(&basj).await, "0");
    assert_eq!(b.download().await.0, "2");

    let st = b
        .call(
            "isp_querybeianstatus",
            &[
                ("queryConditionType", "0".into()),
                ("queryCondition", "sandbox-example.com".into()),
            ],
        )
        .await;
    assert_eq!(between(&st, "Bazt"), "0");
    assert_eq!(between(&st, "Wzbah"), format!("{number}-1"));

    let stats = h.stats();
    assert_eq!(stats.accepted_sequences("110000"), vec![1]);
    assert_eq!(
        stats.cases_by_identity.get("110000/XZBA:IspZtid=101"),
        Some(&1)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn faults_on_demand() {
    let h = start(test_cfg()).await;
    let b = Bureau::new(&h, "110000");
    h.faults()
        .set(Some("110000"), Fault::MsgCode { code: 15 }, 1);
    assert_eq!(between(&b.upload(1, &minimal()).await, "msg_code"), "15");
    assert_eq!(between(&b.upload(1, &minimal()).await, "msg_code"), "0");

    // Accepted, but the answer is lost.
    h.faults().set(None, Fault::LoseAnswer, 1);
    let lost = b.try_call("isp_querypreviousupload", &[]).await;
    assert!(lost.is_ok(), "lose_answer only affects uploads by default");
    let xml = minimal().replace("<IspZtid>101<", "<IspZtid>102<");
    let name = "1100001234U0000000002.xml";
    let gbk = package::encode_gbk(&xml.replacen("UTF-8", "GBK", 1)).unwrap();
    let p = package::pack(name, &gbk, None).unwrap();
    let body = b.envelope(
        "isp_upload",
        &package::rand_val(),
        &[
            ("beianInfo", p.beian_info),
            ("beianInfoHash", p.beian_info_hash),
            ("dataSequence", "2".into()),
            ("encryptAlgorithm", "0".into()),
            ("hashAlgorithm", "0".into()),
            ("compressionFormat", "0".into()),
        ],
    );
    assert!(b.post("ISPWebService/upDownLoad", body).await.is_err());
    let prev = b.call("isp_querypreviousupload", &[]).await;
    assert_eq!(between(&prev, "dataSequence"), "2");

    // Reset, HTTP 503 and the admin endpoint.
    h.faults().set(None, Fault::Reset, 1);
    assert!(b.try_call("isp_download", &[]).await.is_err());
    let admin = format!("http://{}/_sandbox/faults", h.local_addr());
    let r = b
        .http
        .post(&admin)
        .body(r#"{"kind":"http","status":503,"province":"110000","operation":"isp_download"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = b.envelope(
        "isp_download",
        &package::rand_val(),
        &[("hashAlgorithm", "0".into())],
    );
    assert_eq!(
        b.post("ISPWebService/upDownLoad", body).await.unwrap().0,
        503
    );
    let stats: serde_json::Value = b
        .http
        .get(format!("http://{}/_sandbox/stats", h.local_addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(
        stats["accepted_by_province"]["110000"],
        serde_json::json!([1, 2])
    );
    h.shutdown().await;
}

#[tokio::test]
async fn schema_fault_and_sms_expiry() {
    let cfg = SandboxConfig {
        extensions: sandbox::Extensions {
            app: false,
            sms: true,
        },
        ..test_cfg()
    };
    let h = start(cfg).await;
    let b = Bureau::new(&h, "110000");
    let broken = minimal().replace("<Bbfs>1</Bbfs>", "");
    assert_eq!(between(&b.upload(1, &broken).await, "msg_code"), "0");
    let expiring = minimal().replace("13800001234", "13800000000");
    assert_eq!(between(&b.upload(2, &expiring).await, "msg_code"), "0");
    tokio::time::sleep(Duration::from_millis(80)).await;
    let (_, jcdm, _) = b.download().await;
    b.ack(&jcdm).await;
    let (_, f1, t1) = b.download().await;
    assert!(
        t1.contains("<Jgdm>5001</Jgdm><Dmms>1100001234U0000000001.xml</Dmms>"),
        "{t1}"
    );
    assert!(!t1.contains("<Jlid>"));
    b.ack(&f1).await;
    let (_, f2, t2) = b.download().await;
    assert!(
        t2.contains("<Jgdm>1901</Jgdm>") && t2.contains("+08:00</Dmms>"),
        "{t2}"
    );
    b.ack(&f2).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, _, t3) = b.download().await;
    assert!(
        t3.contains("<Jgdm>1902</Jgdm>") && t3.contains("<Jlid>101</Jlid>"),
        "{t3}"
    );
    h.shutdown().await;
}
