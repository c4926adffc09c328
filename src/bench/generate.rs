//! Generated reviewed filings for `bench`: the bundled fixtures as templates, each copy made
//! unique and valid for its bureau (ids with correct check characters, a county-level region of
//! the province, a server location the province accepts, fresh record numbers and domains), and
//! the sandbox seed that makes the bureau know the records the changes and cancellations name.
//!
//! Mixes: `records` — access changes and cancellations of sites, accesses and subjects (no
//! attachments: the cost is the database and the state machine); `attachments` — first filings
//! with five photo-like 2400×1800 JPEGs each (the cost is re-encoding and packaging);
//! `typical` — one first filing in ten, the rest records.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::codes::{CodeTables, Table};
use crate::domain::types::{ResidentId, Uscc};
use crate::domain::{Filing, import::parse_file};
use crate::provinces::{Province, ProvinceRule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    Records,
    Attachments,
    Typical,
}

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Mix::Records => "records",
            Mix::Attachments => "attachments",
            Mix::Typical => "typical",
        }
    }
}

const FIRST: &str = include_str!("../../fixtures/filings/first.json");
const RECORDS: [&str; 4] = [
    include_str!("../../fixtures/filings/cancel-access.json"),
    include_str!("../../fixtures/filings/change-access.json"),
    include_str!("../../fixtures/filings/cancel-site.json"),
    include_str!("../../fixtures/filings/cancel-subject.json"),
];

/// Distinct photos the first filings' attachments are made from. Each filing's files are a
/// pool photo with a comment segment of its own, so no two files are the same bytes (the
/// gateway keeps re-encoded attachments by content hash between preflight and claim; shared
/// files would flatter it).
const PHOTO_POOL: u64 = 12;

/// What varies by bureau.
struct Bureau {
    code: String,
    abbrev: String,
    name: String,
    region: String,
    location: String,
}

pub struct Generator {
    mix: Mix,
    dir: PathBuf,
    bureaus: Vec<Bureau>,
    first: Value,
    records: Vec<Value>,
    reviewed_at: String,
    photos: Vec<Vec<u8>>,
}

impl Generator {
    pub fn new(mix: Mix, dir: &Path, provinces: &[Province]) -> anyhow::Result<Self> {
        let codes = CodeTables::bundled().context("the bundled code tables")?;
        let mut bureaus = Vec::with_capacity(provinces.len());
        for p in provinces {
            let prefix = &p.code[..2.min(p.code.len())];
            let region = codes
                .entries(Table::Qy)
                .iter()
                .filter(|e| e.valid() && e.get("Lx") == Some("3"))
                .filter_map(|e| e.get("Id"))
                .find(|id| id.starts_with(prefix) && *id != p.code)
                .with_context(|| format!("no county-level region of province {}", p.code))?
                .to_owned();
            let location = p
                .rules
                .iter()
                .find_map(|r| match r {
                    ProvinceRule::ServerLocations { locations } => locations.first().cloned(),
                    _ => None,
                })
                .unwrap_or_else(|| p.code.clone());
            bureaus.push(Bureau {
                code: p.code.clone(),
                abbrev: p.abbrev.clone(),
                name: p.name.clone(),
                region,
                location,
            });
        }
        if bureaus.is_empty() {
            bail!("no bureaus configured (provinces.toml)");
        }
        let parse = |t: &str| serde_json::from_str::<Value>(t).context("a bundled fixture");
        let reviewed_at = (crate::store::now() - chrono::Duration::hours(1))
            .format("%Y-%m-%dT%H:%M:%S+08:00")
            .to_string();
        let generator = Self {
            mix,
            dir: dir.to_owned(),
            bureaus,
            first: parse(FIRST)?,
            records: RECORDS.iter().map(|t| parse(t)).collect::<Result<_, _>>()?,
            reviewed_at,
            photos: Vec::new(),
        };
        let mut generator = generator;
        if generator.uses_photos() {
            generator.photos = (0..PHOTO_POOL)
                .map(|k| super::photo::photo_jpeg(1000 + k))
                .collect::<Result<_, _>>()?;
        }
        Ok(generator)
    }

    /// Where the attachments' paths are relative to.
    pub fn attachments_dir(&self) -> PathBuf {
        self.dir.join("attachments")
    }

    fn uses_photos(&self) -> bool {
        self.mix != Mix::Records
    }

