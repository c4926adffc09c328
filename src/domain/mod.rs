//! The reviewed filing as the back office hands it over (../shared/filing-format.md), parsed
//! strictly: unknown keys, wrong types and unknown enumeration words are errors that name the
//! file, the filing id and the field path. Values the bureau needs but the document leaves empty
//! are *not* errors here — they are preflight findings, so the filing is tracked and correctable.
//!
//! Owns: the document's shape and words. Must not touch the store, the wire or code tables.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod import;
pub mod types;

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FilingType {
    First,
    AddSite,
    AddAccess,
    ChangeSubject,
    ChangeSite,
    ChangeAccess,
    CancelAccess,
    CancelSite,
    CancelSubject,
    App,
}

impl FilingType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::First => "FIRST",
            Self::AddSite => "ADD_SITE",
            Self::AddAccess => "ADD_ACCESS",
            Self::ChangeSubject => "CHANGE_SUBJECT",
            Self::ChangeSite => "CHANGE_SITE",
            Self::ChangeAccess => "CHANGE_ACCESS",
            Self::CancelAccess => "CANCEL_ACCESS",
            Self::CancelSite => "CANCEL_SITE",
            Self::CancelSubject => "CANCEL_SUBJECT",
            Self::App => "APP",
        }
    }
    pub fn is_change(self) -> bool {
        matches!(
            self,
            Self::ChangeSubject | Self::ChangeSite | Self::ChangeAccess
        )
    }
    pub fn is_cancel(self) -> bool {
        matches!(
            self,
            Self::CancelAccess | Self::CancelSite | Self::CancelSubject
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Nature {
    Enterprise,
    Government,
    Institution,
    SocialOrg,
    Personal,
    Military,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IdType {
    Uscc,
    ResidentId,
    Passport,
    HkMoPermit,
    TwPermit,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceContent {
    Portal,
    CorporatePortal,
    Shopping,
    Blog,
    Game,
    Search,
    Im,
    AudioVideo,
    Community,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PreApprovalKind {
    News,
    Publishing,
    Education,
    Medical,
    Drugs,
    Culture,
    Broadcast,
    RideHailing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessMethod {
    DedicatedLine,
    Colocation,
    Hosting,
    Cloud,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelReason {
    Closed,
    Moved,
    SubjectChanged,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AttachmentKind {
    License,
    IdFront,
    IdBack,
    VerificationForm,
    CurtainPhoto,
    DomainCert,
    PreApproval,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Platform {
    Android,
    Ios,
    Harmony,
    Other,
}

impl Platform {
    /// `Pt` of the APP extension: 1 Android, 2 iOS, 3 HarmonyOS, 9 other.
    pub fn code(self) -> i64 {
        match self {
            Self::Android => 1,
            Self::Ios => 2,
            Self::Harmony => 3,
            Self::Other => 9,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Language {
    #[serde(rename = "zh-Hans")]
    ZhHans,
    #[serde(rename = "zh-Hant")]
    ZhHant,
    #[serde(rename = "en")]
    En,
    #[serde(rename = "ja")]
    Ja,
    #[serde(rename = "ko")]
    Ko,
    #[serde(rename = "fr")]
    Fr,
    #[serde(rename = "de")]
    De,
    #[serde(rename = "ru")]
    Ru,
    #[serde(rename = "es")]
    Es,
    #[serde(rename = "ar")]
    Ar,
    #[serde(rename = "mn")]
    Mn,
    #[serde(rename = "bo")]
    Bo,
    #[serde(rename = "ug")]
    Ug,
    #[serde(rename = "other")]
    Other,
}

/// A reviewed filing (filing-format.md "In").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filing {
    pub id: String,
    #[serde(rename = "type")]
    pub filing_type: FilingType,
    pub province: String,
    pub reviewed_at: DateTime<FixedOffset>,
    pub subject: Subject,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub websites: Vec<Website>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub apps: Vec<App>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub attachments: Vec<Attachment>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub cancels: Vec<String>,
    #[serde(default)]
    pub cancel_reason: Option<CancelReason>,
    #[serde(default)]
    pub cancel_remark: Option<String>,
    #[serde(default)]
    pub icp_password_md5: Option<String>,
    #[serde(default)]
    pub bureau_ids: Option<BureauIds>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    #[serde(default)]
    pub record_number: Option<String>,
    #[serde(default)]
    pub nature: Option<Nature>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub id_type: Option<IdType>,
    #[serde(default)]
    pub id_number: Option<String>,
    #[serde(default)]
    pub id_address: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub investor: Option<String>,
    #[serde(default)]
    pub principal: Option<Principal>,
    #[serde(default)]
    pub remark: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Principal {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub id_type: Option<IdType>,
    #[serde(default)]
    pub id_number: Option<String>,
    #[serde(default)]
    pub office_phone: Option<String>,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

/// A website's or app's principal: its own, or the subject principal repeated.
#[derive(Debug, Clone, PartialEq)]
pub enum PrincipalRef {
    SameAsSubject,
    Own(Principal),
}

impl Serialize for PrincipalRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::SameAsSubject => s.serialize_str("sameAsSubject"),
            Self::Own(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PrincipalRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // An untagged enum would hide the inner error; decode the two shapes explicitly.
        let value = serde_json::Value::deserialize(d)?;
        match value {
            serde_json::Value::String(w) if w == "sameAsSubject" => Ok(Self::SameAsSubject),
            serde_json::Value::String(w) => Err(serde::de::Error::custom(format!(
                "unknown principal word {w:?}, expected \"sameAsSubject\" or an object"
            ))),
            v @ serde_json::Value::Object(_) => Principal::deserialize(v)
                .map(Self::Own)
                .map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "principal must be \"sameAsSubject\" or an object, got {other}"
            ))),
        }
    }
}

impl PrincipalRef {
    /// The principal this reference stands for.
    pub fn resolve<'a>(&'a self, subject: &'a Subject) -> Option<&'a Principal> {
        match self {
            Self::SameAsSubject => subject.principal.as_ref(),
            Self::Own(p) => Some(p),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Website {
    #[serde(default)]
    pub record_number: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub domains: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub home_urls: Vec<String>,
    #[serde(default)]
    pub service_content: Option<ServiceContent>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub pre_approvals: Vec<PreApproval>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub languages: Vec<Language>,
    #[serde(default)]
    pub principal: Option<PrincipalRef>,
    #[serde(default)]
    pub access: Option<Access>,
    #[serde(default)]
    pub remark: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreApproval {
    #[serde(default)]
    pub kind: Option<PreApprovalKind>,
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub attachment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Access {
    #[serde(default)]
    pub method: Option<AccessMethod>,
    /// A province code (GB/T 2260): where the servers are.
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub ips: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    #[serde(default)]
    pub record_number: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub package_name: Option<String>,
    #[serde(default)]
    pub signature_md5: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub languages: Vec<Language>,
    #[serde(default)]
    pub principal: Option<PrincipalRef>,
    #[serde(default)]
    pub access: Option<Access>,
    #[serde(default)]
    pub remark: Option<String>,
}

/// Whose attachment it is: `"subject"`, `"websites[N]"` or `"apps[N]"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Subject,
    Website(usize),
    App(usize),
}

impl Owner {
    pub fn parse(s: &str) -> Option<Self> {
        if s == "subject" {
            return Some(Self::Subject);
        }
        let index = |prefix: &str| -> Option<usize> {
            s.strip_prefix(prefix)?.strip_suffix(']')?.parse().ok()
        };
        index("websites[")
            .map(Self::Website)
            .or_else(|| index("apps[").map(Self::App))
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Subject => f.write_str("subject"),
            Self::Website(i) => write!(f, "websites[{i}]"),
            Self::App(i) => write!(f, "apps[{i}]"),
        }
    }
}

impl Serialize for Owner {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Owner {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Owner::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown owner {s:?}, expected \"subject\", \"websites[N]\" or \"apps[N]\""
            ))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attachment {
    #[serde(default)]
    pub kind: Option<AttachmentKind>,
    #[serde(default)]
    pub owner: Option<Owner>,
    /// Relative to the configured attachments directory.
    #[serde(default)]
    pub path: Option<String>,
}

/// The bureau's own ids for filed records, by position of `websites[]` / `apps[]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BureauIds {
    #[serde(default)]
    pub subject: Option<i64>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub websites: Vec<Option<SiteIds>>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub apps: Vec<Option<AppIds>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteIds {
    #[serde(default)]
    pub website: Option<i64>,
    #[serde(default)]
    pub access: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppIds {
    #[serde(default)]
    pub app: Option<i64>,
    #[serde(default)]
    pub access: Option<i64>,
}

impl Filing {
    /// The canonical JSON of the document (what the store keeps and re-imports compare).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The principal of website `i`, resolved through `sameAsSubject`.
    pub fn website_principal(&self, i: usize) -> Option<&Principal> {
        self.websites
            .get(i)?
            .principal
            .as_ref()?
            .resolve(&self.subject)
    }

    pub fn app_principal(&self, i: usize) -> Option<&Principal> {
        self.apps.get(i)?.principal.as_ref()?.resolve(&self.subject)
    }

    /// Province ids given in the document for website `i`.
    pub fn given_site_ids(&self, i: usize) -> Option<&SiteIds> {
        self.bureau_ids.as_ref()?.websites.get(i)?.as_ref()
    }

    pub fn given_app_ids(&self, i: usize) -> Option<&AppIds> {
        self.bureau_ids.as_ref()?.apps.get(i)?.as_ref()
    }
}

/// The six-digit province code of a GB/T 2260 region code (`110108` → `110000`).
pub fn province_of_region(region: &str) -> Option<String> {
    if region.len() == 6 && region.bytes().all(|b| b.is_ascii_digit()) {
        Some(format!("{}0000", &region[..2]))
    } else {
        None
    }
}

/// IPv4 dotted quad → the unsigned 32-bit integer the interface carries (`Qsip`, `Zzip`).
pub fn ipv4_to_u32(ip: &str) -> Option<u32> {
    ip.parse::<std::net::Ipv4Addr>().ok().map(u32::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_parse_and_print() {
        assert_eq!(Owner::parse("subject"), Some(Owner::Subject));
        assert_eq!(Owner::parse("websites[2]"), Some(Owner::Website(2)));
        assert_eq!(Owner::parse("apps[0]"), Some(Owner::App(0)));
        assert_eq!(Owner::parse("websites[x]"), None);
        assert_eq!(Owner::Website(3).to_string(), "websites[3]");
    }

    #[test]
    fn ip_to_u32() {
        assert_eq!(ipv4_to_u32("203.0.113.10"), Some(3_405_803_786));
        assert_eq!(ipv4_to_u32("::1"), None);
    }
}
