//! The 31 provincial bureaus as data (`config/provinces.toml`): GB/T 2260 code, record-number
//! abbreviation, endpoint, batch and rate limits, business hours, and each bureau's extra
//! preflight rules. A rule of a known kind is added to a province by editing the file.
//!
//! Owns: reading and checking that file. Must not open connections or apply the rules (the
//! preflight does, `preflight::provincial`).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveTime;
use serde::Deserialize;

/// The file bundled into the binary, used when `config/provinces.toml` is not on disk.
const BUNDLED: &str = include_str!("../config/provinces.toml");

#[derive(Debug, thiserror::Error)]
pub enum ProvincesError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// An extra rule of one bureau (`[[province.rules]]`, `kind` names it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProvinceRule {
    /// Domains under these suffixes are refused by this bureau (on top of the national list).
    RefuseSuffixes {
        suffixes: Vec<String>,
        #[serde(default)]
        reason: Option<String>,
    },
    /// A personal filing's principal needs an office landline (`086-区号-号码`).
    RequireLandlineForPersonal,
    /// Every new website, app or access carries its verification form (真实性核验单).
    RequireVerificationForm,
    /// The provider's server locations for this bureau: `access.location` must be one of them.
    ServerLocations { locations: Vec<String> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    batch: usize,
    requests_per_minute: u32,
    concurrency: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvince {
    code: String,
    abbrev: String,
    name: String,
    #[serde(default)]
    base_url: String,
    batch: Option<usize>,
    requests_per_minute: Option<u32>,
    concurrency: Option<u32>,
    business_hours: Option<String>,
    #[serde(default)]
    rules: Vec<ProvinceRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    defaults: Defaults,
    province: Vec<RawProvince>,
}

/// One provincial bureau, with the defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Province {
    pub code: String,
    pub abbrev: String,
    pub name: String,
    /// Empty: `bureau.url` with `{province}` substituted.
    pub base_url: String,
    pub batch: usize,
    pub requests_per_minute: u32,
    pub concurrency: u32,
    /// Uploads only between these times (Asia/Shanghai), when the bureau says so.
    pub business_hours: Option<(NaiveTime, NaiveTime)>,
    pub rules: Vec<ProvinceRule>,
}

impl Province {
    /// Whether the bureau accepts uploads at this local (Asia/Shanghai) time.
    pub fn accepts_at(&self, time: NaiveTime) -> bool {
        self.business_hours
            .is_none_or(|(from, to)| from <= time && time < to)
    }
}

/// Every provincial bureau, by GB/T 2260 code.
#[derive(Debug, Clone, Default)]
pub struct Provinces {
    by_code: BTreeMap<String, Province>,
}

impl Provinces {
    /// Every bureau accepts uploads at any hour (`bench`: a window would stall a run started
    /// after hours, and measures the calendar, not the gateway).
    pub fn clear_business_hours(&mut self) {
        for p in self.by_code.values_mut() {
            p.business_hours = None;
        }
    }

    /// `config/provinces.toml` from the working directory, else the bundled copy.
    pub fn load_default() -> Result<Self, ProvincesError> {
        let on_disk = Path::new("config/provinces.toml");
        match std::fs::read_to_string(on_disk) {
            Ok(text) => Self::parse("config/provinces.toml", &text),
            Err(_) => Self::bundled(),
        }
    }

