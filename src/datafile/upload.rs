//! The `UploadData` document (bureau-protocol.md sections 3, 7, 7.0, 7.1; the APP extension of
//! section 9 against `upload-data-ext.xsd`): filings with their planned ids and prepared
//! attachments → one `<ICP>` holding each operation at most once, every filing's records grouped
//! under its operation, and `Qqdwid`.
//!
//! Owns: the element tree, element order, codes by name, and refusing what the data file cannot
//! carry (every fault of every record, each naming the filing and the document path). Must not
//! touch I/O, the store or the wire: attachments come prepared (base64 JPEG), ids come planned
//! (`ids::plan_ids`), and the caller GBK-encodes the returned text (`package::encode_gbk`).
//! Optional values that are null or empty are omitted, never sent as empty elements.

use serde::{Deserialize, Serialize};

use super::ids::{IpIds, RecordIds};
use crate::attachments::max_base64_len;
use crate::codes::{
    self, CodeError, CodeTables, Table, access_method_name, attachment_use_name,
    cancel_reason_name, id_type_name, language_name, nature_name, pre_approval_name,
    service_content_name,
};
use crate::domain::{
    Access, Filing, FilingType, Language, Owner, Principal, PrincipalRef, ipv4_to_u32,
};
use crate::package::first_non_gbk;

/// The declaration every data file starts with; the text is GBK-encoded by the caller.
pub const XML_DECLARATION: &str = r#"<?xml version="1.0" encoding="GBK"?>"#;
/// At most this many records (`Baxx`, `Xzxx`, `Bgxx`, `Zx_xx`) per file (section 3).
pub const MAX_RECORDS: usize = 1000;

/// An attachment of the filing, read and re-encoded by the caller (`attachments::prepare_jpeg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedAttachment {
    /// Index into `filing.attachments`.
    pub index: usize,
    pub jpeg_base64: String,
}

/// One filing to put in the file.
#[derive(Debug, Clone, Copy)]
pub struct BuildRecord<'a> {
    pub filing: &'a Filing,
    pub ids: &'a RecordIds,
    pub attachments: &'a [PreparedAttachment],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// The account's `ispId`, sent as `Qqdwid`.
    pub isp_id: i64,
    /// The bureau enabled the `app` extension (section 9).
    pub app_extension: bool,
}

/// Something the data file cannot carry. `field` is the path in the filing document; `code`
/// the kind of fault (the [`fault`] names), reported as a preflight finding's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("filing {filing_id}: {field}: {message}")]
pub struct BuildError {
    pub filing_id: String,
    pub field: String,
    pub message: String,
    #[serde(default)]
    pub code: String,
}

/// The kinds of [`BuildError`] (the interface's own limits, bureau-protocol.md section 7).
pub mod fault {
    /// A value the data file requires is empty.
    pub const REQUIRED: &str = "REQUIRED";
    /// A text is shorter or longer than the schema allows.
    pub const TEXT_LENGTH: &str = "TEXT_LENGTH";
    /// A character GBK (or XML 1.0) cannot carry.
    pub const NOT_GBK: &str = "NOT_GBK";
    /// A word the bureau's code table lacks, marks invalid, or gives an id out of range.
    pub const CODE_TABLE: &str = "CODE_TABLE";
    /// Anything else the data file cannot carry.
    pub const DATAFILE: &str = "DATAFILE";
}

/// The operation a filing's records go under (section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Xzba,
    Xzwz,
    Xzjr,
    Bgba,
    Zxba,
}

impl Operation {
    pub const ALL: [Operation; 5] = [Self::Xzba, Self::Xzwz, Self::Xzjr, Self::Bgba, Self::Zxba];

    pub fn of(filing: &Filing) -> Self {
        match filing.filing_type {
            FilingType::First => Self::Xzba,
            FilingType::App if filing.subject.record_number.is_none() => Self::Xzba,
            FilingType::App | FilingType::AddSite => Self::Xzwz,
            FilingType::AddAccess => Self::Xzjr,
            FilingType::ChangeSubject | FilingType::ChangeSite | FilingType::ChangeAccess => {
                Self::Bgba
            }
            FilingType::CancelSubject | FilingType::CancelSite | FilingType::CancelAccess => {
                Self::Zxba
            }
        }
    }

