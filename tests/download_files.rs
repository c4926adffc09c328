//! Download data files as a bureau serves them (`fixtures/bureau/downloads/`, written by hand
//! from `miit-v3/download-data.xsd`): every file parses to what its expectation below says — a
//! file without an expectation fails the test — and every good file validates against the
//! schema with xmllint (CI installs libxml2-utils; without it the test fails, it does not skip).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use beian_gateway::codes::Table;
use beian_gateway::datafile::download::{
    Cancellation, Download, DownloadError, DownloadFile, PublishedIp, PublishedRecord, ResultPair,
    Verdict, decided_at, parse_download_bytes,
};
use beian_gateway::package;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/bureau/downloads");
const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/miit-v3/");

enum Schema {
    Base,
    /// The APP extension's schema.
    Ext,
}

enum Expect {
    Good(Schema, fn(&Download)),
    Bad(fn(&DownloadError)),
}

fn expectation(name: &str) -> Option<Expect> {
    use Expect::{Bad, Good};
    Some(match name {
        "bajg-results.xml" => Good(Schema::Base, bajg_results),
        "basj-subject-two-websites.gbk.xml" => Good(Schema::Base, basj_two_websites),
        "basj-app.xml" => Good(Schema::Ext, basj_app),
        "zxsj-cancellations.xml" => Good(Schema::Base, zxsj_cancellations),
        "jcdm-one-table.xml" => Good(Schema::Base, jcdm_one_table),
        "hmdlb-other.xml" => Good(Schema::Base, hmdlb_other),
        "bajg-and-basj.xml" => Good(Schema::Base, bajg_and_basj),
        "bad-pair-count.xml" => Bad(|e| {
            assert_eq!(
                *e,
                DownloadError::PairCount {
                    path: "DownloadData/ICP/BAJG".into(),
                    jg_xx: 2,
                    gjsh: 1
                }
            );
            let message = e.to_string();
            assert!(
                message.contains("2 Jg_xx") && message.contains("1 GJSHS/Gjsh"),
                "{message}"
            );
        }),
        "bad-missing-jgdm.xml" => Bad(|e| {
            assert_eq!(
                *e,
                DownloadError::Missing {
                    path: "DownloadData/ICP/BAJG/Jg_xx[1]/Jgxx[2]/Jgdm".into()
                }
            );
        }),
        "bad-jlid-not-numeric.xml" => Bad(|e| {
            assert_eq!(
                *e,
                DownloadError::Invalid {
                    path: "DownloadData/ICP/BAJG/GJSHS[1]/Gjsh[2]/Jlid".into(),
                    value: "70000x".into(),
                    expected: "a positive integer id",
                }
            );
        }),
        "bad-website-without-wzid.xml" => Bad(|e| {
            assert_eq!(
                *e,
                DownloadError::Missing {
                    path: "DownloadData/ICP/BASJ/Baxx[1]/Wz_xx[1]/Wzid".into()
                }
            );
        }),
        "bad-truncated.xml" => Bad(|e| {
            assert_eq!(
                *e,
                DownloadError::Truncated {
                    path: "DownloadData/ICP/BAJG/Jg_xx".into()
                }
            );
        }),
        "bad-wrong-root.xml" => Bad(|e| {
            assert_eq!(
                *e,
                DownloadError::WrongRoot {
                    found: "UploadData".into()
                }
            );
        }),
        "bad-missing-version.xml" => Bad(|e| assert_eq!(*e, DownloadError::MissingVersion)),
        "bad-invalid-gbk.xml" => Bad(|e| assert_eq!(*e, DownloadError::BadGbk)),
        _ => return None,
    })
}

// ---- expectations of the good files ----

fn only(download: &Download) -> &DownloadFile {
    assert_eq!(download.version, "V.3.0");
    assert_eq!(download.parts.len(), 1, "{:?}", download.parts);
    &download.parts[0]
}

fn pairs(part: &DownloadFile) -> &[ResultPair] {
    match part {
        DownloadFile::Bajg(pairs) => pairs,
        other => panic!("expected BAJG, got {other:?}"),
    }
}

