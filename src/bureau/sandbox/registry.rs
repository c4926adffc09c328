//! The sandbox bureau's registry of filed records for one province: the seed ("filed before")
//! plus everything approved so far, with the province ids and record numbers it generated.
//!
//! Owns: the registry's shape, loading the seed file, id and number allocation, lookups.
//! Must not touch the wire (files.rs writes BASJ from it) or decide anything (decide.rs).

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// One province's registry. Subjects are kept in the order they were filed (`seq`); every
/// key a lookup uses (ids, record numbers, domains, ID numbers) is indexed, so a lookup costs
/// the same with a million records as with ten. Changes go through [`Registry::update`],
/// [`Registry::insert`] and [`Registry::remove`], which keep the indexes exact.
#[derive(Debug, Clone)]
pub struct Registry {
    subjects: BTreeMap<u64, RegSubject>,
    next_seq: u64,
    by_ztid: Keyed<i64>,
    by_subject_number: Keyed<String>,
    by_wzid: Keyed<i64>,
    by_website_number: Keyed<String>,
    by_jrid: Keyed<i64>,
    by_domain: Keyed<String>,
    by_id_number: Keyed<String>,
    next_id: i64,
    next_number: u32,
}

/// Key → the subjects (by filing order) that carry it; the first is what a scan in filing
/// order would find.
type Keyed<K> = HashMap<K, BTreeSet<u64>>;

fn keyed_add<K: std::hash::Hash + Eq>(map: &mut Keyed<K>, key: K, seq: u64) {
    map.entry(key).or_default().insert(seq);
}

