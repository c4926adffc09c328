//! Downloaded data files (`DownloadData`, bureau-protocol.md sections 5 and 5.1) → typed results.
//!
//! Owns: decoding one unzipped data file (GBK on the wire, UTF-8 when its declaration says so),
//! parsing it per `miit-v3/download-data.xsd` (and the APP extension's `download-data-ext.xsd`)
//! into [`Download`], pairing `BAJG` results (`Jg_xx[i]` with `GJSHS/Gjsh[i]`), reading a
//! pair's [`Verdict`] and its decision time ([`decided_at`]).
//! Must not touch: the network, the file system or the store — callers hand in bytes and apply
//! what comes back. Deciding which filing a result belongs to is the pipeline's job.
//!
//! Invariants: never panics on any input; every error names the element path it is about
//! (`DownloadData/ICP/BAJG/Jg_xx[2]/Jgxx[1]/Jgdm`, 1-based indices); elements the gateway does
//! not read are ignored, required ones it reads are checked.
//!
//! `DownloadData` is a choice of `ICP`, `IP`, `YM`, `JCDM`, `SJTB`, and `ICP` is an `xs:all` of
//! optional kinds, so one file may carry several kinds (e.g. `BAJG` and `BASJ`): a file parses to
//! a [`Download`] holding its parts in document order.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

use crate::codes::{CodeError, CodeTables};
use crate::package;

/// The interface version this parser reads (`DownloadData/@version`).
pub const VERSION: &str = "V.3.0";

/// Result code: the record is approved.
pub const JGDM_APPROVED: i64 = 1001;
/// Result code (SMS extension): awaiting the SMS check, not final.
pub const JGDM_SMS_PENDING: i64 = 1901;
/// Result code (SMS extension): the SMS check timed out, the filing is returned.
pub const JGDM_SMS_EXPIRED: i64 = 1902;

/// Asia/Shanghai has no daylight saving time: `Shsj` is always +08:00.
const SHANGHAI_OFFSET_SECS: i32 = 8 * 3600;

/// Deeper nesting than any schema path (the deepest is about 8) is refused before it can
/// exhaust the stack when the tree is dropped.
const MAX_DEPTH: usize = 64;

/// One downloaded data file: its version and the kinds it carries, in document order.
#[derive(Debug, Clone, PartialEq)]
pub struct Download {
    pub version: String,
    pub parts: Vec<DownloadFile>,
}

/// One kind of content of a data file.
#[derive(Debug, Clone, PartialEq)]
pub enum DownloadFile {
    /// `ICP/BAJG` 备案结果: one pair per record result.
    Bajg(Vec<ResultPair>),
    /// `ICP/BASJ` 备案数据: published records (record numbers and province ids).
    Basj(Vec<PublishedRecord>),
    /// `ICP/ZXSJ` 注销数据: confirmed subject and website cancellations.
    Zxsj(Vec<Cancellation>),
    /// `JCDM` 基础代码: the bureau's code tables (replace the tables they carry).
    Jcdm(CodeTables),
    /// Any other kind (`ICP/HMDLB`, `ICP/HSRW`, `ICP/HCJG`, `ICP/XGTZ`, `ICP/WBAWZLB`,
    /// `ICP/FFJRHMD`, and the `IP`, `YM`, `SJTB` branches): stored and acked only. `kind` is the
    /// element name (`HMDLB`, `IP`, …).
    Other { kind: String },
}

/// One result: `BAJG/Jg_xx[i]` with `BAJG/GJSHS/Gjsh[i]` (section 5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultPair {
    /// `Jg_xx/Jgxx*`: at least one.
    pub codes: Vec<ResultCode>,
    /// `Jg_xx/Czlx` (required by the schema).
    pub czlx: i64,
    /// `Jg_xx/Bs`: informative only.
    pub bs: Option<String>,
    /// `Gjsh/Czlx` (optional in the schema).
    pub gjsh_czlx: Option<i64>,
    /// `Gjsh/Jlid`: absent exactly for a fault of the whole file.
    pub jlid: Option<i64>,
    /// `Gjsh/Shjg`: 1 approved, 0 refused.
    pub shjg: i64,
    /// `Gjsh/Shyj`.
    pub shyj: Option<String>,
    /// `Gjsh/Shsj` as sent (`YYYY-MM-DD HH:MM:SS`, Asia/Shanghai); see [`decided_at`].
    pub shsj: String,
    /// `Gjsh/Shrxm`.
    pub shrxm: Option<String>,
}

