//! Code tables per bureau (bureau-protocol.md section 7.1): the gateway's words → the entry
//! names that are the contract → the numeric ids of the latest JCDM the bureau sent.
//!
//! Owns: parsing JCDM documents, merging them table by table, and lookups. Must not touch the
//! store or the network: the store keeps the tables as JCDM XML per bureau, this module reads it.

use std::collections::{BTreeMap, HashMap};

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::domain::{
    AccessMethod, AttachmentKind, CancelReason, IdType, Language, Nature, Owner, PreApprovalKind,
    ServiceContent,
};

/// The bundled default tables (a copy of ../shared/miit-v3/jcdm-default.xml).
pub const DEFAULT_JCDM: &str = include_str!("../config/jcdm-default.xml");

/// The text of an XML entity or character reference (`amp`, `#20013`, `#x4E2D`).
fn resolve_reference(name: &str) -> Option<String> {
    let ch = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let code =
                if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    name.strip_prefix('#')?.parse().ok()?
                };
            char::from_u32(code)?
        }
    };
    Some(ch.to_string())
}

/// The JCDM tables the gateway uses, by entry element name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Dwxz,
    Qy,
    GjDm,
    Zjlx,
    Wzjylx,
    Wzfwlx,
    Wzjrfs,
    Zxly,
    Fjwjgs,
    Fjzjlx,
    Yylb,
}

impl Table {
    pub fn element(self) -> &'static str {
        match self {
            Self::Dwxz => "Dwxz_xx",
            Self::Qy => "Qy_xx",
            Self::GjDm => "Gj_dm_xx",
            Self::Zjlx => "Zjlx_xx",
            Self::Wzjylx => "Wzjylx_xx",
            Self::Wzfwlx => "Wzfwlx_xx",
            Self::Wzjrfs => "Wzjrfs_xx",
            Self::Zxly => "Zxly_xx",
            Self::Fjwjgs => "Fjwjgs",
            Self::Fjzjlx => "Fjzjlx",
            Self::Yylb => "Yylb",
        }
    }
}

/// One entry: its fields as text (`Id`, `Mc`/`Nr`, `Sfyx`, and table-specific ones).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    pub fields: BTreeMap<String, String>,
}

impl Entry {
    pub fn id(&self) -> Option<i64> {
        self.fields.get("Id")?.trim().parse().ok()
    }
    pub fn name(&self) -> Option<&str> {
        self.fields
            .get("Mc")
            .or_else(|| self.fields.get("Nr"))
            .map(|s| s.trim())
    }
    /// `Sfyx` 0 marks an entry no longer valid; absent means valid.
    pub fn valid(&self) -> bool {
        self.fields
            .get("Sfyx")
            .map(|s| s.trim() != "0")
            .unwrap_or(true)
    }
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(|s| s.trim())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    #[error("code table {table} has no valid entry named {name:?}")]
    Missing { table: &'static str, name: String },
    #[error(
        "code table {table}: entry {name:?} has id {id}, outside the schema's range {min}..={max}"
    )]
    OutOfRange {
        table: &'static str,
        name: String,
        id: i64,
        min: i64,
        max: i64,
    },
    #[error("JCDM document is malformed: {0}")]
    Malformed(String),
}

/// All tables of one bureau: entry element name → entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeTables {
    tables: HashMap<String, Vec<Entry>>,
    /// Table element → trimmed name → index of the first valid entry of that name: preflight
    /// and build look names up for every field of every filing (derived from `tables`).
    by_name: HashMap<String, HashMap<String, usize>>,
    /// Region code (`Qy_xx` `Id`) → index of its first valid entry (about 3,000 regions).
    regions: HashMap<String, usize>,
}

impl CodeTables {
    /// The bundled default tables.
    pub fn bundled() -> Result<Self, CodeError> {
        Self::parse_jcdm(DEFAULT_JCDM)
    }

