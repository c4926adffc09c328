//! The SOAP wire of the MIIT enterprise interface V3.0 (bureau-protocol.md sections 1, 3–6),
//! client side: request envelopes out, answer envelopes and return documents in.
//!
//! Owns: XML text in and out, nothing else. Must not touch the network, credentials (it is given
//! `randVal`/`pwdHash` ready-made), packaging (`crate::package`) or what a `msg_code` means for the
//! caller (`client`). Answers are read by local names, never by prefixes, and leniently: unknown
//! elements and attributes (a bureau's `version`) are ignored, the return document may come as
//! escaped text, CDATA or child elements. Malformed input is a [`WireError`], never a panic.

use std::fmt::Write as _;

use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// The operation namespace when a bureau's config names none.
pub const DEFAULT_NAMESPACE: &str = "http://webservice.isp.beian.miit.gov.cn/";
/// SOAP 1.1 envelope namespace.
pub const SOAP_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// `hashAlgorithm` 0 = MD5, the only value V3.0 defines.
pub const HASH_MD5: i64 = 0;

/// Elements nested deeper than this are refused (an answer is a few levels deep).
const MAX_DEPTH: usize = 64;
/// Longest piece of foreign text (fault strings, bad numbers) copied into an error message.
const MAX_QUOTE: usize = 256;

/// The five operations beian-gateway calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Upload,
    Download,
    DownloadAck,
    QueryPreviousUpload,
    QueryBeianStatus,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Upload,
        Operation::Download,
        Operation::DownloadAck,
        Operation::QueryPreviousUpload,
        Operation::QueryBeianStatus,
    ];

    /// The operation element's local name.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Upload => "isp_upload",
            Operation::Download => "isp_download",
            Operation::DownloadAck => "isp_downloadack",
            Operation::QueryPreviousUpload => "isp_querypreviousupload",
            Operation::QueryBeianStatus => "isp_querybeianstatus",
        }
    }

    /// The service path under a bureau's base URL (section 1).
    pub fn service_path(self) -> &'static str {
        match self {
            Operation::QueryBeianStatus => "/BeianStatusWebService/queryBeianStatus",
            _ => "/ISPWebService/upDownLoad",
        }
    }

    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The authentication parameters every call starts with (section 2).
#[derive(Clone, Copy)]
pub struct Auth<'a> {
    pub isp_id: i64,
    pub user_name: &'a str,
    pub rand_val: &'a str,
    pub pwd_hash: &'a str,
}

impl std::fmt::Debug for Auth<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("isp_id", &self.isp_id)
            .field("user_name", &self.user_name)
            .finish_non_exhaustive()
    }
}

/// The operation-specific parameters of a call, in prototype order after the [`Auth`] ones.
#[derive(Clone, Copy)]
pub enum Request<'a> {
    Upload {
        beian_info: &'a str,
        beian_info_hash: &'a str,
        data_sequence: i64,
        encrypt_algorithm: i64,
        hash_algorithm: i64,
        compression_format: i64,
    },
    Download {
        hash_algorithm: i64,
    },
    DownloadAck {
        hash_algorithm: i64,
        file_name: &'a str,
    },
    QueryPreviousUpload {
        hash_algorithm: i64,
    },
    QueryBeianStatus {
        hash_algorithm: i64,
        query_condition_type: i64,
        query_condition: &'a str,
    },
}

impl std::fmt::Debug for Request<'_> {
    // Never prints beianInfo: it is a customer's filing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Upload { data_sequence, .. } => f
                .debug_struct("Upload")
                .field("data_sequence", data_sequence)
                .finish_non_exhaustive(),
            other => f.write_str(other.operation().name()),
        }
    }
}