/// `Jgxx{Jgdm, Dmms?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultCode {
    pub jgdm: i64,
    pub dmms: Option<String>,
}

/// What a pair means for its record (section 5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every `Jgdm` is 1001.
    Approved,
    /// The codes are 1901 and nothing else; `deadline` is the first 1901's `Dmms`
    /// (RFC 3339, +08:00, as sent).
    AwaitingSms { deadline: Option<String> },
    /// The codes are 1902 and nothing else.
    Expired,
    /// Anything else: one reason per code that is not 1001.
    Rejected,
}

impl ResultPair {
    /// A fault of the whole uploaded file (5001, 5004, 5008): its `Gjsh` has no `Jlid`.
    pub fn is_whole_file(&self) -> bool {
        self.jlid.is_none()
    }

    /// The operation (section 5.1: `Gjsh` gives `Czlx`; `Jg_xx/Czlx` when it does not).
    pub fn operation(&self) -> i64 {
        self.gjsh_czlx.unwrap_or(self.czlx)
    }

    pub fn verdict(&self) -> Verdict {
        let all = |code: i64| !self.codes.is_empty() && self.codes.iter().all(|c| c.jgdm == code);
        if all(JGDM_APPROVED) {
            Verdict::Approved
        } else if all(JGDM_SMS_PENDING) {
            Verdict::AwaitingSms {
                deadline: self.codes.iter().find_map(|c| c.dmms.clone()),
            }
        } else if all(JGDM_SMS_EXPIRED) {
            Verdict::Expired
        } else {
            Verdict::Rejected
        }
    }

    /// The codes that are not 1001, each with its message: `Dmms`, then `Shyj` when present.
    pub fn reasons(&self) -> Vec<(i64, String)> {
        self.codes
            .iter()
            .filter(|c| c.jgdm != JGDM_APPROVED)
            .map(|c| {
                let message = [c.dmms.as_deref(), self.shyj.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; ");
                (c.jgdm, message)
            })
            .collect()
    }
}

/// `BASJ/Baxx`: a subject with its websites and (APP extension) apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedRecord {
    pub subject: PublishedSubject,
    pub websites: Vec<PublishedWebsite>,
    pub apps: Vec<PublishedApp>,
}

/// `Baxx/Zt_xx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedSubject {
    pub isp_ztid: Option<i64>,
    pub ztid: i64,
    /// `Baxh`: the subject's record number (`京ICP备2026000001号`).
    pub record_number: Option<String>,
    /// `Dwmc` (required by the schema).
    pub name: String,
}

/// `Baxx/Wz_xx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedWebsite {
    pub isp_wzid: Option<i64>,
    pub wzid: i64,
    /// `Baxh`: the website's record number (`…号-1`).
    pub record_number: Option<String>,
    /// `Wzmc` (required by the schema).
    pub name: String,
    pub domains: Vec<PublishedDomain>,
    pub accesses: Vec<PublishedAccess>,
}

/// `Wz_xx/Ym_xx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedDomain {
    pub isp_ymid: Option<i64>,
    pub ymid: i64,
    pub ym: String,
}

/// `Wz_xx/Jr_xx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedAccess {
    pub isp_jrid: Option<i64>,
    pub jrid: i64,
    pub ips: Vec<PublishedIp>,
}

/// `Jr_xx/Ip_xx`: an IPv4 range as unsigned integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedIp {
    pub isp_ipid: Option<i64>,
    /// `Ipid` (required by the schema).
    pub ipid: i64,
    pub qsip: u32,
    pub zzip: u32,
}

/// `Baxx/App_xx` (APP extension, `download-data-ext.xsd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedApp {
    pub isp_appid: Option<i64>,
    pub appid: i64,
    /// `Baxh` (required by the ext schema): `…号-2A`.
    pub record_number: String,
    /// `Appmc`.
    pub name: String,
    /// `Bm`: the package name.
    pub package_name: String,
    /// `Pt`: 1 Android, 2 iOS, 3 HarmonyOS, 9 other.
    pub platform: i64,
}

