//! Structural validation of uploaded data files against the V3.0 schema, as the sandbox bureau
//! does it: the outlines of `upload-data.xsd` (and the APP extension's `upload-data-ext.xsd`)
//! are bundled under `schema/` and interpreted here — required and optional elements, their
//! counts, `sequence` order, `choice`, unknown elements, and the simple types' facets (long
//! ranges, string lengths, the one hex pattern).
//!
//! Owns: the outline format and the check of a [`Node`] tree against it. Must not touch what
//! a record means (decisions live in `decide.rs`) nor the client's file builder.

use super::xml::Node;

pub const UPLOAD_OUTLINE: &str = include_str!("schema/upload-data.outline");
pub const UPLOAD_EXT_OUTLINE: &str = include_str!("schema/upload-data-ext.outline");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Sequence,
    All,
    Choice,
}

#[derive(Debug, Clone, Default)]
struct Facets {
    kind: String,
    min_inclusive: Option<i64>,
    max_inclusive: Option<i64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    length: Option<usize>,
    pattern: Option<String>,
}

/// One element declaration of the outline.
#[derive(Debug, Clone)]
pub struct Decl {
    name: String,
    min: usize,
    max: Option<usize>,
    facets: Option<Facets>,
    group: Option<Group>,
    children: Vec<Decl>,
}

/// A parsed outline: the root declaration.
#[derive(Debug, Clone)]
pub struct Schema {
    root: Decl,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("outline line {line}: {msg}")]
pub struct OutlineError {
    line: usize,
    msg: String,
}

fn parse_decl_line(text: &str, line: usize) -> Result<Decl, OutlineError> {
    let err = |msg: &str| OutlineError {
        line,
        msg: msg.to_owned(),
    };
    let (head, ty) = match text.split_once(" : ") {
        Some((h, t)) => (h.trim(), Some(t.trim())),
        None => (text.trim(), None),
    };
    let (name, min, max) = match head.split_once('[') {
        Some((n, card)) => {
            let card = card
                .strip_suffix(']')
                .ok_or_else(|| err("bad cardinality"))?;
            let (lo, hi) = card
                .split_once("..")
                .ok_or_else(|| err("bad cardinality"))?;
            let lo: usize = lo.parse().map_err(|_| err("bad minimum"))?;
            let hi = if hi == "unbounded" {
                None
            } else {
                Some(hi.parse().map_err(|_| err("bad maximum"))?)
            };
            (n.to_owned(), lo, hi)
        }
        None => (head.to_owned(), 1, Some(1)),
    };
    let facets = ty.map(|t| {
        let mut parts = t.split_whitespace();
        let mut f = Facets {
            kind: parts.next().unwrap_or_default().to_owned(),
            ..Facets::default()
        };
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                match k {
                    "minInclusive" => f.min_inclusive = v.parse().ok(),
                    "maxInclusive" => f.max_inclusive = v.parse().ok(),
                    "minLength" => f.min_length = v.parse().ok(),
                    "maxLength" => f.max_length = v.parse().ok(),
                    "length" => f.length = v.parse().ok(),
                    "pattern" => f.pattern = Some(v.to_owned()),
                    _ => {}
                }
            }
        }
        f
    });
    Ok(Decl {
        name,
        min,
        max,
        facets,
        group: None,
        children: Vec::new(),
    })
}

impl Schema {
    /// Parses an outline: two spaces per level; an element line, optionally followed (two
    /// spaces deeper) by a `<sequence>`/`<all>`/`<choice>` line whose children are two spaces
    /// deeper again; `@attr` lines are ignored.
    pub fn parse(outline: &str) -> Result<Self, OutlineError> {
        // (indent, decl) stack of open elements.
        let mut stack: Vec<(usize, Decl)> = Vec::new();
        let mut root: Option<Decl> = None;
        for (i, raw) in outline.lines().enumerate() {
            let line = i + 1;
            let text = raw.trim_end();
            if text.trim().is_empty() {
                continue;
            }
            let indent = text.len() - text.trim_start().len();
            let body = text.trim_start();
            if body.starts_with('@') {
                continue;
            }
            if let Some(g) = body.strip_prefix('<') {
                let group = match g.trim_end_matches('>') {
                    "sequence" => Group::Sequence,
                    "all" => Group::All,
                    "choice" => Group::Choice,
                    other => {
                        return Err(OutlineError {
                            line,
                            msg: format!("unknown group {other}"),
                        });
                    }
                };
                close_deeper(&mut stack, &mut root, indent.saturating_sub(1));
                match stack.last_mut() {
                    Some((_, d)) => d.group = Some(group),
                    None => {
                        return Err(OutlineError {
                            line,
                            msg: "group without element".into(),
                        });
                    }
                }
                continue;
            }
            close_deeper(&mut stack, &mut root, indent);
            let decl = parse_decl_line(body, line)?;
            stack.push((indent, decl));
        }
        close_deeper(&mut stack, &mut root, 0);
        root.map(|root| Self { root }).ok_or(OutlineError {
            line: 0,
            msg: "empty outline".into(),
        })
    }

    /// Checks a document's root element; the error names the path of the first fault (never a
    /// value: values may be personal data).
    pub fn validate(&self, root: &Node) -> Result<(), String> {
        if root.name != self.root.name {
            return Err(format!("root is {} not {}", root.name, self.root.name));
        }
        validate_node(&self.root, root, &root.name)
    }
}