fn keyed_remove<
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
>(
    map: &mut Keyed<K>,
    key: &Q,
    seq: u64,
) {
    if let Some(set) = map.get_mut(key) {
        set.remove(&seq);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self {
            subjects: BTreeMap::new(),
            next_seq: 0,
            by_ztid: HashMap::new(),
            by_subject_number: HashMap::new(),
            by_wzid: HashMap::new(),
            by_website_number: HashMap::new(),
            by_jrid: HashMap::new(),
            by_domain: HashMap::new(),
            by_id_number: HashMap::new(),
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

    /// Adds a subject after every subject filed so far.
    pub fn insert(&mut self, subject: RegSubject) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.index(seq, &subject);
        self.subjects.insert(seq, subject);
    }

    /// Removes every subject with this id; false when there was none.
    pub fn remove(&mut self, ztid: i64) -> bool {
        let seqs: Vec<u64> = self
            .by_ztid
            .get(&ztid)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for seq in &seqs {
            if let Some(subject) = self.subjects.remove(seq) {
                self.unindex(*seq, &subject);
            }
        }
        !seqs.is_empty()
    }

    /// Changes the first subject with this id in place (its place in filing order is kept);
    /// None when there is none.
    pub fn update<R>(&mut self, ztid: i64, f: impl FnOnce(&mut RegSubject) -> R) -> Option<R> {
        let seq = self.first(&self.by_ztid, &ztid)?;
        let mut subject = self.subjects.remove(&seq)?;
        self.unindex(seq, &subject);
        let out = f(&mut subject);
        self.index(seq, &subject);
        self.subjects.insert(seq, subject);
        Some(out)
    }

    fn first<K: std::hash::Hash + Eq + std::borrow::Borrow<Q>, Q: std::hash::Hash + Eq + ?Sized>(
        &self,
        map: &Keyed<K>,
        key: &Q,
    ) -> Option<u64> {
        map.get(key).and_then(|s| s.iter().next().copied())
    }

    fn keys(subject: &RegSubject) -> SubjectKeys {
        SubjectKeys {
            ztid: subject.ztid,
            number: subject.baxh.trim().to_owned(),
            id_number: subject.id_number.clone(),
            wzids: subject.websites.iter().map(|w| w.wzid).collect(),
            site_numbers: subject
                .websites
                .iter()
                .map(|w| w.baxh.trim().to_owned())
                .collect(),
            jrids: subject
                .websites
                .iter()
                .flat_map(|w| w.accesses.iter().map(|a| a.jrid))
                .collect(),
            domains: subject
                .websites
                .iter()
                .flat_map(|w| w.domains.iter().map(|d| d.ym.to_ascii_lowercase()))
                .collect(),
        }
    }

    fn index(&mut self, seq: u64, subject: &RegSubject) {
        let k = Self::keys(subject);
        keyed_add(&mut self.by_ztid, k.ztid, seq);
        keyed_add(&mut self.by_subject_number, k.number, seq);
        if let Some(n) = k.id_number {
            keyed_add(&mut self.by_id_number, n, seq);
        }
        for id in k.wzids {
            keyed_add(&mut self.by_wzid, id, seq);
        }
        for n in k.site_numbers {
            keyed_add(&mut self.by_website_number, n, seq);
        }
        for id in k.jrids {
            keyed_add(&mut self.by_jrid, id, seq);
        }
        for d in k.domains {
            keyed_add(&mut self.by_domain, d, seq);
        }
    }

    fn unindex(&mut self, seq: u64, subject: &RegSubject) {
        let k = Self::keys(subject);
        keyed_remove(&mut self.by_ztid, &k.ztid, seq);
        keyed_remove(&mut self.by_subject_number, k.number.as_str(), seq);
        if let Some(n) = &k.id_number {
            keyed_remove(&mut self.by_id_number, n.as_str(), seq);
        }
        for id in &k.wzids {
            keyed_remove(&mut self.by_wzid, id, seq);
        }
        for n in &k.site_numbers {
            keyed_remove(&mut self.by_website_number, n.as_str(), seq);
        }
        for id in &k.jrids {
            keyed_remove(&mut self.by_jrid, id, seq);
        }
        for d in &k.domains {
            keyed_remove(&mut self.by_domain, d.as_str(), seq);
        }
    }

    /// The subjects that carry a key, in filing order.
    fn candidates<'a>(
        &'a self,
        seqs: Option<&'a BTreeSet<u64>>,
    ) -> impl Iterator<Item = &'a RegSubject> {
        seqs.into_iter()
            .flat_map(|s| s.iter())
            .filter_map(|seq| self.subjects.get(seq))
    }

    pub fn subject(&self, ztid: i64) -> Option<&RegSubject> {
        self.candidates(self.by_ztid.get(&ztid)).next()
    }

    pub fn subject_by_number(&self, baxh: &str) -> Option<&RegSubject> {
        self.candidates(self.by_subject_number.get(baxh.trim()))
            .next()
    }

    /// The first subject (in filing order) whose holder has this ID number.
    pub fn subject_by_id_number(&self, id_number: &str) -> Option<&RegSubject> {
        self.candidates(self.by_id_number.get(id_number)).next()
    }

    /// The subject holding a website, and the website.
    pub fn website(&self, wzid: i64) -> Option<(&RegSubject, &RegWebsite)> {
        self.candidates(self.by_wzid.get(&wzid))
            .find_map(|s| s.websites.iter().find(|w| w.wzid == wzid).map(|w| (s, w)))
    }

    pub fn website_by_number(&self, baxh: &str) -> Option<(&RegSubject, &RegWebsite)> {
        let baxh = baxh.trim();
        self.candidates(self.by_website_number.get(baxh))
            .find_map(|s| {
                s.websites
                    .iter()
                    .find(|w| w.baxh.trim() == baxh)
                    .map(|w| (s, w))
            })
    }

    /// The subject and website holding an access.
    pub fn access(&self, jrid: i64) -> Option<(&RegSubject, &RegWebsite)> {
        self.candidates(self.by_jrid.get(&jrid)).find_map(|s| {
            s.websites
                .iter()
                .find(|w| w.accesses.iter().any(|a| a.jrid == jrid))
                .map(|w| (s, w))
        })
    }

    /// The website (with its subject) carrying a domain, case-insensitively.
    pub fn website_by_domain(&self, domain: &str) -> Option<(&RegSubject, &RegWebsite)> {
        let d = domain.trim().to_ascii_lowercase();
        self.candidates(self.by_domain.get(&d)).find_map(|s| {
            s.websites
                .iter()
                .find(|w| w.domains.iter().any(|x| x.ym.eq_ignore_ascii_case(&d)))
                .map(|w| (s, w))
        })
    }
}

