//! The sandbox bureau's registry of filed records for one province: the seed ("filed before")
//! plus everything approved so far, with the province ids and record numbers it generated.
//!
//! Owns: the registry's shape, loading the seed file, id and number allocation, lookups.
//! Must not touch the wire (files.rs writes BASJ from it) or decide anything (decide.rs).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;

use super::xml::Node;

#[derive(Debug, Clone)]
pub struct RegIp {
    pub ipid: i64,
    pub isp_ipid: Option<i64>,
    pub qsip: i64,
    pub zzip: i64,
}

#[derive(Debug, Clone)]
pub struct RegAccess {
    pub jrid: i64,
    pub isp_jrid: Option<i64>,
    pub with_us: bool,
    pub fbdd: Vec<i64>,
    pub jrfs: Vec<i64>,
    pub ips: Vec<RegIp>,
}

#[derive(Debug, Clone)]
pub struct RegDomain {
    pub ymid: i64,
    pub isp_ymid: Option<i64>,
    pub ym: String,
}

#[derive(Debug, Clone)]
pub struct RegWebsite {
    pub wzid: i64,
    pub isp_wzid: Option<i64>,
    pub baxh: String,
    pub name: String,
    pub domains: Vec<RegDomain>,
    pub accesses: Vec<RegAccess>,
    /// The website's other published fields (Fwnr, Yylb, Wz_Fzr, Syurl, Wz_Bz) as a `Wz_xx`.
    pub details: Node,
}

#[derive(Debug, Clone)]
pub struct RegApp {
    pub appid: i64,
    pub isp_appid: Option<i64>,
    pub baxh: String,
    pub name: String,
    pub pt: i64,
    pub bm: String,
    /// Kept with the record; not published (BASJ `App_xx` has no accesses).
    #[allow(dead_code)]
    pub accesses: Vec<RegAccess>,
}

#[derive(Debug, Clone)]
pub struct RegSubject {
    pub ztid: i64,
    pub isp_ztid: Option<i64>,
    pub baxh: String,
    pub name: String,
    pub principal_mobile: Option<String>,
    pub icp_md5: Option<String>,
    pub id_number: Option<String>,
    /// The subject's published fields (Dwxz, Txdz, Zj, Fzr, Tzr) as a `Zt_xx`.
    pub details: Node,
    pub websites: Vec<RegWebsite>,
    pub apps: Vec<RegApp>,
    /// The highest `-n` used under this subject (websites and apps share the counter).
    pub last_n: u32,
}

/// One province's registry.
#[derive(Debug, Clone)]
pub struct Registry {
    pub subjects: Vec<RegSubject>,
    next_id: i64,
    next_number: u32,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self {
            subjects: Vec::new(),
            next_id: 500_000_001,
            next_number: 0,
        }
    }

    /// A fresh province id (unique within this registry).
    pub fn new_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A fresh subject record number `{abbrev}ICP备{year}{6 digits}号`.
    pub fn new_subject_number(&mut self, abbrev: &str, year: i32) -> String {
        self.next_number += 1;
        format!("{abbrev}ICP备{year}{:06}号", self.next_number)
    }

    pub fn subject(&self, ztid: i64) -> Option<&RegSubject> {
        self.subjects.iter().find(|s| s.ztid == ztid)
    }

    pub fn subject_mut(&mut self, ztid: i64) -> Option<&mut RegSubject> {
        self.subjects.iter_mut().find(|s| s.ztid == ztid)
    }

    pub fn subject_by_number(&self, baxh: &str) -> Option<&RegSubject> {
        self.subjects.iter().find(|s| s.baxh == baxh.trim())
    }

    /// The subject holding a website, and the website.
    pub fn website(&self, wzid: i64) -> Option<(&RegSubject, &RegWebsite)> {
        self.subjects
            .iter()
            .find_map(|s| s.websites.iter().find(|w| w.wzid == wzid).map(|w| (s, w)))
    }

    pub fn website_by_number(&self, baxh: &str) -> Option<(&RegSubject, &RegWebsite)> {
        self.subjects.iter().find_map(|s| {
            s.websites
                .iter()
                .find(|w| w.baxh == baxh.trim())
                .map(|w| (s, w))
        })
    }

    /// The subject and website holding an access.
    pub fn access(&self, jrid: i64) -> Option<(&RegSubject, &RegWebsite)> {
        self.subjects.iter().find_map(|s| {
            s.websites
                .iter()
                .find(|w| w.accesses.iter().any(|a| a.jrid == jrid))
                .map(|w| (s, w))
        })
    }

    /// The website (with its subject) carrying a domain, case-insensitively.
    pub fn website_by_domain(&self, domain: &str) -> Option<(&RegSubject, &RegWebsite)> {
        let d = domain.trim().to_ascii_lowercase();
        self.subjects.iter().find_map(|s| {
            s.websites
                .iter()
                .find(|w| w.domains.iter().any(|x| x.ym.eq_ignore_ascii_case(&d)))
                .map(|w| (s, w))
        })
    }
}

