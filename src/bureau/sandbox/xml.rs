//! A small element tree for the sandbox bureau: parsing UTF-8 XML text into [`Node`]s by local
//! name, and the escaping helper used when writing.
//!
//! Owns: XML text ↔ tree, nothing about what the elements mean. Must not touch the network,
//! the account state or the client's XML code (the sandbox parses independently of it).

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// One element: its local name, attributes, text (for leaves) and child elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn leaf(name: &str, text: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            text: text.into(),
            ..Self::default()
        }
    }

    pub fn parent(name: &str, children: Vec<Node>) -> Self {
        Self {
            name: name.to_owned(),
            children,
            ..Self::default()
        }
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child named `name`.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// The first child named `name` as a long.
    pub fn long_of(&self, name: &str) -> Option<i64> {
        self.text_of(name)?.parse().ok()
    }

    /// Follows a path of child names.
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        let mut node = self;
        for p in path {
            node = node.child(p)?;
        }
        Some(node)
    }

    /// Writes the element (and its subtree) as XML text.
    pub fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(&escape(v));
            out.push('"');
        }
        out.push('>');
        if self.children.is_empty() {
            out.push_str(&escape(&self.text));
        } else {
            for c in &self.children {
                c.write(out);
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("no root element")]
    Empty,
    #[error("text mixed with elements in <{0}>")]
    Mixed(String),
}

/// Escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

/// Appends one element to `out` with escaped text.
pub fn push_leaf(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(&escape(text));
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

fn start_node(e: &BytesStart<'_>) -> Result<Node, XmlError> {
    let name = local(e.name().into_inner())?;
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| XmlError::Malformed(err.to_string()))?;
        let key = local(a.key.into_inner())?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| XmlError::Malformed(err.to_string()))?;
        attrs.push((key, value.into_owned()));
    }
    Ok(Node {
        name,
        attrs,
        ..Node::default()
    })
}

/// The local part of a possibly prefixed name.
fn local(qname: &str) -> Result<String, XmlError> {
    Ok(qname.rsplit(':').next().unwrap_or(qname).to_owned())
}

fn resolve_entity(name: &str) -> Result<String, XmlError> {
    let known = match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    };
    if let Some(c) = known {
        return Ok(c.to_string());
    }
    let code = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if let Some(dec) = name.strip_prefix('#') {
        dec.parse().ok()
    } else {
        None
    };
    code.and_then(char::from_u32)
        .map(|c| c.to_string())
        .ok_or_else(|| XmlError::Malformed(format!("unknown entity &{name};")))
}

/// Parses a whole document into its root element. Whitespace between elements is dropped;
/// other text next to child elements is an error (the interface's documents have no mixed
/// content).
pub fn parse(xml: &str) -> Result<Node, XmlError> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                if root.is_some() {
                    return Err(XmlError::Malformed("content after the root element".into()));
                }
                stack.push(start_node(&e)?);
            }
            Ok(Event::Empty(e)) => {
                let node = start_node(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None if root.is_none() => root = Some(node),
                    None => return Err(XmlError::Malformed("second root element".into())),
                }
            }
            Ok(Event::Text(t)) => {
                let content = t.xml10_content();
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&content);
                } else if !content.trim().is_empty() {
                    return Err(XmlError::Malformed("text outside the root element".into()));
                }
            }
            Ok(Event::CData(c)) => {
                let s = c.into_inner();
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Ok(Event::GeneralRef(r)) => {
                let name: &str = r.as_ref();
                let resolved = resolve_entity(name)?;
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&resolved),
                    None => return Err(XmlError::Malformed("reference outside the root".into())),
                }
            }
            Ok(Event::End(_)) => {
                let Some(mut node) = stack.pop() else {
                    return Err(XmlError::Malformed("unbalanced end tag".into()));
                };
                if !node.children.is_empty() {
                    if !node.text.trim().is_empty() {
                        return Err(XmlError::Mixed(node.name));
                    }
                    node.text.clear();
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(XmlError::Malformed(e.to_string())),
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed("unexpected end of document".into()));
    }
    root.ok_or(XmlError::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_by_local_name_with_entities() {
        let n = parse(
            "<?xml version=\"1.0\"?><a:R xmlns:a=\"u\" v=\"1\"><b>x &amp; &#x4e2d;</b><c/>\n</a:R>",
        )
        .unwrap();
        assert_eq!(n.name, "R");
        assert_eq!(n.attr("v"), Some("1"));
        assert_eq!(n.text_of("b"), Some("x & 中"));
        assert!(n.child("c").is_some());
        assert!(parse("<a><b></a>").is_err());
        assert!(matches!(parse("<a>t<b/></a>"), Err(XmlError::Mixed(_))));
    }
}
