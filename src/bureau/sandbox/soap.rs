//! SOAP 1.1 framing for the sandbox bureau (bureau-protocol.md section 1): reading a request
//! envelope by local names, writing the `{op}Response/return` envelope with the escaped return
//! document, SOAP Faults, and the return documents' common shapes (sections 3–6).
//!
//! Owns: envelope text in and out. Must not touch account state or decide msg_codes.

use std::collections::HashMap;

use super::xml::{self, escape, push_leaf};

/// An operation call: its local name and its (unqualified) parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub operation: String,
    pub params: HashMap<String, String>,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(|s| s.trim())
    }
}

/// Parses `Envelope/Body/{op}/{param}*`, whatever the prefixes.
pub fn parse_request(body: &str) -> Result<Request, String> {
    let root = xml::parse(body).map_err(|e| e.to_string())?;
    if root.name != "Envelope" {
        return Err("not a SOAP envelope".into());
    }
    let op = root
        .child("Body")
        .and_then(|b| b.children.first())
        .ok_or("no operation in the SOAP body")?;
    let params = op
        .children
        .iter()
        .map(|c| (c.name.clone(), c.text.clone()))
        .collect();
    Ok(Request {
        operation: op.name.clone(),
        params,
    })
}

/// The answer envelope (prefix `ns2` on purpose, unlike the client's).
pub fn envelope(op: &str, namespace: &str, return_doc: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <soap:Body><ns2:{op}Response xmlns:ns2=\"{ns}\"><return>{doc}</return></ns2:{op}Response>\
         </soap:Body></soap:Envelope>",
        ns = escape(namespace),
        doc = escape(return_doc)
    )
}

/// A SOAP Fault envelope (sent with HTTP 500).
pub fn fault(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <soap:Body><soap:Fault><faultcode>soap:{code}</faultcode><faultstring>{msg}</faultstring>\
         </soap:Fault></soap:Body></soap:Envelope>",
        msg = escape(message)
    )
}

/// `<return><msg_code>…</msg_code><msg>…</msg>{extra}</return>`; `extra` is XML already.
pub fn ret(code: i64, msg: &str, extra: &str) -> String {
    let mut out = String::from("<return>");
    push_leaf(&mut out, "msg_code", &code.to_string());
    push_leaf(&mut out, "msg", msg);
    out.push_str(extra);
    out.push_str("</return>");
    out
}

/// The usual message for a msg_code.
pub fn msg_for(code: i64) -> &'static str {
    match code {
        0 => "操作成功",
        1 => "下载成功，文件已全部下载",
        2 => "没有可下载的文件",
        3 => "下载成功，还有文件待下载",
        4 => "用户名错误",
        5 => "密码错误",
        6 => "解密失败",
        7 => "哈希值校验失败",
        8 => "解压缩失败",
        9 => "加密算法不支持",
        10 => "哈希算法不支持",
        11 => "压缩格式不支持",
        12 => "认证被拒绝",
        13 => "不是本省接入商",
        14 => "数据序号不连续",
        15 => "待处理文件过多，请稍后重试",
        16 => "随机数长度不足20位",
        18 => "文件超过50MB",
        20 => "当前不在上传时段内，请于00:00至24:00之间上传",
        21 => "确认下载时缺少文件名",
        901 | 902 => "系统维护中，请稍后重试",
        _ => "其他错误",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_by_local_names() {
        let r = parse_request(
            "<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:w=\"x\">\
             <S:Body><w:isp_download><ispId>1</ispId><userName>u</userName></w:isp_download>\
             </S:Body></S:Envelope>",
        )
        .unwrap();
        assert_eq!(r.operation, "isp_download");
        assert_eq!(r.param("userName"), Some("u"));
        let e = envelope("isp_download", "http://n/", &ret(2, "没有", ""));
        assert!(e.contains("<return>&lt;return&gt;&lt;msg_code&gt;2&lt;/msg_code&gt;"));
    }
}