/// `ZXSJ/Zxxx`: `Zxlb` 0 subject (`Jlid` = Ztid), 1 website (`Jlid` = Wzid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    pub zxlb: i64,
    pub jlid: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DownloadError {
    #[error("data file is not valid GBK")]
    BadGbk,
    #[error("data file declares UTF-8 but is not valid UTF-8 (at byte {offset})")]
    BadUtf8 { offset: usize },
    #[error("data file declares encoding {0:?}; only GBK (GB2312, GB18030) and UTF-8 are read")]
    UnsupportedEncoding(String),
    #[error("data file is not well-formed XML (at byte {position}): {message}")]
    Malformed { position: u64, message: String },
    #[error("data file ends inside <{path}>: truncated")]
    Truncated { path: String },
    #[error("data file has no root element")]
    NoRoot,
    #[error("root element is <{found}>, expected <DownloadData>")]
    WrongRoot { found: String },
    #[error("{path}: elements nested deeper than {MAX_DEPTH}")]
    TooDeep { path: String },
    #[error("DownloadData: attribute version is missing")]
    MissingVersion,
    #[error("DownloadData: version {0:?} is not supported (expected {VERSION})")]
    UnsupportedVersion(String),
    #[error("{path}: required element is missing")]
    Missing { path: String },
    #[error("{path}: {value:?} is not {expected}")]
    Invalid {
        path: String,
        value: String,
        expected: &'static str,
    },
    #[error(
        "{path}: {jg_xx} Jg_xx but {gjsh} GJSHS/Gjsh; results pair by position and need equal counts"
    )]
    PairCount {
        path: String,
        jg_xx: usize,
        gjsh: usize,
    },
    #[error("DownloadData/JCDM: {0}")]
    Jcdm(CodeError),
}

/// Parses one unzipped data file as bytes: GBK unless its XML declaration says UTF-8 (a UTF-8
/// byte-order mark also means UTF-8).
pub fn parse_download_bytes(bytes: &[u8]) -> Result<Download, DownloadError> {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return parse_download_str(utf8(rest)?);
    }
    match declared_encoding(bytes) {
        Some(enc) if is_utf8_label(&enc) => parse_download_str(utf8(bytes)?),
        Some(enc) if !is_gbk_label(&enc) => Err(DownloadError::UnsupportedEncoding(enc)),
        // On the wire every data file is GBK, declared or not.
        _ => {
            let text = package::decode_gbk(bytes).map_err(|_| DownloadError::BadGbk)?;
            parse_download_str(&text)
        }
    }
}

/// Parses one data file already decoded to text (the declaration's encoding is not looked at).
pub fn parse_download_str(xml: &str) -> Result<Download, DownloadError> {
    let root = parse_tree(xml)?;
    if root.name != "DownloadData" {
        return Err(DownloadError::WrongRoot { found: root.name });
    }
    let version = root.version.clone().ok_or(DownloadError::MissingVersion)?;
    if version.trim() != VERSION {
        return Err(DownloadError::UnsupportedVersion(version));
    }
    if root.children.is_empty() {
        return Err(DownloadError::Missing {
            path: "DownloadData/(ICP|IP|YM|JCDM|SJTB)".into(),
        });
    }
    let mut parts = Vec::new();
    for branch in &root.children {
        match branch.name.as_str() {
            "ICP" => {
                for kind in &branch.children {
                    parts.push(icp_part(kind)?);
                }
            }
            "JCDM" => parts.push(DownloadFile::Jcdm(
                CodeTables::parse_jcdm(xml).map_err(DownloadError::Jcdm)?,
            )),
            other => parts.push(DownloadFile::Other {
                kind: other.to_owned(),
            }),
        }
    }
    Ok(Download { version, parts })
}

