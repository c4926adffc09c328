//! The download files the sandbox bureau produces (`download-data.xsd`, with the APP
//! extension's `download-data-ext.xsd`): BAJG results in `Jg_xx[i]` / `GJSHS/Gjsh[i]` pairs,
//! BASJ published records, ZXSJ cancellations, and the bundled JCDM — as GBK documents.
//!
//! Owns: element names and order of those documents, and the GBK text. Must not decide
//! anything (decide.rs) nor pack or queue files (state.rs).

use chrono::{DateTime, Utc};
use chrono_tz::Asia::Shanghai;

use super::registry::{RegAccess, RegSubject};
use super::xml::{Node, push_leaf};
use crate::codes::DEFAULT_JCDM;

const HEAD: &str = "<?xml version=\"1.0\" encoding=\"GBK\"?><DownloadData version=\"V.3.0\">";

/// One result: `Jg_xx` (codes, `Czlx`, `Bs`) and its `Gjsh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultPair {
    /// (`Jgdm`, `Dmms`) — one `Jgxx` each.
    pub codes: Vec<(i64, String)>,
    pub czlx: i64,
    pub bs: Option<String>,
    pub shyj: Option<String>,
    /// None for a fault of the whole file.
    pub jlid: Option<i64>,
    pub decided_at: DateTime<Utc>,
}

/// `YYYY-MM-DD HH:MM:SS` in Asia/Shanghai.
pub fn shanghai_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Shanghai)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// RFC 3339 with `+08:00`.
pub fn shanghai_rfc3339(t: DateTime<Utc>) -> String {
    t.with_timezone(&Shanghai)
        .format("%Y-%m-%dT%H:%M:%S+08:00")
        .to_string()
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// A BAJG document.
pub fn bajg(pairs: &[ResultPair]) -> String {
    let mut out = String::from(HEAD);
    out.push_str("<ICP><BAJG>");
    for p in pairs {
        out.push_str("<Jg_xx>");
        for (code, dmms) in &p.codes {
            out.push_str("<Jgxx>");
            push_leaf(&mut out, "Jgdm", &code.to_string());
            if !dmms.is_empty() {
                push_leaf(&mut out, "Dmms", &truncate(dmms, 255));
            }
            out.push_str("</Jgxx>");
        }
        push_leaf(&mut out, "Czlx", &p.czlx.to_string());
        if let Some(bs) = p.bs.as_deref().filter(|b| !b.is_empty()) {
            push_leaf(&mut out, "Bs", &truncate(bs, 255));
        }
        out.push_str("</Jg_xx>");
    }
    if !pairs.is_empty() {
        out.push_str("<GJSHS>");
        for p in pairs {
            let approved = p.codes.iter().all(|(c, _)| *c == 1001);
            out.push_str("<Gjsh>");
            push_leaf(&mut out, "Shrxm", "沙箱审核员");
            push_leaf(&mut out, "Shsj", &shanghai_time(p.decided_at));
            if let Some(shyj) = p.shyj.as_deref().filter(|s| !s.is_empty()) {
                push_leaf(&mut out, "Shyj", &truncate(shyj, 1024));
            }
            push_leaf(&mut out, "Shjg", if approved { "1" } else { "0" });
            push_leaf(&mut out, "Czlx", &p.czlx.to_string());
            if let Some(jlid) = p.jlid {
                push_leaf(&mut out, "Jlid", &jlid.to_string());
            }
            out.push_str("</Gjsh>");
        }
        out.push_str("</GJSHS>");
    }
    out.push_str("</BAJG></ICP></DownloadData>");
    out
}

/// A BASJ document of `Baxx` records.
pub fn basj(records: &[Node]) -> String {
    let mut out = String::from(HEAD);
    out.push_str("<ICP><BASJ>");
    for r in records {
        r.write(&mut out);
    }
    out.push_str("</BASJ></ICP></DownloadData>");
    out
}

/// A ZXSJ document of (Zxlb, Jlid) cancellations.
pub fn zxsj(entries: &[(i64, i64)]) -> String {
    let mut out = String::from(HEAD);
    out.push_str("<ICP><ZXSJ>");
    for (zxlb, jlid) in entries {
        out.push_str("<Zxxx>");
        push_leaf(&mut out, "Zxlb", &zxlb.to_string());
        push_leaf(&mut out, "Jlid", &jlid.to_string());
        out.push_str("</Zxxx>");
    }
    out.push_str("</ZXSJ></ICP></DownloadData>");
    out
}

/// The bundled JCDM with a GBK declaration instead of its UTF-8 one.
pub fn jcdm() -> String {
    let body = match DEFAULT_JCDM.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, b)| b).unwrap_or(rest),
        None => DEFAULT_JCDM,
    };
    format!("<?xml version=\"1.0\" encoding=\"GBK\"?>{body}")
}

fn opt_leaf(out: &mut Vec<Node>, name: &str, v: Option<i64>) {
    if let Some(v) = v {
        out.push(Node::leaf(name, v.to_string()));
    }
}

fn copy(out: &mut Vec<Node>, details: &Node, name: &str) {
    if let Some(c) = details.child(name) {
        out.push(c.clone());
    }
}

