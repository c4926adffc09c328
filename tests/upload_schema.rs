//! Every fixture filing → planned ids (registry from the sandbox seed) → prepared attachments →
//! `UploadData` → validated by xmllint against the interface's XSD (the APP fixture against the
//! extension schema), plus a file combining several operations, plus golden files
//! (`UPDATE_GOLDEN=1` rewrites them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use beian_gateway::attachments::{max_jpeg_bytes, prepare_jpeg};
use beian_gateway::codes::CodeTables;
use beian_gateway::datafile::ids::{
    RecordIds, RegAccess, RegApp, RegDomain, RegIp, RegSubject, RegWebsite, Registry, plan_ids,
};
use beian_gateway::datafile::upload::{
    BuildOptions, BuildRecord, PreparedAttachment, build_upload_xml,
};
use beian_gateway::domain::{Filing, FilingType, import::parse_file, ipv4_to_u32};
use beian_gateway::package::encode_gbk;

const ISP_ID: i64 = 1_100_001_234;
const SCHEMA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/miit-v3");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

/// The records "filed before" (fixtures/bureau/sandbox-seed.json) as the gateway's registry.
#[derive(Default)]
struct SeedRegistry {
    subjects: HashMap<String, RegSubject>,
    websites: HashMap<String, RegWebsite>,
}