/// `Gjsh/Shsj` → the decision time (section 5.1): `YYYY-MM-DD HH:MM:SS` in Asia/Shanghai,
/// a date alone → its midnight, anything unparsable (or absent) → `applied_at`.
pub fn decided_at(shsj: Option<&str>, applied_at: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
    let Some(text) = shsj.map(str::trim) else {
        return applied_at;
    };
    let Some(shanghai) = FixedOffset::east_opt(SHANGHAI_OFFSET_SECS) else {
        return applied_at;
    };
    let naive = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    });
    naive
        .and_then(|n| n.and_local_timezone(shanghai).single())
        .unwrap_or(applied_at)
}

// ---- encoding ----

fn utf8(bytes: &[u8]) -> Result<&str, DownloadError> {
    std::str::from_utf8(bytes).map_err(|e| DownloadError::BadUtf8 {
        offset: e.valid_up_to(),
    })
}

/// The `encoding` of a leading `<?xml …?>` declaration (ASCII in both GBK and UTF-8).
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = bytes.get(start..)?;
    if !rest.starts_with(b"<?xml") {
        return None;
    }
    let end = rest.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(rest.get(..end)?).ok()?;
    let after = &decl[decl.find("encoding")? + "encoding".len()..];
    let after = after.trim_start().strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &after[1..];
    Some(value[..value.find(quote)?].to_owned())
}

fn is_utf8_label(label: &str) -> bool {
    matches!(label.to_ascii_lowercase().as_str(), "utf-8" | "utf8")
}

fn is_gbk_label(label: &str) -> bool {
    matches!(
        label.to_ascii_lowercase().as_str(),
        "gbk" | "gb2312" | "gb18030" | "cp936"
    )
}

// ---- a small element tree: the schema's paths are short and files are modest ----

#[derive(Debug, Default)]
struct Node {
    name: String,
    /// `@version`, read on every element but used only on the root.
    version: Option<String>,
    text: String,
    children: Vec<Node>,
}

fn open_node(e: &BytesStart<'_>, reader: &Reader<&[u8]>) -> Result<Node, DownloadError> {
    let name = e.local_name().into_inner().to_owned();
    let version = match e.try_get_attribute("version") {
        Ok(Some(a)) => Some(
            a.normalized_value(XmlVersion::Implicit1_0)
                .map_err(|err| malformed(reader, err))?
                .into_owned(),
        ),
        Ok(None) => None,
        Err(err) => return Err(malformed(reader, err)),
    };
    Ok(Node {
        name,
        version,
        ..Node::default()
    })
}

fn malformed(reader: &Reader<&[u8]>, err: impl std::fmt::Display) -> DownloadError {
    DownloadError::Malformed {
        position: reader.error_position().max(reader.buffer_position()),
        message: err.to_string(),
    }
}

fn stack_path(stack: &[Node]) -> String {
    stack
        .iter()
        .map(|n| n.name.as_str())
        .collect::<Vec<_>>()
        .join("/")
}

fn parse_tree(xml: &str) -> Result<Node, DownloadError> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        let event = reader.read_event().map_err(|e| malformed(&reader, e))?;
        match event {
            Event::Start(e) => {
                if root.is_some() {
                    return Err(malformed(&reader, "content after the root element"));
                }
                let node = open_node(&e, &reader)?;
                stack.push(node);
                if stack.len() > MAX_DEPTH {
                    return Err(DownloadError::TooDeep {
                        path: stack_path(&stack[..MAX_DEPTH]),
                    });
                }
            }
            Event::Empty(e) => {
                let node = open_node(&e, &reader)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None if root.is_none() => root = Some(node),
                    None => return Err(malformed(&reader, "content after the root element")),
                }
            }
            Event::End(_) => {
                let Some(node) = stack.pop() else {
                    return Err(malformed(&reader, "end tag without a start tag"));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                match stack.last_mut() {
                    Some(node) => node.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(malformed(&reader, "text outside the root element")),
                }
            }
            Event::CData(c) => match stack.last_mut() {
                Some(node) => node.text.push_str(&c.xml10_content()),
                None => return Err(malformed(&reader, "CDATA outside the root element")),
            },
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref().map_err(|e| malformed(&reader, e))? {
                    Some(c) => c,
                    None => match r.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => {
                            return Err(malformed(&reader, format!("unknown entity &{other};")));
                        }
                    },
                };
                match stack.last_mut() {
                    Some(node) => node.text.push(ch),
                    None => return Err(malformed(&reader, "reference outside the root element")),
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(DownloadError::Truncated {
            path: stack_path(&stack),
        });
    }
    root.ok_or(DownloadError::NoRoot)
}