/// What a subject is found by (see [`Registry::index`]).
struct SubjectKeys {
    ztid: i64,
    number: String,
    id_number: Option<String>,
    wzids: Vec<i64>,
    site_numbers: Vec<String>,
    jrids: Vec<i64>,
    domains: Vec<String>,
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
        reg.insert(RegSubject {
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

    fn subject(ztid: i64, baxh: &str, sites: Vec<RegWebsite>) -> RegSubject {
        RegSubject {
            ztid,
            isp_ztid: None,
            baxh: baxh.into(),
            name: String::new(),
            principal_mobile: None,
            icp_md5: None,
            id_number: Some(format!("ID{ztid}")),
            details: Node::leaf("Zt_xx", ""),
            websites: sites,
            apps: Vec::new(),
            last_n: 0,
        }
    }

    fn site(wzid: i64, baxh: &str, domain: &str, jrid: i64) -> RegWebsite {
        RegWebsite {
            wzid,
            isp_wzid: None,
            baxh: baxh.into(),
            name: String::new(),
            domains: vec![RegDomain {
                ymid: wzid + 1,
                isp_ymid: None,
                ym: domain.into(),
            }],
            accesses: vec![RegAccess {
                jrid,
                isp_jrid: None,
                with_us: true,
                fbdd: vec![1],
                jrfs: vec![1],
                ips: Vec::new(),
            }],
            details: Node::leaf("Wz_xx", ""),
        }
    }

    #[test]
    fn indexes_follow_inserts_updates_and_removals() {
        let mut reg = Registry::new();
        reg.insert(subject(1, "A号", vec![site(10, "A号-1", "a.com", 100)]));
        reg.insert(subject(2, "B号", vec![site(20, "B号-1", "b.com", 200)]));
        assert_eq!(reg.website_by_domain("A.COM").map(|(s, _)| s.ztid), Some(1));
        assert_eq!(reg.access(200).map(|(_, w)| w.wzid), Some(20));
        assert_eq!(reg.subject_by_id_number("ID2").map(|s| s.ztid), Some(2));
        // A website added, then one removed: old keys go, new keys come.
        reg.update(1, |s| s.websites.push(site(11, "A号-2", "c.com", 110)))
            .unwrap();
        assert_eq!(reg.website(11).map(|(s, _)| s.ztid), Some(1));
        assert_eq!(
            reg.website_by_number("A号-2").map(|(_, w)| w.wzid),
            Some(11)
        );
        reg.update(1, |s| s.websites.retain(|w| w.wzid != 10))
            .unwrap();
        assert!(reg.website(10).is_none());
        assert!(reg.website_by_domain("a.com").is_none());
        assert!(reg.access(100).is_none());
        assert_eq!(reg.access(110).map(|(s, _)| s.ztid), Some(1));
        // A subject removed takes its websites and accesses with it.
        assert!(reg.remove(2));
        assert!(!reg.remove(2));
        assert!(reg.subject(2).is_none());
        assert!(reg.subject_by_number("B号").is_none());
        assert!(reg.website_by_domain("b.com").is_none());
        assert!(reg.subject_by_id_number("ID2").is_none());
        assert!(reg.update(2, |_| ()).is_none());
        // The same key on two subjects: the one filed first is found, as a scan would.
        reg.insert(subject(3, "C号", vec![site(30, "C号-1", "c.com", 300)]));
        assert_eq!(reg.website_by_domain("c.com").map(|(s, _)| s.ztid), Some(1));
        reg.update(1, |s| s.name = "changed".into()).unwrap();
        assert_eq!(reg.website_by_domain("c.com").map(|(s, _)| s.ztid), Some(1));
    }
}