impl SeedRegistry {
    fn load() -> Self {
        let text = std::fs::read_to_string(format!("{FIXTURES}/bureau/sandbox-seed.json")).unwrap();
        let seed: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut reg = Self::default();
        for s in seed["subjects"].as_array().unwrap() {
            reg.subjects.insert(
                s["recordNumber"].as_str().unwrap().into(),
                RegSubject {
                    ztid: s["ztid"].as_i64().unwrap(),
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
                        ymid: d["ymid"].as_i64().unwrap(),
                        isp_ymid: None,
                    })
                    .collect();
                let accesses = w["accesses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| RegAccess {
                        jrid: a["jrid"].as_i64().unwrap(),
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
                        wzid: w["wzid"].as_i64().unwrap(),
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

struct Fixture {
    name: String,
    filing: Filing,
}

fn fixtures() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(format!("{FIXTURES}/filings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures");
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap();
        for filing in parse_file(&p, &text).unwrap() {
            out.push(Fixture {
                name: p.file_stem().unwrap().to_string_lossy().into_owned(),
                filing,
            });
        }
    }
    out
}

fn prepared(filing: &Filing) -> Vec<PreparedAttachment> {
    filing
        .attachments
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let path = format!("{FIXTURES}/attachments/{}", a.path.as_deref().unwrap());
            let bytes = std::fs::read(&path).unwrap();
            let jpeg = prepare_jpeg(&bytes, max_jpeg_bytes(a.kind.unwrap()), 600, 400)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            PreparedAttachment {
                index,
                jpeg_base64: B64.encode(jpeg),
            }
        })
        .collect()
}

/// Tiny stand-ins so the goldens stay small and readable.
fn placeholders(filing: &Filing) -> Vec<PreparedAttachment> {
    (0..filing.attachments.len())
        .map(|index| PreparedAttachment {
            index,
            jpeg_base64: format!("UExBQ0VIT0xERVI{index}"),
        })
        .collect()
}

fn counter() -> impl FnMut() -> i64 {
    let mut n = 0;
    move || {
        n += 1;
        n
    }
}

fn opts() -> BuildOptions {
    BuildOptions {
        isp_id: ISP_ID,
        app_extension: true,
    }
}

fn schema_for(ext: bool) -> PathBuf {
    let dir = Path::new(SCHEMA_DIR);
    assert!(
        dir.is_dir(),
        "schema directory not found: expected it at {SCHEMA_DIR}"
    );
    dir.join(if ext {
        "upload-data-ext.xsd"
    } else {
        "upload-data.xsd"
    })
}

/// Writes the GBK bytes as they go on the wire and validates them with xmllint.
fn xmllint(xml: &str, file_name: &str, ext: bool) -> Result<(), String> {
    let schema = schema_for(ext);
    assert!(xml.starts_with(r#"<?xml version="1.0" encoding="GBK"?>"#));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file_name);
    std::fs::write(&path, encode_gbk(xml).unwrap()).unwrap();
    let output = match Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(&path)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("xmllint not found: install libxml2-utils")
        }
        Err(e) => panic!("running xmllint: {e}"),
    };
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{file_name} fails {}:\n{}{}",
            schema.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn plan(filing: &Filing, reg: &SeedRegistry, alloc: &mut dyn FnMut() -> i64) -> RecordIds {
    plan_ids(filing, reg, alloc).unwrap_or_else(|f| panic!("{}: {f:?}", filing.id))
}

#[test]
fn every_fixture_validates_against_the_schema() {
    let reg = SeedRegistry::load();
    let codes = CodeTables::bundled().unwrap();
    let mut failures = Vec::new();
    for fx in fixtures() {
        let ids = plan(&fx.filing, &reg, &mut counter());
        let atts = prepared(&fx.filing);
        let rec = BuildRecord {
            filing: &fx.filing,
            ids: &ids,
            attachments: &atts,
        };
        let xml = build_upload_xml(&[rec], &codes, &opts())
            .unwrap_or_else(|e| panic!("{}: {e:#?}", fx.name));
        let ext = fx.filing.filing_type == FilingType::App;
        if let Err(e) = xmllint(&xml, &format!("{}.xml", fx.name.replace('-', "")), ext) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_combined_file_of_several_operations_validates() {
    let reg = SeedRegistry::load();
    let codes = CodeTables::bundled().unwrap();
    let fxs = fixtures();
    let mut alloc = counter();
    let planned: Vec<(RecordIds, Vec<PreparedAttachment>)> = fxs
        .iter()
        .map(|fx| (plan(&fx.filing, &reg, &mut alloc), placeholders(&fx.filing)))
        .collect();
    let records = |with_app: bool| -> Vec<BuildRecord<'_>> {
        fxs.iter()
            .zip(&planned)
            .filter(|(fx, _)| with_app || fx.filing.filing_type != FilingType::App)
            .map(|(fx, (ids, atts))| BuildRecord {
                filing: &fx.filing,
                ids,
                attachments: atts,
            })
            .collect()
    };
    let base = build_upload_xml(&records(false), &codes, &opts()).unwrap();
    for op in ["XZBA", "XZWZ", "XZJR", "BGBA", "ZXBA"] {
        assert_eq!(base.matches(&format!("<{op}>")).count(), 1, "{op} once");
    }
    assert_eq!(base.matches("<Baxx>").count(), 3);
    assert_eq!(base.matches("<Zx_xx>").count(), 3);
    let mut failures: Vec<String> = Vec::new();
    failures.extend(xmllint(&base, "combined.xml", false).err());
    let with_app = build_upload_xml(&records(true), &codes, &opts()).unwrap();
    assert_eq!(with_app.matches("<Baxx>").count(), 4);
    failures.extend(xmllint(&with_app, "combinedext.xml", true).err());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn app_without_the_extension_is_refused() {
    let reg = SeedRegistry::load();
    let codes = CodeTables::bundled().unwrap();
    let fx = fixtures()
        .into_iter()
        .find(|f| f.filing.filing_type == FilingType::App)
        .unwrap();
    let ids = plan(&fx.filing, &reg, &mut counter());
    let atts = placeholders(&fx.filing);
    let rec = BuildRecord {
        filing: &fx.filing,
        ids: &ids,
        attachments: &atts,
    };
    let errors = build_upload_xml(
        &[rec],
        &codes,
        &BuildOptions {
            isp_id: ISP_ID,
            app_extension: false,
        },
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (errors[0].filing_id.as_str(), errors[0].field.as_str()),
        ("F-APP-001", "type")
    );
}

/// One element per line, indented: safe because text never holds `<` (it is escaped).
fn pretty(xml: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for line in xml.replace("><", ">\n<").lines() {
        let closing = line.starts_with("</");
        if closing {
            depth = depth.saturating_sub(1);
        }
        out.push_str(&"  ".repeat(depth));
        out.push_str(line);
        out.push('\n');
        let opening =
            !closing && !line.starts_with("<?") && !line.contains("</") && !line.ends_with("/>");
        if opening {
            depth += 1;
        }
    }
    out
}

#[test]
fn goldens_match() {
    let reg = SeedRegistry::load();
    let codes = CodeTables::bundled().unwrap();
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let dir = PathBuf::from(format!("{FIXTURES}/golden"));
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut mismatches = Vec::new();
    for fx in fixtures() {
        let ids = plan(&fx.filing, &reg, &mut counter());
        let atts = placeholders(&fx.filing);
        let rec = BuildRecord {
            filing: &fx.filing,
            ids: &ids,
            attachments: &atts,
        };
        let xml = pretty(&build_upload_xml(&[rec], &codes, &opts()).unwrap());
        let path = dir.join(format!("{}.xml", fx.name));
        if update {
            std::fs::write(&path, &xml).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(golden) if golden == xml => {}
            Ok(_) => mismatches.push(format!(
                "{} differs (UPDATE_GOLDEN=1 rewrites it):\n{xml}",
                path.display()
            )),
            Err(e) => mismatches.push(format!(
                "{}: {e} (UPDATE_GOLDEN=1 writes it)",
                path.display()
            )),
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Paths the fixtures do not take: a pre-approval (`Nrlx`/`Spwj`), an IDN domain, a
/// prefecture-level region, an own website principal; an APP for a filed subject (XZWZ with
/// `App_xx`); ADD_ACCESS quoting record numbers only (`Wzbah`, `Baxh`); a change adding a domain.
#[test]
fn variants_validate() {
    let codes = CodeTables::bundled().unwrap();
    let reg = SeedRegistry::load();
    let empty = beian_gateway::datafile::ids::EmptyRegistry;
    let by_name = |name: &str| {
        fixtures()
            .into_iter()
            .find(|f| f.name == name)
            .unwrap()
            .filing
    };
    let mut failures = Vec::new();
    let mut check =
        |label: &str, f: Filing, registry: &dyn Registry, ext: bool, expect: &[&str]| {
            let ids =
                plan_ids(&f, registry, &mut counter()).unwrap_or_else(|e| panic!("{label}: {e:?}"));
            let atts = placeholders(&f);
            let rec = BuildRecord {
                filing: &f,
                ids: &ids,
                attachments: &atts,
            };
            let xml = build_upload_xml(&[rec], &codes, &opts())
                .unwrap_or_else(|e| panic!("{label}: {e:#?}"));
            for needle in expect {
                assert!(xml.contains(needle), "{label}: {needle} not in {xml}");
            }
            failures.extend(xmllint(&xml, &format!("{label}.xml"), ext).err());
        };

    let mut f = by_name("first");
    let text = format!(
        r#"{{"kind":"NEWS","number":"京新闻许可2026001号","attachment":"{}/news.jpg"}}"#,
        f.id
    );
    f.websites[0]
        .pre_approvals
        .push(serde_json::from_str(&text).unwrap());
    f.attachments.push(
        serde_json::from_str(&format!(
            r#"{{"kind":"PRE_APPROVAL","owner":"websites[0]","path":"{}/news.jpg"}}"#,
            f.id
        ))
        .unwrap(),
    );
    f.websites[0].domains = vec!["例子.COM".into()];
    f.websites[0].principal = Some(
        serde_json::from_str(r#"{"name":"李网","mobile":"13911112222","email":"web@example.com"}"#)
            .unwrap(),
    );
    f.websites[0].remark = Some("备注 & <说明>".into());
    f.subject.region = Some("110100".into());
    f.subject.investor = None;
    check(
        "firstvariant",
        f,
        &empty,
        false,
        &[
            "<Nrlx><Nrlx_xx><Nrlx_id>1</Nrlx_id><Qzsph>",
            "<Ym>xn--fsqu00a.com</Ym>",
            "<Shiid>110100</Shiid><Xxdz>",
            "<Wz_Bz>备注 &amp; &lt;说明&gt;</Wz_Bz>",
        ],
    );

    let mut f = by_name("app");
    f.subject.record_number = Some("粤ICP备2020000009号".into());
    check(
        "appfiled",
        f,
        &empty,
        true,
        &[
            "<XZWZ><Xzxx><Zt_xx><Ztbah>粤ICP备2020000009号</Ztbah></Zt_xx><App_xx>",
            "<Ssdxlx>1</Ssdxlx><Ssdxbs><Baxh>",
        ],
    );

    let mut f = by_name("add-access");
    f.attachments.push(
        serde_json::from_str(r#"{"kind":"LICENSE","owner":"subject","path":"x/license.jpg"}"#)
            .unwrap(),
    );
    check(
        "addaccessnumbers",
        f,
        &empty,
        false,
        &[
            "<Wz_xx><Wzbah>京ICP备2019000002号-1</Wzbah></Wz_xx>",
            "<Ssdxbs><Baxh>京ICP备2019000002号</Baxh></Ssdxbs>",
        ],
    );

    let mut f = by_name("change-site");
    f.websites[0].domains = vec!["site-changed.com".into()];
    check(
        "changenewdomain",
        f,
        &reg,
        false,
        &["<Ym_xx><IspYmid>1</IspYmid><Ym>site-changed.com</Ym></Ym_xx>"],
    );

    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