    /// Parses a JCDM document (`DownloadData/JCDM/Jcdm_xx/{X_dms}/{entry}*`). Any table wrapper
    /// is accepted: an entry is an element whose children are all text fields.
    pub fn parse_jcdm(xml: &str) -> Result<Self, CodeError> {
        let mut reader = Reader::from_str(xml);
        reader.config_mut().trim_text(true);
        let mut stack: Vec<String> = Vec::new();
        let mut tables: HashMap<String, Vec<Entry>> = HashMap::new();
        let mut current: Option<(String, Entry)> = None;
        let mut text = String::new();
        let mut saw_jcdm = false;
        loop {
            match reader.read_event() {
                Ok(Event::Start(e)) => {
                    let name = e.local_name().into_inner().to_owned();
                    if name == "JCDM" {
                        saw_jcdm = true;
                    }
                    // depth: DownloadData(0) JCDM(1) Jcdm_xx(2) X_dms(3) entry(4) field(5)
                    if stack.len() == 4 && stack[1] == "JCDM" {
                        current = Some((name.clone(), Entry::default()));
                    }
                    text.clear();
                    stack.push(name);
                }
                Ok(Event::Empty(e)) => {
                    let name = e.local_name().into_inner().to_owned();
                    if stack.len() == 5
                        && let Some((_, entry)) = current.as_mut()
                    {
                        entry.fields.insert(name, String::new());
                    }
                }
                Ok(Event::Text(t)) => {
                    text.push_str(&t.xml10_content());
                }
                Ok(Event::GeneralRef(r)) => {
                    let name: &str = r.as_ref();
                    text.push_str(&resolve_reference(name).ok_or_else(|| {
                        CodeError::Malformed(format!("unknown entity reference &{name};"))
                    })?);
                }
                Ok(Event::End(_)) => {
                    let name = stack.pop().unwrap_or_default();
                    if stack.len() == 5 {
                        if let Some((_, entry)) = current.as_mut() {
                            entry.fields.insert(name, std::mem::take(&mut text));
                        }
                    } else if stack.len() == 4
                        && let Some((element, entry)) = current.take()
                    {
                        tables.entry(element).or_default().push(entry);
                    }
                    text.clear();
                }
                Ok(Event::Eof) => break,
                Ok(_) => {}
                Err(e) => return Err(CodeError::Malformed(e.to_string())),
            }
        }
        if !saw_jcdm {
            return Err(CodeError::Malformed("no JCDM element".into()));
        }
        let mut tables = Self {
            tables,
            by_name: HashMap::new(),
            regions: HashMap::new(),
        };
        tables.reindex();
        Ok(tables)
    }

    /// Rebuilds the lookups from `tables`: the first valid entry wins, as a scan would find.
    fn reindex(&mut self) {
        self.by_name.clear();
        self.regions.clear();
        for (element, entries) in &self.tables {
            for (i, e) in entries.iter().enumerate() {
                if !e.valid() {
                    continue;
                }
                if let Some(name) = e.name() {
                    self.by_name
                        .entry(element.clone())
                        .or_default()
                        .entry(name.to_owned())
                        .or_insert(i);
                }
                if element == Table::Qy.element()
                    && let Some(id) = e.get("Id")
                {
                    self.regions.entry(id.to_owned()).or_insert(i);
                }
            }
        }
    }

    /// Replaces exactly the tables `newer` carries (section 5: JCDM).
    pub fn merge(&mut self, newer: CodeTables) {
        for (k, v) in newer.tables {
            self.tables.insert(k, v);
        }
        self.reindex();
    }