fn records(part: &DownloadFile) -> &[PublishedRecord] {
    match part {
        DownloadFile::Basj(records) => records,
        other => panic!("expected BASJ, got {other:?}"),
    }
}

fn codes(pair: &ResultPair) -> Vec<i64> {
    pair.codes.iter().map(|c| c.jgdm).collect()
}

fn bajg_results(d: &Download) {
    let p = pairs(only(d));
    assert_eq!(p.len(), 5);

    assert_eq!(codes(&p[0]), [1001]);
    assert_eq!(
        (p[0].operation(), p[0].jlid, p[0].shjg),
        (1, Some(700001), 1)
    );
    assert_eq!(p[0].verdict(), Verdict::Approved);
    assert_eq!(p[0].bs.as_deref(), Some("京ICP备2026000001号"));
    assert_eq!(p[0].shrxm.as_deref(), Some("张审核"));
    assert!(!p[0].is_whole_file());
    let applied = chrono::DateTime::parse_from_rfc3339("2026-03-05T09:00:00+08:00").unwrap();
    assert_eq!(
        decided_at(Some(&p[0].shsj), applied).to_rfc3339(),
        "2026-03-01T10:22:05+08:00"
    );

    assert_eq!(codes(&p[1]), [1004, 1041]);
    assert_eq!((p[1].czlx, p[1].jlid, p[1].shjg), (2, Some(800002), 0));
    assert_eq!(p[1].verdict(), Verdict::Rejected);
    assert_eq!(p[1].codes[0].dmms.as_deref(), Some("域名不合法"));
    assert_eq!(p[1].shyj.as_deref(), Some("请核实域名 & 首页地址"));
    assert_eq!(
        p[1].reasons(),
        vec![
            (1004, "域名不合法; 请核实域名 & 首页地址".to_owned()),
            (
                1041,
                "网站首页URL必须包含网站域名中的一个; 请核实域名 & 首页地址".to_owned()
            ),
        ]
    );
    assert_eq!(
        decided_at(Some(&p[1].shsj), applied).to_rfc3339(),
        "2026-03-01T00:00:00+08:00",
        "a date alone is midnight"
    );

    assert_eq!(codes(&p[2]), [1901]);
    assert_eq!(p[2].jlid, Some(800003));
    assert_eq!(
        p[2].verdict(),
        Verdict::AwaitingSms {
            deadline: Some("2026-03-03T10:22:05+08:00".into())
        }
    );

    assert_eq!(codes(&p[3]), [1902]);
    assert_eq!(p[3].jlid, Some(700004));
    assert_eq!(p[3].verdict(), Verdict::Expired);

    assert_eq!(codes(&p[4]), [5001]);
    assert!(p[4].is_whole_file());
    assert_eq!(p[4].jlid, None);
    assert_eq!(p[4].codes[0].dmms.as_deref(), Some("1001U0000000042.xml"));
    assert_eq!(p[4].verdict(), Verdict::Rejected);
}

