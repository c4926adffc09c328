//! Every file under `fixtures/bureau/answers/` is parsed as the answer to its operation and must
//! give the outcome declared here by file name. A file without an expectation fails the test, so
//! a new fixture cannot be forgotten.

use std::collections::BTreeMap;
use std::path::Path;

use beian_gateway::bureau::wire::{self, Operation, ReturnDoc, WireError};
use beian_gateway::package;

type Check = fn(Result<ReturnDoc, WireError>);

fn ok(r: Result<ReturnDoc, WireError>) -> ReturnDoc {
    match r {
        Ok(doc) => doc,
        Err(e) => panic!("expected a return document, got error: {e}"),
    }
}

fn code_only(r: Result<ReturnDoc, WireError>, code: i64) -> ReturnDoc {
    let doc = ok(r);
    assert_eq!(doc.msg_code, code);
    assert!(doc.data_sequences.is_empty());
    assert!(doc.status_infos.is_empty());
    doc
}

fn expectations() -> BTreeMap<&'static str, (Operation, Check)> {
    use Operation::*;
    let mut m: BTreeMap<&'static str, (Operation, Check)> = BTreeMap::new();
    m.insert(
        "upload-ok.xml",
        (Upload, |r| {
            let d = code_only(r, 0);
            assert_eq!(d.msg, "操作成功");
            assert!(d.file_info.is_none());
        }),
    );
    m.insert(
        "upload-refused-15.xml",
        (Upload, |r| {
            assert!(code_only(r, 15).msg.contains("稍后"));
        }),
    );
    m.insert(
        "upload-gap-14.xml",
        (Upload, |r| {
            let d = ok(r);
            assert_eq!(d.msg_code, 14);
            assert_eq!(d.data_sequences, vec![501, 502]);
        }),
    );
    m.insert(
        "upload-at-or-below-last-999.xml",
        (Upload, |r| {
            code_only(r, 999);
        }),
    );
    m.insert(
        "upload-password-5.xml",
        (Upload, |r| {
            assert_eq!(code_only(r, 5).msg, "密码错误");
        }),
    );
    m.insert(
        "upload-outside-window-20.xml",
        (Upload, |r| {
            assert!(code_only(r, 20).msg.contains("08:00-20:00"));
        }),
    );
    m.insert(
        "upload-ok-version-extra.xml",
        (Upload, |r| {
            let d = code_only(r, 0);
            assert!(
                d.msg.starts_with("接收成功 & 已入队 <OK> xxx"),
                "{}",
                &d.msg[..40]
            );
            assert!(
                d.msg.chars().count() > 2000,
                "msg is free text of any length"
            );
            // `<fileInfos/>` is present but empty.
            assert_eq!(d.file_info, Some(wire::FileInfo::default()));
        }),
    );
    m.insert(
        "upload-ok-other-prefixes.xml",
        (Upload, |r| {
            assert_eq!(code_only(r, 0).msg, "操作成功");
        }),
    );
    m.insert(
        "upload-ok-default-namespace.xml",
        (Upload, |r| {
            assert_eq!(code_only(r, 0).msg, "default namespace, no prefixes");
        }),
    );
    m.insert(
        "upload-ok-gbk-declaration.xml",
        (Upload, |r| {
            assert_eq!(code_only(r, 0).msg, "操作成功");
        }),
    );
    m.insert(
        "upload-ok-cdata.xml",
        (Upload, |r| {
            assert_eq!(code_only(r, 0).msg, "CDATA 形式");
        }),
    );
    m.insert(
        "download-file-0.xml",
        (Download, |r| {
            let d = ok(r);
            assert_eq!(d.msg_code, 0);
            let f = d.file_info.expect("fileInfos");
            assert_eq!(f.file_name.as_deref(), Some("BAJG1100001234000001.xml"));
            assert_eq!(
                (f.hash_algorithm, f.compression_format, f.encrypt_algorithm),
                (Some(0), Some(0), Some(0))
            );
            assert_eq!(f.data_sequence, None);
            // The fixture carries a real unencrypted file: it must unpack and pass its hash.
            let (name, gbk) = package::unpack(
                f.beian_info.as_deref().unwrap(),
                f.beian_info_hash.as_deref().unwrap(),
                None,
                1 << 20,
            )
            .unwrap();
            assert_eq!(name, "BAJG1100001234000001.xml");
            assert!(
                package::decode_gbk(&gbk)
                    .unwrap()
                    .contains("<Jgdm>1001</Jgdm>")
            );
        }),
    );
    m.insert(
        "download-file-1-last.xml",
        (Download, |r| {
            let d = ok(r);
            assert_eq!(d.msg_code, 1);
            let f = d.file_info.expect("fileInfos");
            assert_eq!(f.encrypt_algorithm, Some(1));
            assert_eq!(f.file_name.as_deref(), Some("BASJ1100001234000002.xml"));
            assert_eq!(f.beian_info.as_deref(), Some("U29tZUVuY3J5cHRlZA=="));
        }),
    );
    m.insert(
        "download-file-3-more.xml",
        (Download, |r| {
            let d = ok(r);
            assert_eq!(d.msg_code, 3);
            assert_eq!(
                d.file_info.and_then(|f| f.file_name).as_deref(),
                Some("JCDM1100001234000003.xml")
            );
        }),
    );
    m.insert(
        "download-nothing-2.xml",
        (Download, |r| {
            assert!(code_only(r, 2).file_info.is_none());
        }),
    );
    m.insert(
        "download-children-form.xml",
        (Download, |r| {
            let d = ok(r);
            assert_eq!(d.msg_code, 0);
            assert_eq!(d.msg, "子元素形式");
            let f = d.file_info.expect("fileInfos");
            assert!(f.beian_info.is_some() && f.beian_info_hash.is_some());
        }),
    );
    m.insert(
        "downloadack-ok.xml",
        (DownloadAck, |r| {
            code_only(r, 0);
        }),
    );
    m.insert(
        "downloadack-no-file-name-21.xml",
        (DownloadAck, |r| {
            code_only(r, 21);
        }),
    );
    m.insert(
        "querypreviousupload-17.xml",
        (QueryPreviousUpload, |r| {
            let f = code_only(r, 0).file_info.expect("fileInfos");
            assert_eq!(f.data_sequence, Some(17));
            assert_eq!(f.file_name.as_deref(), Some("1100001234U0000000017.xml"));
            assert_eq!(f.beian_info, None, "<beianInfo/> is empty");
            assert_eq!(f.beian_info_hash, None);
        }),
    );
    m.insert(
        "querypreviousupload-none-0.xml",
        (QueryPreviousUpload, |r| {
            let f = code_only(r, 0).file_info.expect("fileInfos");
            assert_eq!(f.data_sequence, Some(0));
            assert_eq!((f.hash_algorithm, f.file_name), (None, None));
        }),
    );
    m.insert(
        "querypreviousupload-none-empty.xml",
        (QueryPreviousUpload, |r| {
            let f = code_only(r, 0).file_info.expect("fileInfos");
            assert_eq!(f, wire::FileInfo::default());
        }),
    );
    m.insert(
        "querybeianstatus-filed.xml",
        (QueryBeianStatus, |r| {
            let d = ok(r);
            assert_eq!(d.msg_code, 0);
            assert_eq!(
                d.status_infos,
                vec![wire::StatusInfo {
                    cxtjlx: Some(0),
                    cxtj: Some("example.cn".into()),
                    wzmc: Some("示例网站".into()),
                    ztbah: Some("京ICP备2026001234号".into()),
                    wzbah: Some("京ICP备2026001234号-1".into()),
                    bazt: Some(0),
                }]
            );
        }),
    );
    m.insert(
        "querybeianstatus-not-filed.xml",
        (QueryBeianStatus, |r| {
            let d = ok(r);
            assert_eq!(d.status_infos.len(), 1);
            let s = &d.status_infos[0];
            assert_eq!(
                (s.bazt, s.wzmc.as_deref(), s.ztbah.as_deref()),
                (Some(1), None, None)
            );
        }),
    );
    m.insert(
        "soap-fault.xml",
        (Upload, |r| match r {
            Err(WireError::Fault { code, message }) => {
                assert_eq!(code, "soap:Server");
                assert_eq!(message, "java.lang.NullPointerException");
            }
            other => panic!("expected a SOAP Fault, got {other:?}"),
        }),
    );
    m.insert(
        "broken-truncated.xml",
        (Upload, |r| {
            assert!(
                matches!(
                    r,
                    Err(WireError::Truncated { .. }) | Err(WireError::NotXml { .. })
                ),
                "{r:?}"
            )
        }),
    );
    m.insert(
        "broken-html.xml",
        (Upload, |r| {
            assert!(
                matches!(
                    r,
                    Err(WireError::NoBody { .. }) | Err(WireError::NotXml { .. })
                ),
                "{r:?}"
            )
        }),
    );
    m.insert(
        "broken-not-xml.xml",
        (Upload, |r| {
            assert!(matches!(r, Err(WireError::NotXml { .. })), "{r:?}")
        }),
    );
    m.insert(
        "broken-missing-msg-code.xml",
        (Upload, |r| {
            assert!(matches!(r, Err(WireError::MissingMsgCode)), "{r:?}")
        }),
    );
    m.insert(
        "broken-msg-code-not-number.xml",
        (Upload, |r| match r {
            Err(WireError::BadNumber { field, value }) => {
                assert_eq!((field, value.as_str()), ("msg_code", "OK"));
            }
            other => panic!("expected BadNumber, got {other:?}"),
        }),
    );
    m.insert(
        "broken-no-return.xml",
        (Upload, |r| {
            assert!(matches!(r, Err(WireError::NoReturn { .. })), "{r:?}")
        }),
    );
    m.insert(
        "broken-empty-return.xml",
        (Upload, |r| {
            assert!(matches!(r, Err(WireError::EmptyReturn)), "{r:?}")
        }),
    );
    m.insert(
        "broken-escaped-doc-truncated.xml",
        (Upload, |r| match r {
            Err(WireError::Truncated { what }) => assert_eq!(what, "return document"),
            other => panic!("expected a truncated return document, got {other:?}"),
        }),
    );
    m.insert(
        "broken-no-body.xml",
        (Upload, |r| {
            assert!(matches!(r, Err(WireError::NoBody { .. })), "{r:?}")
        }),
    );
    m
}