/// Pops every open element indented at `min_indent` or deeper into its parent (or the root).
fn close_deeper(stack: &mut Vec<(usize, Decl)>, root: &mut Option<Decl>, min_indent: usize) {
    while stack.last().is_some_and(|(i, _)| *i >= min_indent) {
        let Some((_, d)) = stack.pop() else { break };
        match stack.last_mut() {
            Some((_, parent)) => parent.children.push(d),
            None => *root = Some(d),
        }
    }
}

fn validate_node(decl: &Decl, node: &Node, path: &str) -> Result<(), String> {
    if decl.children.is_empty() {
        if !node.children.is_empty() {
            return Err(format!("{path}: unexpected child elements"));
        }
        return match &decl.facets {
            Some(f) => check_facets(f, &node.text).map_err(|m| format!("{path}: {m}")),
            None => Ok(()),
        };
    }
    if !node.text.trim().is_empty() {
        return Err(format!("{path}: text in a complex element"));
    }
    let group = decl.group.unwrap_or(Group::Sequence);
    // Every child must be declared.
    let mut last_index = 0usize;
    for child in &node.children {
        let Some(index) = decl.children.iter().position(|d| d.name == child.name) else {
            return Err(format!("{path}: unexpected element {}", child.name));
        };
        if group == Group::Sequence {
            if index < last_index {
                return Err(format!("{path}: {} out of order", child.name));
            }
            last_index = index;
        }
    }
    if group == Group::Choice {
        let present: Vec<&Decl> = decl
            .children
            .iter()
            .filter(|d| node.all(&d.name).next().is_some())
            .collect();
        if present.len() != 1 {
            return Err(format!(
                "{path}: a choice needs exactly one of its elements"
            ));
        }
    }
    for d in &decl.children {
        let count = node.all(&d.name).count();
        let required = group != Group::Choice && d.min > count;
        if required {
            return Err(format!("{path}: missing {}", d.name));
        }
        if d.max.is_some_and(|m| count > m) || (group == Group::All && count > 1) {
            return Err(format!("{path}: too many {}", d.name));
        }
        for (i, c) in node.all(&d.name).enumerate() {
            validate_node(d, c, &format!("{path}/{}[{}]", d.name, i + 1))?;
        }
    }
    Ok(())
}

fn check_facets(f: &Facets, text: &str) -> Result<(), String> {
    match f.kind.as_str() {
        "long" => {
            let v: i64 = text.trim().parse().map_err(|_| "not a long".to_owned())?;
            if f.min_inclusive.is_some_and(|m| v < m) || f.max_inclusive.is_some_and(|m| v > m) {
                return Err("long out of range".into());
            }
        }
        "string" => {
            let n = text.chars().count();
            if f.min_length.is_some_and(|m| n < m)
                || f.max_length.is_some_and(|m| n > m)
                || f.length.is_some_and(|m| n != m)
            {
                return Err("string length out of range".into());
            }
            if let Some(p) = &f.pattern
                && p == "[0-9a-fA-F]{32}"
                && !(n == 32 && text.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err("does not match the pattern".into());
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bureau::sandbox::xml::parse;

    #[test]
    fn outlines_parse_and_check_structure() {
        let s = Schema::parse(UPLOAD_OUTLINE).unwrap();
        assert_eq!(s.root.name, "UploadData");
        assert_eq!(s.root.group, Some(Group::Choice));
        let icp = &s.root.children[0];
        assert_eq!(icp.name, "ICP");
        assert!(icp.children.iter().any(|d| d.name == "ZXBA"));
        assert!(icp.children.iter().any(|d| d.name == "Qqdwid"));
        let ok = parse(
            "<UploadData version=\"V.3.0\"><ICP><ZXBA><Zx_xx><Zxlb>0</Zxlb><Jlid>5</Jlid>\
             <Zxly>1</Zxly></Zx_xx></ZXBA><Qqdwid>1</Qqdwid></ICP></UploadData>",
        )
        .unwrap();
        assert_eq!(s.validate(&ok), Ok(()));
        let missing = parse(
            "<UploadData><ICP><ZXBA><Zx_xx><Zxlb>0</Zxlb><Zxly>1</Zxly></Zx_xx></ZXBA>\
             <Qqdwid>1</Qqdwid></ICP></UploadData>",
        )
        .unwrap();
        assert!(s.validate(&missing).unwrap_err().contains("missing Jlid"));
        let order = parse(
            "<UploadData><ICP><ZXBA><Zx_xx><Jlid>5</Jlid><Zxlb>0</Zxlb><Zxly>1</Zxly></Zx_xx>\
             </ZXBA><Qqdwid>1</Qqdwid></ICP></UploadData>",
        )
        .unwrap();
        assert!(s.validate(&order).unwrap_err().contains("out of order"));
        let range = parse(
            "<UploadData><ICP><ZXBA><Zx_xx><Zxlb>3</Zxlb><Jlid>5</Jlid><Zxly>1</Zxly></Zx_xx>\
             </ZXBA><Qqdwid>1</Qqdwid></ICP></UploadData>",
        )
        .unwrap();
        assert!(s.validate(&range).is_err());
        let ext = Schema::parse(UPLOAD_EXT_OUTLINE).unwrap();
        assert!(
            ext.root.children[0].children[0].children[0]
                .children
                .iter()
                .any(|d| d.name == "App_xx")
        );
    }
}