fn basj_two_websites(d: &Download) {
    let r = records(only(d));
    assert_eq!(r.len(), 1);
    let s = &r[0].subject;
    assert_eq!((s.isp_ztid, s.ztid), (Some(700001), 110000123));
    assert_eq!(s.record_number.as_deref(), Some("京ICP备2026000001号"));
    assert_eq!(s.name, "北京示例科技有限公司");
    assert!(r[0].apps.is_empty());

    let w = &r[0].websites;
    assert_eq!(w.len(), 2);
    assert_eq!((w[0].isp_wzid, w[0].wzid), (Some(800001), 210001));
    assert_eq!(w[0].record_number.as_deref(), Some("京ICP备2026000001号-1"));
    assert_eq!(w[0].name, "示例官网");
    let domains: Vec<_> = w[0]
        .domains
        .iter()
        .map(|d| (d.isp_ymid, d.ymid, d.ym.as_str()))
        .collect();
    assert_eq!(
        domains,
        [
            (Some(900001), 310001, "example-one.cn"),
            (Some(900002), 310002, "example-one.com.cn")
        ]
    );
    assert_eq!(w[0].accesses.len(), 1);
    assert_eq!(
        (w[0].accesses[0].isp_jrid, w[0].accesses[0].jrid),
        (Some(600001), 410001)
    );
    assert_eq!(
        w[0].accesses[0].ips,
        [PublishedIp {
            isp_ipid: Some(500001),
            ipid: 510001,
            qsip: u32::from(std::net::Ipv4Addr::new(203, 0, 113, 10)),
            zzip: u32::from(std::net::Ipv4Addr::new(203, 0, 113, 20)),
        }]
    );

    assert_eq!((w[1].isp_wzid, w[1].wzid), (Some(800002), 210002));
    assert_eq!(w[1].record_number.as_deref(), Some("京ICP备2026000001号-2"));
    assert_eq!(w[1].domains.len(), 1);
    assert_eq!(
        (w[1].domains[0].isp_ymid, w[1].domains[0].ymid),
        (None, 310003)
    );
    assert_eq!(w[1].accesses[0].isp_jrid, None, "an access filed before");
    assert_eq!(w[1].accesses[0].jrid, 410002);
    let ips: Vec<_> = w[1].accesses[0]
        .ips
        .iter()
        .map(|ip| (ip.isp_ipid, ip.ipid, ip.qsip, ip.zzip))
        .collect();
    assert_eq!(
        ips,
        [
            (None, 510002, 3325256705, 3325256958),
            (Some(500003), 510003, 3221225985, 3221225992)
        ]
    );
}

fn basj_app(d: &Download) {
    let r = records(only(d));
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].subject.isp_ztid, r[0].subject.ztid),
        (None, 110000123)
    );
    assert!(r[0].websites.is_empty());
    assert_eq!(r[0].apps.len(), 1);
    let a = &r[0].apps[0];
    assert_eq!(
        (a.isp_appid, a.appid, a.platform),
        (Some(850001), 220001, 1)
    );
    assert_eq!(a.record_number, "京ICP备2026000001号-3A");
    assert_eq!(a.name, "示例应用");
    assert_eq!(a.package_name, "cn.example.app");
}

fn zxsj_cancellations(d: &Download) {
    assert_eq!(
        *only(d),
        DownloadFile::Zxsj(vec![
            Cancellation {
                zxlb: 0,
                jlid: 110000456
            },
            Cancellation {
                zxlb: 1,
                jlid: 210002
            },
        ])
    );
}

fn jcdm_one_table(d: &Download) {
    let DownloadFile::Jcdm(tables) = only(d) else {
        panic!("expected JCDM, got {:?}", d.parts)
    };
    assert_eq!(tables.id_by_name(Table::Dwxz, "企业"), Ok(40));
    assert!(
        tables.id_by_name(Table::Dwxz, "个人").is_err(),
        "Sfyx 0 is not usable"
    );
    assert_eq!(tables.entries(Table::Dwxz).len(), 2);
    assert!(!tables.has(Table::Qy), "only the table carried");
}

fn hmdlb_other(d: &Download) {
    assert_eq!(
        *only(d),
        DownloadFile::Other {
            kind: "HMDLB".into()
        }
    );
}

fn bajg_and_basj(d: &Download) {
    assert_eq!(d.parts.len(), 2, "{:?}", d.parts);
    let r = records(&d.parts[0]);
    assert_eq!(r[0].subject.ztid, 110000789);
    assert_eq!(
        r[0].subject.record_number.as_deref(),
        Some("沪ICP备2025000777号")
    );
    assert_eq!(
        r[0].websites[0].record_number.as_deref(),
        Some("沪ICP备2025000777号-1")
    );
    let p = pairs(&d.parts[1]);
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].operation(), p[0].jlid), (4, Some(110000789)));
    assert_eq!(p[0].verdict(), Verdict::Approved);
}

// ---- the tests ----

