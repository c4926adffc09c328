//! Preflight: everything a bureau would refuse, found before a filing is claimed, so a
//! rejection never costs the customer days. [`check`] returns **all** findings at once, each
//! with a stable code ([`codes`]) and the field path in the filing document
//! (`websites[0].homeUrls[1]`); a filing with any finding goes to `needs_correction` and is
//! never sent.
//!
//! Rules: identities and ages ([`identity`]), national rules on regions, phones, domains,
//! remarks and record numbers ([`national`]), attachments ([`attachments`]), each bureau's
//! extra rules from provinces.toml ([`provincial`]), and the interface's own limits (text
//! lengths, GBK, the bureau's code tables) by building the data file with placeholder ids —
//! the builder (`datafile::upload`) is the one place those limits live.
//!
//! Owns: deciding what is wrong with a filing. Must not touch the store or the network: the
//! caller passes the bureau's code tables, the province's rules and the attachments directory.

use std::collections::HashSet;
use std::path::Path;

use chrono::NaiveDate;

use crate::attachments::PreparedCache;
use crate::codes::CodeTables;
use crate::datafile::Finding;
use crate::datafile::ids::{AppRecordIds, DomainIds, IpIds, RecordIds, SiteRecordIds};
use crate::datafile::upload::{self, BuildOptions, BuildRecord, PreparedAttachment};
use crate::domain::{Access, Filing, FilingType};
use crate::provinces::Province;

pub mod attachments;
pub mod identity;
pub mod national;
pub mod provincial;

/// The stable codes of preflight findings (`reasons[].code`, source `preflight`).
pub mod codes {
    pub const USCC_FORMAT: &str = "USCC_FORMAT";
    pub const USCC_CHECK: &str = "USCC_CHECK";
    pub const RESIDENT_ID_FORMAT: &str = "RESIDENT_ID_FORMAT";
    pub const RESIDENT_ID_DATE: &str = "RESIDENT_ID_DATE";
    pub const RESIDENT_ID_CHECK: &str = "RESIDENT_ID_CHECK";
    pub const RESIDENT_ID_LOWERCASE_X: &str = "RESIDENT_ID_LOWERCASE_X";
    pub const PRINCIPAL_UNDER_16: &str = "PRINCIPAL_UNDER_16";
    pub const PRINCIPAL_UNDER_18: &str = "PRINCIPAL_UNDER_18";
    pub const PROVINCE_UNKNOWN: &str = "PROVINCE_UNKNOWN";
    pub const REGION_UNKNOWN: &str = "REGION_UNKNOWN";
    pub const REGION_OUTSIDE_PROVINCE: &str = "REGION_OUTSIDE_PROVINCE";
    pub const MOBILE_FORMAT: &str = "MOBILE_FORMAT";
    pub const OFFICE_PHONE_FORMAT: &str = "OFFICE_PHONE_FORMAT";
    pub const EMAIL_FORMAT: &str = "EMAIL_FORMAT";
    pub const DOMAIN_SYNTAX: &str = "DOMAIN_SYNTAX";
    pub const DOMAIN_SUFFIX_NOT_ALLOWED: &str = "DOMAIN_SUFFIX_NOT_ALLOWED";
    pub const DOMAIN_COUNT: &str = "DOMAIN_COUNT";
    pub const DOMAIN_DUPLICATE: &str = "DOMAIN_DUPLICATE";
    pub const HOME_URL_COUNT: &str = "HOME_URL_COUNT";
    pub const HOME_URL_NOT_OWN_DOMAIN: &str = "HOME_URL_NOT_OWN_DOMAIN";
    pub const REMARK_REQUIRED: &str = "REMARK_REQUIRED";
    pub const PRE_APPROVAL_NUMBER_REQUIRED: &str = "PRE_APPROVAL_NUMBER_REQUIRED";
    pub const LEGAL_REPRESENTATIVE_REMARK: &str = "LEGAL_REPRESENTATIVE_REMARK";
    pub const RECORD_NUMBER_REQUIRED: &str = "RECORD_NUMBER_REQUIRED";
    pub const RECORD_NUMBER_FORMAT: &str = "RECORD_NUMBER_FORMAT";
    pub const RECORD_NUMBER_PROVINCE: &str = "RECORD_NUMBER_PROVINCE";
    pub const ATTACHMENT_REQUIRED: &str = "ATTACHMENT_REQUIRED";
    pub const ATTACHMENT_MISSING: &str = "ATTACHMENT_MISSING";
    pub const ATTACHMENT_NOT_JPEG: &str = "ATTACHMENT_NOT_JPEG";
    pub const ATTACHMENT_TOO_LARGE: &str = "ATTACHMENT_TOO_LARGE";
    pub const ATTACHMENT_UNUSABLE: &str = "ATTACHMENT_UNUSABLE";
    pub const DOMAIN_SUFFIX_REFUSED_BY_PROVINCE: &str = "DOMAIN_SUFFIX_REFUSED_BY_PROVINCE";
    pub const LANDLINE_REQUIRED: &str = "LANDLINE_REQUIRED";
    pub const VERIFICATION_FORM_REQUIRED: &str = "VERIFICATION_FORM_REQUIRED";
    pub const SERVER_LOCATION_NOT_ALLOWED: &str = "SERVER_LOCATION_NOT_ALLOWED";
    // The interface's own limits, found by the data-file builder:
    pub use crate::datafile::upload::fault::{
        CODE_TABLE, DATAFILE, NOT_GBK, REQUIRED, TEXT_LENGTH,
    };
}

