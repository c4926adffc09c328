//! Arbitrary bytes as an unzipped download data file (`download::parse_download_bytes`, GBK or
//! UTF-8), and, when they hold a zip's end record, as the zip of a downloaded file taken through
//! the whole unpack path with a fixed test key (`package::pack_zip` then `package::unpack`:
//! base64, AES-128-CBC, MD5, unzip with the client's size cap) and parsed.
//!
//! Besides "never panics", checks what a fuzzer can falsify:
//! - a parse has the one supported version, and each result pair reads as a verdict and a
//!   decision time;
//! - an error about a missing or invalid element names its path from `DownloadData`;
//! - unpacking what was just packed gives the zip's entry: only the zip itself can be at fault.
#![no_main]

use beian_gateway::bureau::client::MAX_UNPACKED_BYTES;
use beian_gateway::datafile::download::{
    Download, DownloadError, DownloadFile, VERSION, decided_at, parse_download_bytes,
};
use beian_gateway::package::{self, AesKey, PackageError};
use chrono::DateTime;
use libfuzzer_sys::fuzz_target;

/// A zip's end-of-central-directory signature.
const ZIP_END: &[u8] = b"PK\x05\x06";

fuzz_target!(|data: &[u8]| {
    check_parse(data);
    if data.windows(ZIP_END.len()).any(|w| w == ZIP_END) {
        check_unpack(data);
    }
});

fn check_parse(bytes: &[u8]) {
    match parse_download_bytes(bytes) {
        Ok(download) => check_download(&download),
        Err(
            DownloadError::Missing { path }
            | DownloadError::Invalid { path, .. }
            | DownloadError::PairCount { path, .. },
        ) => assert!(path.starts_with("DownloadData"), "error path {path:?}"),
        Err(e) => assert!(!e.to_string().is_empty(), "an error without a message"),
    }
}

fn check_download(download: &Download) {
    assert_eq!(download.version.trim(), VERSION);
    let applied_at = DateTime::parse_from_rfc3339("2026-03-02T10:21:41+08:00")
        .expect("a valid RFC 3339 literal");
    for part in &download.parts {
        if let DownloadFile::Bajg(pairs) = part {
            for pair in pairs {
                let _ = (pair.verdict(), pair.reasons(), pair.operation());
                let _ = decided_at(Some(&pair.shsj), applied_at);
            }
        }
    }
}

fn check_unpack(zip: &[u8]) {
    let key = AesKey::new(b"0123456789abcdef", b"fedcba9876543210").expect("16-byte key and IV");
    let direct = package::unzip_one(zip, MAX_UNPACKED_BYTES);
    let packed = package::pack_zip(zip.to_vec(), Some(&key));
    let unpacked = package::unpack(
        &packed.beian_info,
        &packed.beian_info_hash,
        Some(&key),
        MAX_UNPACKED_BYTES,
    );
    match (direct, unpacked) {
        (Ok(entry), Ok(again)) => {
            assert_eq!(entry, again, "unpack after pack changes the entry");
            check_parse(&entry.1);
        }
        (Err(_), Err(e)) => assert!(
            matches!(
                e,
                PackageError::Zip(_) | PackageError::EntryCount(_) | PackageError::TooLarge { .. }
            ),
            "unpack after pack fails before the unzip: {e}"
        ),
        (direct, unpacked) => panic!("unzip {direct:?} but unpack after pack {unpacked:?}"),
    }
}