fn fixture_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .unwrap_or_else(|e| panic!("cannot read {FIXTURES}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {FIXTURES}");
    files
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_fixture_parses_as_expected() {
    let files = fixture_files();
    let mut missing = Vec::new();
    for path in &files {
        let name = name_of(path);
        let Some(expect) = expectation(&name) else {
            missing.push(name);
            continue;
        };
        let bytes = std::fs::read(path).unwrap();
        match (expect, parse_download_bytes(&bytes)) {
            (Expect::Good(_, check), Ok(download)) => check(&download),
            (Expect::Good(..), Err(e)) => panic!("{name}: should parse, got error: {e}"),
            (Expect::Bad(check), Err(e)) => check(&e),
            (Expect::Bad(_), Ok(d)) => panic!("{name}: should fail, parsed as {d:?}"),
        }
    }
    assert!(
        missing.is_empty(),
        "fixtures without an expectation: {missing:?}"
    );
    // And no expectation outlives its file.
    let present: BTreeSet<String> = files.iter().map(|p| name_of(p)).collect();
    for name in [
        "bajg-results.xml",
        "basj-subject-two-websites.gbk.xml",
        "basj-app.xml",
        "zxsj-cancellations.xml",
        "jcdm-one-table.xml",
        "hmdlb-other.xml",
        "bajg-and-basj.xml",
        "bad-pair-count.xml",
        "bad-missing-jgdm.xml",
        "bad-jlid-not-numeric.xml",
        "bad-website-without-wzid.xml",
        "bad-truncated.xml",
        "bad-wrong-root.xml",
        "bad-missing-version.xml",
        "bad-invalid-gbk.xml",
    ] {
        assert!(present.contains(name), "expected fixture {name} is missing");
    }
}

#[test]
fn the_gbk_fixture_really_is_gbk() {
    let bytes =
        std::fs::read(Path::new(FIXTURES).join("basj-subject-two-websites.gbk.xml")).unwrap();
    assert!(bytes.starts_with(b"<?xml version=\"1.0\" encoding=\"GBK\"?>"));
    assert!(
        std::str::from_utf8(&bytes).is_err(),
        "should be GBK, not UTF-8"
    );
    assert!(
        package::decode_gbk(&bytes)
            .unwrap()
            .contains("京ICP备2026000001号-2")
    );
}

/// xmllint reads GBK only when libxml2 was built with iconv: hand it a UTF-8 copy.
fn as_utf8_file(path: &Path, dir: &Path) -> PathBuf {
    let bytes = std::fs::read(path).unwrap();
    let Ok(text) = std::str::from_utf8(&bytes) else {
        let text = package::decode_gbk(&bytes).unwrap().replacen(
            "encoding=\"GBK\"",
            "encoding=\"UTF-8\"",
            1,
        );
        let copy = dir.join(path.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        return copy;
    };
    assert!(
        !text.contains("encoding=\"GBK\""),
        "{path:?}: UTF-8 bytes declared GBK"
    );
    path.to_path_buf()
}

#[test]
fn good_fixtures_validate_against_the_schema() {
    match Command::new("xmllint").arg("--version").output() {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("xmllint not found: install libxml2-utils")
        }
        Err(e) => panic!("cannot run xmllint: {e}"),
    }
    let schemas = Path::new(SCHEMAS);
    for xsd in ["download-data.xsd", "download-data-ext.xsd"] {
        assert!(
            schemas.join(xsd).is_file(),
            "schema {xsd} not found: expected the MIIT V3.0 schemas in {SCHEMAS}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for path in fixture_files() {
        let name = name_of(&path);
        let Some(Expect::Good(schema, _)) = expectation(&name) else {
            continue;
        };
        let xsd = schemas.join(match schema {
            Schema::Base => "download-data.xsd",
            Schema::Ext => "download-data-ext.xsd",
        });
        let file = as_utf8_file(&path, tmp.path());
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(&xsd)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} does not validate against {xsd:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert_eq!(checked, 7, "every good fixture is validated");
}