    pub fn element(self) -> &'static str {
        match self {
            Self::Xzba => "XZBA",
            Self::Xzwz => "XZWZ",
            Self::Xzjr => "XZJR",
            Self::Bgba => "BGBA",
            Self::Zxba => "ZXBA",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The record elements (`Baxx`, `Xzxx`, `Bgxx`, `Zx_xx`) `filing` contributes.
pub fn record_count(filing: &Filing) -> usize {
    match filing.filing_type {
        FilingType::AddAccess | FilingType::CancelSite | FilingType::CancelAccess => {
            filing.websites.len()
        }
        _ => 1,
    }
}

/// Builds the data file for `records`, or every fault found in any of them.
pub fn build_upload_xml(
    records: &[BuildRecord<'_>],
    codes: &CodeTables,
    opts: &BuildOptions,
) -> Result<String, Vec<BuildError>> {
    let mut errors = Vec::new();
    let file_error = |message: String| BuildError {
        filing_id: "(file)".into(),
        field: "(file)".into(),
        message,
        code: fault::DATAFILE.into(),
    };
    if records.is_empty() {
        errors.push(file_error("a data file needs at least one record".into()));
    }
    if opts.isp_id < 1 {
        errors.push(file_error(format!(
            "Qqdwid (ispId) must be ≥ 1, got {}",
            opts.isp_id
        )));
    }
    let total: usize = records.iter().map(|r| record_count(r.filing)).sum();
    if total > MAX_RECORDS {
        errors.push(file_error(format!(
            "{total} records exceed the {MAX_RECORDS} a file may carry; split the batch"
        )));
    }
    // Sized up front: a file is mostly attachment base64 (up to 50 MB), so growing by doubling
    // would copy it several times over.
    let mut capacity = [0usize; 5];
    for rec in records {
        let attachments: usize = rec
            .attachments
            .iter()
            .map(|a| a.jpeg_base64.len() + 160)
            .sum();
        capacity[Operation::of(rec.filing).index()] += attachments + 4096;
    }
    let mut bodies: [String; 5] = capacity.map(String::with_capacity);
    for rec in records {
        let op = Operation::of(rec.filing);
        let mut b = RecordBuilder {
            f: rec.filing,
            ids: rec.ids,
            prepared: rec.attachments,
            codes,
            op,
            out: &mut bodies[op.index()],
            errors: &mut errors,
        };
        if rec.filing.filing_type == FilingType::App && !opts.app_extension {
            b.err(
                "type",
                "APP filings need the bureau's `app` extension, which is not enabled",
            );
            continue;
        }
        b.record();
    }
    if !errors.is_empty() {
        // A value used twice (a `sameAsSubject` principal) is reported once.
        let mut seen = std::collections::HashSet::new();
        errors.retain(|e| seen.insert((e.filing_id.clone(), e.field.clone(), e.message.clone())));
        return Err(errors);
    }
    let size: usize = bodies.iter().map(String::len).sum();
    let mut xml = String::with_capacity(size + 200);
    xml.push_str(XML_DECLARATION);
    xml.push_str(r#"<UploadData version="V.3.0"><ICP>"#);
    for op in Operation::ALL {
        let body = &bodies[op.index()];
        if !body.is_empty() {
            push_open(&mut xml, op.element());
            xml.push_str(body);
            push_close(&mut xml, op.element());
        }
    }
    push_num(&mut xml, "Qqdwid", opts.isp_id);
    xml.push_str("</ICP></UploadData>");
    Ok(xml)
}

fn push_open(out: &mut String, tag: &str) {
    out.push('<');
    out.push_str(tag);
    out.push('>');
}

fn push_close(out: &mut String, tag: &str) {
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

fn push_num(out: &mut String, tag: &str, v: i64) {
    push_open(out, tag);
    out.push_str(&v.to_string());
    push_close(out, tag);
}

/// The fault of a value the XML cannot carry: a character outside GBK, or one XML 1.0 forbids.
fn unsendable_char(value: &str) -> Option<String> {
    if let Some(c) = value.chars().find(|&c| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}'
    }) {
        return Some(format!(
            "control character U+{:04X} cannot be sent",
            c as u32
        ));
    }
    first_non_gbk(value).map(|c| {
        format!(
            "character {c:?} (U+{:04X}) cannot be represented in GBK",
            c as u32
        )
    })
}

/// Text bounds of an element (XSD `minLength` / `maxLength`, in characters).
#[derive(Clone, Copy)]
struct Len(usize, usize);

/// How `Fjssdx/Ssdxbs` is written: a bare id (XZBA) or the choice `Jlid | Baxh`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ssdxbs {
    Bare,
    Choice,
}

struct RecordBuilder<'a, 'o> {
    f: &'a Filing,
    ids: &'a RecordIds,
    prepared: &'a [PreparedAttachment],
    codes: &'a CodeTables,
    op: Operation,
    out: &'o mut String,
    errors: &'o mut Vec<BuildError>,
}

impl<'a> RecordBuilder<'a, '_> {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let message = message.into();
        // "required (Tag) but empty" is how every empty required value is worded here.
        let code = if message.starts_with("required") && message.ends_with("but empty") {
            fault::REQUIRED
        } else {
            fault::DATAFILE
        };
        self.fault(code, field, message);
    }

    fn fault(&mut self, code: &str, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(BuildError {
            filing_id: self.f.id.clone(),
            field: field.into(),
            message: message.into(),
            code: code.to_owned(),
        });
    }

    fn open(&mut self, tag: &str) {
        push_open(self.out, tag);
    }

    fn close(&mut self, tag: &str) {
        push_close(self.out, tag);
    }

    fn num(&mut self, tag: &str, v: i64) {
        push_num(self.out, tag, v);
    }

