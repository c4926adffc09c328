//! The ids a filing's records carry (bureau-protocol.md section 7, filing-format.md
//! `bureauIds`): fresh provider ids (`Isp*id`) for every new record, and the province ids
//! (`Ztid`, `Wzid`, `Jrid`, `Ymid`, `Ipid`, `Appid`) of filed records, from the registry of BASJ
//! records first, else from the document's `bureauIds` (by position).
//!
//! Owns: deciding which id each record gets. Must not touch the store, the wire or the clock:
//! the registry is preloaded by the caller and `alloc` is the caller's persisted counter.

use serde::{Deserialize, Serialize};

use super::Finding;
use super::upload::ascii_domain;
use crate::domain::{Access, Filing, FilingType, ipv4_to_u32};

/// The ids of one filing's records, by position of `websites[]` / `apps[]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RecordIds {
    pub isp_ztid: Option<i64>,
    pub ztid: Option<i64>,
    pub websites: Vec<SiteRecordIds>,
    pub apps: Vec<AppRecordIds>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SiteRecordIds {
    pub isp_wzid: Option<i64>,
    pub wzid: Option<i64>,
    /// By position of the website's `domains[]`.
    pub domains: Vec<DomainIds>,
    pub isp_jrid: Option<i64>,
    pub jrid: Option<i64>,
    /// By position of the access's `ips[]`.
    pub ips: Vec<IpIds>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DomainIds {
    pub isp_ymid: i64,
    pub ymid: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct IpIds {
    pub isp_ipid: i64,
    pub ipid: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppRecordIds {
    pub isp_appid: Option<i64>,
    pub appid: Option<i64>,
    pub isp_jrid: Option<i64>,
    pub jrid: Option<i64>,
    pub ips: Vec<IpIds>,
}

/// A published subject (BASJ `Zt_xx`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RegSubject {
    pub ztid: i64,
    pub isp_ztid: Option<i64>,
}

/// A published website (BASJ `Wz_xx`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RegWebsite {
    pub wzid: i64,
    pub isp_wzid: Option<i64>,
    pub domains: Vec<RegDomain>,
    pub accesses: Vec<RegAccess>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RegDomain {
    /// As published (ASCII; compared case-insensitively).
    pub ym: String,
    pub ymid: i64,
    pub isp_ymid: Option<i64>,
}

/// A published access; `isp_jrid` is set when it was filed through this gateway.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RegAccess {
    pub jrid: i64,
    pub isp_jrid: Option<i64>,
    pub ips: Vec<RegIp>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RegIp {
    pub ip: u32,
    pub ipid: Option<i64>,
    pub isp_ipid: Option<i64>,
}

/// A published app (BASJ `App_xx`, APP extension).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RegApp {
    pub appid: i64,
    pub isp_appid: Option<i64>,
    pub accesses: Vec<RegAccess>,
}

/// The gateway's registry of bureau records (BASJ) for one bureau, preloaded by the caller.
pub trait Registry {
    fn subject(&self, record_number: &str) -> Option<RegSubject>;
    fn website(&self, record_number: &str) -> Option<RegWebsite>;
    fn app(&self, record_number: &str) -> Option<RegApp>;
}

/// A registry that knows nothing (every province id then comes from `bureauIds`).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyRegistry;

impl Registry for EmptyRegistry {
    fn subject(&self, _: &str) -> Option<RegSubject> {
        None
    }
    fn website(&self, _: &str) -> Option<RegWebsite> {
        None
    }
    fn app(&self, _: &str) -> Option<RegApp> {
        None
    }
}

/// Finding codes of this module.
pub mod codes {
    /// A change or cancellation of the subject whose `Ztid` is known neither to the registry
    /// nor to `bureauIds.subject`.
    pub const UNRESOLVED_ZTID: &str = "unresolved_ztid";
    pub const UNRESOLVED_WZID: &str = "unresolved_wzid";
    pub const UNRESOLVED_JRID: &str = "unresolved_jrid";
    /// ADD_SITE / ADD_ACCESS: neither a record number nor a province id names the record.
    pub const NO_RECORD_REFERENCE: &str = "no_record_reference";
    /// CANCEL_SITE / CANCEL_ACCESS without any website to act on.
    pub const NOTHING_TO_CANCEL: &str = "nothing_to_cancel";
}

/// Which ids a filed website needs resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SiteNeed {
    /// ADD_ACCESS: `Wzid` or the record number; a new access.
    NewAccess,
    /// CHANGE_*: `Wzid`, `Jrid`, and the existing domains' / IPs' ids.
    Whole,
    /// CANCEL_SITE: `Wzid`.
    Wzid,
    /// CANCEL_ACCESS: `Jrid`.
    Jrid,
}