// ---- typed reading with paths ----

/// A node and the path that names it in errors.
struct At<'a> {
    node: &'a Node,
    path: String,
}

impl<'a> At<'a> {
    fn new(node: &'a Node, path: String) -> Self {
        Self { node, path }
    }

    /// Children named `name`, each with its indexed path.
    fn all(&self, name: &str) -> Vec<At<'a>> {
        self.node
            .children
            .iter()
            .filter(|c| c.name == name)
            .enumerate()
            .map(|(i, c)| At::new(c, format!("{}/{}[{}]", self.path, name, i + 1)))
            .collect()
    }

    fn child(&self, name: &str) -> Option<At<'a>> {
        let node = self.node.children.iter().find(|c| c.name == name)?;
        Some(At::new(node, format!("{}/{}", self.path, name)))
    }

    fn required(&self, name: &str) -> Result<At<'a>, DownloadError> {
        self.child(name).ok_or_else(|| DownloadError::Missing {
            path: format!("{}/{}", self.path, name),
        })
    }

    fn text(&self) -> &'a str {
        self.node.text.trim()
    }

    fn opt_text(&self, name: &str) -> Option<String> {
        self.child(name)
            .map(|c| c.text().to_owned())
            .filter(|t| !t.is_empty())
    }

    fn req_text(&self, name: &str) -> Result<String, DownloadError> {
        let child = self.required(name)?;
        match child.text() {
            "" => Err(DownloadError::Invalid {
                path: child.path,
                value: String::new(),
                expected: "a non-empty string",
            }),
            t => Ok(t.to_owned()),
        }
    }

    fn long_in(&self, min: i64, max: i64, expected: &'static str) -> Result<i64, DownloadError> {
        match self.text().parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(DownloadError::Invalid {
                path: self.path.clone(),
                value: self.text().to_owned(),
                expected,
            }),
        }
    }

    fn req_long(
        &self,
        name: &str,
        min: i64,
        max: i64,
        expected: &'static str,
    ) -> Result<i64, DownloadError> {
        self.required(name)?.long_in(min, max, expected)
    }

    fn opt_long(
        &self,
        name: &str,
        min: i64,
        max: i64,
        expected: &'static str,
    ) -> Result<Option<i64>, DownloadError> {
        self.child(name)
            .map(|c| c.long_in(min, max, expected))
            .transpose()
    }

    fn req_id(&self, name: &str) -> Result<i64, DownloadError> {
        self.req_long(name, 1, i64::MAX, ID)
    }

    fn opt_id(&self, name: &str) -> Result<Option<i64>, DownloadError> {
        self.opt_long(name, 1, i64::MAX, ID)
    }

    fn req_ip(&self, name: &str) -> Result<u32, DownloadError> {
        let child = self.required(name)?;
        child
            .text()
            .parse::<u32>()
            .map_err(|_| DownloadError::Invalid {
                path: child.path.clone(),
                value: child.text().to_owned(),
                expected: "an IPv4 address as an unsigned 32-bit integer",
            })
    }
}

const ID: &str = "a positive integer id";

fn icp_part(kind: &Node) -> Result<DownloadFile, DownloadError> {
    let at = At::new(kind, format!("DownloadData/ICP/{}", kind.name));
    Ok(match kind.name.as_str() {
        "BAJG" => DownloadFile::Bajg(bajg(&at)?),
        "BASJ" => DownloadFile::Basj(basj(&at)?),
        "ZXSJ" => DownloadFile::Zxsj(zxsj(&at)?),
        other => DownloadFile::Other {
            kind: other.to_owned(),
        },
    })
}

fn bajg(at: &At<'_>) -> Result<Vec<ResultPair>, DownloadError> {
    let results = at.all("Jg_xx");
    let reviews: Vec<At<'_>> = at.all("GJSHS").iter().flat_map(|g| g.all("Gjsh")).collect();
    if results.len() != reviews.len() {
        return Err(DownloadError::PairCount {
            path: at.path.clone(),
            jg_xx: results.len(),
            gjsh: reviews.len(),
        });
    }
    results
        .iter()
        .zip(&reviews)
        .map(|(jg, sh)| result_pair(jg, sh))
        .collect()
}