impl Request<'_> {
    pub fn operation(&self) -> Operation {
        match self {
            Request::Upload { .. } => Operation::Upload,
            Request::Download { .. } => Operation::Download,
            Request::DownloadAck { .. } => Operation::DownloadAck,
            Request::QueryPreviousUpload { .. } => Operation::QueryPreviousUpload,
            Request::QueryBeianStatus { .. } => Operation::QueryBeianStatus,
        }
    }

    /// The parameters after the authentication ones, named as in the method prototypes.
    fn params(&self) -> Vec<(&'static str, String)> {
        match *self {
            Request::Upload {
                beian_info,
                beian_info_hash,
                data_sequence,
                encrypt_algorithm,
                hash_algorithm,
                compression_format,
            } => vec![
                ("beianInfo", beian_info.to_owned()),
                ("beianInfoHash", beian_info_hash.to_owned()),
                ("dataSequence", data_sequence.to_string()),
                ("encryptAlgorithm", encrypt_algorithm.to_string()),
                ("hashAlgorithm", hash_algorithm.to_string()),
                ("compressionFormat", compression_format.to_string()),
            ],
            Request::Download { hash_algorithm }
            | Request::QueryPreviousUpload { hash_algorithm } => {
                vec![("hashAlgorithm", hash_algorithm.to_string())]
            }
            Request::DownloadAck {
                hash_algorithm,
                file_name,
            } => vec![
                ("hashAlgorithm", hash_algorithm.to_string()),
                ("fileName", file_name.to_owned()),
            ],
            Request::QueryBeianStatus {
                hash_algorithm,
                query_condition_type,
                query_condition,
            } => vec![
                ("hashAlgorithm", hash_algorithm.to_string()),
                ("queryConditionType", query_condition_type.to_string()),
                ("queryCondition", query_condition.to_owned()),
            ],
        }
    }
}

/// The SOAP 1.1 request envelope of one call (section 1): prefix `soapenv`, the operation element
/// as `ws:` in `namespace`, the parameters unqualified and in prototype order, text escaped.
pub fn request_envelope(namespace: &str, auth: &Auth<'_>, request: &Request<'_>) -> String {
    let op = request.operation().name();
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "<soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV_NS}\" xmlns:ws=\"{}\"><soapenv:Body><ws:{op}>",
        escape(namespace)
    );
    let head = [
        ("ispId", auth.isp_id.to_string()),
        ("userName", auth.user_name.to_owned()),
        ("randVal", auth.rand_val.to_owned()),
        ("pwdHash", auth.pwd_hash.to_owned()),
    ];
    for (name, value) in head.into_iter().chain(request.params()) {
        let _ = write!(out, "<{name}>{}</{name}>", escape(value.as_str()));
    }
    let _ = write!(out, "</ws:{op}></soapenv:Body></soapenv:Envelope>");
    out
}

/// A response envelope carrying `return_doc` as escaped text, the way bureaus answer. Used by
/// test bureaus and the sandbox; the client never sends one.
pub fn response_envelope(namespace: &str, op: Operation, return_doc: &str) -> String {
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV_NS}\"><soapenv:Body><ns2:{op}Response xmlns:ns2=\"{}\"><return>{}</return></ns2:{op}Response></soapenv:Body></soapenv:Envelope>",
        escape(namespace),
        escape(return_doc)
    )
}

/// Why an answer (or a request, for [`parse_request`]) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{what} is not well-formed XML: {reason}")]
    NotXml { what: &'static str, reason: String },
    #[error("{what} ends before its elements are closed (truncated)")]
    Truncated { what: &'static str },
    #[error("{what} nests elements deeper than {MAX_DEPTH} levels")]
    TooDeep { what: &'static str },
    #[error("answer is not a SOAP envelope with a Body (root element {root:?})")]
    NoBody { root: String },
    #[error("SOAP Fault {code:?}: {message}")]
    Fault { code: String, message: String },
    #[error("answer's Body holds {found:?}, expected {expected}Response")]
    WrongOperation { expected: Operation, found: String },
    #[error("{expected}Response has no return element")]
    NoReturn { expected: Operation },
    #[error("return element is empty")]
    EmptyReturn,
    #[error("return document has no msg_code")]
    MissingMsgCode,
    #[error("return document field {field} is not a number: {value:?}")]
    BadNumber { field: &'static str, value: String },
    #[error("return document with msg_code {msg_code} lacks {field}")]
    MissingField { msg_code: i64, field: &'static str },
    #[error("request Body holds no operation element")]
    NoOperation,
}

/// `fileInfos` of a download or querypreviousupload answer (sections 4, 5). Empty elements are
/// `None`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FileInfo {
    pub hash_algorithm: Option<i64>,
    pub compression_format: Option<i64>,
    pub encrypt_algorithm: Option<i64>,
    pub data_sequence: Option<i64>,
    /// From `return_FileName`.
    pub file_name: Option<String>,
    pub beian_info: Option<String>,
    pub beian_info_hash: Option<String>,
}

impl std::fmt::Debug for FileInfo {
    // beianInfo is a filing (and may be megabytes): show its length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileInfo")
            .field("hash_algorithm", &self.hash_algorithm)
            .field("compression_format", &self.compression_format)
            .field("encrypt_algorithm", &self.encrypt_algorithm)
            .field("data_sequence", &self.data_sequence)
            .field("file_name", &self.file_name)
            .field("beian_info_len", &self.beian_info.as_ref().map(String::len))
            .field("beian_info_hash", &self.beian_info_hash)
            .finish()
    }
}

/// One `StatusInfo` of an `isp_querybeianstatus` answer (section 6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusInfo {
    pub cxtjlx: Option<i64>,
    pub cxtj: Option<String>,
    pub wzmc: Option<String>,
    pub ztbah: Option<String>,
    pub wzbah: Option<String>,
    /// 0 filed, 1 not filed.
    pub bazt: Option<i64>,
}

/// A return document (sections 3–6), whichever operation it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReturnDoc {
    pub msg_code: i64,
    pub msg: String,
    pub file_info: Option<FileInfo>,
    /// `dataSequences/dataSequence` of a msg_code 14 answer.
    pub data_sequences: Vec<i64>,
    pub status_infos: Vec<StatusInfo>,
}

