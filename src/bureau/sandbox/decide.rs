//! The sandbox bureau's deterministic decisions (bureau-protocol.md section 10) on one result
//! unit: the pre-checks (1019 region, 1041 home URL, 1016 unknown ids, 1004 domain suffix,
//! 1018 ICP password), the SMS principal, the verdict (1002 for a test-like name) and, on
//! approval, the registry update with generated ids and record numbers.
//!
//! Owns: the rules and the registry mutations they imply. Must not touch the wire format of
//! download files beyond handing `Baxx` trees to files.rs, nor the account's queue or clock.

use super::files::basj_baxx;
use super::registry::{RegAccess, RegApp, RegDomain, RegIp, RegSubject, RegWebsite, Registry};
use super::upload::{Op, Part, Unit};
use super::xml::Node;

/// What the decisions need to know about the bureau.
pub struct Ctx<'a> {
    pub province: &'a str,
    pub abbrev: &'a str,
    pub isp_id: i64,
    pub allowed_suffixes: &'a [String],
    pub year: i32,
}

/// One non-1001 result code with its description (`Dmms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub code: i64,
    pub dmms: String,
}

fn finding(code: i64, dmms: impl Into<String>) -> Finding {
    Finding {
        code,
        dmms: dmms.into(),
    }
}

/// What an approval publishes.
#[derive(Debug, Clone)]
pub enum Published {
    /// A `Baxx` for the BASJ file.
    Basj(Node),
    /// A `Zxxx` entry for the ZXSJ file: (Zxlb, Jlid).
    Zxsj(i64, i64),
    Nothing,
}

/// The websites (`Wz_xx`) a unit is about.
fn unit_websites(unit: &Unit) -> Vec<&Node> {
    match (unit.op, unit.part) {
        (Op::Xzba | Op::Bgba, _) => unit.record.all("Wz_xx").collect(),
        (Op::Xzwz, Part::Website(i)) => unit.record.all("Wz_xx").nth(i).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// The subject a change, cancellation or addition acts on (None when unknown or new).
fn target_subject<'r>(unit: &Unit, reg: &'r Registry) -> Option<&'r RegSubject> {
    let r = &unit.record;
    match unit.op {
        Op::Xzba => None,
        Op::Xzwz => {
            let zt = r.child("Zt_xx")?;
            match zt.long_of("Ztid") {
                Some(id) => reg.subject(id),
                None => reg.subject_by_number(zt.text_of("Ztbah")?),
            }
        }
        Op::Xzjr => {
            let wz = r.child("Wz_xx")?;
            match wz.long_of("Wzid") {
                Some(id) => reg.website(id).map(|(s, _)| s),
                None => reg.website_by_number(wz.text_of("Wzbah")?).map(|(s, _)| s),
            }
        }
        Op::Bgba => reg.subject(r.at(&["Zt_xx"])?.long_of("Ztid")?),
        Op::Zxba => match r.long_of("Zxlb") {
            Some(0) => reg.subject(unit.jlid),
            Some(1) => reg.website(unit.jlid).map(|(s, _)| s),
            _ => reg.access(unit.jlid).map(|(s, _)| s),
        },
    }
}

/// Rules 1019, 1041, 1016, 1004 and 1018, every one that applies (several `Jgxx`).
pub fn precheck(unit: &Unit, reg: &Registry, ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(txdz) = unit.record.at(&["Zt_xx", "Txdz"])
        && !region_inside(txdz, ctx.province)
    {
        out.push(finding(1019, "行政区划代码不属于本省"));
    }
    let sites = unit_websites(unit);
    for w in &sites {
        if let Some(url) = w.text_of("Syurl") {
            let domains: Vec<&str> = w.all("Ym_xx").filter_map(|y| y.text_of("Ym")).collect();
            if !home_url_matches(url, &domains) {
                out.push(finding(1041, "网站首页网址须包含该网站的域名"));
            }
        }
    }
    if let Some(f) = unknown_ids(unit, reg) {
        out.push(f);
    }
    for w in &sites {
        for ym in w.all("Ym_xx").filter_map(|y| y.text_of("Ym")) {
            if !domain_allowed(ym, ctx.allowed_suffixes) {
                out.push(finding(1004, "域名后缀不在允许范围内"));
            }
        }
    }
    if let Some(subject) = target_subject(unit, reg)
        && let Some(expected) = &subject.icp_md5
    {
        let required =
            unit.op == Op::Xzjr || (unit.op == Op::Zxba && unit.record.long_of("Zxlb") == Some(0));
        match unit.record.text_of("ICPmm") {
            Some(given) if !given.eq_ignore_ascii_case(expected) => {
                out.push(finding(1018, "备案密码错误"));
            }
            None if required => out.push(finding(1018, "缺少备案密码")),
            _ => {}
        }
    }
    out
}