/// What the rules need besides the filing.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The day ages are counted on; `None`: the filing's `reviewedAt` in Asia/Shanghai.
    pub review_date: Option<NaiveDate>,
    /// The code tables of the filing's bureau (bundled default merged with its JCDM).
    pub codes: &'a CodeTables,
    /// The filing's bureau from provinces.toml (`None`: the province is unknown).
    pub province: Option<&'a Province>,
    /// MIIT-approved top-level domains (config `preflight.allowed_suffixes`).
    pub allowed_suffixes: &'a [String],
    pub attachments_dir: &'a Path,
    /// The smallest legible size a re-encoded attachment may have.
    pub min_width: u32,
    pub min_height: u32,
    /// Where re-encoded attachments are kept for the claim (`None`: not kept).
    pub prepared: Option<&'a PreparedCache>,
    /// The data file's options for this bureau (its `ispId`, the `app` extension).
    pub build: BuildOptions,
}

/// Every finding on `filing`, in rule order; empty when it may be sent.
pub fn check(filing: &Filing, ctx: &Context<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let review_date = ctx.review_date.unwrap_or_else(|| {
        filing
            .reviewed_at
            .with_timezone(&crate::store::tz())
            .date_naive()
    });
    identity::check(filing, review_date, &mut out);
    national::check(filing, ctx, &mut out);
    attachments::check(filing, ctx, &mut out);
    provincial::check(filing, ctx, &mut out);
    interface_limits(filing, ctx, &mut out);
    out
}

/// Whether a filing type sends the subject's and websites' content (not a cancellation).
pub(crate) fn sends_content(t: FilingType) -> bool {
    !t.is_cancel()
}

/// The interface's limits (bureau-protocol.md section 7): the data-file builder run with
/// placeholder ids and attachments. Its faults on fields a rule above already reported are
/// left out (one finding per field is enough to correct it).
fn interface_limits(f: &Filing, ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let ids = placeholder_ids(f);
    let prepared: Vec<PreparedAttachment> = (0..f.attachments.len())
        .map(|index| PreparedAttachment {
            index,
            jpeg_base64: "AAAA".into(),
        })
        .collect();
    let record = BuildRecord {
        filing: f,
        ids: &ids,
        attachments: &prepared,
    };
    let Err(errors) = upload::build_upload_xml(&[record], ctx.codes, &ctx.build) else {
        return;
    };
    let reported: HashSet<String> = out.iter().map(|x| x.field.clone()).collect();
    for e in errors {
        if reported.contains(&e.field) {
            continue;
        }
        out.push(Finding::new(&e.code, e.field, e.message));
    }
}