fn result_pair(jg: &At<'_>, sh: &At<'_>) -> Result<ResultPair, DownloadError> {
    let codes = jg
        .all("Jgxx")
        .iter()
        .map(|x| {
            Ok(ResultCode {
                jgdm: x.req_long("Jgdm", 1, i64::MAX, "a positive result code")?,
                dmms: x.opt_text("Dmms"),
            })
        })
        .collect::<Result<Vec<_>, DownloadError>>()?;
    if codes.is_empty() {
        return Err(DownloadError::Missing {
            path: format!("{}/Jgxx", jg.path),
        });
    }
    Ok(ResultPair {
        codes,
        czlx: jg.req_long("Czlx", 1, 7, "an operation code 1–7")?,
        bs: jg.opt_text("Bs"),
        gjsh_czlx: sh.opt_long("Czlx", 1, 7, "an operation code 1–7")?,
        jlid: sh.opt_id("Jlid")?,
        shjg: sh.req_long("Shjg", 0, 1, "0 or 1")?,
        shyj: sh.opt_text("Shyj"),
        shsj: sh.req_text("Shsj")?,
        shrxm: sh.opt_text("Shrxm"),
    })
}

fn basj(at: &At<'_>) -> Result<Vec<PublishedRecord>, DownloadError> {
    at.all("Baxx").iter().map(published_record).collect()
}

fn published_record(baxx: &At<'_>) -> Result<PublishedRecord, DownloadError> {
    let zt = baxx.required("Zt_xx")?;
    let subject = PublishedSubject {
        isp_ztid: zt.opt_id("IspZtid")?,
        ztid: zt.req_id("Ztid")?,
        record_number: zt.opt_text("Baxh"),
        name: zt.req_text("Dwmc")?,
    };
    let websites = baxx
        .all("Wz_xx")
        .iter()
        .map(published_website)
        .collect::<Result<_, _>>()?;
    let apps = baxx
        .all("App_xx")
        .iter()
        .map(published_app)
        .collect::<Result<_, _>>()?;
    Ok(PublishedRecord {
        subject,
        websites,
        apps,
    })
}

fn published_website(wz: &At<'_>) -> Result<PublishedWebsite, DownloadError> {
    let domains = wz
        .all("Ym_xx")
        .iter()
        .map(|ym| {
            Ok(PublishedDomain {
                isp_ymid: ym.opt_id("IspYmid")?,
                ymid: ym.req_id("Ymid")?,
                ym: ym.req_text("Ym")?,
            })
        })
        .collect::<Result<_, DownloadError>>()?;
    let accesses = wz
        .all("Jr_xx")
        .iter()
        .map(published_access)
        .collect::<Result<_, _>>()?;
    Ok(PublishedWebsite {
        isp_wzid: wz.opt_id("IspWzid")?,
        wzid: wz.req_id("Wzid")?,
        record_number: wz.opt_text("Baxh"),
        name: wz.req_text("Wzmc")?,
        domains,
        accesses,
    })
}

fn published_access(jr: &At<'_>) -> Result<PublishedAccess, DownloadError> {
    let ips = jr
        .all("Ip_xx")
        .iter()
        .map(|ip| {
            Ok(PublishedIp {
                isp_ipid: ip.opt_id("IspIpid")?,
                ipid: ip.req_id("Ipid")?,
                qsip: ip.req_ip("Qsip")?,
                zzip: ip.req_ip("Zzip")?,
            })
        })
        .collect::<Result<_, DownloadError>>()?;
    Ok(PublishedAccess {
        isp_jrid: jr.opt_id("IspJrid")?,
        jrid: jr.req_id("Jrid")?,
        ips,
    })
}

fn published_app(app: &At<'_>) -> Result<PublishedApp, DownloadError> {
    Ok(PublishedApp {
        isp_appid: app.opt_id("IspAppid")?,
        appid: app.req_id("Appid")?,
        record_number: app.req_text("Baxh")?,
        name: app.req_text("Appmc")?,
        package_name: app.req_text("Bm")?,
        platform: app.req_long("Pt", 1, 9, "a platform code 1–9")?,
    })
}