    pub fn entries(&self, table: Table) -> &[Entry] {
        self.tables
            .get(table.element())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The id of the valid entry named `name` in `table`.
    pub fn id_by_name(&self, table: Table, name: &str) -> Result<i64, CodeError> {
        self.by_name
            .get(table.element())
            .and_then(|names| names.get(name))
            .and_then(|&i| self.entries(table).get(i))
            .and_then(Entry::id)
            .ok_or_else(|| CodeError::Missing {
                table: table.element(),
                name: name.to_owned(),
            })
    }

    /// Like [`Self::id_by_name`], also checking the upload schema's range for the element.
    pub fn id_in_range(
        &self,
        table: Table,
        name: &str,
        min: i64,
        max: i64,
    ) -> Result<i64, CodeError> {
        let id = self.id_by_name(table, name)?;
        if id < min || id > max {
            return Err(CodeError::OutOfRange {
                table: table.element(),
                name: name.to_owned(),
                id,
                min,
                max,
            });
        }
        Ok(id)
    }

    /// A valid region (`Qy_xx`) entry by its GB/T 2260 code, with its level (`Lx`).
    pub fn region(&self, code: &str) -> Option<&Entry> {
        self.regions
            .get(code)
            .and_then(|&i| self.entries(Table::Qy).get(i))
    }

    /// The bureau (`Gj_dm_xx`) entry whose `Shengid` is the province.
    pub fn bureau_of_province(&self, province: &str) -> Option<&Entry> {
        self.entries(Table::GjDm)
            .iter()
            .find(|e| e.valid() && e.get("Shengid") == Some(province))
    }

    /// `Fbdd` for a server location (a province code).
    pub fn location_id(&self, province: &str) -> Result<i64, CodeError> {
        let id = self
            .bureau_of_province(province)
            .and_then(Entry::id)
            .ok_or_else(|| CodeError::Missing {
                table: Table::GjDm.element(),
                name: province.to_owned(),
            })?;
        if !(1..=64).contains(&id) {
            return Err(CodeError::OutOfRange {
                table: Table::GjDm.element(),
                name: province.to_owned(),
                id,
                min: 1,
                max: 64,
            });
        }
        Ok(id)
    }

    /// The record-number abbreviation of a province (京, 沪, …).
    pub fn province_abbrev(&self, province: &str) -> Option<&str> {
        self.bureau_of_province(province)?.get("Shengjc")
    }

    /// The tables as a JCDM document ([`Self::parse_jcdm`] reads it back), for storing.
    pub fn to_jcdm_xml(&self) -> String {
        let mut names: Vec<&String> = self.tables.keys().collect();
        names.sort();
        let mut out = String::from("<DownloadData version=\"V.3.0\"><JCDM><Jcdm_xx>");
        for name in names {
            out.push_str("<T_dms>");
            for entry in &self.tables[name] {
                out.push('<');
                out.push_str(name);
                out.push('>');
                for (field, value) in &entry.fields {
                    out.push_str(&format!(
                        "<{field}>{}</{field}>",
                        quick_xml::escape::escape(value.as_str())
                    ));
                }
                out.push_str("</");
                out.push_str(name);
                out.push('>');
            }
            out.push_str("</T_dms>");
        }
        out.push_str("</Jcdm_xx></JCDM></DownloadData>");
        out
    }

    /// Whether a table is present at all (a bureau's JCDM may not carry every table).
    pub fn has(&self, table: Table) -> bool {
        !self.entries(table).is_empty()
    }
}

// ---- words → names (section 7.1) ----

pub fn nature_name(n: Nature) -> &'static str {
    match n {
        Nature::Enterprise => "企业",
        Nature::Government => "政府机关",
        Nature::Institution => "事业单位",
        Nature::SocialOrg => "社会团体",
        Nature::Personal => "个人",
        Nature::Military => "军队",
        Nature::Other => "其他",
    }
}

pub fn id_type_name(t: IdType) -> &'static str {
    match t {
        IdType::Uscc => "统一社会信用代码证书",
        IdType::ResidentId => "居民身份证",
        IdType::Passport => "护照",
        IdType::HkMoPermit => "港澳居民来往内地通行证",
        IdType::TwPermit => "台湾居民来往大陆通行证",
        IdType::Other => "其他",
    }
}

pub fn service_content_name(s: ServiceContent) -> &'static str {
    match s {
        ServiceContent::Portal => "综合门户",
        ServiceContent::CorporatePortal => "单位门户网站",
        ServiceContent::Shopping => "网络购物",
        ServiceContent::Blog => "博客/个人空间",
        ServiceContent::Game => "网络游戏",
        ServiceContent::Search => "搜索引擎",
        ServiceContent::Im => "即时通信",
        ServiceContent::AudioVideo => "网络视听",
        ServiceContent::Community => "网络社区",
        ServiceContent::Other => "其他",
    }
}

pub fn pre_approval_name(k: PreApprovalKind) -> &'static str {
    match k {
        PreApprovalKind::News => "新闻",
        PreApprovalKind::Publishing => "出版",
        PreApprovalKind::Education => "教育",
        PreApprovalKind::Medical => "医疗保健",
        PreApprovalKind::Drugs => "药品和医疗器械",
        PreApprovalKind::Culture => "文化",
        PreApprovalKind::Broadcast => "广播电影电视节目",
        PreApprovalKind::RideHailing => "网络预约车",
    }
}

pub fn access_method_name(m: AccessMethod) -> &'static str {
    match m {
        AccessMethod::DedicatedLine => "专线",
        AccessMethod::Colocation => "主机托管",
        AccessMethod::Hosting => "虚拟主机",
        AccessMethod::Cloud => "云接入",
        AccessMethod::Other => "其他",
    }
}

pub fn cancel_reason_name(r: CancelReason) -> &'static str {
    match r {
        CancelReason::Closed => "网站已关闭",
        CancelReason::Moved => "更换接入服务商",
        CancelReason::SubjectChanged => "主体变更",
        CancelReason::Other => "其他",
    }
}

pub fn language_name(l: Language) -> &'static str {
    match l {
        Language::ZhHans => "中文简体",
        Language::ZhHant => "中文繁体",
        Language::En => "英语",
        Language::Ja => "日语",
        Language::Ko => "韩语",
        Language::Fr => "法语",
        Language::De => "德语",
        Language::Ru => "俄语",
        Language::Es => "西班牙语",
        Language::Ar => "阿拉伯语",
        Language::Mn => "蒙古文",
        Language::Bo => "藏文",
        Language::Ug => "维吾尔文",
        Language::Other => "其他",
    }
}