    pub fn bundled() -> Result<Self, ProvincesError> {
        Self::parse("(bundled) config/provinces.toml", BUNDLED)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, ProvincesError> {
        let invalid = |message: String| ProvincesError::Invalid {
            file: file.to_owned(),
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut by_code = BTreeMap::new();
        for p in raw.province {
            let code = p.code.trim().to_owned();
            if code.len() != 6
                || !code.ends_with("0000")
                || !code.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(invalid(format!(
                    "province code {code:?} is not a GB/T 2260 province code (NN0000)"
                )));
            }
            if p.abbrev.chars().count() != 1 {
                return Err(invalid(format!(
                    "province {code}: abbrev must be one character"
                )));
            }
            let batch = p.batch.unwrap_or(raw.defaults.batch);
            if !(1..=1000).contains(&batch) {
                return Err(invalid(format!(
                    "province {code}: batch must be 1–1000 (bureau-protocol.md section 3)"
                )));
            }
            let business_hours = p
                .business_hours
                .as_deref()
                .map(|h| {
                    parse_hours(h).ok_or_else(|| {
                        invalid(format!(
                            "province {code}: business_hours {h:?} is not \"HH:MM-HH:MM\""
                        ))
                    })
                })
                .transpose()?;
            for rule in &p.rules {
                if let ProvinceRule::ServerLocations { locations } = rule
                    && locations
                        .iter()
                        .any(|l| l.len() != 6 || !l.ends_with("0000"))
                {
                    return Err(invalid(format!(
                        "province {code}: server_locations must be province codes (NN0000)"
                    )));
                }
            }
            let province = Province {
                code: code.clone(),
                abbrev: p.abbrev,
                name: p.name,
                base_url: p.base_url.trim().to_owned(),
                batch,
                requests_per_minute: p
                    .requests_per_minute
                    .unwrap_or(raw.defaults.requests_per_minute)
                    .max(1),
                concurrency: p.concurrency.unwrap_or(raw.defaults.concurrency).max(1),
                business_hours,
                rules: p.rules,
            };
            if by_code.insert(code.clone(), province).is_some() {
                return Err(invalid(format!("province {code} is listed twice")));
            }
        }
        Ok(Self { by_code })
    }

    pub fn get(&self, code: &str) -> Option<&Province> {
        self.by_code.get(code)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Province> {
        self.by_code.values()
    }

    pub fn len(&self) -> usize {
        self.by_code.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }
}

fn parse_hours(s: &str) -> Option<(NaiveTime, NaiveTime)> {
    let (from, to) = s.split_once('-')?;
    let from = NaiveTime::parse_from_str(from.trim(), "%H:%M").ok()?;
    let to = NaiveTime::parse_from_str(to.trim(), "%H:%M").ok()?;
    (from < to).then_some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::CodeTables;

    #[test]
    fn all_31_bureaus_load_and_agree_with_the_bundled_code_table() {
        let p = Provinces::bundled().unwrap();
        assert_eq!(p.len(), 31);
        let codes = CodeTables::bundled().unwrap();
        for prov in p.iter() {
            assert_eq!(
                codes.province_abbrev(&prov.code),
                Some(prov.abbrev.as_str()),
                "{}",
                prov.code
            );
        }
        let bj = p.get("110000").unwrap();
        assert_eq!(bj.batch, 500);
        assert!(
            bj.rules
                .iter()
                .any(|r| matches!(r, ProvinceRule::RefuseSuffixes { .. }))
        );
        assert_eq!(p.get("130000").unwrap().batch, 1000);
    }

    #[test]
    fn a_new_rule_is_data_only_and_bad_data_is_refused() {
        let text = r#"
[defaults]
batch = 10
requests_per_minute = 5
concurrency = 1
[[province]]
code = "130000"
abbrev = "冀"
name = "河北省"
business_hours = "09:00-17:00"
[[province.rules]]
kind = "require_verification_form"
"#;
        let p = Provinces::parse("t", text).unwrap();
        let hb = p.get("130000").unwrap();
        assert_eq!(hb.rules, vec![ProvinceRule::RequireVerificationForm]);
        assert!(hb.accepts_at(NaiveTime::from_hms_opt(10, 0, 0).unwrap()));
        assert!(!hb.accepts_at(NaiveTime::from_hms_opt(18, 0, 0).unwrap()));
        assert!(Provinces::parse("t", &text.replace("130000", "130100")).is_err());
        assert!(Provinces::parse("t", &text.replace("require_verification_form", "fly")).is_err());
        assert!(Provinces::parse("t", &text.replace("09:00-17:00", "9-5")).is_err());
    }
}