struct Planner<'a> {
    filing: &'a Filing,
    registry: &'a dyn Registry,
    alloc: &'a mut dyn FnMut() -> i64,
    findings: Vec<Finding>,
}

/// Plans the ids of `filing`'s records. Every unresolvable id is reported, not just the first.
pub fn plan_ids(
    filing: &Filing,
    registry: &dyn Registry,
    alloc: &mut dyn FnMut() -> i64,
) -> Result<RecordIds, Vec<Finding>> {
    let mut p = Planner {
        filing,
        registry,
        alloc,
        findings: Vec::new(),
    };
    let ids = p.plan();
    if p.findings.is_empty() {
        Ok(ids)
    } else {
        Err(p.findings)
    }
}

impl Planner<'_> {
    fn plan(&mut self) -> RecordIds {
        let f = self.filing;
        let t = f.filing_type;
        let mut ids = RecordIds::default();
        let subject_is_new = match t {
            FilingType::First => true,
            FilingType::App => f.subject.record_number.is_none(),
            _ => false,
        };
        if subject_is_new {
            ids.isp_ztid = Some(self.next());
        } else {
            let reg = f
                .subject
                .record_number
                .as_deref()
                .and_then(|n| self.registry.subject(n));
            ids.isp_ztid = reg.as_ref().and_then(|r| r.isp_ztid);
            ids.ztid = reg
                .map(|r| r.ztid)
                .or_else(|| f.bureau_ids.as_ref().and_then(|b| b.subject));
            let needs_ztid = t.is_change() || t == FilingType::CancelSubject;
            if ids.ztid.is_none() && needs_ztid {
                self.find(
                    codes::UNRESOLVED_ZTID,
                    "subject.recordNumber",
                    "the subject's province id (Ztid) is known neither to the registry nor \
                     given in bureauIds.subject",
                );
            }
            if ids.ztid.is_none()
                && f.subject.record_number.is_none()
                && matches!(t, FilingType::AddSite | FilingType::App)
            {
                self.find(
                    codes::NO_RECORD_REFERENCE,
                    "subject.recordNumber",
                    "the filed subject needs its record number or bureauIds.subject",
                );
            }
        }
        if matches!(t, FilingType::CancelSite | FilingType::CancelAccess) && f.websites.is_empty() {
            self.find(
                codes::NOTHING_TO_CANCEL,
                "websites",
                "a cancellation of websites or accesses lists the websites it acts on",
            );
        }
        for i in 0..f.websites.len() {
            let site = match t {
                FilingType::First | FilingType::AddSite | FilingType::App => self.new_site(i),
                FilingType::AddAccess => self.filed_site(i, SiteNeed::NewAccess),
                FilingType::CancelSite => self.filed_site(i, SiteNeed::Wzid),
                FilingType::CancelAccess => self.filed_site(i, SiteNeed::Jrid),
                FilingType::ChangeSubject | FilingType::ChangeSite | FilingType::ChangeAccess => {
                    self.filed_site(i, SiteNeed::Whole)
                }
                // The subject alone is cancelled; its websites go with it.
                FilingType::CancelSubject => SiteRecordIds::default(),
            };
            ids.websites.push(site);
        }
        for i in 0..f.apps.len() {
            let app = self.app(i);
            ids.apps.push(app);
        }
        ids
    }

    fn next(&mut self) -> i64 {
        (self.alloc)()
    }

    fn find(&mut self, code: &str, field: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding::new(code, field, message));
    }

    fn new_ips(&mut self, access: Option<&Access>) -> Vec<IpIds> {
        let n = access.map_or(0, |a| a.ips.len());
        (0..n)
            .map(|_| IpIds {
                isp_ipid: self.next(),
                ipid: None,
            })
            .collect()
    }

    fn new_site(&mut self, i: usize) -> SiteRecordIds {
        let w = &self.filing.websites[i];
        let isp_wzid = Some(self.next());
        let domains = (0..w.domains.len())
            .map(|_| DomainIds {
                isp_ymid: self.next(),
                ymid: None,
            })
            .collect();
        let isp_jrid = w.access.as_ref().map(|_| self.next());
        let ips = self.new_ips(w.access.as_ref());
        SiteRecordIds {
            isp_wzid,
            wzid: None,
            domains,
            isp_jrid,
            jrid: None,
            ips,
        }
    }

    fn filed_site(&mut self, i: usize, need: SiteNeed) -> SiteRecordIds {
        let f = self.filing;
        let w = &f.websites[i];
        let given = f.given_site_ids(i);
        let reg = w
            .record_number
            .as_deref()
            .and_then(|n| self.registry.website(n));
        let mut ids = SiteRecordIds {
            isp_wzid: reg.as_ref().and_then(|r| r.isp_wzid),
            wzid: reg
                .as_ref()
                .map(|r| r.wzid)
                .or_else(|| given.and_then(|g| g.website)),
            ..SiteRecordIds::default()
        };
        let missing_wzid = ids.wzid.is_none();
        match need {
            SiteNeed::NewAccess => {
                if missing_wzid && w.record_number.is_none() {
                    self.find(
                        codes::NO_RECORD_REFERENCE,
                        format!("websites[{i}].recordNumber"),
                        "the filed website needs its record number or bureauIds.websites[].website",
                    );
                }
                ids.isp_jrid = w.access.as_ref().map(|_| self.next());
                ids.ips = self.new_ips(w.access.as_ref());
                return ids;
            }
            SiteNeed::Wzid | SiteNeed::Whole if missing_wzid => self.find(
                codes::UNRESOLVED_WZID,
                format!("websites[{i}].recordNumber"),
                "the website's province id (Wzid) is known neither to the registry nor given in \
                 bureauIds.websites[].website",
            ),
            _ => {}
        }
        if need == SiteNeed::Wzid {
            return ids;
        }
        let given_jrid = given.and_then(|g| g.access);
        let (jrid, reg_access) =
            resolve_access(reg.as_ref().map(|r| r.accesses.as_slice()), given_jrid);
        ids.jrid = jrid;
        if jrid.is_none() {
            self.find(
                codes::UNRESOLVED_JRID,
                format!("websites[{i}].access"),
                "the access's province id (Jrid) is known neither to the registry (or it holds \
                 several accesses and none is ours) nor given in bureauIds.websites[].access",
            );
        }
        ids.isp_jrid = reg_access.and_then(|a| a.isp_jrid);
        if need == SiteNeed::Jrid {
            return ids;
        }
        // CHANGE_*: the complete record; existing domains and IPs keep their ids.
        let reg_domains = reg.as_ref().map(|r| r.domains.as_slice()).unwrap_or(&[]);
        for d in &w.domains {
            let ym = ascii_domain(d);
            let known = ym
                .as_deref()
                .and_then(|ym| reg_domains.iter().find(|r| r.ym.eq_ignore_ascii_case(ym)));
            let ids_of = match known {
                Some(r) => DomainIds {
                    isp_ymid: match r.isp_ymid {
                        Some(id) => id,
                        None => self.next(),
                    },
                    ymid: Some(r.ymid),
                },
                None => DomainIds {
                    isp_ymid: self.next(),
                    ymid: None,
                },
            };
            ids.domains.push(ids_of);
        }
        ids.ips = self.matched_ips(w.access.as_ref(), reg_access);
        ids
    }

    /// IPs of a filed access: a known one keeps its `Ipid` and provider id (a new provider id
    /// when the gateway never had one), a new one gets a new provider id only.
    fn matched_ips(&mut self, access: Option<&Access>, reg: Option<&RegAccess>) -> Vec<IpIds> {
        let Some(access) = access else {
            return Vec::new();
        };
        let reg_ips = reg.map(|a| a.ips.as_slice()).unwrap_or(&[]);
        let mut out = Vec::with_capacity(access.ips.len());
        for ip in &access.ips {
            let known = ipv4_to_u32(ip).and_then(|n| reg_ips.iter().find(|r| r.ip == n));
            let ids = match known {
                Some(r) => IpIds {
                    isp_ipid: match r.isp_ipid {
                        Some(id) => id,
                        None => self.next(),
                    },
                    ipid: r.ipid,
                },
                None => IpIds {
                    isp_ipid: self.next(),
                    ipid: None,
                },
            };
            out.push(ids);
        }
        out
    }

    fn app(&mut self, i: usize) -> AppRecordIds {
        let f = self.filing;
        let a = &f.apps[i];
        if a.record_number.is_none() {
            let isp_appid = Some(self.next());
            let isp_jrid = a.access.as_ref().map(|_| self.next());
            let ips = self.new_ips(a.access.as_ref());
            return AppRecordIds {
                isp_appid,
                appid: None,
                isp_jrid,
                jrid: None,
                ips,
            };
        }
        // A filed app: no V3.0 operation (nor the extension) changes or cancels one, so its
        // ids are resolved for the record's sake only; the builder refuses such filings.
        let given = f.given_app_ids(i);
        let reg = a
            .record_number
            .as_deref()
            .and_then(|n| self.registry.app(n));
        let (jrid, reg_access) = resolve_access(
            reg.as_ref().map(|r| r.accesses.as_slice()),
            given.and_then(|g| g.access),
        );
        let ips = self.matched_ips(a.access.as_ref(), reg_access);
        AppRecordIds {
            isp_appid: reg.as_ref().and_then(|r| r.isp_appid),
            appid: reg
                .as_ref()
                .map(|r| r.appid)
                .or_else(|| given.and_then(|g| g.app)),
            isp_jrid: reg_access.and_then(|r| r.isp_jrid),
            jrid,
            ips,
        }
    }
}