    /// Writes filing `i`'s attachment files: pool photos made unique by a JPEG comment.
    fn write_photos(&self, i: usize, count: usize) -> anyhow::Result<()> {
        let dir = self.attachments_dir().join(format!("f{i}"));
        std::fs::create_dir_all(&dir)?;
        for k in 0..count {
            let pool = &self.photos[(i * 5 + k) % self.photos.len()];
            let comment = format!("beian-gateway bench filing {i} attachment {k}");
            let mut bytes = Vec::with_capacity(pool.len() + comment.len() + 4);
            bytes.extend_from_slice(&pool[..2]); // SOI
            bytes.extend_from_slice(&[0xFF, 0xFE]);
            bytes.extend_from_slice(&((comment.len() + 2) as u16).to_be_bytes());
            bytes.extend_from_slice(comment.as_bytes());
            bytes.extend_from_slice(&pool[2..]);
            let path = dir.join(format!("p{k}.jpg"));
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Whether filing `i` is a first filing (else a records template).
    fn is_first(&self, i: usize) -> bool {
        match self.mix {
            Mix::Records => false,
            Mix::Attachments => true,
            Mix::Typical => i.is_multiple_of(10),
        }
    }

    fn bureau(&self, i: usize) -> &Bureau {
        &self.bureaus[i % self.bureaus.len()]
    }

    /// Filing number `i` as its JSON document.
    pub fn document(&self, i: usize) -> Value {
        let b = self.bureau(i);
        let template = if self.is_first(i) {
            &self.first
        } else {
            &self.records[(i / self.bureaus.len()) % self.records.len()]
        };
        let mut v = template.clone();
        let old_subject_number = v["subject"]["recordNumber"].as_str().map(str::to_owned);
        let subject_number = old_subject_number
            .as_ref()
            .map(|_| format!("{}ICP备{}号", b.abbrev, 20_000_000 + i));
        v["id"] = json!(format!("B-{}-{i:08}", self.mix.name()));
        v["province"] = json!(b.code);
        v["reviewedAt"] = json!(self.reviewed_at);
        let company = format!("{}星河{i}科技有限公司", b.name);
        let s = &mut v["subject"];
        s["recordNumber"] = json!(subject_number);
        s["name"] = json!(company);
        s["investor"] = json!(company);
        s["region"] = json!(b.region);
        s["idAddress"] = json!(format!("{}星河路{}号", b.name, i % 1000 + 1));
        s["address"] = json!(format!("{}星河路{}号10层", b.name, i % 1000 + 1));
        if s["idType"] == json!("USCC") {
            s["idNumber"] = json!(uscc(&b.region, i));
        }
        s["principal"]["idNumber"] = json!(resident_id(&b.region, i));
        // Never ending in 0000: the sandbox lets those SMS checks expire on purpose.
        s["principal"]["mobile"] = json!(format!("139{:07}7", i % 10_000_000));
        let mut site_numbers = Vec::new();
        if let Some(sites) = v["websites"].as_array_mut() {
            for (k, w) in sites.iter_mut().enumerate() {
                let old = w["recordNumber"].as_str().map(str::to_owned);
                let new = subject_number.as_ref().map(|n| format!("{n}-{}", k + 1));
                if let Some(old) = old {
                    site_numbers.push((old, new.clone()));
                }
                if !w["recordNumber"].is_null() {
                    w["recordNumber"] = json!(new);
                }
                let domain = domain(i, k);
                w["domains"] = json!([domain]);
                w["homeUrls"] = json!([format!("www.{domain}")]);
                w["access"]["location"] = json!(b.location);
            }
        }
        if let Some(cancels) = v["cancels"].as_array_mut() {
            for c in cancels.iter_mut() {
                let old = c.as_str().map(str::to_owned);
                if old.is_some() && old == old_subject_number {
                    *c = json!(subject_number);
                } else if let Some((_, new)) =
                    site_numbers.iter().find(|(o, _)| Some(o) == old.as_ref())
                {
                    *c = json!(new);
                }
            }
        }
        if let Some(ids) = v.get_mut("bureauIds").filter(|x| x.is_object()) {
            ids["subject"] = json!(ztid(i));
            if let Some(sites) = ids["websites"].as_array_mut() {
                for (k, w) in sites.iter_mut().enumerate() {
                    w["website"] = json!(wzid(i, k));
                    w["access"] = json!(jrid(i, k));
                }
            }
        }
        if let Some(atts) = v["attachments"].as_array_mut() {
            for (k, a) in atts.iter_mut().enumerate() {
                a["path"] = json!(format!("f{i}/p{k}.jpg"));
            }
        }
        v
    }

    /// Filings `0..n` in chunks, each parsed by the importer as an imported file would be.
    pub fn chunks(
        &self,
        n: usize,
        size: usize,
    ) -> impl Iterator<Item = anyhow::Result<Vec<Filing>>> + '_ {
        (0..n).step_by(size.max(1)).map(move |start| {
            let end = (start + size).min(n);
            let docs: Vec<Value> = (start..end).map(|i| self.document(i)).collect();
            for (i, doc) in (start..end).zip(&docs) {
                if let Some(atts) = doc["attachments"].as_array().filter(|a| !a.is_empty()) {
                    self.write_photos(i, atts.len())?;
                }
            }
            let text = serde_json::to_string(&docs)?;
            parse_file(Path::new("bench"), &text).map_err(|e| anyhow::anyhow!("{e}"))
        })
    }

    /// The sandbox seed: every record a generated change or cancellation names, as filed
    /// before. Written as it is generated.
    pub fn write_seed(&self, n: usize) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("sandbox-seed.json");
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        out.write_all(b"{\"subjects\":[")?;
        let mut first = true;
        for i in 0..n {
            if self.is_first(i) {
                continue;
            }
            let doc = self.document(i);
            let s = &doc["subject"];
            let websites: Vec<Value> = doc["websites"]
                .as_array()
                .map(|sites| {
                    sites
                        .iter()
                        .enumerate()
                        .map(|(k, w)| {
                            json!({
                                "wzid": wzid(i, k),
                                "recordNumber": w["recordNumber"],
                                "name": w["name"],
                                "domains": [{"ymid": 80_000_000 + i as i64 * 4 + k as i64, "ym": domain(i, k)}],
                                "accesses": [{
                                    "jrid": jrid(i, k),
                                    "withUs": true,
                                    "ips": w["access"]["ips"].as_array().map(|ips| ips.iter().enumerate().map(|(m, ip)| json!({
                                        "ipid": 90_000_000 + i as i64 * 16 + k as i64 * 4 + m as i64,
                                        "ip": ip,
                                    })).collect::<Vec<_>>()).unwrap_or_default(),
                                }],
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let subject = json!({
                "province": doc["province"],
                "ztid": ztid(i),
                "recordNumber": s["recordNumber"],
                "name": s["name"],
                "principalMobile": s["principal"]["mobile"],
                "websites": websites,
            });
            if !first {
                out.write_all(b",")?;
            }
            first = false;
            serde_json::to_writer(&mut out, &subject)?;
        }
        out.write_all(b"]}")?;
        out.flush()?;
        Ok(path)
    }
}

fn ztid(i: usize) -> i64 {
    50_000_000 + i as i64
}

fn wzid(i: usize, k: usize) -> i64 {
    60_000_000 + i as i64 * 4 + k as i64
}

fn jrid(i: usize, k: usize) -> i64 {
    70_000_000 + i as i64 * 4 + k as i64
}

fn domain(i: usize, k: usize) -> String {
    format!("b{i}x{k}.com")
}

/// A USCC of an enterprise registered in `region`, unique per `i`, with its check character.
fn uscc(region: &str, i: usize) -> String {
    const CHARS: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
    let mut tail = [b'0'; 7];
    let mut k = i;
    for c in tail.iter_mut().rev() {
        *c = CHARS[k % CHARS.len()];
        k /= CHARS.len();
    }
    let body = format!("91{region}MA{}", String::from_utf8_lossy(&tail));
    let check = Uscc::check_char(&body).unwrap_or('0');
    format!("{body}{check}")
}

/// A resident ID born 1988-08-08 in `region`, with its check character.
fn resident_id(region: &str, i: usize) -> String {
    let body = format!("{region}19880808{:03}", i % 1000);
    let check = ResidentId::check_char(&body).unwrap_or('0');
    format!("{body}{check}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::types::{ResidentId, Uscc};

    #[test]
    fn generated_ids_are_valid() {
        for i in [0, 1, 30, 31, 999_999, 12_345_678] {
            let u = uscc("110105", i);
            assert!(Uscc::parse(&u).is_ok(), "{u}");
            let r = resident_id("440305", i);
            assert!(ResidentId::parse(&r).is_ok(), "{r}");
        }
        assert_ne!(uscc("110105", 1), uscc("110105", 2));
    }
}
