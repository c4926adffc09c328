//! Reading filing documents from files: one JSON object, a JSON array of them, or JSON Lines.
//! A file is parsed whole before anything is stored, so a file is imported all or nothing.
//! Errors name the file, the filing id (when it can be read) and the field path.

use std::path::Path;

use super::Filing;

#[derive(Debug, thiserror::Error)]
#[error("{file}: filing {filing}: {field}: {message}")]
pub struct ImportError {
    pub file: String,
    /// The filing's `id`, or `#N` (its position) when the id cannot be read.
    pub filing: String,
    /// The field path, e.g. `websites[0].serviceContent`, or `(document)`.
    pub field: String,
    pub message: String,
}

/// Parses one file's text into filings (nothing is stored here).
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Filing>, ImportError> {
    let file = path.display().to_string();
    let values = split_documents(&file, text)?;
    let mut filings = Vec::with_capacity(values.len());
    let mut seen = std::collections::HashSet::new();
    for (index, value) in values.into_iter().enumerate() {
        let filing = parse_value(&file, index, value)?;
        if !seen.insert(filing.id.clone()) {
            return Err(ImportError {
                file,
                filing: filing_name(Some(&filing.id), index),
                field: "id".into(),
                message: "the same id appears twice in this file".into(),
            });
        }
        filings.push(filing);
    }
    Ok(filings)
}

fn split_documents(file: &str, text: &str) -> Result<Vec<serde_json::Value>, ImportError> {
    let doc_err = |filing: String, message: String| ImportError {
        file: file.to_owned(),
        filing,
        field: "(document)".into(),
        message,
    };
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(items)) => Ok(items),
        Ok(v @ serde_json::Value::Object(_)) => Ok(vec![v]),
        Ok(other) => Err(doc_err(
            "#0".into(),
            format!("expected a JSON object, an array of objects or JSON Lines, got {other}"),
        )),
        Err(whole) => {
            // JSON Lines: one object per non-empty line.
            let lines: Vec<(usize, &str)> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .collect();
            if lines.len() < 2 {
                return Err(doc_err("#0".into(), format!("malformed JSON: {whole}")));
            }
            lines
                .into_iter()
                .enumerate()
                .map(|(index, (line_no, line))| {
                    serde_json::from_str::<serde_json::Value>(line).map_err(|e| {
                        doc_err(
                            format!("#{index}"),
                            format!("malformed JSON on line {}: {e}", line_no + 1),
                        )
                    })
                })
                .collect()
        }
    }
}

/// How an error names a filing: its id, or `#N` (its position) when the id is missing or empty.
fn filing_name(id: Option<&str>, index: usize) -> String {
    match id {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => format!("#{index}"),
    }
}

fn parse_value(file: &str, index: usize, value: serde_json::Value) -> Result<Filing, ImportError> {
    let filing_name = filing_name(value.get("id").and_then(|v| v.as_str()), index);
    if !value.is_object() {
        return Err(ImportError {
            file: file.to_owned(),
            filing: filing_name,
            field: "(document)".into(),
            message: "a filing must be a JSON object".into(),
        });
    }
    serde_path_to_error::deserialize::<_, Filing>(value).map_err(|e| {
        let path = e.path().to_string();
        ImportError {
            file: file.to_owned(),
            filing: filing_name,
            // `.` is the document itself; an empty path is an unknown key `""` at the top.
            field: if path == "." || path.is_empty() {
                "(document)".into()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"{"id":"F-1","type":"FIRST","province":"110000","reviewedAt":"2026-03-02T10:21:41+08:00","subject":{}}"#;

    #[test]
    fn one_object_array_and_lines() {
        let p = Path::new("x.json");
        assert_eq!(parse_file(p, MIN).unwrap().len(), 1);
        let arr = format!("[{MIN},{}]", MIN.replace("F-1", "F-2"));
        assert_eq!(parse_file(p, &arr).unwrap().len(), 2);
        let lines = format!("{MIN}\n\n{}\n", MIN.replace("F-1", "F-3"));
        assert_eq!(parse_file(p, &lines).unwrap().len(), 2);
    }

    #[test]
    fn unknown_field_names_path() {
        let bad = MIN.replace(r#""subject":{}"#, r#""subject":{"principal":{"nick":"x"}}"#);
        let e = parse_file(Path::new("a.json"), &bad).unwrap_err();
        assert_eq!(e.filing, "F-1");
        assert_eq!(e.field, "subject.principal.nick");
        assert!(
            e.to_string()
                .starts_with("a.json: filing F-1: subject.principal")
        );
    }

    #[test]
    fn wrong_enum_names_path() {
        let bad = MIN.replace(
            r#""subject":{}"#,
            r#""subject":{},"websites":[{"serviceContent":"NOPE"}]"#,
        );
        let e = parse_file(Path::new("a.json"), &bad).unwrap_err();
        assert_eq!(e.field, "websites[0].serviceContent");
    }

    #[test]
    fn required_keys_and_nulls() {
        let bad = MIN.replace(r#","subject":{}"#, "");
        let e = parse_file(Path::new("a.json"), &bad).unwrap_err();
        assert!(e.message.contains("subject"), "{e}");
        let nulls = MIN.replace(
            r#""subject":{}"#,
            r#""subject":{"name":null},"websites":null"#,
        );
        assert!(
            parse_file(Path::new("a.json"), &nulls).unwrap()[0]
                .websites
                .is_empty()
        );
    }

    #[test]
    fn malformed_json_is_a_document_error() {
        let e = parse_file(Path::new("a.json"), "{\"id\": ").unwrap_err();
        assert_eq!(e.field, "(document)");
        assert!(e.message.contains("malformed JSON"));
    }

    #[test]
    fn duplicate_id_in_file() {
        let arr = format!("[{MIN},{MIN}]");
        assert!(parse_file(Path::new("a.json"), &arr).is_err());
    }
}