fn region_inside(txdz: &Node, province: &str) -> bool {
    let prefix = &province[..province.len().min(2)];
    let sheng_ok = txdz.text_of("Shengid") == Some(province);
    let below_ok = ["Shiid", "Xianid"]
        .iter()
        .filter_map(|n| txdz.text_of(n))
        .all(|code| code.starts_with(prefix));
    sheng_ok && below_ok
}

/// The host of a home URL is one of the domains, or `www.` + one of them.
pub fn home_url_matches(url: &str, domains: &[&str]) -> bool {
    let rest = url.trim();
    let rest = rest.split_once("://").map(|(_, r)| r).unwrap_or(rest);
    let host = rest
        .split(['/', '?', '#', ':'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    domains.iter().any(|d| {
        let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        host == d || host.strip_prefix("www.") == Some(d.as_str())
    })
}

/// A domain's suffix is on the allowed list (ASCII or the list's Unicode forms' punycode).
pub fn domain_allowed(domain: &str, allowed: &[String]) -> bool {
    let d = domain.trim().trim_end_matches('.').to_lowercase();
    let well_formed = !d.is_empty()
        && d.split('.').count() >= 2
        && d.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    well_formed
        && allowed.iter().any(|s| {
            let s = s.trim().trim_start_matches('.').to_lowercase();
            d.strip_suffix(&s)
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|head| !head.is_empty())
        })
}

fn unknown_ids(unit: &Unit, reg: &Registry) -> Option<Finding> {
    let missing = || Some(finding(1016, "备案信息不存在"));
    let r = &unit.record;
    match unit.op {
        Op::Xzba => None,
        Op::Xzwz | Op::Xzjr | Op::Zxba => match target_subject(unit, reg) {
            Some(_) => None,
            None => missing(),
        },
        Op::Bgba => {
            let Some(subject) = target_subject(unit, reg) else {
                return missing();
            };
            for w in r.all("Wz_xx") {
                let Some(site) = w
                    .long_of("Wzid")
                    .and_then(|id| subject.websites.iter().find(|s| s.wzid == id))
                else {
                    return missing();
                };
                for jr in w.all("Jr_xx") {
                    let Some(acc) = jr
                        .long_of("Jrid")
                        .and_then(|id| site.accesses.iter().find(|a| a.jrid == id))
                    else {
                        return missing();
                    };
                    for ip in jr.all("Ip_xx") {
                        if let Some(ipid) = ip.long_of("Ipid")
                            && !acc.ips.iter().any(|x| x.ipid == ipid)
                        {
                            return missing();
                        }
                    }
                }
                for ym in w.all("Ym_xx") {
                    if let Some(ymid) = ym.long_of("Ymid")
                        && !site.domains.iter().any(|d| d.ymid == ymid)
                    {
                        return missing();
                    }
                }
            }
            None
        }
    }
}

/// The mobile of the subject principal who gets the SMS check.
pub fn sms_mobile(unit: &Unit, reg: &Registry) -> Option<String> {
    match unit.op {
        Op::Xzba | Op::Bgba => unit
            .record
            .at(&["Zt_xx", "Fzr"])
            .and_then(|f| f.text_of("Fzr_sjhm"))
            .map(str::to_owned),
        _ => target_subject(unit, reg).and_then(|s| s.principal_mobile.clone()),
    }
}

/// The bureau's verdict after the checks: 1002 for a website or app name that looks like a
/// test, else approval (None).
pub fn verdict(unit: &Unit) -> Option<Finding> {
    let r = &unit.record;
    let names: Vec<&str> = match (unit.op, unit.part) {
        (Op::Xzba | Op::Bgba, _) => r
            .all("Wz_xx")
            .filter_map(|w| w.text_of("Wzmc"))
            .chain(r.all("App_xx").filter_map(|a| a.text_of("Appmc")))
            .collect(),
        (Op::Xzwz, Part::Website(i)) => r
            .all("Wz_xx")
            .nth(i)
            .and_then(|w| w.text_of("Wzmc"))
            .into_iter()
            .collect(),
        (Op::Xzwz, Part::App(i)) => r
            .all("App_xx")
            .nth(i)
            .and_then(|a| a.text_of("Appmc"))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    names
        .iter()
        .any(|n| n.contains("测试") || n.to_lowercase().contains("test"))
        .then(|| finding(1002, "网站名称不符合要求"))
}

fn longs(node: Option<&Node>, name: &str) -> Vec<i64> {
    node.map(|n| {
        n.all(name)
            .filter_map(|c| c.text.trim().parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

fn new_access(reg: &mut Registry, jr: &Node) -> RegAccess {
    RegAccess {
        jrid: reg.new_id(),
        isp_jrid: jr.long_of("IspJrid"),
        with_us: true,
        fbdd: longs(jr.child("Wzfb"), "Fbdd"),
        jrfs: longs(jr.child("Wzjrfs"), "Jrfs"),
        ips: jr
            .all("Ip_xx")
            .map(|ip| RegIp {
                ipid: reg.new_id(),
                isp_ipid: ip.long_of("IspIpid"),
                qsip: ip.long_of("Qsip").unwrap_or(0),
                zzip: ip.long_of("Zzip").unwrap_or(0),
            })
            .collect(),
    }
}

fn site_details(w: &Node) -> Node {
    let keep = ["Fwnr", "Yylb", "Wz_Fzr", "Syurl", "Wz_Bz"];
    Node::parent(
        "Wz_xx",
        w.children
            .iter()
            .filter(|c| keep.contains(&c.name.as_str()))
            .cloned()
            .collect(),
    )
}

fn subject_details(zt: &Node) -> Node {
    let keep = ["Dwxz", "Txdz", "Zj", "Fzr", "Tzr"];
    Node::parent(
        "Zt_xx",
        zt.children
            .iter()
            .filter(|c| keep.contains(&c.name.as_str()))
            .cloned()
            .collect(),
    )
}

fn new_website(reg: &mut Registry, w: &Node, baxh: String) -> RegWebsite {
    let domains = w
        .all("Ym_xx")
        .map(|y| RegDomain {
            ymid: reg.new_id(),
            isp_ymid: y.long_of("IspYmid"),
            ym: y.text_of("Ym").unwrap_or_default().to_ascii_lowercase(),
        })
        .collect();
    let accesses = w.all("Jr_xx").map(|jr| new_access(reg, jr)).collect();
    RegWebsite {
        wzid: reg.new_id(),
        isp_wzid: w.long_of("IspWzid"),
        baxh,
        name: w.text_of("Wzmc").unwrap_or_default().to_owned(),
        domains,
        accesses,
        details: site_details(w),
    }
}

fn new_app(reg: &mut Registry, a: &Node, baxh: String) -> RegApp {
    let accesses = a.all("Jr_xx").map(|jr| new_access(reg, jr)).collect();
    RegApp {
        appid: reg.new_id(),
        isp_appid: a.long_of("IspAppid"),
        baxh,
        name: a.text_of("Appmc").unwrap_or_default().to_owned(),
        pt: a.long_of("Pt").unwrap_or(9),
        bm: a.text_of("Bm").unwrap_or_default().to_owned(),
        accesses,
    }
}

/// Applies an approved unit to the registry and says what to publish. A target that vanished
/// since the pre-checks (cancelled meanwhile) gives 1016.
pub fn approve(unit: &Unit, reg: &mut Registry, ctx: &Ctx<'_>) -> Result<Published, Finding> {
    let gone = || finding(1016, "备案信息不存在");
    let r = &unit.record;
    match unit.op {
        Op::Xzba => {
            let zt = r.child("Zt_xx").ok_or_else(gone)?;
            let baxh = reg.new_subject_number(ctx.abbrev, ctx.year);
            let mut subject = RegSubject {
                ztid: reg.new_id(),
                isp_ztid: zt.long_of("IspZtid"),
                baxh: baxh.clone(),
                name: zt.text_of("Dwmc").unwrap_or_default().to_owned(),
                principal_mobile: zt
                    .at(&["Fzr"])
                    .and_then(|f| f.text_of("Fzr_sjhm"))
                    .map(str::to_owned),
                icp_md5: None,
                id_number: zt
                    .at(&["Zj"])
                    .and_then(|z| z.text_of("Zjhm"))
                    .map(str::to_owned),
                details: subject_details(zt),
                websites: Vec::new(),
                apps: Vec::new(),
                last_n: 0,
            };
            for w in r.all("Wz_xx") {
                subject.last_n += 1;
                let site = new_website(reg, w, format!("{baxh}-{}", subject.last_n));
                subject.websites.push(site);
            }
            for a in r.all("App_xx") {
                subject.last_n += 1;
                let app = new_app(reg, a, format!("{baxh}-{}A", subject.last_n));
                subject.apps.push(app);
            }
            let sites: Vec<i64> = subject.websites.iter().map(|w| w.wzid).collect();
            let apps: Vec<i64> = subject.apps.iter().map(|a| a.appid).collect();
            let baxx = basj_baxx(&subject, &sites, &apps, ctx.isp_id);
            reg.insert(subject);
            Ok(Published::Basj(baxx))
        }
        Op::Xzwz => {
            let ztid = target_subject(unit, reg).ok_or_else(gone)?.ztid;
            let (site, app) = match unit.part {
                Part::Website(i) => (r.all("Wz_xx").nth(i), None),
                Part::App(i) => (None, r.all("App_xx").nth(i)),
                Part::Whole => (None, None),
            };
            let (baxh, n) = {
                let s = reg.subject(ztid).ok_or_else(gone)?;
                (s.baxh.clone(), s.last_n + 1)
            };
            let (sites, apps) = if let Some(w) = site {
                let site = new_website(reg, w, format!("{baxh}-{n}"));
                let id = site.wzid;
                reg.update(ztid, |s| {
                    s.websites.push(site);
                    s.last_n = n;
                })
                .ok_or_else(gone)?;
                (vec![id], vec![])
            } else if let Some(a) = app {
                let app = new_app(reg, a, format!("{baxh}-{n}A"));
                let id = app.appid;
                reg.update(ztid, |s| {
                    s.apps.push(app);
                    s.last_n = n;
                })
                .ok_or_else(gone)?;
                (vec![], vec![id])
            } else {
                return Err(gone());
            };
            let s = reg.subject(ztid).ok_or_else(gone)?;
            Ok(Published::Basj(basj_baxx(s, &sites, &apps, ctx.isp_id)))
        }
        Op::Xzjr => {
            let wz = r.child("Wz_xx").ok_or_else(gone)?;
            let found = match wz.long_of("Wzid") {
                Some(id) => reg.website(id),
                None => wz.text_of("Wzbah").and_then(|b| reg.website_by_number(b)),
            };
            let (ztid, wzid) = found.map(|(s, w)| (s.ztid, w.wzid)).ok_or_else(gone)?;
            let mut access = new_access(reg, r);
            access.isp_jrid = r.long_of("IspJrid");
            reg.update(ztid, |s| {
                s.websites
                    .iter_mut()
                    .find(|w| w.wzid == wzid)
                    .map(|site| site.accesses.push(access))
            })
            .flatten()
            .ok_or_else(gone)?;
            let s = reg.subject(ztid).ok_or_else(gone)?;
            Ok(Published::Basj(basj_baxx(s, &[wzid], &[], ctx.isp_id)))
        }
        Op::Bgba => approve_change(unit, reg, ctx),
        Op::Zxba => {
            let zxlb = r.long_of("Zxlb").unwrap_or(2);
            let jlid = unit.jlid;
            match zxlb {
                0 => {
                    if !reg.remove(jlid) {
                        return Err(gone());
                    }
                    Ok(Published::Zxsj(0, jlid))
                }
                1 => {
                    let ztid = reg.website(jlid).map(|(s, _)| s.ztid).ok_or_else(gone)?;
                    reg.update(ztid, |s| s.websites.retain(|w| w.wzid != jlid))
                        .ok_or_else(gone)?;
                    Ok(Published::Zxsj(1, jlid))
                }
                _ => {
                    let (ztid, wzid) = reg
                        .access(jlid)
                        .map(|(s, w)| (s.ztid, w.wzid))
                        .ok_or_else(gone)?;
                    reg.update(ztid, |s| {
                        if let Some(w) = s.websites.iter_mut().find(|w| w.wzid == wzid) {
                            w.accesses.retain(|a| a.jrid != jlid);
                        }
                    })
                    .ok_or_else(gone)?;
                    Ok(Published::Nothing)
                }
            }
        }
    }
}

/// BGBA: the record sent replaces the subject and the websites it names.
fn approve_change(unit: &Unit, reg: &mut Registry, ctx: &Ctx<'_>) -> Result<Published, Finding> {
    let gone = || finding(1016, "备案信息不存在");
    let r = &unit.record;
    let zt = r.child("Zt_xx").ok_or_else(gone)?;
    let ztid = zt.long_of("Ztid").ok_or_else(gone)?;
    let mut subject = reg.subject(ztid).cloned().ok_or_else(gone)?;
    if let Some(name) = zt.text_of("Dwmc") {
        subject.name = name.to_owned();
    }
    subject.details = subject_details(zt);
    if let Some(m) = zt.at(&["Fzr"]).and_then(|f| f.text_of("Fzr_sjhm")) {
        subject.principal_mobile = Some(m.to_owned());
    }
    let mut sites = Vec::new();
    for w in r.all("Wz_xx") {
        let wzid = w.long_of("Wzid").ok_or_else(gone)?;
        let idx = subject
            .websites
            .iter()
            .position(|s| s.wzid == wzid)
            .ok_or_else(gone)?;
        let mut site = subject.websites[idx].clone();
        site.name = w.text_of("Wzmc").unwrap_or(&site.name).to_owned();
        site.details = site_details(w);
        let mut domains = Vec::new();
        for y in w.all("Ym_xx") {
            let ym = y.text_of("Ym").unwrap_or_default().to_ascii_lowercase();
            let ymid = match y.long_of("Ymid") {
                Some(id) => id,
                None => match site.domains.iter().find(|d| d.ym == ym) {
                    Some(d) => d.ymid,
                    None => reg.new_id(),
                },
            };
            domains.push(RegDomain {
                ymid,
                isp_ymid: y.long_of("IspYmid"),
                ym,
            });
        }
        site.domains = domains;
        for jr in w.all("Jr_xx") {
            let jrid = jr.long_of("Jrid").ok_or_else(gone)?;
            let acc = site
                .accesses
                .iter_mut()
                .find(|a| a.jrid == jrid)
                .ok_or_else(gone)?;
            acc.fbdd = longs(jr.child("Wzfb"), "Fbdd");
            acc.jrfs = longs(jr.child("Wzjrfs"), "Jrfs");
            let mut ips = Vec::new();
            for ip in jr.all("Ip_xx") {
                let qsip = ip.long_of("Qsip").unwrap_or(0);
                let zzip = ip.long_of("Zzip").unwrap_or(0);
                let ipid = match ip.long_of("Ipid") {
                    Some(id) => id,
                    None => match acc.ips.iter().find(|x| x.qsip == qsip && x.zzip == zzip) {
                        Some(x) => x.ipid,
                        None => reg.new_id(),
                    },
                };
                ips.push(RegIp {
                    ipid,
                    isp_ipid: ip.long_of("IspIpid"),
                    qsip,
                    zzip,
                });
            }
            acc.ips = ips;
        }
        subject.websites[idx] = site;
        sites.push(wzid);
    }
    let baxx = basj_baxx(&subject, &sites, &[], ctx.isp_id);
    reg.update(ztid, |slot| *slot = subject).ok_or_else(gone)?;
    Ok(Published::Basj(baxx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_urls_and_suffixes() {
        assert!(home_url_matches("www.example.com", &["example.com"]));
        assert!(home_url_matches("https://example.com/a", &["example.com"]));
        assert!(!home_url_matches("www.other.com", &["example.com"]));
        let allowed: Vec<String> = ["com", "com.cn", "xn--fiqs8s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(domain_allowed("example.com", &allowed));
        assert!(domain_allowed("example.com.cn", &allowed));
        assert!(domain_allowed("xn--fsq.xn--fiqs8s", &allowed));
        assert!(!domain_allowed("example.hk", &allowed));
        assert!(!domain_allowed("com", &allowed));
    }
}