fn zxsj(at: &At<'_>) -> Result<Vec<Cancellation>, DownloadError> {
    at.all("Zxxx")
        .iter()
        .map(|x| {
            Ok(Cancellation {
                zxlb: x.req_long("Zxlb", 0, 1, "0 (subject) or 1 (website)")?,
                jlid: x.req_id("Jlid")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-03-05T09:00:00+08:00").unwrap()
    }

    fn pair(codes: &[i64]) -> ResultPair {
        ResultPair {
            codes: codes
                .iter()
                .map(|&jgdm| ResultCode {
                    jgdm,
                    dmms: Some(format!("m{jgdm}")),
                })
                .collect(),
            czlx: 1,
            bs: None,
            gjsh_czlx: None,
            jlid: Some(7),
            shjg: 0,
            shyj: Some("why".into()),
            shsj: "2026-03-01 10:00:00".into(),
            shrxm: None,
        }
    }

    #[test]
    fn verdict_follows_section_5_1() {
        assert_eq!(pair(&[1001]).verdict(), Verdict::Approved);
        assert_eq!(pair(&[1001, 1001]).verdict(), Verdict::Approved);
        assert_eq!(
            pair(&[1901]).verdict(),
            Verdict::AwaitingSms {
                deadline: Some("m1901".into())
            }
        );
        assert_eq!(pair(&[1001, 1901]).verdict(), Verdict::Rejected);
        assert_eq!(pair(&[1902]).verdict(), Verdict::Expired);
        assert_eq!(pair(&[1004, 1041]).verdict(), Verdict::Rejected);
        assert_eq!(pair(&[1001, 1004]).verdict(), Verdict::Rejected);
        assert_eq!(pair(&[]).verdict(), Verdict::Rejected);
        assert_eq!(
            pair(&[1001, 1004]).reasons(),
            vec![(1004, "m1004; why".to_owned())]
        );
    }

    #[test]
    fn decided_at_reads_shanghai_time() {
        let t = decided_at(Some("2026-03-01 10:22:05"), applied());
        assert_eq!(t.to_rfc3339(), "2026-03-01T10:22:05+08:00");
        let t = decided_at(Some("2026-03-01"), applied());
        assert_eq!(t.to_rfc3339(), "2026-03-01T00:00:00+08:00");
        let t = decided_at(Some(" 2026-03-01 10:22:05.0 "), applied());
        assert_eq!(t.to_rfc3339(), "2026-03-01T10:22:05+08:00");
        assert_eq!(decided_at(Some("yesterday"), applied()), applied());
        assert_eq!(decided_at(Some("2026-02-30"), applied()), applied());
        assert_eq!(decided_at(None, applied()), applied());
    }

    #[test]
    fn encoding_follows_the_declaration() {
        let doc = "<?xml version=\"1.0\" encoding=\"GBK\"?><DownloadData version=\"V.3.0\"><ICP><BASJ><Baxx><Zt_xx><Ztid>5</Ztid><Dwmc>北京示例</Dwmc></Zt_xx></Baxx></BASJ></ICP></DownloadData>";
        let gbk = package::encode_gbk(doc).unwrap();
        let parsed = parse_download_bytes(&gbk).unwrap();
        let DownloadFile::Basj(records) = &parsed.parts[0] else {
            panic!("{parsed:?}")
        };
        assert_eq!(records[0].subject.name, "北京示例");
        // The same GBK bytes declared as UTF-8 are refused, not misread.
        let body = doc.find("?>").unwrap() + 2;
        let lying = [
            b"<?xml version='1.0' encoding='utf-8'?>".as_slice(),
            &gbk[body..],
        ]
        .concat();
        assert!(matches!(
            parse_download_bytes(&lying),
            Err(DownloadError::BadUtf8 { .. })
        ));
        let utf8 = doc.replace("GBK", "UTF-8");
        assert_eq!(parse_download_bytes(utf8.as_bytes()).unwrap(), parsed);
        let latin = doc.replace("GBK", "ISO-8859-1");
        assert_eq!(
            parse_download_bytes(latin.as_bytes()),
            Err(DownloadError::UnsupportedEncoding("ISO-8859-1".into()))
        );
    }

    #[test]
    fn entities_and_cdata_are_text() {
        let doc = "<DownloadData version=\"V.3.0\"><ICP><BAJG><Jg_xx><Jgxx><Jgdm>1004</Jgdm><Dmms>a &amp; b &#x4E2D;</Dmms></Jgxx><Czlx>2</Czlx></Jg_xx>\
                   <GJSHS><Gjsh><Shsj>2026-03-01</Shsj><Shyj><![CDATA[<x>]]></Shyj><Shjg>0</Shjg><Jlid>9</Jlid></Gjsh></GJSHS></BAJG></ICP></DownloadData>";
        let parsed = parse_download_str(doc).unwrap();
        let DownloadFile::Bajg(pairs) = &parsed.parts[0] else {
            panic!("{parsed:?}")
        };
        assert_eq!(pairs[0].codes[0].dmms.as_deref(), Some("a & b 中"));
        assert_eq!(pairs[0].shyj.as_deref(), Some("<x>"));
        assert_eq!(pairs[0].operation(), 2);
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let good = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DownloadData version=\"V.3.0\"><ICP><BAJG><Jg_xx><Jgxx><Jgdm>1001</Jgdm></Jgxx><Czlx>1</Czlx></Jg_xx><GJSHS><Gjsh><Shsj>2026-03-01 10:00:00</Shsj><Shjg>1</Shjg><Jlid>3</Jlid></Gjsh></GJSHS></BAJG></ICP></DownloadData>";
        assert!(parse_download_str(good).is_ok());
        for end in 0..good.len() {
            if good.is_char_boundary(end) {
                assert!(
                    parse_download_str(&good[..end]).is_err(),
                    "prefix {end} parsed"
                );
                assert!(parse_download_bytes(&good.as_bytes()[..end]).is_err());
            }
        }
        let mut junk: u32 = 0x1234_5678;
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    junk ^= junk << 13;
                    junk ^= junk >> 17;
                    junk ^= junk << 5;
                    junk as u8
                })
                .collect();
            let _ = parse_download_bytes(&bytes);
        }
        let deep = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
        assert!(matches!(
            parse_download_str(&deep),
            Err(DownloadError::TooDeep { .. })
        ));
        for bad in [
            "",
            "   ",
            "<",
            "<DownloadData",
            "&amp;",
            "<a/><b/>",
            "<a></b>",
            "<a>&bogus;</a>",
            "\u{feff}",
        ] {
            assert!(parse_download_str(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn version_is_required_and_checked() {
        assert_eq!(
            parse_download_str("<DownloadData><ICP/></DownloadData>"),
            Err(DownloadError::MissingVersion)
        );
        assert_eq!(
            parse_download_str("<DownloadData version=\"V.2.0\"><ICP/></DownloadData>"),
            Err(DownloadError::UnsupportedVersion("V.2.0".into()))
        );
        assert_eq!(
            parse_download_str("<DownloadData version=\"V.3.0\"><ICP/></DownloadData>")
                .map(|d| d.parts),
            Ok(vec![])
        );
    }

    #[test]
    fn errors_name_the_element_path() {
        let doc = "<DownloadData version=\"V.3.0\"><ICP><BASJ><Baxx><Zt_xx><Ztid>5</Ztid><Dwmc>x</Dwmc></Zt_xx>\
                   <Wz_xx><Wzid>1</Wzid><Wzmc>a</Wzmc><Jr_xx><Jrid>2</Jrid><Ip_xx><Ipid>1</Ipid><Qsip>1</Qsip><Zzip>4294967296</Zzip></Ip_xx></Jr_xx></Wz_xx>\
                   </Baxx></BASJ></ICP></DownloadData>";
        let err = parse_download_str(doc).unwrap_err();
        assert_eq!(
            err.to_string(),
            "DownloadData/ICP/BASJ/Baxx[1]/Wz_xx[1]/Jr_xx[1]/Ip_xx[1]/Zzip: \"4294967296\" is not an IPv4 address as an unsigned 32-bit integer"
        );
    }
}