/// Reads a response envelope for `op`: a SOAP Fault is an error, otherwise the return document
/// inside `{op}Response/return` is parsed.
pub fn parse_response(op: Operation, envelope: &str) -> Result<ReturnDoc, WireError> {
    let root = parse_tree(envelope, "answer")?;
    let body = soap_body(&root)?;
    let Some(payload) = body.elements().next() else {
        return Err(WireError::NoReturn { expected: op });
    };
    if payload.local == "Fault" {
        return Err(fault_of(payload));
    }
    if payload.local.strip_suffix("Response") != Some(op.name()) {
        return Err(WireError::WrongOperation {
            expected: op,
            found: quote(&payload.local),
        });
    }
    let ret = payload
        .child("return")
        .ok_or(WireError::NoReturn { expected: op })?;
    match ret.elements().next() {
        // Lenient form: the document as child elements, with or without its own root.
        Some(inner) if inner.local == "return" => return_doc_of(inner),
        Some(_) => return_doc_of(ret),
        None => {
            let text = ret.text.trim();
            if text.is_empty() {
                return Err(WireError::EmptyReturn);
            }
            parse_return_doc(text)
        }
    }
}

/// Parses a return document (the text inside `return`). Its XML declaration, whatever encoding it
/// names, is ignored: the document is already text here.
pub fn parse_return_doc(doc: &str) -> Result<ReturnDoc, WireError> {
    let doc = doc.trim_start_matches('\u{feff}');
    let root = parse_tree(doc, "return document")?;
    return_doc_of(&root)
}

/// A request as a bureau sees it: the operation's local name and its parameters by local name, in
/// document order. For test bureaus and the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestView {
    pub operation: String,
    /// The namespace the operation element was declared in, when its prefix was declared on it or
    /// on an ancestor.
    pub namespace: Option<String>,
    pub params: Vec<(String, String)>,
    /// Whether every parameter element was unqualified (no prefix).
    pub params_unqualified: bool,
}

impl RequestView {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn param_names(&self) -> Vec<&str> {
        self.params.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// Reads a request envelope (the bureau's side of [`request_envelope`]).
pub fn parse_request(envelope: &str) -> Result<RequestView, WireError> {
    let root = parse_tree(envelope, "request")?;
    let body = soap_body(&root)?;
    let op = body.elements().next().ok_or(WireError::NoOperation)?;
    let prefix = op.qname.split_once(':').map(|(p, _)| p);
    let xmlns = match prefix {
        Some(p) => format!("xmlns:{p}"),
        None => "xmlns".to_owned(),
    };
    let namespace = [op, body, &root].into_iter().find_map(|e| {
        e.attrs
            .iter()
            .find(|(k, _)| *k == xmlns)
            .map(|(_, v)| v.clone())
    });
    Ok(RequestView {
        operation: op.local.clone(),
        namespace,
        params: op
            .elements()
            .map(|p| (p.local.clone(), p.text.clone()))
            .collect(),
        params_unqualified: op.elements().all(|p| !p.qname.contains(':')),
    })
}

// ---------------------------------------------------------------------------------------------
// A small element tree: answers are small apart from beianInfo, which is one text node.

#[derive(Debug, Default)]
struct Element {
    qname: String,
    local: String,
    attrs: Vec<(String, String)>,
    /// Direct text content (text, entity and character references, CDATA), concatenated.
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter()
    }

