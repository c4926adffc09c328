//! Inputs shared by the benches, all generated deterministically so every run (and the Python
//! reference, which reads the same files) sees the same bytes: photo-like JPEGs, filings made
//! from the fixtures, and data files built from them.
#![allow(dead_code)]

pub mod before;
pub mod full_decode;
pub mod photo;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use beian_gateway::attachments::{max_base64_len, max_jpeg_bytes};
use beian_gateway::codes::CodeTables;
use beian_gateway::datafile::ids::{
    RecordIds, RegAccess, RegApp, RegDomain, RegIp, RegSubject, RegWebsite, Registry, plan_ids,
};
use beian_gateway::datafile::upload::{
    BuildOptions, BuildRecord, PreparedAttachment, build_upload_xml,
};
use beian_gateway::domain::{AttachmentKind, Filing, import::parse_file, ipv4_to_u32};

pub const ISP_ID: i64 = 1_100_001_234;
/// The configured minimum dimensions (config/default.toml).
pub const MIN_W: u32 = 600;
pub const MIN_H: u32 = 400;
pub const OPTS: BuildOptions = BuildOptions {
    isp_id: ISP_ID,
    app_extension: true,
};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The filing(s) of `fixtures/filings/{name}.json`.
pub fn fixture(name: &str) -> Filing {
    let path = fixtures_dir().join("filings").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    parse_file(&path, &text).unwrap().remove(0)
}

/// `n` copies of `template` with their own ids.
pub fn copies(template: &Filing, n: usize, tag: &str) -> Vec<Filing> {
    (0..n)
        .map(|i| {
            let mut f = template.clone();
            f.id = format!("F-{tag}-{i:06}");
            f
        })
        .collect()
}

/// The attachment kinds of a filing, in order.
pub fn kinds(f: &Filing) -> Vec<AttachmentKind> {
    f.attachments.iter().map(|a| a.kind.unwrap()).collect()
}

/// Base64 of pseudo-random bytes, just under the kind's limit: what a re-encoded JPEG looks
/// like to everything after the re-encoding.
pub fn noise_attachment(kind: AttachmentKind, seed: u64) -> String {
    let len = max_jpeg_bytes(kind) - 2_000;
    let mut rng = photo::Rng::new(seed);
    let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    let s = B64.encode(bytes);
    assert!(s.len() <= max_base64_len(kind));
    s
}

/// Prepared stand-ins for every attachment of `f`.
pub fn noise_prepared(f: &Filing, seed: u64) -> Vec<PreparedAttachment> {
    kinds(f)
        .into_iter()
        .enumerate()
        .map(|(index, kind)| PreparedAttachment {
            index,
            jpeg_base64: noise_attachment(kind, seed * 16 + index as u64),
        })
        .collect()
}

/// Ids for every filing, planned against the sandbox seed's registry.
pub fn plan_all(filings: &[Filing]) -> Vec<RecordIds> {
    let reg = SeedRegistry::load();
    let mut n = 0;
    let mut alloc = move || {
        n += 1;
        n
    };
    filings
        .iter()
        .map(|f| plan_ids(f, &reg, &mut alloc).unwrap_or_else(|e| panic!("{}: {e:?}", f.id)))
        .collect()
}

/// The data file (text) for these filings.
pub fn build(
    filings: &[Filing],
    ids: &[RecordIds],
    prepared: &[Vec<PreparedAttachment>],
) -> String {
    let records: Vec<BuildRecord<'_>> = filings
        .iter()
        .zip(ids)
        .zip(prepared)
        .map(|((filing, ids), attachments)| BuildRecord {
            filing,
            ids,
            attachments,
        })
        .collect();
    build_upload_xml(&records, &CodeTables::bundled().unwrap(), &OPTS).unwrap()
}

/// A base64-heavy data file of about `mb` MB: first filings with attachments at their limits.
pub fn base64_heavy_xml(mb: usize) -> String {
    let first = fixture("first");
    let per_filing: usize = kinds(&first).iter().map(|&k| max_base64_len(k)).sum();
    let n = (mb * 1_000_000).div_ceil(per_filing);
    let filings = copies(&first, n, "HEAVY");
    let ids = plan_all(&filings);
    let prepared: Vec<_> = filings
        .iter()
        .enumerate()
        .map(|(i, f)| noise_prepared(f, i as u64))
        .collect();
    build(&filings, &ids, &prepared)
}

/// The records mix: changes, cancellations and access filings (few or no attachments).
pub const RECORD_FIXTURES: [&str; 7] = [
    "cancel-access",
    "cancel-site",
    "cancel-subject",
    "change-access",
    "change-site",
    "change-subject",
    "add-access",
];

/// The records (`fixtures/bureau/sandbox-seed.json`) the sandbox treats as filed before.
#[derive(Default)]
pub struct SeedRegistry {
    subjects: HashMap<String, RegSubject>,
    websites: HashMap<String, RegWebsite>,
}

impl SeedRegistry {
    pub fn load() -> Self {
        let text =
            std::fs::read_to_string(fixtures_dir().join("bureau/sandbox-seed.json")).unwrap();
        let seed: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut reg = Self::default();
        let i64_of = |v: &serde_json::Value| v.as_i64().unwrap();
        for s in seed["subjects"].as_array().unwrap() {
            reg.subjects.insert(
                s["recordNumber"].as_str().unwrap().into(),
                RegSubject {
                    ztid: i64_of(&s["ztid"]),
                    isp_ztid: None,
                },
            );
            for w in s["websites"].as_array().unwrap() {
                let domains = w["domains"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| RegDomain {
                        ym: d["ym"].as_str().unwrap().into(),
                        ymid: i64_of(&d["ymid"]),
                        isp_ymid: None,
                    })
                    .collect();
                let accesses = w["accesses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| RegAccess {
                        jrid: i64_of(&a["jrid"]),
                        isp_jrid: None,
                        ips: a["ips"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|ip| RegIp {
                                ip: ipv4_to_u32(ip["ip"].as_str().unwrap()).unwrap(),
                                ipid: ip["ipid"].as_i64(),
                                isp_ipid: None,
                            })
                            .collect(),
                    })
                    .collect();
                reg.websites.insert(
                    w["recordNumber"].as_str().unwrap().into(),
                    RegWebsite {
                        wzid: i64_of(&w["wzid"]),
                        isp_wzid: None,
                        domains,
                        accesses,
                    },
                );
            }
        }
        reg
    }
}

impl Registry for SeedRegistry {
    fn subject(&self, n: &str) -> Option<RegSubject> {
        self.subjects.get(n).cloned()
    }
    fn website(&self, n: &str) -> Option<RegWebsite> {
        self.websites.get(n).cloned()
    }
    fn app(&self, _: &str) -> Option<RegApp> {
        None
    }
}