    /// A text element: omitted when optional and empty; checked against the schema's length
    /// and against GBK.
    fn text(&mut self, tag: &str, field: &str, value: Option<&str>, required: bool, len: Len) {
        let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
            if required {
                self.err(field, format!("required ({tag}) but empty"));
            }
            return;
        };
        if let Some(message) = unsendable_char(v) {
            self.fault(fault::NOT_GBK, field, message);
        }
        let n = v.chars().count();
        if n < len.0 || n > len.1 {
            self.fault(
                fault::TEXT_LENGTH,
                field,
                format!("{tag} must be {}–{} characters, got {n}", len.0, len.1),
            );
        }
        push_open(self.out, tag);
        self.out.push_str(&quick_xml::escape::escape(v));
        push_close(self.out, tag);
    }

    /// A required id: `what` names it in the error when it was not planned.
    fn id(&mut self, tag: &str, field: &str, v: Option<i64>) {
        match v {
            Some(v) if v >= 1 => self.num(tag, v),
            Some(v) => self.err(field, format!("{tag} must be ≥ 1, got {v}")),
            None => self.err(
                field,
                format!("{tag} is unknown (ids not planned or not resolved)"),
            ),
        }
    }

    /// A code by entry name, within the schema's range.
    fn code(&mut self, tag: &str, field: &str, table: Table, name: &str, range: (i64, i64)) {
        match self.codes.id_in_range(table, name, range.0, range.1) {
            Ok(id) => self.num(tag, id),
            Err(e) => self.code_err(field, e),
        }
    }

    fn code_err(&mut self, field: &str, e: CodeError) {
        self.fault(fault::CODE_TABLE, field, e.to_string());
    }

    // ---- records ----

    fn record(&mut self) {
        let f = self.f;
        let t = f.filing_type;
        if t != FilingType::App && !f.apps.is_empty() {
            self.err("apps", "apps are filed with the APP type only");
        }
        match self.op {
            Operation::Xzba => self.baxx(),
            Operation::Xzwz => self.xzwz(),
            Operation::Xzjr => {
                if f.websites.is_empty() {
                    self.err("websites", "an access filing names at least one website");
                }
                for i in 0..f.websites.len() {
                    self.xzjr(i);
                }
            }
            Operation::Bgba => self.bgxx(),
            Operation::Zxba => self.zx_xx(),
        }
    }

    fn baxx(&mut self) {
        self.open("Baxx");
        self.subject_new();
        self.new_records();
        self.attachments(Ssdxbs::Bare, |_| true);
        self.close("Baxx");
    }

    fn xzwz(&mut self) {
        self.open("Xzxx");
        self.open("Zt_xx");
        let f = self.f;
        match (self.ids.ztid, f.subject.record_number.as_deref()) {
            (Some(ztid), _) => self.id("Ztid", "subject.recordNumber", Some(ztid)),
            (None, n) => self.text("Ztbah", "subject.recordNumber", n, true, Len(1, 128)),
        }
        self.close("Zt_xx");
        self.new_records();
        self.attachments(Ssdxbs::Choice, |_| true);
        self.icpmm(false);
        self.close("Xzxx");
    }

    /// The new websites (and, with the APP type, apps) of an XZBA or XZWZ record.
    fn new_records(&mut self) {
        let f = self.f;
        let app = f.filing_type == FilingType::App;
        if app && f.apps.is_empty() {
            self.err("apps", "an APP filing carries at least one app");
        }
        if !app && f.websites.is_empty() {
            self.err("websites", "at least one website is required");
        }
        for i in 0..f.websites.len() {
            self.website(i, false);
        }
        if app {
            for i in 0..f.apps.len() {
                self.app(i);
            }
        }
    }

    fn xzjr(&mut self, i: usize) {
        let f = self.f;
        let w = &f.websites[i];
        let path = format!("websites[{i}]");
        let site = self.ids.websites.get(i);
        self.open("Xzxx");
        self.open("Wz_xx");
        match (site.and_then(|s| s.wzid), w.record_number.as_deref()) {
            (Some(wzid), _) => self.id("Wzid", &format!("{path}.recordNumber"), Some(wzid)),
            (None, n) => self.text(
                "Wzbah",
                &format!("{path}.recordNumber"),
                n,
                true,
                Len(1, 128),
            ),
        }
        self.close("Wz_xx");
        let (isp_jrid, ips) = site.map_or((None, &[][..]), |s| (s.isp_jrid, s.ips.as_slice()));
        self.access_body(&path, w.access.as_ref(), ("IspJrid", isp_jrid), ips, false);
        // Subject-owned attachments travel once, with the first website.
        self.attachments(Ssdxbs::Choice, |o| {
            o == Owner::Website(i) || (i == 0 && o == Owner::Subject)
        });
        self.icpmm(true);
        self.close("Xzxx");
    }

    fn bgxx(&mut self) {
        let f = self.f;
        self.open("Bgxx");
        self.subject_bgba();
        if f.websites.is_empty() {
            self.err(
                "websites",
                "a change record holds at least one website (the schema requires Wz_xx)",
            );
        }
        for i in 0..f.websites.len() {
            self.website(i, true);
        }
        self.attachments(Ssdxbs::Choice, |_| true);
        self.icpmm(false);
        self.close("Bgxx");
    }

    fn zx_xx(&mut self) {
        let f = self.f;
        if !f.attachments.is_empty() {
            self.err(
                "attachments",
                "a cancellation (ZXBA) carries no attachments",
            );
        }
        let reason = f.cancel_reason.map(cancel_reason_name);
        if reason.is_none() {
            self.err("cancelReason", "required (Zxly) but empty");
        }
        let targets: Vec<(i64, String, Option<i64>)> = match f.filing_type {
            FilingType::CancelSubject => {
                vec![(0, "subject.recordNumber".into(), self.ids.ztid)]
            }
            FilingType::CancelSite => (0..f.websites.len())
                .map(|i| {
                    let wzid = self.ids.websites.get(i).and_then(|s| s.wzid);
                    (1, format!("websites[{i}].recordNumber"), wzid)
                })
                .collect(),
            _ => (0..f.websites.len())
                .map(|i| {
                    let jrid = self.ids.websites.get(i).and_then(|s| s.jrid);
                    (2, format!("websites[{i}].access"), jrid)
                })
                .collect(),
        };
        if targets.is_empty() {
            self.err("websites", "nothing to cancel");
        }
        for (zxlb, field, jlid) in targets {
            self.open("Zx_xx");
            self.num("Zxlb", zxlb);
            self.id("Jlid", &field, jlid);
            if let Some(name) = reason {
                self.code("Zxly", "cancelReason", Table::Zxly, name, (1, 999));
            }
            self.text(
                "Zxlybz",
                "cancelRemark",
                f.cancel_remark.as_deref(),
                false,
                Len(1, 1000),
            );
            self.icpmm(zxlb == 0);
            self.close("Zx_xx");
        }
    }

    fn icpmm(&mut self, required: bool) {
        let value = self
            .f
            .icp_password_md5
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty());
        match value {
            None if required => self.err("icpPasswordMd5", "required (ICPmm) but empty"),
            None => {}
            Some(v) if v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                let lower = v.to_ascii_lowercase();
                self.text("ICPmm", "icpPasswordMd5", Some(&lower), true, Len(1, 32));
            }
            Some(_) => self.err("icpPasswordMd5", "must be an MD5 in hex (32 hex digits)"),
        }
    }

    // ---- subject ----

    fn subject_new(&mut self) {
        let s = &self.f.subject;
        self.open("Zt_xx");
        self.id("IspZtid", "subject", self.ids.isp_ztid);
        self.text("Dwmc", "subject.name", s.name.as_deref(), true, Len(1, 255));
        self.nature();
        self.text(
            "Tzr",
            "subject.investor",
            s.investor.as_deref(),
            false,
            Len(1, 255),
        );
        self.txdz();
        self.zj(999);
        self.principal("Fzr", s.principal.as_ref(), "subject.principal", false);
        self.num("Bbfs", 1);
        self.text(
            "Bz",
            "subject.remark",
            s.remark.as_deref(),
            false,
            Len(1, 1024),
        );
        self.close("Zt_xx");
    }

    fn subject_bgba(&mut self) {
        let s = &self.f.subject;
        self.open("Zt_xx");
        self.id("Ztid", "subject.recordNumber", self.ids.ztid);
        self.text("Dwmc", "subject.name", s.name.as_deref(), true, Len(1, 255));
        self.text(
            "Baxh",
            "subject.recordNumber",
            s.record_number.as_deref(),
            true,
            Len(1, 128),
        );
        self.nature();
        self.text(
            "Tzr",
            "subject.investor",
            s.investor.as_deref(),
            false,
            Len(1, 255),
        );
        self.txdz();
        self.zj(11);
        self.principal("Fzr", s.principal.as_ref(), "subject.principal", false);
        self.text(
            "Bz",
            "subject.remark",
            s.remark.as_deref(),
            false,
            Len(1, 1024),
        );
        self.close("Zt_xx");
    }

    fn nature(&mut self) {
        if let Some(n) = self.f.subject.nature {
            self.code(
                "Dwxz",
                "subject.nature",
                Table::Dwxz,
                nature_name(n),
                (1, 999),
            );
        }
    }

    /// `Txdz{Shengid, Shiid, Xianid?, Xxdz?}` from a prefecture- or county-level region.
    fn txdz(&mut self) {
        let s = &self.f.subject;
        self.open("Txdz");
        match region_ids(self.codes, s.region.as_deref()) {
            Ok((sheng, shi, xian)) => {
                self.num("Shengid", sheng);
                self.num("Shiid", shi);
                if let Some(x) = xian {
                    self.num("Xianid", x);
                }
            }
            Err(message) => self.err("subject.region", message),
        }
        self.text(
            "Xxdz",
            "subject.address",
            s.address.as_deref(),
            false,
            Len(1, 1024),
        );
        self.close("Txdz");
    }

    fn zj(&mut self, zjlx_max: i64) {
        let s = &self.f.subject;
        self.open("Zj");
        match s.id_type {
            Some(t) => self.code(
                "Zjlx",
                "subject.idType",
                Table::Zjlx,
                id_type_name(t),
                (1, zjlx_max),
            ),
            None => self.err("subject.idType", "required (Zjlx) but empty"),
        }
        self.text(
            "Zjhm",
            "subject.idNumber",
            s.id_number.as_deref(),
            true,
            Len(1, 255),
        );
        self.text(
            "Zjzs",
            "subject.idAddress",
            s.id_address.as_deref(),
            true,
            Len(1, 1024),
        );
        self.close("Zj");
    }

    /// `Fzr` / `Wz_Fzr` / `App_Fzr`, in the `Fzr` sequence's order (valid for the `all`s too).
    fn principal(&mut self, tag: &str, p: Option<&Principal>, path: &str, name_required: bool) {
        let Some(p) = p else {
            self.err(path, format!("required ({tag}) but empty"));
            return;
        };
        let field = |name: &str| format!("{path}.{name}");
        self.open(tag);
        self.text(
            "Fzr_xm",
            &field("name"),
            p.name.as_deref(),
            name_required,
            Len(1, 128),
        );
        self.text(
            "Fzr_dhhm",
            &field("officePhone"),
            p.office_phone.as_deref(),
            false,
            Len(11, 128),
        );
        self.text(
            "Fzr_sjhm",
            &field("mobile"),
            p.mobile.as_deref(),
            true,
            Len(11, 128),
        );
        self.text(
            "Fzr_dzyj",
            &field("email"),
            p.email.as_deref(),
            true,
            Len(6, 128),
        );
        if let Some(t) = p.id_type {
            self.code(
                "Fzr_zjlx",
                &field("idType"),
                Table::Zjlx,
                id_type_name(t),
                (1, 999),
            );
        }
        self.text(
            "Fzr_zjhm",
            &field("idNumber"),
            p.id_number.as_deref(),
            false,
            Len(1, 128),
        );
        self.close(tag);
    }

    /// The principal a website or app refers to, and the document path its values come from.
    fn resolve_principal(
        &self,
        r: Option<&'a PrincipalRef>,
        own_path: &str,
    ) -> (Option<&'a Principal>, String) {
        match r {
            None => (None, own_path.to_owned()),
            Some(PrincipalRef::SameAsSubject) => (
                self.f.subject.principal.as_ref(),
                "subject.principal".into(),
            ),
            Some(PrincipalRef::Own(p)) => (Some(p), own_path.to_owned()),
        }
    }

    // ---- websites and apps ----

    /// `Wz_xx` of a new website (XZBA, XZWZ) or the complete filed one (`bgba`).
    fn website(&mut self, i: usize, bgba: bool) {
        let f = self.f;
        let w = &f.websites[i];
        let path = format!("websites[{i}]");
        let Some(ids) = self.ids.websites.get(i) else {
            self.err(&path, "no ids planned for this website");
            return;
        };
        self.open("Wz_xx");
        if bgba {
            self.id("Wzid", &format!("{path}.recordNumber"), ids.wzid);
        } else {
            self.id("IspWzid", &path, ids.isp_wzid);
        }
        self.text(
            "Wzmc",
            &format!("{path}.name"),
            w.name.as_deref(),
            true,
            Len(1, 512),
        );
        self.nrlx(i);
        self.open("Fwnr");
        match w.service_content {
            Some(s) => self.code(
                "Fwnr_id",
                &format!("{path}.serviceContent"),
                Table::Wzfwlx,
                service_content_name(s),
                (1, 64),
            ),
            None => self.err(
                format!("{path}.serviceContent"),
                "required (Fwnr_id) but empty",
            ),
        }
        self.close("Fwnr");
        self.yylb(&w.languages, &format!("{path}.languages"));
        self.domain(i, bgba);
        self.open("Jr_xx");
        let access_id = if bgba {
            ("Jrid", ids.jrid)
        } else {
            ("IspJrid", ids.isp_jrid)
        };
        self.access_body(&path, w.access.as_ref(), access_id, &ids.ips, bgba);
        self.close("Jr_xx");
        let (p, p_path) =
            self.resolve_principal(w.principal.as_ref(), &format!("{path}.principal"));
        self.principal("Wz_Fzr", p, &p_path, true);
        if bgba {
            let n = w.record_number.as_deref();
            self.text(
                "Baxh",
                &format!("{path}.recordNumber"),
                n,
                true,
                Len(1, 128),
            );
        }
        match w.home_urls.as_slice() {
            [] => {}
            [url] => self.text(
                "Syurl",
                &format!("{path}.homeUrls[0]"),
                Some(url),
                false,
                Len(4, 255),
            ),
            _ => self.err(
                format!("{path}.homeUrls"),
                "the data file holds one home URL per website",
            ),
        }
        self.text(
            "Wz_Bz",
            &format!("{path}.remark"),
            w.remark.as_deref(),
            false,
            Len(1, 1024),
        );
        self.close("Wz_xx");
    }

    fn nrlx(&mut self, i: usize) {
        let f = self.f;
        let list = &f.websites[i].pre_approvals;
        if list.is_empty() {
            return;
        }
        if list.len() > 64 {
            self.err(
                format!("websites[{i}].preApprovals"),
                "at most 64 pre-approvals",
            );
        }
        self.open("Nrlx");
        for (k, pa) in list.iter().enumerate() {
            let path = format!("websites[{i}].preApprovals[{k}]");
            self.open("Nrlx_xx");
            match pa.kind {
                Some(kind) => self.code(
                    "Nrlx_id",
                    &format!("{path}.kind"),
                    Table::Wzjylx,
                    pre_approval_name(kind),
                    (1, 64),
                ),
                None => self.err(format!("{path}.kind"), "required (Nrlx_id) but empty"),
            }
            self.text(
                "Qzsph",
                &format!("{path}.number"),
                pa.number.as_deref(),
                true,
                Len(1, 512),
            );
            let field = format!("{path}.attachment");
            let prepared = pa.attachment.as_deref().and_then(|p| {
                let j = f
                    .attachments
                    .iter()
                    .position(|a| a.path.as_deref() == Some(p))?;
                self.prepared.iter().find(|x| x.index == j)
            });
            match prepared {
                Some(x) if x.jpeg_base64.is_empty() => self.err(&field, "the prepared attachment is empty"),
                Some(x) => {
                    let limit = max_base64_len(crate::domain::AttachmentKind::PreApproval);
                    if x.jpeg_base64.len() > limit {
                        self.err(&field, format!("Spwj is {} bytes of base64, over {limit}", x.jpeg_base64.len()));
                    }
                    let b64 = x.jpeg_base64.as_str();
                    push_open(self.out, "Spwj");
                    self.out.push_str(b64);
                    push_close(self.out, "Spwj");
                }
                None => self.err(
                    &field,
                    "required (Spwj): the pre-approval's attachment is not among the prepared attachments",
                ),
            }
            self.close("Nrlx_xx");
        }
        self.close("Nrlx");
    }

    fn yylb(&mut self, languages: &[Language], path: &str) {
        if languages.is_empty() {
            self.err(path, "at least one language is required (Yylb_id)");
        }
        self.open("Yylb");
        for (k, l) in languages.iter().enumerate() {
            self.code(
                "Yylb_id",
                &format!("{path}[{k}]"),
                Table::Yylb,
                language_name(*l),
                (1, 64),
            );
        }
        self.close("Yylb");
    }

    /// `Ym_xx`: exactly one domain per website (since 2019), lowercase ASCII.
    fn domain(&mut self, i: usize, bgba: bool) {
        let w = &self.f.websites[i];
        let path = format!("websites[{i}].domains");
        let domain = match w.domains.as_slice() {
            [] => {
                self.err(&path, "required (Ym) but empty");
                return;
            }
            [d] => d,
            _ => {
                self.err(
                    &path,
                    "a website carries exactly one domain; file another as a second website",
                );
                return;
            }
        };
        let field = format!("{path}[0]");
        let Some(ym) = ascii_domain(domain) else {
            self.err(
                &field,
                "not a domain name that can be written in ASCII (punycode)",
            );
            return;
        };
        let ids = self
            .ids
            .websites
            .get(i)
            .and_then(|s| s.domains.first())
            .cloned();
        self.open("Ym_xx");
        self.id("IspYmid", &field, ids.as_ref().map(|d| d.isp_ymid));
        if let Some(ymid) = ids.as_ref().and_then(|d| d.ymid).filter(|_| bgba) {
            self.num("Ymid", ymid);
        }
        self.text("Ym", &field, Some(&ym), true, Len(4, 128));
        self.close("Ym_xx");
    }

    /// `{Isp}Jrid, Wzfb{Fbdd}, Wzjrfs{Jrfs}, Ip_xx+` (inside `Jr_xx`, or directly in XZJR).
    fn access_body(
        &mut self,
        owner_path: &str,
        access: Option<&Access>,
        (id_tag, id): (&str, Option<i64>),
        ips: &[IpIds],
        with_ipid: bool,
    ) {
        let path = format!("{owner_path}.access");
        let Some(a) = access else {
            self.err(&path, "required (Jr_xx) but empty");
            return;
        };
        self.id(id_tag, &path, id);
        self.open("Wzfb");
        match a.location.as_deref() {
            Some(loc) => match self.codes.location_id(loc) {
                Ok(id) => self.num("Fbdd", id),
                Err(e) => self.code_err(&format!("{path}.location"), e),
            },
            None => self.err(format!("{path}.location"), "required (Fbdd) but empty"),
        }
        self.close("Wzfb");
        self.open("Wzjrfs");
        match a.method {
            Some(m) => self.code(
                "Jrfs",
                &format!("{path}.method"),
                Table::Wzjrfs,
                access_method_name(m),
                (1, 64),
            ),
            None => self.err(format!("{path}.method"), "required (Jrfs) but empty"),
        }
        self.close("Wzjrfs");
        if a.ips.is_empty() {
            self.err(
                format!("{path}.ips"),
                "at least one IP address is required (Ip_xx)",
            );
        }
        for (k, ip) in a.ips.iter().enumerate() {
            let field = format!("{path}.ips[{k}]");
            let n = match ipv4_to_u32(ip.trim()) {
                Some(0) | None => {
                    self.err(
                        &field,
                        "not a sendable IPv4 address (the data file carries IPv4 only)",
                    );
                    continue;
                }
                Some(n) => i64::from(n),
            };
            let ids = ips.get(k);
            self.open("Ip_xx");
            self.id("IspIpid", &field, ids.map(|x| x.isp_ipid));
            if let Some(ipid) = ids.and_then(|x| x.ipid).filter(|_| with_ipid) {
                self.num("Ipid", ipid);
            }
            self.num("Qsip", n);
            self.num("Zzip", n);
            self.close("Ip_xx");
        }
    }

    /// `App_xx` (APP extension).
    fn app(&mut self, i: usize) {
        let f = self.f;
        let a = &f.apps[i];
        let path = format!("apps[{i}]");
        if a.record_number.is_some() {
            self.err(
                format!("{path}.recordNumber"),
                "an APP filing files new apps only",
            );
        }
        let Some(ids) = self.ids.apps.get(i) else {
            self.err(&path, "no ids planned for this app");
            return;
        };
        self.open("App_xx");
        self.id("IspAppid", &path, ids.isp_appid);
        self.text(
            "Appmc",
            &format!("{path}.name"),
            a.name.as_deref(),
            true,
            Len(1, 255),
        );
        match a.platform {
            Some(p) => self.num("Pt", p.code()),
            None => self.err(format!("{path}.platform"), "required (Pt) but empty"),
        }
        self.text(
            "Bm",
            &format!("{path}.packageName"),
            a.package_name.as_deref(),
            true,
            Len(1, 255),
        );
        let md5 = a
            .signature_md5
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty());
        match md5 {
            Some(v) if v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                let lower = v.to_ascii_lowercase();
                self.text(
                    "Qmmd5",
                    &format!("{path}.signatureMd5"),
                    Some(&lower),
                    true,
                    Len(32, 32),
                );
            }
            Some(_) => self.err(
                format!("{path}.signatureMd5"),
                "must be an MD5 in hex (32 hex digits)",
            ),
            None => self.err(format!("{path}.signatureMd5"), "required (Qmmd5) but empty"),
        }
        self.yylb(&a.languages, &format!("{path}.languages"));
        self.open("Jr_xx");
        self.access_body(
            &path,
            a.access.as_ref(),
            ("IspJrid", ids.isp_jrid),
            &ids.ips,
            false,
        );
        self.close("Jr_xx");
        let (p, p_path) =
            self.resolve_principal(a.principal.as_ref(), &format!("{path}.principal"));
        self.principal("App_Fzr", p, &p_path, true);
        self.text(
            "App_Bz",
            &format!("{path}.remark"),
            a.remark.as_deref(),
            false,
            Len(1, 1024),
        );
        self.close("App_xx");
    }

    // ---- attachments ----

    /// `Fj/Fjxx` for the attachments whose owner `include` accepts, in document order.
    fn attachments(&mut self, mode: Ssdxbs, include: impl Fn(Owner) -> bool) {
        let f = self.f;
        for (j, a) in f.attachments.iter().enumerate() {
            let path = format!("attachments[{j}]");
            let (Some(kind), Some(owner)) = (a.kind, a.owner) else {
                if a.kind.is_none() {
                    self.err(format!("{path}.kind"), "required (Fjyt) but empty");
                }
                if a.owner.is_none() {
                    self.err(format!("{path}.owner"), "required (Fjssdx) but empty");
                }
                continue;
            };
            if !include(owner) {
                continue;
            }
            let Some(prepared) = self.prepared.iter().find(|x| x.index == j) else {
                self.err(
                    format!("{path}.path"),
                    "required (Fjnr): the attachment was not prepared",
                );
                continue;
            };
            let limit = max_base64_len(kind);
            if prepared.jpeg_base64.is_empty() || prepared.jpeg_base64.len() > limit {
                self.err(
                    format!("{path}.path"),
                    format!(
                        "Fjnr must be 1–{limit} bytes of base64, got {}",
                        prepared.jpeg_base64.len()
                    ),
                );
            }
            self.open("Fj");
            self.open("Fjxx");
            self.code(
                "Fjwjgs",
                &format!("{path}.path"),
                Table::Fjwjgs,
                codes::JPG,
                (1, i64::MAX),
            );
            self.code(
                "Fjyt",
                &format!("{path}.kind"),
                Table::Fjzjlx,
                attachment_use_name(kind, owner),
                (1, i64::MAX),
            );
            push_open(self.out, "Fjnr");
            self.out.push_str(&prepared.jpeg_base64);
            push_close(self.out, "Fjnr");
            self.open("Fjssdx");
            self.ssdx(owner, mode, &format!("{path}.owner"));
            self.close("Fjssdx");
            self.close("Fjxx");
            self.close("Fj");
        }
    }

    /// `Ssdxlx` and `Ssdxbs`: the owner's provider id for a new record; for a filed one its
    /// province id, else its record number (where the schema offers `Baxh`).
    fn ssdx(&mut self, owner: Owner, mode: Ssdxbs, field: &str) {
        let f = self.f;
        let new_sites = matches!(self.op, Operation::Xzba | Operation::Xzwz);
        let (kind, new_id, filed_id, number): (i64, Option<i64>, Option<i64>, Option<&str>) =
            match owner {
                Owner::Subject => (
                    1,
                    if self.op == Operation::Xzba {
                        self.ids.isp_ztid
                    } else {
                        None
                    },
                    self.ids.ztid,
                    f.subject.record_number.as_deref(),
                ),
                Owner::Website(i) if i < f.websites.len() => {
                    let ids = self.ids.websites.get(i);
                    (
                        2,
                        if new_sites {
                            ids.and_then(|s| s.isp_wzid)
                        } else {
                            None
                        },
                        ids.and_then(|s| s.wzid),
                        f.websites[i].record_number.as_deref(),
                    )
                }
                Owner::App(i) if i < f.apps.len() => (
                    3,
                    self.ids.apps.get(i).and_then(|a| a.isp_appid),
                    None,
                    None,
                ),
                other => {
                    self.err(field, format!("{other} names no record of this filing"));
                    return;
                }
            };
        self.num("Ssdxlx", kind);
        let is_new = match owner {
            Owner::Subject => self.op == Operation::Xzba,
            Owner::Website(_) => new_sites,
            Owner::App(_) => true,
        };
        match mode {
            Ssdxbs::Bare => self.id("Ssdxbs", field, new_id),
            Ssdxbs::Choice => {
                self.open("Ssdxbs");
                if is_new {
                    self.id("Jlid", field, new_id);
                } else if let Some(id) = filed_id {
                    self.id("Jlid", field, Some(id));
                } else {
                    self.text("Baxh", field, number, true, Len(1, 128));
                }
                self.close("Ssdxbs");
            }
        }
    }
}

