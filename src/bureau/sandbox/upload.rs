//! Reading an uploaded data file as the sandbox bureau: GBK text → element tree → the
//! whole-file checks (version 5004, schema 5001, record count 5001, requesting unit 5003,
//! illegal characters 5008) → one [`Unit`] per result the file is owed (section 5.1).
//!
//! Owns: the mapping from `UploadData/ICP/{XZBA,XZWZ,XZJR,BGBA,ZXBA}` records to result units
//! and their identities. Must not touch the registry or decide verdicts (decide.rs), and is
//! written independently of the client's file builder on purpose.

use super::schema::Schema;
use super::xml::{self, Node};
use crate::package;

/// The most records (`Baxx`, `Xzxx`, `Bgxx`, `Zx_xx`) a file may hold.
pub const MAX_RECORDS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Xzba,
    Xzwz,
    Xzjr,
    Bgba,
    Zxba,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Xzba => "XZBA",
            Op::Xzwz => "XZWZ",
            Op::Xzjr => "XZJR",
            Op::Bgba => "BGBA",
            Op::Zxba => "ZXBA",
        }
    }
}

/// Which part of the record a unit's result is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Whole,
    Website(usize),
    App(usize),
}

/// One result owed: `Czlx` and `Jlid` of its `Gjsh`, and the record it is about.
#[derive(Debug, Clone)]
pub struct Unit {
    pub op: Op,
    pub czlx: i64,
    pub jlid: i64,
    pub part: Part,
    pub record: Node,
    /// (operation, Isp*id or province id [+ Zxlb]) — how the stats count cases.
    pub identity: String,
}

/// A fault of the whole file: one result pair naming the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeFault {
    pub code: i64,
    pub czlx: i64,
    pub reason: String,
}

fn fault(code: i64, czlx: i64, reason: impl Into<String>) -> WholeFault {
    WholeFault {
        code,
        czlx,
        reason: reason.into(),
    }
}

/// Parses and checks a data file (its GBK bytes) for account `isp_id`.
pub fn read_upload(gbk: &[u8], isp_id: i64, schema: &Schema) -> Result<Vec<Unit>, WholeFault> {
    let text = package::decode_gbk(gbk).map_err(|_| fault(5008, 1, "文件含非法字符（非GBK）"))?;
    let root = xml::parse(&text).map_err(|e| fault(5001, 1, format!("XML格式错误: {e}")))?;
    let czlx = first_czlx(&root);
    if root.name != "UploadData" {
        return Err(fault(5001, czlx, "根元素不是UploadData"));
    }
    if root.attr("version") != Some("V.3.0") {
        return Err(fault(5004, czlx, "版本号错误，应为V.3.0"));
    }
    schema
        .validate(&root)
        .map_err(|path| fault(5001, czlx, format!("不符合XSD: {path}")))?;
    let Some(icp) = root.child("ICP") else {
        return Err(fault(5011, czlx, "仅开放ICP备案功能"));
    };
    if icp.long_of("Qqdwid") != Some(isp_id) {
        return Err(fault(5003, czlx, "请求单位与接入商不符"));
    }
    let records: usize = ["XZBA", "XZWZ", "XZJR", "BGBA", "ZXBA"]
        .iter()
        .filter_map(|op| icp.child(op))
        .map(|op| op.children.len())
        .sum();
    if records > MAX_RECORDS {
        return Err(fault(5001, czlx, "记录数超过1000"));
    }
    let mut units = Vec::new();
    for op_node in &icp.children {
        match op_node.name.as_str() {
            "XZBA" => {
                for r in op_node.all("Baxx") {
                    need_site_or_app(r, czlx)?;
                    let id = r.at(&["Zt_xx"]).and_then(|z| z.long_of("IspZtid"));
                    units.push(unit(Op::Xzba, 1, id, Part::Whole, r, "IspZtid"));
                }
            }
            "XZWZ" => {
                for r in op_node.all("Xzxx") {
                    need_site_or_app(r, czlx)?;
                    for (i, w) in r.all("Wz_xx").enumerate() {
                        let id = w.long_of("IspWzid");
                        units.push(unit(Op::Xzwz, 2, id, Part::Website(i), r, "IspWzid"));
                    }
                    for (i, a) in r.all("App_xx").enumerate() {
                        let id = a.long_of("IspAppid");
                        units.push(unit(Op::Xzwz, 2, id, Part::App(i), r, "IspAppid"));
                    }
                }
            }
            "XZJR" => {
                for r in op_node.all("Xzxx") {
                    let id = r.long_of("IspJrid");
                    units.push(unit(Op::Xzjr, 3, id, Part::Whole, r, "IspJrid"));
                }
            }
            "BGBA" => {
                for r in op_node.all("Bgxx") {
                    let id = r.at(&["Zt_xx"]).and_then(|z| z.long_of("Ztid"));
                    units.push(unit(Op::Bgba, 4, id, Part::Whole, r, "Ztid"));
                }
            }
            "ZXBA" => {
                for r in op_node.all("Zx_xx") {
                    let zxlb = r.long_of("Zxlb").unwrap_or(0);
                    let czlx = match zxlb {
                        0 => 6,
                        1 => 7,
                        _ => 5,
                    };
                    let mut u = unit(Op::Zxba, czlx, r.long_of("Jlid"), Part::Whole, r, "Jlid");
                    u.identity = format!("ZXBA:Zxlb={zxlb}:Jlid={}", u.jlid);
                    units.push(u);
                }
            }
            _ => {}
        }
    }
    Ok(units)
}

/// With the APP extension `Wz_xx` is optional, but a record holds at least one site or app.
fn need_site_or_app(record: &Node, czlx: i64) -> Result<(), WholeFault> {
    if record.child("Wz_xx").is_none() && record.child("App_xx").is_none() {
        return Err(fault(5001, czlx, "记录既无网站也无APP"));
    }
    Ok(())
}

fn unit(op: Op, czlx: i64, id: Option<i64>, part: Part, record: &Node, id_name: &str) -> Unit {
    let jlid = id.unwrap_or(0);
    Unit {
        op,
        czlx,
        jlid,
        part,
        record: record.clone(),
        identity: format!("{}:{id_name}={jlid}", op.name()),
    }
}

/// The `Czlx` of the file's first record (what a whole-file fault pair carries).
fn first_czlx(root: &Node) -> i64 {
    let Some(icp) = root.child("ICP") else {
        return 1;
    };
    for op in &icp.children {
        match op.name.as_str() {
            "XZBA" => return 1,
            "XZWZ" => return 2,
            "XZJR" => return 3,
            "BGBA" => return 4,
            "ZXBA" => {
                return match op.at(&["Zx_xx"]).and_then(|z| z.long_of("Zxlb")) {
                    Some(0) => 6,
                    Some(1) => 7,
                    _ => 5,
                };
            }
            _ => {}
        }
    }
    1
}