/// The `-n` of a record number (`…号-3` → 3, `…号-2A` → 2).
pub fn suffix_n(baxh: &str) -> u32 {
    baxh.rsplit_once('-')
        .map(|(_, n)| n.trim_end_matches('A'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

// ---- the seed file (fixtures/bureau/sandbox-seed.json) ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seed {
    subjects: Vec<SeedSubject>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedSubject {
    province: String,
    ztid: i64,
    record_number: String,
    name: String,
    #[serde(default)]
    principal_mobile: Option<String>,
    #[serde(default)]
    icp_password_md5: Option<String>,
    #[serde(default)]
    id_number: Option<String>,
    #[serde(default)]
    websites: Vec<SeedWebsite>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedWebsite {
    wzid: i64,
    record_number: String,
    name: String,
    #[serde(default)]
    domains: Vec<SeedDomain>,
    #[serde(default)]
    accesses: Vec<SeedAccess>,
}

#[derive(Debug, Deserialize)]
struct SeedDomain {
    ymid: i64,
    ym: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedAccess {
    jrid: i64,
    #[serde(default)]
    with_us: bool,
    #[serde(default)]
    ips: Vec<SeedIp>,
}

#[derive(Debug, Deserialize)]
struct SeedIp {
    ipid: i64,
    ip: Ipv4Addr,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("reading seed file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("seed file {path}: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
}

/// Loads a seed file into registries by province.
pub fn load_seed(path: &Path) -> Result<HashMap<String, Registry>, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeedError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let seed: Seed = serde_json::from_str(&text).map_err(|source| SeedError::Json {
        path: path.display().to_string(),
        source,
    })?;
    let mut out: HashMap<String, Registry> = HashMap::new();
    for s in seed.subjects {
        let reg = out.entry(s.province.clone()).or_default();
        let mut last_n = 0;
        let websites = s
            .websites
            .into_iter()
            .map(|w| {
                last_n = last_n.max(suffix_n(&w.record_number));
                seed_website(w)
            })
            .collect();
        let details = Node::parent(
            "Zt_xx",
            vec![
                Node::parent(
                    "Txdz",
                    vec![
                        Node::leaf("Shengid", s.province.clone()),
                        Node::leaf("Xxdz", "（种子数据）"),
                    ],
                ),
                Node::parent(
                    "Zj",
                    vec![
                        Node::leaf("Zjlx", "1"),
                        Node::leaf(
                            "Zjhm",
                            s.id_number
                                .clone()
                                .unwrap_or_else(|| format!("SEED{}", s.ztid)),
                        ),
                        Node::leaf("Zjzs", "（种子数据）"),
                    ],
                ),
                Node::parent(
                    "Fzr",
                    vec![
                        Node::leaf(
                            "Fzr_sjhm",
                            s.principal_mobile
                                .clone()
                                .unwrap_or_else(|| "13900000001".into()),
                        ),
                        Node::leaf("Fzr_dzyj", "seed@example.com"),
                    ],
                ),
            ],
        );
        reg.subjects.push(RegSubject {
            ztid: s.ztid,
            isp_ztid: None,
            baxh: s.record_number,
            name: s.name,
            principal_mobile: s.principal_mobile,
            icp_md5: s.icp_password_md5.map(|m| m.to_ascii_lowercase()),
            id_number: s.id_number,
            details,
            websites,
            apps: Vec::new(),
            last_n,
        });
    }
    Ok(out)
}

fn seed_website(w: SeedWebsite) -> RegWebsite {
    RegWebsite {
        wzid: w.wzid,
        isp_wzid: None,
        baxh: w.record_number,
        name: w.name,
        domains: w
            .domains
            .into_iter()
            .map(|d| RegDomain {
                ymid: d.ymid,
                isp_ymid: None,
                ym: d.ym.to_ascii_lowercase(),
            })
            .collect(),
        accesses: w
            .accesses
            .into_iter()
            .map(|a| RegAccess {
                jrid: a.jrid,
                isp_jrid: None,
                with_us: a.with_us,
                fbdd: vec![1],
                jrfs: vec![1],
                ips: a
                    .ips
                    .into_iter()
                    .map(|ip| RegIp {
                        ipid: ip.ipid,
                        isp_ipid: None,
                        qsip: i64::from(u32::from(ip.ip)),
                        zzip: i64::from(u32::from(ip.ip)),
                    })
                    .collect(),
            })
            .collect(),
        details: Node::parent(
            "Wz_xx",
            vec![
                Node::parent("Yylb", vec![Node::leaf("Yylb_id", "1")]),
                Node::parent("Wz_Fzr", vec![Node::leaf("Fzr_xm", "（种子数据）")]),
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_fixture_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bureau/sandbox-seed.json");
        let regs = load_seed(&path).unwrap();
        let bj = &regs["110000"];
        let (s, w) = bj.website_by_domain("FILED-ONE.com").unwrap();
        assert_eq!(s.ztid, 3300112);
        assert_eq!(w.wzid, 8812001);
        assert_eq!(bj.subject(3300112).unwrap().last_n, 2);
        assert!(bj.access(99120700).is_some());
        assert!(regs["310000"].website(3112001).is_some());
        assert_eq!(suffix_n("京ICP备2026001234号-2A"), 2);
    }
}