/// `(Shengid, Shiid, Xianid?)` of a prefecture- (`Lx` 2) or county-level (`Lx` 3) region.
fn region_ids(codes: &CodeTables, region: Option<&str>) -> Result<(i64, i64, Option<i64>), String> {
    let region = region
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or("required (Shengid/Shiid) but empty")?;
    let code: i64 = match region.parse() {
        Ok(c) if region.len() == 6 && region.bytes().all(|b| b.is_ascii_digit()) => c,
        _ => return Err(format!("{region:?} is not a six-digit GB/T 2260 code")),
    };
    let entry = codes
        .region(region)
        .ok_or_else(|| format!("{region} is not a valid entry of the bureau's Qy_xx table"))?;
    let sheng = code / 10_000 * 10_000;
    let shi = code / 100 * 100;
    match entry.get("Lx") {
        Some("3") => Ok((sheng, shi, Some(code))),
        Some("2") => Ok((sheng, shi, None)),
        _ => Err(format!(
            "{region} must be a prefecture- or county-level region"
        )),
    }
}

/// A domain as the data file carries it: lowercase ASCII, internationalised labels in punycode
/// (`xn--…`, RFC 3492; labels are lowercased but not NFC-normalised). `None` when a label is
/// empty or cannot be encoded.
pub fn ascii_domain(domain: &str) -> Option<String> {
    let d = domain.trim();
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(d.len() + 8);
    for (k, label) in d.split('.').enumerate() {
        if label.is_empty() {
            return None;
        }
        if k > 0 {
            out.push('.');
        }
        if label.is_ascii() {
            out.push_str(&label.to_ascii_lowercase());
        } else {
            let lower: Vec<u32> = label.to_lowercase().chars().map(u32::from).collect();
            out.push_str("xn--");
            out.push_str(&punycode(&lower)?);
        }
    }
    Some(out)
}