    /// The first child with this local name (ASCII case-insensitive: bureaus differ in case).
    fn child(&self, local: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.local.eq_ignore_ascii_case(local))
    }

    fn children_named<'s>(&'s self, local: &'s str) -> impl Iterator<Item = &'s Element> + 's {
        self.children
            .iter()
            .filter(move |c| c.local.eq_ignore_ascii_case(local))
    }

    /// Trimmed text of a child; `None` when the child is absent or empty.
    fn child_text(&self, local: &str) -> Option<String> {
        let text = self.child(local)?.text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }

    fn child_number(&self, local: &'static str) -> Result<Option<i64>, WireError> {
        self.child_text(local)
            .map(|t| parse_number(local, &t))
            .transpose()
    }
}

fn parse_number(field: &'static str, text: &str) -> Result<i64, WireError> {
    text.trim().parse().map_err(|_| WireError::BadNumber {
        field,
        value: quote(text),
    })
}

/// At most [`MAX_QUOTE`] characters of foreign text, for error messages.
fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn start_element(
    e: &quick_xml::events::BytesStart<'_>,
    what: &'static str,
) -> Result<Element, WireError> {
    let qname = e.name().as_ref().to_owned();
    let local = e.local_name().as_ref().to_owned();
    let mut attrs = Vec::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| WireError::NotXml {
            what,
            reason: err.to_string(),
        })?;
        let key = attr.key.as_ref().to_owned();
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map(|v| v.into_owned())
            .unwrap_or_else(|_| attr.value.clone().into_owned());
        attrs.push((key, value));
    }
    Ok(Element {
        qname,
        local,
        attrs,
        ..Element::default()
    })
}

fn resolve_reference(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let code =
                if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    name.strip_prefix('#')?.parse().ok()?
                };
            char::from_u32(code)
        }
    }
}