/// `Fjyt` entry name for an attachment kind and its owner (section 7.1): ID scans of a
/// website's or an app's principal use the 网站负责人 entries.
pub fn attachment_use_name(kind: AttachmentKind, owner: Owner) -> &'static str {
    let subject = matches!(owner, Owner::Subject);
    match kind {
        AttachmentKind::License => "主办单位有效证件",
        AttachmentKind::IdFront if subject => "负责人有效证件正面",
        AttachmentKind::IdFront => "网站负责人有效证件正面",
        AttachmentKind::IdBack if subject => "负责人有效证件反面",
        AttachmentKind::IdBack => "网站负责人有效证件反面",
        AttachmentKind::VerificationForm => "网站备案信息真实性核验单",
        AttachmentKind::CurtainPhoto => "当面核验拍摄照片",
        AttachmentKind::DomainCert => "域名证书",
        AttachmentKind::PreApproval => "前置审批文件",
        AttachmentKind::Other => "其他辅助材料",
    }
}

/// The attachment format name (`Fjwjgs`): every attachment is a JPEG.
pub const JPG: &str = "jpg";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_tables_resolve_every_word() {
        let t = CodeTables::bundled().unwrap();
        assert_eq!(
            t.id_by_name(Table::Dwxz, nature_name(Nature::Enterprise)),
            Ok(4)
        );
        assert_eq!(
            t.id_by_name(Table::Zjlx, id_type_name(IdType::ResidentId)),
            Ok(2)
        );
        assert_eq!(
            t.id_by_name(Table::Zxly, cancel_reason_name(CancelReason::Other)),
            Ok(99)
        );
        assert_eq!(t.id_by_name(Table::Fjwjgs, JPG), Ok(1));
        assert_eq!(t.location_id("440000"), Ok(19));
        assert_eq!(t.province_abbrev("110000"), Some("京"));
        assert_eq!(t.region("110108").and_then(|e| e.get("Lx")), Some("3"));
        for w in [Language::ZhHans, Language::Ug, Language::Other] {
            assert!(t.id_by_name(Table::Yylb, language_name(w)).is_ok());
        }
        assert!(t.id_by_name(Table::Dwxz, "不存在").is_err());
    }

    #[test]
    fn merge_replaces_only_carried_tables() {
        let mut t = CodeTables::bundled().unwrap();
        let newer = CodeTables::parse_jcdm(
            "<DownloadData><JCDM><Jcdm_xx><Dwxz_dms><Dwxz_xx><Id>40</Id><Mc>企业</Mc><Sfyx>1</Sfyx></Dwxz_xx>\
             <Dwxz_xx><Id>41</Id><Mc>个人</Mc><Sfyx>0</Sfyx></Dwxz_xx></Dwxz_dms></Jcdm_xx></JCDM></DownloadData>",
        )
        .unwrap();
        t.merge(newer);
        assert_eq!(t.id_by_name(Table::Dwxz, "企业"), Ok(40));
        assert!(
            t.id_by_name(Table::Dwxz, "个人").is_err(),
            "Sfyx 0 is not usable"
        );
        assert_eq!(t.location_id("110000"), Ok(1), "other tables kept");
    }

    #[test]
    fn character_references_are_decoded() {
        let t = CodeTables::parse_jcdm(
            "<DownloadData><JCDM><Jcdm_xx><Dwxz_dms><Dwxz_xx><Id>4</Id><Mc>&#x4F01;&#20225;&amp;</Mc></Dwxz_xx></Dwxz_dms></Jcdm_xx></JCDM></DownloadData>",
        )
        .unwrap();
        assert_eq!(t.entries(Table::Dwxz)[0].name(), Some("企企&"));
        assert!(
            CodeTables::parse_jcdm("<DownloadData><JCDM>&bogus;</JCDM></DownloadData>").is_err()
        );
    }

    #[test]
    fn jcdm_round_trip() {
        let t = CodeTables::bundled().unwrap();
        assert_eq!(CodeTables::parse_jcdm(&t.to_jcdm_xml()).unwrap(), t);
    }

    #[test]
    fn out_of_range_is_an_error() {
        let t = CodeTables::parse_jcdm(
            "<DownloadData><JCDM><Jcdm_xx><Wzfwlx_dms><Wzfwlx_xx><Id>65</Id><Mc>其他</Mc></Wzfwlx_xx></Wzfwlx_dms></Jcdm_xx></JCDM></DownloadData>",
        )
        .unwrap();
        assert!(matches!(
            t.id_in_range(Table::Wzfwlx, "其他", 1, 64),
            Err(CodeError::OutOfRange { id: 65, .. })
        ));
    }
}