#[test]
fn every_answer_fixture_parses_as_declared() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bureau/answers");
    let expectations = expectations();
    let mut seen = Vec::new();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name == "README.md" {
            continue;
        }
        let Some((op, check)) = expectations.get(name.as_str()) else {
            missing.push(name);
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        let result = std::panic::catch_unwind(|| wire::parse_response(*op, &text));
        let parsed = result.unwrap_or_else(|_| panic!("{name}: the parser panicked"));
        if let Err(e) = &parsed {
            // Every error explains itself and never echoes a payload.
            let message = e.to_string();
            assert!(
                !message.is_empty() && message.len() < 600,
                "{name}: {message}"
            );
        }
        println!("{name}: {:?}", parsed.as_ref().map(|d| d.msg_code));
        check(parsed);
        seen.push(name);
    }
    assert!(
        missing.is_empty(),
        "fixtures without an expectation: {missing:?}"
    );
    let unused: Vec<_> = expectations
        .keys()
        .filter(|k| !seen.iter().any(|s| s == *k))
        .collect();
    assert!(
        unused.is_empty(),
        "expectations without a fixture: {unused:?}"
    );
}

#[test]
fn readme_lists_every_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bureau/answers");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for name in expectations().keys() {
        assert!(
            readme.contains(&format!("`{name}`")),
            "README.md lacks {name}"
        );
    }
}

#[test]
fn garbage_never_panics() {
    let samples = [
        "",
        "<",
        "<<<>>>",
        "&",
        "<a>&bogus;</a>",
        "<a>&#xFFFFFFFF;</a>",
        "<soap:Envelope><soap:Body></soap:Body></soap:Envelope>",
        "<Envelope><Body><isp_uploadResponse><return>&lt;return&gt;&lt;msg_code&gt;99999999999999999999&lt;/msg_code&gt;&lt;/return&gt;</return></isp_uploadResponse></Body></Envelope>",
        "<Envelope><Body><isp_uploadResponse><return>   </return></isp_uploadResponse></Body></Envelope>",
        "\u{feff}<?xml version=\"1.0\"?><x/>",
    ];
    for s in samples {
        for op in Operation::ALL {
            assert!(wire::parse_response(op, s).is_err(), "{s:?} parsed");
        }
        let _ = wire::parse_return_doc(s);
    }
}