/// Parses a whole document into its root element.
fn parse_tree(xml: &str, what: &'static str) -> Result<Element, WireError> {
    let not_xml = |reason: String| WireError::NotXml { what, reason };
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        // quick-xml's messages carry tag names (a mismatched end tag): quoted, like all
        // foreign text, so a broken answer cannot put megabytes into a log line or an alarm.
        let event = reader.read_event().map_err(|e| {
            not_xml(format!(
                "{} at byte {}",
                quote(&e.to_string()),
                reader.error_position()
            ))
        })?;
        match event {
            Event::Start(e) => {
                if root.is_some() {
                    return Err(not_xml("content after the root element".to_owned()));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(WireError::TooDeep { what });
                }
                stack.push(start_element(&e, what)?);
            }
            Event::Empty(e) => {
                let element = start_element(&e, what)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None if root.is_none() => root = Some(element),
                    None => return Err(not_xml("content after the root element".to_owned())),
                }
            }
            Event::End(_) => {
                let Some(done) = stack.pop() else {
                    return Err(not_xml("end tag without a start tag".to_owned()));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                match stack.last_mut() {
                    Some(current) => current.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(not_xml("text outside the root element".to_owned())),
                }
            }
            Event::CData(c) => match stack.last_mut() {
                Some(current) => current.text.push_str(&c.xml10_content()),
                None => return Err(not_xml("CDATA outside the root element".to_owned())),
            },
            Event::GeneralRef(r) => {
                let name: &str = r.as_ref();
                let ch = resolve_reference(name)
                    .ok_or_else(|| not_xml(format!("unknown entity &{};", quote(name))))?;
                match stack.last_mut() {
                    Some(current) => current.text.push(ch),
                    None => return Err(not_xml("reference outside the root element".to_owned())),
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(WireError::Truncated { what });
    }
    root.ok_or_else(|| not_xml("no root element".to_owned()))
}

fn soap_body(root: &Element) -> Result<&Element, WireError> {
    if root.local != "Envelope" {
        return Err(WireError::NoBody {
            root: quote(&root.local),
        });
    }
    root.elements()
        .find(|e| e.local == "Body")
        .ok_or_else(|| WireError::NoBody {
            root: quote(&root.local),
        })
}

/// SOAP 1.1 `faultcode`/`faultstring`, or SOAP 1.2 `Code/Value`/`Reason/Text`.
fn fault_of(fault: &Element) -> WireError {
    let code = fault
        .child_text("faultcode")
        .or_else(|| fault.child("Code").and_then(|c| c.child_text("Value")))
        .unwrap_or_default();
    let message = fault
        .child_text("faultstring")
        .or_else(|| fault.child("Reason").and_then(|r| r.child_text("Text")))
        .unwrap_or_default();
    WireError::Fault {
        code: quote(&code),
        message: quote(&message),
    }
}

fn return_doc_of(root: &Element) -> Result<ReturnDoc, WireError> {
    let msg_code = root
        .child_number("msg_code")?
        .ok_or(WireError::MissingMsgCode)?;
    let msg = root
        .child("msg")
        .map(|m| m.text.trim().to_owned())
        .unwrap_or_default();
    let file_info = root.child("fileInfos").map(file_info_of).transpose()?;
    let mut data_sequences = Vec::new();
    for list in root.children_named("dataSequences") {
        for item in list.children_named("dataSequence") {
            let text = item.text.trim();
            if !text.is_empty() {
                data_sequences.push(parse_number("dataSequence", text)?);
            }
        }
    }
    let status_infos = root
        .children_named("StatusInfo")
        .map(status_info_of)
        .collect::<Result<_, _>>()?;
    Ok(ReturnDoc {
        msg_code,
        msg,
        file_info,
        data_sequences,
        status_infos,
    })
}

fn file_info_of(e: &Element) -> Result<FileInfo, WireError> {
    Ok(FileInfo {
        hash_algorithm: e.child_number("hashAlgorithm")?,
        compression_format: e.child_number("compressionFormat")?,
        encrypt_algorithm: e.child_number("encryptAlgorithm")?,
        data_sequence: e.child_number("dataSequence")?,
        file_name: e.child_text("return_FileName"),
        beian_info: e.child_text("beianInfo"),
        beian_info_hash: e.child_text("beianInfoHash"),
    })
}

fn status_info_of(e: &Element) -> Result<StatusInfo, WireError> {
    Ok(StatusInfo {
        cxtjlx: e.child_number("Cxtjlx")?,
        cxtj: e.child_text("Cxtj"),
        wzmc: e.child_text("Wzmc"),
        ztbah: e.child_text("Ztbah"),
        wzbah: e.child_text("Wzbah"),
        bazt: e.child_number("Bazt")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth<'static> {
        Auth {
            isp_id: 1100001234,
            user_name: "isp1234",
            rand_val: "aZ3kQ9pX0bT7mW2cL5vR",
            pwd_hash: "OBtEpregfDFFpgCo8ns70g==",
        }
    }

    #[test]
    fn download_envelope_is_exactly_section_1() {
        let got = request_envelope(
            DEFAULT_NAMESPACE,
            &auth(),
            &Request::Download { hash_algorithm: 0 },
        );
        let expected = concat!(
            r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
            r#"xmlns:ws="http://webservice.isp.beian.miit.gov.cn/">"#,
            "<soapenv:Body><ws:isp_download>",
            "<ispId>1100001234</ispId><userName>isp1234</userName>",
            "<randVal>aZ3kQ9pX0bT7mW2cL5vR</randVal><pwdHash>OBtEpregfDFFpgCo8ns70g==</pwdHash>",
            "<hashAlgorithm>0</hashAlgorithm>",
            "</ws:isp_download></soapenv:Body></soapenv:Envelope>"
        );
        assert_eq!(got, expected);
    }

    #[test]
    fn upload_params_are_unqualified_in_prototype_order_and_escaped() {
        let got = request_envelope(
            "urn:other&ns",
            &Auth {
                user_name: "a<b&c",
                ..auth()
            },
            &Request::Upload {
                beian_info: "QUJD+/==",
                beian_info_hash: "aGFzaA==",
                data_sequence: 17,
                encrypt_algorithm: 1,
                hash_algorithm: 0,
                compression_format: 0,
            },
        );
        assert!(got.contains(r#"xmlns:ws="urn:other&amp;ns""#), "{got}");
        assert!(got.contains("<userName>a&lt;b&amp;c</userName>"), "{got}");
        let view = parse_request(&got).unwrap();
        assert_eq!(view.operation, "isp_upload");
        assert_eq!(view.namespace.as_deref(), Some("urn:other&ns"));
        assert!(view.params_unqualified);
        assert_eq!(
            view.param_names(),
            [
                "ispId",
                "userName",
                "randVal",
                "pwdHash",
                "beianInfo",
                "beianInfoHash",
                "dataSequence",
                "encryptAlgorithm",
                "hashAlgorithm",
                "compressionFormat"
            ]
        );
        assert_eq!(view.param("userName"), Some("a<b&c"));
        assert_eq!(view.param("dataSequence"), Some("17"));
        assert_eq!(view.param("encryptAlgorithm"), Some("1"));
    }

    #[test]
    fn other_operations_param_order() {
        let cases = [
            (
                Request::DownloadAck {
                    hash_algorithm: 0,
                    file_name: "BAJG0001.xml",
                },
                vec!["hashAlgorithm", "fileName"],
            ),
            (
                Request::QueryPreviousUpload { hash_algorithm: 0 },
                vec!["hashAlgorithm"],
            ),
            (
                Request::QueryBeianStatus {
                    hash_algorithm: 0,
                    query_condition_type: 0,
                    query_condition: "example.cn",
                },
                vec!["hashAlgorithm", "queryConditionType", "queryCondition"],
            ),
        ];
        for (request, tail) in cases {
            let view =
                parse_request(&request_envelope(DEFAULT_NAMESPACE, &auth(), &request)).unwrap();
            assert_eq!(view.operation, request.operation().name());
            let mut expected = vec!["ispId", "userName", "randVal", "pwdHash"];
            expected.extend(tail);
            assert_eq!(view.param_names(), expected);
        }
    }

    #[test]
    fn response_round_trip_with_entities_in_msg() {
        let doc = "<?xml version=\"1.0\" encoding=\"GBK\"?><return version=\"3.0\"><msg_code>0</msg_code><msg>a &amp; b &#x4E2D;</msg></return>";
        let env = response_envelope(DEFAULT_NAMESPACE, Operation::Upload, doc);
        let parsed = parse_response(Operation::Upload, &env).unwrap();
        assert_eq!(parsed.msg_code, 0);
        assert_eq!(parsed.msg, "a & b 中");
    }

    #[test]
    fn child_element_and_cdata_forms() {
        let children = r#"<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><x:isp_downloadackResponse xmlns:x="urn:x"><return><msg_code> 0 </msg_code><msg>ok</msg></return></x:isp_downloadackResponse></S:Body></S:Envelope>"#;
        assert_eq!(
            parse_response(Operation::DownloadAck, children)
                .unwrap()
                .msg,
            "ok"
        );
        let cdata = r#"<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><x:isp_downloadackResponse xmlns:x="urn:x"><return><![CDATA[<return><msg_code>21</msg_code><msg>no name</msg></return>]]></return></x:isp_downloadackResponse></S:Body></S:Envelope>"#;
        assert_eq!(
            parse_response(Operation::DownloadAck, cdata)
                .unwrap()
                .msg_code,
            21
        );
    }

    #[test]
    fn wrong_operation_and_deep_nesting_are_errors() {
        let env = response_envelope(
            DEFAULT_NAMESPACE,
            Operation::Download,
            "<return><msg_code>0</msg_code></return>",
        );
        assert!(matches!(
            parse_response(Operation::Upload, &env),
            Err(WireError::WrongOperation { .. })
        ));
        let deep = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
        assert!(matches!(
            parse_return_doc(&deep),
            Err(WireError::TooDeep { .. })
        ));
        assert!(matches!(
            parse_return_doc("<return><msg_code>1</msg_code></return><return/>"),
            Err(WireError::NotXml { .. })
        ));
    }
}
