//! Data files of the interface (no I/O): filings → V3.0 `UploadData` XML, and downloaded
//! `DownloadData` files → typed results.
//!
//! - [`ids`]: which provider ids (`Isp*id`, fresh from the caller's counter) and province ids
//!   (from the registry of BASJ records or the document's `bureauIds`) a filing's records carry.
//! - [`upload`]: the `UploadData` document for one or more filings (bureau-protocol.md
//!   sections 3, 7, 7.0, 7.1 and the APP extension of section 9).

use serde::{Deserialize, Serialize};

pub mod download;
pub mod ids;
pub mod upload;

/// Something a filing must correct before it can be sent (a preflight finding). `field` is the
/// path in the filing document (`websites[0].recordNumber`), `code` a stable rule name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub code: String,
    pub field: String,
    pub message: String,
}

impl Finding {
    pub fn new(code: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]: {}", self.field, self.code, self.message)
    }
}