fn access_node(a: &RegAccess, isp_id: i64) -> Node {
    let mut c = Vec::new();
    opt_leaf(&mut c, "IspJrid", a.isp_jrid);
    c.push(Node::leaf("Jrid", a.jrid.to_string()));
    // An access filed with another provider carries that provider's id (a made-up one).
    let ispid = if a.with_us { isp_id } else { 1_100_009_999 };
    c.push(Node::leaf("Ispid", ispid.to_string()));
    let list = |wrap: &str, name: &str, v: &[i64]| {
        let v = if v.is_empty() { vec![1] } else { v.to_vec() };
        Node::parent(
            wrap,
            v.iter().map(|x| Node::leaf(name, x.to_string())).collect(),
        )
    };
    c.push(list("Wzfb", "Fbdd", &a.fbdd));
    c.push(list("Wzjrfs", "Jrfs", &a.jrfs));
    for ip in &a.ips {
        let mut i = Vec::new();
        opt_leaf(&mut i, "IspIpid", ip.isp_ipid);
        i.push(Node::leaf("Ipid", ip.ipid.to_string()));
        i.push(Node::leaf("Qsip", ip.qsip.to_string()));
        i.push(Node::leaf("Zzip", ip.zzip.to_string()));
        c.push(Node::parent("Ip_xx", i));
    }
    Node::parent("Jr_xx", c)
}

/// The accesses to publish: those with us, or all when none is.
fn published_accesses(all: &[RegAccess]) -> Vec<&RegAccess> {
    let ours: Vec<&RegAccess> = all.iter().filter(|a| a.with_us).collect();
    if ours.is_empty() {
        all.iter().collect()
    } else {
        ours
    }
}

/// A BASJ `Baxx` for a subject with the named websites and apps.
pub fn basj_baxx(s: &RegSubject, sites: &[i64], apps: &[i64], isp_id: i64) -> Node {
    let today = Utc::now()
        .with_timezone(&Shanghai)
        .format("%Y-%m-%d")
        .to_string();
    let d = &s.details;
    let mut zt = Vec::new();
    opt_leaf(&mut zt, "IspZtid", s.isp_ztid);
    zt.push(Node::leaf("Ztid", s.ztid.to_string()));
    zt.push(Node::leaf("Dwmc", s.name.clone()));
    copy(&mut zt, d, "Dwxz");
    copy(&mut zt, d, "Txdz");
    copy(&mut zt, d, "Zj");
    copy(&mut zt, d, "Fzr");
    zt.push(Node::leaf("Baxh", s.baxh.clone()));
    zt.push(Node::leaf("Bbyhlx", "1"));
    copy(&mut zt, d, "Tzr");
    zt.push(Node::leaf("Scbbsj", today.clone()));
    zt.push(Node::leaf("Zjxgsj", today));
    let mut baxx = vec![Node::parent("Zt_xx", zt)];
    for w in s.websites.iter().filter(|w| sites.contains(&w.wzid)) {
        let mut c = Vec::new();
        opt_leaf(&mut c, "IspWzid", w.isp_wzid);
        c.push(Node::leaf("Wzid", w.wzid.to_string()));
        c.push(Node::leaf("Wzmc", w.name.clone()));
        copy(&mut c, &w.details, "Fwnr");
        match w.details.child("Yylb") {
            Some(y) => c.push(y.clone()),
            None => c.push(Node::parent("Yylb", vec![Node::leaf("Yylb_id", "1")])),
        }
        for y in &w.domains {
            let mut yc = Vec::new();
            opt_leaf(&mut yc, "IspYmid", y.isp_ymid);
            yc.push(Node::leaf("Ymid", y.ymid.to_string()));
            yc.push(Node::leaf("Ym", y.ym.clone()));
            c.push(Node::parent("Ym_xx", yc));
        }
        for a in published_accesses(&w.accesses) {
            c.push(access_node(a, isp_id));
        }
        copy(&mut c, &w.details, "Wz_Fzr");
        copy(&mut c, &w.details, "Syurl");
        copy(&mut c, &w.details, "Wz_Bz");
        c.push(Node::leaf("Baxh", w.baxh.clone()));
        baxx.push(Node::parent("Wz_xx", c));
    }
    for a in s.apps.iter().filter(|a| apps.contains(&a.appid)) {
        let mut c = Vec::new();
        opt_leaf(&mut c, "IspAppid", a.isp_appid);
        c.push(Node::leaf("Appid", a.appid.to_string()));
        c.push(Node::leaf("Appmc", a.name.clone()));
        c.push(Node::leaf("Pt", a.pt.to_string()));
        c.push(Node::leaf("Bm", a.bm.clone()));
        c.push(Node::leaf("Baxh", a.baxh.clone()));
        baxx.push(Node::parent("App_xx", c));
    }
    Node::parent("Baxx", baxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_file_pair_has_no_jlid_and_jcdm_is_gbk_declared() {
        let doc = bajg(&[ResultPair {
            codes: vec![(5001, "1100001234U0000000001.xml".into())],
            czlx: 1,
            bs: None,
            shyj: None,
            jlid: None,
            decided_at: Utc::now(),
        }]);
        assert!(doc.contains("<Jgdm>5001</Jgdm><Dmms>1100001234U0000000001.xml</Dmms>"));
        assert!(doc.contains("<Shjg>0</Shjg><Czlx>1</Czlx></Gjsh>"));
        let j = jcdm();
        assert!(j.starts_with("<?xml version=\"1.0\" encoding=\"GBK\"?>"));
        assert!(!j.contains("UTF-8\"?>"));
        assert!(crate::package::encode_gbk(&j).is_ok());
    }
}
