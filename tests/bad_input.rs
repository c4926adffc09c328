//! Bad input never panics and never expands: property tests for the bureau answer parser
//! (`bureau::wire::parse_response`), the download parser
//! (`datafile::download::parse_download_bytes`) and the filing importer
//! (`domain::import::parse_file`) on arbitrary and mutated input, plus the hostile documents:
//! oversized and deeply nested XML, invalid UTF-8, entity declarations (no DTD processing, no
//! entity expansion). Each must end in an error that says what is wrong, or a parse.

mod common;

use std::path::{Path, PathBuf};

use beian_gateway::bureau::wire::{Operation, parse_response};
use beian_gateway::datafile::download::parse_download_bytes;
use beian_gateway::domain::import::parse_file;
use proptest::prelude::*;

const OPS: [Operation; 5] = [
    Operation::Upload,
    Operation::Download,
    Operation::DownloadAck,
    Operation::QueryPreviousUpload,
    Operation::QueryBeianStatus,
];

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml" || x == "json"))
        .collect();
    out.sort();
    out
}

fn seeds(sub: &str) -> Vec<Vec<u8>> {
    files(&common::fixtures().join(sub))
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// A good document with a few bytes changed, cut short or duplicated.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    (
        0..n,
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(move |(i, flips, cut, truncate)| {
            let mut doc = seeds[i].clone();
            for (at, byte) in flips {
                if !doc.is_empty() {
                    let k = at.index(doc.len());
                    doc[k] = byte;
                }
            }
            if truncate && !doc.is_empty() {
                doc.truncate(cut.index(doc.len()));
            }
            doc
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn answers_never_panic(text in ".{0,400}", op in 0usize..5) {
        let _ = parse_response(OPS[op], &text);
    }

    #[test]
    fn mutated_answers_never_panic(doc in mutated(seeds("bureau/answers")), op in 0usize..5) {
        let text = String::from_utf8_lossy(&doc);
        if let Err(e) = parse_response(OPS[op], &text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn downloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_download_bytes(&bytes);
    }

    #[test]
    fn mutated_downloads_never_panic(doc in mutated(seeds("bureau/downloads"))) {
        if let Err(e) = parse_download_bytes(&doc) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn filing_files_never_panic(text in ".{0,400}") {
        let _ = parse_file(Path::new("prop.json"), &text);
    }

    #[test]
    fn mutated_filing_files_never_panic(doc in mutated(seeds("filings"))) {
        let text = String::from_utf8_lossy(&doc);
        if let Err(e) = parse_file(Path::new("mutated.json"), &text) {
            let message = e.to_string();
            prop_assert!(message.contains("mutated.json"), "names the file: {}", message);
        }
    }
}

fn envelope(inner: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>{inner}</soap:Body></soap:Envelope>"#
    )
}

#[test]
fn deeply_nested_xml_is_refused_without_recursion() {
    let depth = 200_000;
    let nested = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    let e = parse_response(Operation::Upload, &envelope(&nested)).unwrap_err();
    assert!(e.to_string().to_lowercase().contains("deep"), "{e}");
    let download =
        format!(r#"<?xml version="1.0" encoding="GBK"?><DownloadData>{nested}</DownloadData>"#);
    assert!(parse_download_bytes(download.as_bytes()).is_err());
    let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let e = parse_file(Path::new("deep.json"), &json).unwrap_err();
    assert!(e.to_string().contains("deep.json"), "{e}");
}

#[test]
fn oversized_documents_end_in_an_error_or_a_parse_never_a_panic() {
    let big = "x".repeat(20 * 1024 * 1024);
    let answer = envelope(&format!(
        "<ns:isp_uploadResponse><return>{big}</return></ns:isp_uploadResponse>"
    ));
    assert!(parse_response(Operation::Upload, &answer).is_err());
    let download = format!(r#"<?xml version="1.0" encoding="GBK"?><DownloadData><x>{big}</x>"#);
    assert!(parse_download_bytes(download.as_bytes()).is_err());
    let filings = format!(r#"{{"id": "{big}"}}"#);
    assert!(parse_file(Path::new("big.json"), &filings).is_err());
}

#[test]
fn invalid_utf8_is_a_clear_error() {
    let mut bytes = br#"<?xml version="1.0" encoding="UTF-8"?><DownloadData><a>"#.to_vec();
    bytes.extend_from_slice(&[0xC3, 0x28, 0xFF, 0xFE]);
    bytes.extend_from_slice(b"</a></DownloadData>");
    let e = parse_download_bytes(&bytes).unwrap_err();
    assert!(!e.to_string().is_empty());
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(&[0xFF, 0xFE, 0xFD]);
    assert!(parse_download_bytes(&bom).is_err());
}

/// "Billion laughs" and external entities: the DTD is not processed, a declared entity is not
/// expanded — a reference to it is an error, and no file is read.
#[test]
fn entity_declarations_are_not_expanded() {
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol9 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY xxe SYSTEM "file:///etc/passwd">
]>"#;
    for entity in ["lol9", "xxe"] {
        let answer = format!(
            "{laughs}<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><ns:isp_uploadResponse><return>&lt;return&gt;&lt;msg_code&gt;0&lt;/msg_code&gt;&lt;msg&gt;&{entity};&lt;/msg&gt;&lt;/return&gt;</return></ns:isp_uploadResponse></soap:Body></soap:Envelope>"
        );
        match parse_response(Operation::Upload, &answer) {
            Err(e) => assert!(!e.to_string().is_empty()),
            Ok(doc) => panic!("{entity} was expanded: {:?}", doc.msg),
        }
        let inner = format!(
            "{laughs}<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><ns:isp_uploadResponse><return>&{entity};</return></ns:isp_uploadResponse></soap:Body></soap:Envelope>"
        );
        assert!(parse_response(Operation::Upload, &inner).is_err());
        let download = format!("{laughs}<DownloadData><a>&{entity};</a></DownloadData>");
        assert!(parse_download_bytes(download.as_bytes()).is_err());
    }
}

/// Found by the `answer` fuzz target: a mismatched end tag's message quoted both tag names
/// whole, so an answer with a megabyte-long name made a megabyte-long error (log line, alarm).
#[test]
fn error_messages_quote_foreign_names_briefly() {
    let name = "n".repeat(1024 * 1024);
    let answer = envelope(&format!(
        "<ns:isp_uploadResponse><return>&lt;{name}&gt;&lt;/m&gt;</return></ns:isp_uploadResponse>"
    ));
    let e = parse_response(Operation::Upload, &answer).unwrap_err();
    let message = e.to_string();
    assert!(message.len() < 2048, "{} bytes", message.len());
    assert!(message.contains("not well-formed"), "{message}");
}

/// Found by the `import` fuzz target: `{"": …}` (an unknown key that is empty) gave an empty
/// field path, so the error named no field.
#[test]
fn an_empty_unknown_key_is_named_as_the_document() {
    let e = parse_file(Path::new("empty-key.json"), r#"{"":"A"}"#).unwrap_err();
    assert_eq!(e.field, "(document)");
    assert!(e.message.contains("unknown field"), "{e}");
}

/// Found by the `import` fuzz target: an empty `id` was used as the filing's name, so the
/// error read "filing : …"; it is named by its position instead.
#[test]
fn an_empty_id_is_named_by_position() {
    let e = parse_file(
        Path::new("empty-id.json"),
        "{\"id\":\"\"}\n\n{\"id\":\"A\"}\n",
    )
    .unwrap_err();
    assert_eq!(e.filing, "#0");
    assert!(
        e.to_string().starts_with("empty-id.json: filing #0: "),
        "{e}"
    );
}