/// Ids for every record, as if every province id were known: id resolution is the claim's
/// business (it needs the registry); here only the content is judged.
fn placeholder_ids(f: &Filing) -> RecordIds {
    let ips = |a: Option<&Access>| -> Vec<IpIds> {
        (0..a.map_or(0, |a| a.ips.len()))
            .map(|_| IpIds {
                isp_ipid: 1,
                ipid: Some(1),
            })
            .collect()
    };
    RecordIds {
        isp_ztid: Some(1),
        ztid: Some(1),
        websites: f
            .websites
            .iter()
            .map(|w| SiteRecordIds {
                isp_wzid: Some(1),
                wzid: Some(1),
                domains: w
                    .domains
                    .iter()
                    .map(|_| DomainIds {
                        isp_ymid: 1,
                        ymid: Some(1),
                    })
                    .collect(),
                isp_jrid: Some(1),
                jrid: Some(1),
                ips: ips(w.access.as_ref()),
            })
            .collect(),
        apps: f
            .apps
            .iter()
            .map(|a| AppRecordIds {
                isp_appid: Some(1),
                appid: Some(1),
                isp_jrid: Some(1),
                jrid: Some(1),
                ips: ips(a.access.as_ref()),
            })
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared by the rule modules' tests: a valid filing and a context to break one rule at a
    //! time.
    use super::*;
    use crate::provinces::Provinces;

    pub fn fixture(name: &str) -> Filing {
        let path = format!("{}/fixtures/filings/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        crate::domain::import::parse_file(Path::new(&path), &text)
            .unwrap()
            .remove(0)
    }

    pub struct Env {
        pub codes: CodeTables,
        pub provinces: Provinces,
        pub suffixes: Vec<String>,
        pub dir: std::path::PathBuf,
    }

    impl Env {
        pub fn new() -> Self {
            let settings = crate::config::Settings::load(None).unwrap();
            Self {
                codes: CodeTables::bundled().unwrap(),
                provinces: Provinces::bundled().unwrap(),
                suffixes: settings.preflight.allowed_suffixes,
                dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/attachments"),
            }
        }

        pub fn ctx(&self, province: &str) -> Context<'_> {
            Context {
                review_date: None,
                codes: &self.codes,
                province: self.provinces.get(province),
                allowed_suffixes: &self.suffixes,
                attachments_dir: &self.dir,
                min_width: 600,
                min_height: 400,
                prepared: None,
                build: BuildOptions {
                    isp_id: 1_100_001_234,
                    app_extension: true,
                },
            }
        }

        /// The findings of `f` in its own province.
        pub fn check(&self, f: &Filing) -> Vec<Finding> {
            check(f, &self.ctx(&f.province))
        }
    }

    /// `(code, field)` pairs, for asserting.
    pub fn pairs(findings: &[Finding]) -> Vec<(String, String)> {
        findings
            .iter()
            .map(|f| (f.code.clone(), f.field.clone()))
            .collect()
    }

    pub fn has(findings: &[Finding], code: &str, field: &str) -> bool {
        findings.iter().any(|f| f.code == code && f.field == field)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn every_bundled_fixture_passes() {
        let env = Env::new();
        for name in [
            "first.json",
            "add-site.json",
            "add-access.json",
            "change-subject.json",
            "change-site.json",
            "change-access.json",
            "cancel-access.json",
            "cancel-site.json",
            "cancel-subject.json",
            "app.json",
            "first-rejected.json",
            "first-expired.json",
        ] {
            let f = fixture(name);
            assert_eq!(pairs(&env.check(&f)), vec![], "{name}");
        }
    }

    #[test]
    fn all_findings_at_once_and_interface_limits_through_the_builder() {
        let env = Env::new();
        let mut f = fixture("first.json");
        f.subject.name = Some("北京示例\u{1F600}".into()); // not in GBK
        f.websites[0].name = Some("名".repeat(600));
        f.subject.principal.as_mut().unwrap().mobile = Some("2380000123".into());
        let found = env.check(&f);
        assert!(has(&found, codes::NOT_GBK, "subject.name"), "{found:?}");
        assert!(has(&found, codes::TEXT_LENGTH, "websites[0].name"));
        assert!(has(
            &found,
            codes::MOBILE_FORMAT,
            "subject.principal.mobile"
        ));
        // The builder's own complaint about the mobile is not repeated.
        assert_eq!(
            found
                .iter()
                .filter(|x| x.field == "subject.principal.mobile")
                .count(),
            1
        );
    }

    #[test]
    fn a_word_the_bureau_table_lacks_is_a_code_table_finding() {
        let env = Env::new();
        let f = fixture("first.json");
        // A bureau whose JCDM carries a Wzfwlx_xx table without 单位门户网站.
        let jcdm = r#"<?xml version="1.0" encoding="UTF-8"?><DownloadData><JCDM><Jcdm_xx><Wzfwlx_dms><Wzfwlx_xx><Id>1</Id><Mc>综合门户</Mc><Sfyx>1</Sfyx></Wzfwlx_xx></Wzfwlx_dms></Jcdm_xx></JCDM></DownloadData>"#;
        let mut codes_table = CodeTables::bundled().unwrap();
        codes_table.merge(CodeTables::parse_jcdm(jcdm).unwrap());
        let ctx = Context {
            codes: &codes_table,
            ..env.ctx("110000")
        };
        let found = check(&f, &ctx);
        assert!(
            has(&found, codes::CODE_TABLE, "websites[0].serviceContent"),
            "{found:?}"
        );
    }
}
