//! Data files of the interface (no I/O): filings → V3.0 `UploadData` XML, and downloaded
//! `DownloadData` files → typed results.
pub mod download;