/// The access with us of a filed website or app: the registry's first (the one `bureauIds`
/// names when it is among them; else the one filed through this gateway; else the only one),
/// else `bureauIds` alone.
fn resolve_access(
    registry: Option<&[RegAccess]>,
    given: Option<i64>,
) -> (Option<i64>, Option<&RegAccess>) {
    let accesses = registry.unwrap_or(&[]);
    let chosen = given
        .and_then(|g| accesses.iter().find(|a| a.jrid == g))
        .or_else(|| {
            let mut ours = accesses.iter().filter(|a| a.isp_jrid.is_some());
            match (ours.next(), ours.next()) {
                (Some(a), None) => Some(a),
                _ => None,
            }
        })
        .or(match accesses {
            [only] => Some(only),
            _ => None,
        });
    match chosen {
        Some(a) => (Some(a.jrid), Some(a)),
        None => (given, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BureauIds, SiteIds};
    use std::collections::HashMap;

    #[derive(Default)]
    struct MapRegistry {
        subjects: HashMap<String, RegSubject>,
        websites: HashMap<String, RegWebsite>,
    }

    impl Registry for MapRegistry {
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

    fn fixture(name: &str) -> Filing {
        let path = format!("{}/fixtures/filings/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        crate::domain::import::parse_file(std::path::Path::new(&path), &text)
            .unwrap()
            .remove(0)
    }

    fn counter(start: i64) -> impl FnMut() -> i64 {
        let mut n = start - 1;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn first_gets_provider_ids_only() {
        let f = fixture("first.json");
        let ids = plan_ids(&f, &EmptyRegistry, &mut counter(1)).unwrap();
        assert_eq!(ids.isp_ztid, Some(1));
        assert_eq!(ids.ztid, None);
        let w = &ids.websites[0];
        assert_eq!(w.isp_wzid, Some(2));
        assert_eq!(
            w.domains,
            vec![DomainIds {
                isp_ymid: 3,
                ymid: None
            }]
        );
        assert_eq!(w.isp_jrid, Some(4));
        assert_eq!(
            w.ips,
            vec![IpIds {
                isp_ipid: 5,
                ipid: None
            }]
        );
    }

    #[test]
    fn change_keeps_known_domain_and_ip_ids_and_gives_new_ones_new_provider_ids() {
        let mut f = fixture("change-access.json");
        f.websites[0].domains.push("new-one.com".into());
        f.websites[0].access.as_mut().unwrap().ips =
            vec!["203.0.113.60".into(), "203.0.113.66".into()];
        let mut reg = MapRegistry::default();
        reg.subjects.insert(
            "京ICP备2021000006号".into(),
            RegSubject {
                ztid: 41,
                isp_ztid: Some(7),
            },
        );
        reg.websites.insert(
            "京ICP备2021000006号-1".into(),
            RegWebsite {
                wzid: 42,
                isp_wzid: None,
                domains: vec![RegDomain {
                    ym: "ACCESS-change.com".into(),
                    ymid: 43,
                    isp_ymid: Some(9),
                }],
                accesses: vec![
                    RegAccess {
                        jrid: 50,
                        isp_jrid: None,
                        ips: vec![],
                    },
                    RegAccess {
                        jrid: 44,
                        isp_jrid: Some(8),
                        ips: vec![RegIp {
                            ip: ipv4_to_u32("203.0.113.60").unwrap(),
                            ipid: Some(45),
                            isp_ipid: None,
                        }],
                    },
                ],
            },
        );
        f.bureau_ids = None;
        let ids = plan_ids(&f, &reg, &mut counter(100)).unwrap();
        assert_eq!((ids.ztid, ids.isp_ztid), (Some(41), Some(7)));
        let w = &ids.websites[0];
        assert_eq!(w.wzid, Some(42));
        assert_eq!(
            (w.jrid, w.isp_jrid),
            (Some(44), Some(8)),
            "our access, not the other provider's"
        );
        assert_eq!(
            w.domains,
            vec![
                DomainIds {
                    isp_ymid: 9,
                    ymid: Some(43)
                },
                DomainIds {
                    isp_ymid: 100,
                    ymid: None
                }
            ]
        );
        assert_eq!(
            w.ips,
            vec![
                IpIds {
                    isp_ipid: 101,
                    ipid: Some(45)
                },
                IpIds {
                    isp_ipid: 102,
                    ipid: None
                }
            ]
        );
    }

    #[test]
    fn bureau_ids_are_the_fallback_and_registry_wins() {
        let f = fixture("change-site.json");
        let ids = plan_ids(&f, &EmptyRegistry, &mut counter(1)).unwrap();
        assert_eq!(ids.ztid, Some(3_300_500));
        assert_eq!(
            (ids.websites[0].wzid, ids.websites[0].jrid),
            (Some(8_812_500), Some(99_120_500))
        );
        assert_eq!(
            ids.websites[0].domains,
            vec![DomainIds {
                isp_ymid: 1,
                ymid: None
            }]
        );

        let mut reg = MapRegistry::default();
        reg.subjects.insert(
            "京ICP备2021000005号".into(),
            RegSubject {
                ztid: 5,
                isp_ztid: None,
            },
        );
        let ids = plan_ids(&f, &reg, &mut counter(1)).unwrap();
        assert_eq!(ids.ztid, Some(5));
    }

    #[test]
    fn unresolvable_change_and_cancel_ids_are_findings_all_of_them() {
        let mut f = fixture("change-subject.json");
        f.bureau_ids = Some(BureauIds {
            subject: None,
            websites: vec![Some(SiteIds {
                website: Some(1),
                access: None,
            })],
            apps: vec![],
        });
        let findings = plan_ids(&f, &EmptyRegistry, &mut counter(1)).unwrap_err();
        let fields: Vec<(&str, &str)> = findings
            .iter()
            .map(|x| (x.code.as_str(), x.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                (codes::UNRESOLVED_ZTID, "subject.recordNumber"),
                (codes::UNRESOLVED_JRID, "websites[0].access"),
                (codes::UNRESOLVED_WZID, "websites[1].recordNumber"),
                (codes::UNRESOLVED_JRID, "websites[1].access"),
            ]
        );

        let mut f = fixture("cancel-access.json");
        f.bureau_ids = None;
        let findings = plan_ids(&f, &EmptyRegistry, &mut counter(1)).unwrap_err();
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].code, codes::UNRESOLVED_JRID);

        let mut f = fixture("cancel-subject.json");
        f.bureau_ids = None;
        assert!(plan_ids(&f, &EmptyRegistry, &mut counter(1)).is_err());
    }

    #[test]
    fn add_site_and_add_access_may_quote_the_record_number_alone() {
        let mut f = fixture("add-site.json");
        f.bureau_ids = None;
        let ids = plan_ids(&f, &EmptyRegistry, &mut counter(1)).unwrap();
        assert_eq!((ids.ztid, ids.isp_ztid), (None, None));
        assert_eq!(ids.websites[0].isp_wzid, Some(1));

        let f = fixture("add-access.json");
        let ids = plan_ids(&f, &EmptyRegistry, &mut counter(1)).unwrap();
        let w = &ids.websites[0];
        assert_eq!((w.wzid, w.isp_jrid, w.jrid), (None, Some(1), None));
        assert_eq!(
            w.ips,
            vec![IpIds {
                isp_ipid: 2,
                ipid: None
            }]
        );

        let mut f = fixture("add-access.json");
        f.websites[0].record_number = None;
        let findings = plan_ids(&f, &EmptyRegistry, &mut counter(1)).unwrap_err();
        assert_eq!(findings[0].code, codes::NO_RECORD_REFERENCE);
        assert_eq!(findings[0].field, "websites[0].recordNumber");
    }

    #[test]
    fn app_with_new_subject_gets_provider_ids() {
        let f = fixture("app.json");
        let ids = plan_ids(&f, &EmptyRegistry, &mut counter(1)).unwrap();
        assert_eq!(ids.isp_ztid, Some(1));
        assert_eq!(
            ids.apps,
            vec![AppRecordIds {
                isp_appid: Some(2),
                appid: None,
                isp_jrid: Some(3),
                jrid: None,
                ips: vec![IpIds {
                    isp_ipid: 4,
                    ipid: None
                }],
            }]
        );
    }
}