/// RFC 3492 section 6.3 encoding of one label's code points.
fn punycode(input: &[u32]) -> Option<String> {
    const BASE: u32 = 36;
    const TMIN: u32 = 1;
    const TMAX: u32 = 26;
    const INITIAL_N: u32 = 128;
    const INITIAL_BIAS: u32 = 72;
    fn digit(d: u32) -> char {
        // d < 36 by construction
        let b = if d < 26 {
            b'a' + d as u8
        } else {
            b'0' + (d - 26) as u8
        };
        char::from(b)
    }
    fn adapt(delta: u32, points: u32, first: bool) -> u32 {
        const SKEW: u32 = 38;
        const DAMP: u32 = 700;
        let mut delta = if first { delta / DAMP } else { delta / 2 };
        delta += delta / points;
        let mut k = 0;
        while delta > ((BASE - TMIN) * TMAX) / 2 {
            delta /= BASE - TMIN;
            k += BASE;
        }
        k + (BASE - TMIN + 1) * delta / (delta + SKEW)
    }
    let mut output: String = input
        .iter()
        .filter(|&&c| c < 0x80)
        .filter_map(|&c| char::from_u32(c))
        .collect();
    let basic = output.len() as u32;
    let mut handled = basic;
    if basic > 0 {
        output.push('-');
    }
    let (mut n, mut delta, mut bias) = (INITIAL_N, 0u32, INITIAL_BIAS);
    let total = u32::try_from(input.len()).ok()?;
    while handled < total {
        let m = input.iter().copied().filter(|&c| c >= n).min()?;
        delta = delta.checked_add((m - n).checked_mul(handled + 1)?)?;
        n = m;
        for &c in input {
            if c < n {
                delta = delta.checked_add(1)?;
            }
            if c == n {
                let mut q = delta;
                let mut k = BASE;
                loop {
                    let t = if k <= bias {
                        TMIN
                    } else if k >= bias + TMAX {
                        TMAX
                    } else {
                        k - bias
                    };
                    if q < t {
                        break;
                    }
                    output.push(digit(t + (q - t) % (BASE - t)));
                    q = (q - t) / (BASE - t);
                    k += BASE;
                }
                output.push(digit(q));
                bias = adapt(delta, handled + 1, handled == basic);
                delta = 0;
                handled += 1;
            }
        }
        delta = delta.checked_add(1)?;
        n = n.checked_add(1)?;
    }
    Some(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datafile::ids::{DomainIds, EmptyRegistry, SiteRecordIds, plan_ids};

    fn fixture(name: &str) -> Filing {
        let path = format!("{}/fixtures/filings/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        crate::domain::import::parse_file(std::path::Path::new(&path), &text)
            .unwrap()
            .remove(0)
    }

    fn planned(f: &Filing) -> RecordIds {
        let mut n = 0;
        plan_ids(f, &EmptyRegistry, &mut || {
            n += 1;
            n
        })
        .unwrap()
    }

    fn placeholders(f: &Filing) -> Vec<PreparedAttachment> {
        (0..f.attachments.len())
            .map(|index| PreparedAttachment {
                index,
                jpeg_base64: "AAAA".into(),
            })
            .collect()
    }

    const OPTS: BuildOptions = BuildOptions {
        isp_id: 1_100_001_234,
        app_extension: false,
    };

    fn build_with(
        f: &Filing,
        ids: &RecordIds,
        codes: &CodeTables,
    ) -> Result<String, Vec<BuildError>> {
        let atts = placeholders(f);
        let rec = BuildRecord {
            filing: f,
            ids,
            attachments: &atts,
        };
        build_upload_xml(&[rec], codes, &OPTS)
    }

    fn build(f: &Filing) -> Result<String, Vec<BuildError>> {
        build_with(f, &planned(f), &CodeTables::bundled().unwrap())
    }

    fn fields(errors: &[BuildError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn region_split_county_and_prefecture() {
        let codes = CodeTables::bundled().unwrap();
        assert_eq!(
            region_ids(&codes, Some("110108")),
            Ok((110000, 110100, Some(110108)))
        );
        assert_eq!(
            region_ids(&codes, Some("440305")),
            Ok((440000, 440300, Some(440305)))
        );
        assert_eq!(
            region_ids(&codes, Some("440300")),
            Ok((440000, 440300, None))
        );
        assert!(
            region_ids(&codes, Some("110000")).is_err(),
            "a province is not enough"
        );
        assert!(region_ids(&codes, Some("999999")).is_err());
        assert!(region_ids(&codes, None).is_err());

        let mut f = fixture("first.json");
        f.subject.region = Some("440300".into());
        let xml = build(&f).unwrap();
        assert!(
            xml.contains("<Txdz><Shengid>440000</Shengid><Shiid>440300</Shiid><Xxdz>"),
            "{xml}"
        );
    }

    #[test]
    fn a_code_missing_from_the_table_names_the_field() {
        let mut codes = CodeTables::bundled().unwrap();
        codes.merge(
            CodeTables::parse_jcdm(
                "<DownloadData><JCDM><Jcdm_xx><Wzfwlx_dms><Wzfwlx_xx><Id>1</Id><Mc>综合门户</Mc></Wzfwlx_xx>\
                 </Wzfwlx_dms></Jcdm_xx></JCDM></DownloadData>",
            )
            .unwrap(),
        );
        let f = fixture("first.json");
        let errors = build_with(&f, &planned(&f), &codes).unwrap_err();
        assert_eq!(fields(&errors), vec!["websites[0].serviceContent"]);
        assert_eq!(errors[0].filing_id, "F-FIRST-001");
        assert!(
            errors[0].message.contains("单位门户网站"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn non_gbk_characters_and_every_other_fault_are_all_reported() {
        let mut f = fixture("first.json");
        f.subject.name = Some("北京示例😀科技有限公司".into());
        f.websites[0].remark = Some("bell\u{7}".into());
        f.websites[0].home_urls.push("www.example-first.cn".into());
        f.websites[0]
            .access
            .as_mut()
            .unwrap()
            .ips
            .push("2001:db8::1".into());
        let errors = build(&f).unwrap_err();
        assert_eq!(
            fields(&errors),
            vec![
                "subject.name",
                "websites[0].access.ips[1]",
                "websites[0].homeUrls",
                "websites[0].remark",
            ]
        );
        assert!(errors[0].message.contains("GBK"), "{}", errors[0].message);
    }

    #[test]
    fn two_domains_in_a_website_is_an_error() {
        let mut f = fixture("first.json");
        f.websites[0].domains.push("example-second.com".into());
        let ids = planned(&f);
        let errors = build_with(&f, &ids, &CodeTables::bundled().unwrap()).unwrap_err();
        assert_eq!(fields(&errors), vec!["websites[0].domains"]);
    }

    #[test]
    fn cancellations_map_to_zxlb_and_the_right_province_id() {
        let xml = build(&fixture("cancel-subject.json")).unwrap();
        assert!(
            xml.contains("<Zx_xx><Zxlb>0</Zxlb><Jlid>3300400</Jlid><Zxly>99</Zxly><Zxlybz>"),
            "{xml}"
        );
        assert!(xml.contains("<ICPmm>4b4995d729c5f3bafa2c1e037a50166a</ICPmm></Zx_xx>"));
        let xml = build(&fixture("cancel-site.json")).unwrap();
        assert!(
            xml.contains(
                "<ZXBA><Zx_xx><Zxlb>1</Zxlb><Jlid>3112001</Jlid><Zxly>1</Zxly></Zx_xx></ZXBA>"
            ),
            "{xml}"
        );
        let xml = build(&fixture("cancel-access.json")).unwrap();
        assert!(
            xml.contains(
                "<ZXBA><Zx_xx><Zxlb>2</Zxlb><Jlid>99120700</Jlid><Zxly>2</Zxly></Zx_xx></ZXBA>"
            ),
            "{xml}"
        );

        let mut f = fixture("cancel-subject.json");
        f.icp_password_md5 = None;
        assert_eq!(fields(&build(&f).unwrap_err()), vec!["icpPasswordMd5"]);
    }

    #[test]
    fn bgba_carries_province_ids_of_existing_domains_and_ips_and_new_provider_ids() {
        let mut f = fixture("change-access.json");
        f.websites[0].access.as_mut().unwrap().ips =
            vec!["203.0.113.60".into(), "203.0.113.66".into()];
        let ids = RecordIds {
            isp_ztid: None,
            ztid: Some(3_300_600),
            websites: vec![SiteRecordIds {
                isp_wzid: None,
                wzid: Some(8_812_600),
                domains: vec![DomainIds {
                    isp_ymid: 7,
                    ymid: Some(70),
                }],
                isp_jrid: None,
                jrid: Some(99_120_600),
                ips: vec![
                    IpIds {
                        isp_ipid: 8,
                        ipid: Some(80),
                    },
                    IpIds {
                        isp_ipid: 9,
                        ipid: None,
                    },
                ],
            }],
            apps: vec![],
        };
        let xml = build_with(&f, &ids, &CodeTables::bundled().unwrap()).unwrap();
        assert!(
            xml.contains(
                "<Ym_xx><IspYmid>7</IspYmid><Ymid>70</Ymid><Ym>access-change.com</Ym></Ym_xx>"
            ),
            "{xml}"
        );
        assert!(xml.contains("<Jr_xx><Jrid>99120600</Jrid>"));
        assert!(
            xml.contains("<Ip_xx><IspIpid>8</IspIpid><Ipid>80</Ipid><Qsip>3405803836</Qsip>"),
            "{xml}"
        );
        assert!(xml.contains(
            "<Ip_xx><IspIpid>9</IspIpid><Qsip>3405803842</Qsip><Zzip>3405803842</Zzip></Ip_xx>"
        ));
        assert!(xml.contains("<Baxh>京ICP备2021000006号-1</Baxh>"));
        assert!(!xml.contains("Bbfs"), "Bbfs belongs to new subjects only");
    }

    #[test]
    fn operations_group_records_and_qqdwid_closes_the_icp() {
        let a = fixture("first.json");
        let b = fixture("first-rejected.json");
        let c = fixture("add-access.json");
        let (ia, ib, ic) = (planned(&a), planned(&b), planned(&c));
        let (pa, pb, pc) = (placeholders(&a), placeholders(&b), placeholders(&c));
        let recs = [
            BuildRecord {
                filing: &c,
                ids: &ic,
                attachments: &pc,
            },
            BuildRecord {
                filing: &a,
                ids: &ia,
                attachments: &pa,
            },
            BuildRecord {
                filing: &b,
                ids: &ib,
                attachments: &pb,
            },
        ];
        let xml = build_upload_xml(&recs, &CodeTables::bundled().unwrap(), &OPTS).unwrap();
        assert!(xml.starts_with(
            r#"<?xml version="1.0" encoding="GBK"?><UploadData version="V.3.0"><ICP><XZBA><Baxx>"#
        ));
        assert_eq!(xml.matches("<XZBA>").count(), 1);
        assert_eq!(xml.matches("<Baxx>").count(), 2);
        assert!(xml.find("</XZBA><XZJR>").is_some());
        assert!(xml.ends_with("</XZJR><Qqdwid>1100001234</Qqdwid></ICP></UploadData>"));
    }

    #[test]
    fn app_needs_the_extension_and_apps_need_the_app_type() {
        let f = fixture("app.json");
        assert_eq!(fields(&build(&f).unwrap_err()), vec!["type"]);
        let mut g = fixture("first.json");
        g.apps = f.apps.clone();
        assert_eq!(fields(&build(&g).unwrap_err()), vec!["apps"]);
    }

    #[test]
    fn unprepared_attachments_and_missing_values_are_errors() {
        let mut f = fixture("first.json");
        f.subject.principal.as_mut().unwrap().mobile = None;
        f.subject.remark = Some("  ".into());
        let ids = planned(&f);
        let atts = placeholders(&f);
        let rec = BuildRecord {
            filing: &f,
            ids: &ids,
            attachments: &atts[1..],
        };
        let errors = build_upload_xml(&[rec], &CodeTables::bundled().unwrap(), &OPTS).unwrap_err();
        // Fzr_sjhm of the subject and of the website (sameAsSubject): one error, one path.
        assert_eq!(
            fields(&errors),
            vec!["subject.principal.mobile", "attachments[0].path"]
        );
    }

    #[test]
    fn record_counts() {
        assert_eq!(record_count(&fixture("first.json")), 1);
        assert_eq!(record_count(&fixture("change-subject.json")), 1);
        let mut f = fixture("add-access.json");
        f.websites.push(f.websites[0].clone());
        assert_eq!(record_count(&f), 2);
        assert_eq!(record_count(&fixture("cancel-site.json")), 1);
    }

    #[test]
    fn domains_go_lowercase_ascii_with_punycode() {
        assert_eq!(
            ascii_domain("WWW.Example.COM").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            ascii_domain("例子.测试").as_deref(),
            Some("xn--fsqu00a.xn--0zwm56d")
        );
        assert_eq!(ascii_domain("中国").as_deref(), Some("xn--fiqs8s"));
        assert_eq!(
            ascii_domain("Bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(ascii_domain("a..b"), None);
        assert_eq!(ascii_domain(""), None);
    }
}
