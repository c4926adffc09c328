//! Arbitrary bytes as a bureau's answer body, read the way the client reads one
//! (`client::decode_body`, then `wire::parse_response`) for every operation, and as a bare
//! return document (`wire::parse_return_doc`).
//!
//! Besides "never panics", checks what a fuzzer can falsify:
//! - an answer names one operation, so at most one operation's parse succeeds;
//! - an error message is short: foreign text is quoted at most 256 characters at a time
//!   (`wire::MAX_QUOTE`), so a hostile answer cannot flood the logs and alarms;
//! - a parsed return document, written back out as an answer, parses to the same document.
#![no_main]

use beian_gateway::bureau::client::decode_body;
use beian_gateway::bureau::wire::{
    DEFAULT_NAMESPACE, FileInfo, Operation, ReturnDoc, StatusInfo, parse_response,
    parse_return_doc, response_envelope,
};
use libfuzzer_sys::fuzz_target;

const OPS: [Operation; 5] = [
    Operation::Upload,
    Operation::Download,
    Operation::DownloadAck,
    Operation::QueryPreviousUpload,
    Operation::QueryBeianStatus,
];

/// Two quotes of 256 characters (4 bytes each at most) and the words around them.
const MAX_ERROR_BYTES: usize = 2 * 256 * 4 + 512;

fuzz_target!(|data: &[u8]| {
    // Not UTF-8: as if the bureau's Content-Type had said GBK.
    let Ok(text) = decode_body(data, false).or_else(|_| decode_body(data, true)) else {
        return;
    };
    let mut parsed = 0;
    for op in OPS {
        match parse_response(op, &text) {
            Ok(doc) => {
                parsed += 1;
                assert_round_trip(op, &doc);
            }
            Err(e) => assert_short(&e.to_string()),
        }
    }
    assert!(parsed <= 1, "{parsed} operations accept the same answer");
    match parse_return_doc(&text) {
        Ok(doc) => assert_round_trip(Operation::Upload, &doc),
        Err(e) => assert_short(&e.to_string()),
    }
});

fn assert_short(message: &str) {
    assert!(!message.is_empty(), "an error without a message");
    assert!(
        message.len() <= MAX_ERROR_BYTES,
        "error message of {} bytes: {}…",
        message.len(),
        message.chars().take(200).collect::<String>()
    );
}

fn assert_round_trip(op: Operation, doc: &ReturnDoc) {
    let envelope = response_envelope(DEFAULT_NAMESPACE, op, &render(doc));
    match parse_response(op, &envelope) {
        Ok(again) => assert_eq!(&again, doc, "written back as {envelope}"),
        Err(e) => panic!("{doc:?} written back as {envelope} does not parse: {e}"),
    }
}

/// A return document as the bureau would write it (section 3–6 element names).
fn render(doc: &ReturnDoc) -> String {
    let mut out = String::from("<return>");
    leaf(&mut out, "msg_code", &doc.msg_code.to_string());
    leaf(&mut out, "msg", &doc.msg);
    if let Some(info) = &doc.file_info {
        render_file_info(&mut out, info);
    }
    if !doc.data_sequences.is_empty() {
        out.push_str("<dataSequences>");
        for n in &doc.data_sequences {
            leaf(&mut out, "dataSequence", &n.to_string());
        }
        out.push_str("</dataSequences>");
    }
    for status in &doc.status_infos {
        render_status(&mut out, status);
    }
    out.push_str("</return>");
    out
}

fn render_file_info(out: &mut String, info: &FileInfo) {
    out.push_str("<fileInfos>");
    opt_number(out, "hashAlgorithm", info.hash_algorithm);
    opt_number(out, "compressionFormat", info.compression_format);
    opt_number(out, "encryptAlgorithm", info.encrypt_algorithm);
    opt_number(out, "dataSequence", info.data_sequence);
    opt_leaf(out, "return_FileName", info.file_name.as_deref());
    opt_leaf(out, "beianInfo", info.beian_info.as_deref());
    opt_leaf(out, "beianInfoHash", info.beian_info_hash.as_deref());
    out.push_str("</fileInfos>");
}

fn render_status(out: &mut String, s: &StatusInfo) {
    out.push_str("<StatusInfo>");
    opt_number(out, "Cxtjlx", s.cxtjlx);
    opt_leaf(out, "Cxtj", s.cxtj.as_deref());
    opt_leaf(out, "Wzmc", s.wzmc.as_deref());
    opt_leaf(out, "Ztbah", s.ztbah.as_deref());
    opt_leaf(out, "Wzbah", s.wzbah.as_deref());
    opt_number(out, "Bazt", s.bazt);
    out.push_str("</StatusInfo>");
}

fn opt_number(out: &mut String, name: &str, value: Option<i64>) {
    if let Some(n) = value {
        leaf(out, name, &n.to_string());
    }
}

fn opt_leaf(out: &mut String, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        leaf(out, name, v);
    }
}

/// `<name>text</name>`, with markup and every control character (which line-end
/// normalisation would otherwise change) as character references.
fn leaf(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    for c in text.chars() {
        if c.is_control() || matches!(c, '&' | '<' | '>') {
            out.push_str(&format!("&#x{:X};", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}
