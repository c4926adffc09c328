//! Packaging of data files for the wire (bureau-protocol.md sections 2, 3 and 5): GBK text,
//! a one-entry zip, MD5, AES-128-CBC and base64 — both directions.
//!
//! Owns: bytes in, bytes out. Must not touch XML structure, I/O, the network or the store.
//! The sandbox bureau uses the same functions to unpack what the client packed, so the round trip
//! test here is backed by known-answer tests against independent values.

use std::io::{Cursor, Read, Write};

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use rand::RngExt;

/// The AES-128 key and IV of one bureau account (16 bytes each, from 16 characters).
#[derive(Clone)]
pub struct AesKey {
    key: [u8; 16],
    iv: [u8; 16],
}

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("AES {what} must be exactly 16 bytes, got {len}")]
    KeyLength { what: &'static str, len: usize },
    #[error("character {ch:?} at offset {offset} cannot be represented in GBK")]
    NotGbk { ch: char, offset: usize },
    #[error("data is not valid GBK")]
    BadGbk,
    #[error("base64 decoding failed: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("decryption failed (wrong key/IV or corrupt data)")]
    Decrypt,
    #[error("hash mismatch: expected {expected}, computed {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("zip: {0}")]
    Zip(String),
    #[error("zip entry name {0:?} is not letters and digits with .xml, at most 128 bytes")]
    EntryName(String),
    #[error("zip must hold exactly one entry, found {0}")]
    EntryCount(usize),
    #[error("unpacked data exceeds the cap of {cap} bytes")]
    TooLarge { cap: usize },
}

impl AesKey {
    pub fn new(key: &[u8], iv: &[u8]) -> Result<Self, PackageError> {
        let key: [u8; 16] = key.try_into().map_err(|_| PackageError::KeyLength {
            what: "key",
            len: key.len(),
        })?;
        let iv: [u8; 16] = iv.try_into().map_err(|_| PackageError::KeyLength {
            what: "iv",
            len: iv.len(),
        })?;
        Ok(Self { key, iv })
    }

    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        cbc::Encryptor::<aes::Aes128>::new(&self.key.into(), &self.iv.into())
            .encrypt_padded_vec::<Pkcs7>(plain)
    }

    pub fn decrypt(&self, cipher: &[u8]) -> Result<Vec<u8>, PackageError> {
        cbc::Decryptor::<aes::Aes128>::new(&self.key.into(), &self.iv.into())
            .decrypt_padded_vec::<Pkcs7>(cipher)
            .map_err(|_| PackageError::Decrypt)
    }
}

/// 20 random characters of `[0-9A-Za-z]` (section 2).
pub fn rand_val() -> String {
    const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// `pwdHash` = base64(MD5(GBK bytes of password + randVal)) (section 2).
pub fn pwd_hash(password: &str, rand_val: &str) -> Result<String, PackageError> {
    let mut text = String::with_capacity(password.len() + rand_val.len());
    text.push_str(password);
    text.push_str(rand_val);
    let bytes = encode_gbk(&text)?;
    Ok(B64.encode(Md5::digest(&bytes)))
}

/// base64 of the MD5 of `bytes` (the form of `beianInfoHash`).
pub fn md5_base64(bytes: &[u8]) -> String {
    B64.encode(Md5::digest(bytes))
}

/// Lowercase hex MD5 (the form of `ICPmm` and `Qmmd5`).
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// Encodes text as GBK, refusing (never replacing) characters GBK cannot represent.
pub fn encode_gbk(text: &str) -> Result<Vec<u8>, PackageError> {
    let (bytes, _, had_errors) = encoding_rs::GBK.encode(text);
    if had_errors {
        // Find the first offending character for a useful message.
        for (offset, ch) in text.char_indices() {
            let mut buf = [0u8; 4];
            let (_, _, bad) = encoding_rs::GBK.encode(ch.encode_utf8(&mut buf));
            if bad {
                return Err(PackageError::NotGbk { ch, offset });
            }
        }
    }
    Ok(bytes.into_owned())
}

/// The first character of `text` that GBK cannot represent, if any.
pub fn first_non_gbk(text: &str) -> Option<char> {
    match encode_gbk(text) {
        Err(PackageError::NotGbk { ch, .. }) => Some(ch),
        _ => None,
    }
}

/// Decodes GBK bytes, refusing malformed input.
pub fn decode_gbk(bytes: &[u8]) -> Result<String, PackageError> {
    let (text, had_errors) = encoding_rs::GBK.decode_without_bom_handling(bytes);
    if had_errors {
        return Err(PackageError::BadGbk);
    }
    Ok(text.into_owned())
}

/// Zip entry names: letters and digits, plus the `.xml` extension, at most 128 bytes.
pub fn valid_entry_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".xml") else {
        return false;
    };
    name.len() <= 128 && !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// One zip with one deflated entry.
pub fn zip_one(entry_name: &str, data: &[u8]) -> Result<Vec<u8>, PackageError> {
    if !valid_entry_name(entry_name) {
        return Err(PackageError::EntryName(entry_name.to_owned()));
    }
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(data.len() / 3 + 256)));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(6));
    writer
        .start_file(entry_name, options)
        .map_err(|e| PackageError::Zip(e.to_string()))?;
    writer
        .write_all(data)
        .map_err(|e| PackageError::Zip(e.to_string()))?;
    let cursor = writer
        .finish()
        .map_err(|e| PackageError::Zip(e.to_string()))?;
    Ok(cursor.into_inner())
}

/// The single entry of a zip: its name and bytes (at most `cap` bytes unpacked).
pub fn unzip_one(zip_bytes: &[u8], cap: usize) -> Result<(String, Vec<u8>), PackageError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes))
        .map_err(|e| PackageError::Zip(e.to_string()))?;
    if archive.len() != 1 {
        return Err(PackageError::EntryCount(archive.len()));
    }
    let mut entry = archive
        .by_index(0)
        .map_err(|e| PackageError::Zip(e.to_string()))?;
    let name = entry
        .name()
        .map_err(|e| PackageError::Zip(e.to_string()))?
        .into_owned();
    let mut out = Vec::new();
    (&mut entry)
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| PackageError::Zip(e.to_string()))?;
    if out.len() > cap {
        return Err(PackageError::TooLarge { cap });
    }
    Ok((name, out))
}

/// What travels in `beianInfo` / `beianInfoHash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub beian_info: String,
    pub beian_info_hash: String,
    /// The zip bytes, kept so a file can be stored and resent byte for byte.
    pub zip: Vec<u8>,
}

/// GBK XML bytes → zip → MD5 → optional AES → base64 (section 3).
pub fn pack(
    entry_name: &str,
    gbk_xml: &[u8],
    key: Option<&AesKey>,
) -> Result<Packed, PackageError> {
    let zip = zip_one(entry_name, gbk_xml)?;
    Ok(pack_zip(zip, key))
}

/// Wraps already-zipped bytes (a stored file being resent).
pub fn pack_zip(zip: Vec<u8>, key: Option<&AesKey>) -> Packed {
    let beian_info_hash = md5_base64(&zip);
    let beian_info = match key {
        Some(k) => B64.encode(k.encrypt(&zip)),
        None => B64.encode(&zip),
    };
    Packed {
        beian_info,
        beian_info_hash,
        zip,
    }
}

/// The reverse of [`pack`]: base64 → decrypt (when `key` is given) → check the MD5 of the zip
/// → unzip. Returns the entry name and the (GBK) bytes.
pub fn unpack(
    beian_info: &str,
    beian_info_hash: &str,
    key: Option<&AesKey>,
    cap: usize,
) -> Result<(String, Vec<u8>), PackageError> {
    let raw = B64.decode(beian_info.trim())?;
    let zip = match key {
        Some(k) => k.decrypt(&raw)?,
        None => raw,
    };
    let actual = md5_base64(&zip);
    if actual != beian_info_hash.trim() {
        return Err(PackageError::HashMismatch {
            expected: beian_info_hash.trim().to_owned(),
            actual,
        });
    }
    unzip_one(&zip, cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pwd_hash_known_answer_with_gbk_input() {
        // MD5 over the GBK bytes of "密码abc" + randVal; computed independently with Python:
        // base64.b64encode(hashlib.md5(("密码abc"+"aZ3kQ9pX0bT7mW2cL5vR").encode("gbk")).digest())
        assert_eq!(
            pwd_hash("密码abc", "aZ3kQ9pX0bT7mW2cL5vR").unwrap(),
            "OBtEpregfDFFpgCo8ns70g=="
        );
    }

    #[test]
    fn rand_val_is_20_alphanumerics() {
        let v = rand_val();
        assert_eq!(v.len(), 20);
        assert!(v.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn non_gbk_character_is_refused_not_replaced() {
        let err = encode_gbk("abc😀").unwrap_err();
        assert!(matches!(
            err,
            PackageError::NotGbk {
                ch: '😀',
                offset: 3
            }
        ));
        assert_eq!(
            decode_gbk(&encode_gbk("北京示例").unwrap()).unwrap(),
            "北京示例"
        );
    }

    #[test]
    fn aes_known_answer() {
        // Computed independently with Python's `cryptography` (AES-128-CBC, PKCS#7).
        let k = AesKey::new(b"0123456789abcdef", b"fedcba9876543210").unwrap();
        let c = k.encrypt(b"hello");
        assert_eq!(B64.encode(&c), "e+3OsGVfOJQQaXifNkYgkQ==");
        assert_eq!(k.decrypt(&c).unwrap(), b"hello");
    }

    #[test]
    fn pack_round_trip_and_tamper_detection() {
        let k = AesKey::new(b"0123456789abcdef", b"fedcba9876543210").unwrap();
        let xml = encode_gbk("<?xml version=\"1.0\" encoding=\"GBK\"?><a>北京</a>").unwrap();
        let p = pack("1100001234U0000000001.xml", &xml, Some(&k)).unwrap();
        let (name, back) = unpack(&p.beian_info, &p.beian_info_hash, Some(&k), 1 << 20).unwrap();
        assert_eq!(name, "1100001234U0000000001.xml");
        assert_eq!(back, xml);
        let err = unpack(&p.beian_info, "AAAAAAAAAAAAAAAAAAAAAA==", Some(&k), 1 << 20).unwrap_err();
        assert!(matches!(err, PackageError::HashMismatch { .. }));
        assert!(matches!(
            unpack(&p.beian_info, &p.beian_info_hash, Some(&k), 4).unwrap_err(),
            PackageError::TooLarge { .. }
        ));
    }

    #[test]
    fn entry_names() {
        assert!(valid_entry_name("1100001234U0000000017.xml"));
        assert!(!valid_entry_name("a_b.xml"));
        assert!(!valid_entry_name("abc.zip"));
        assert!(!valid_entry_name(&format!("{}.xml", "a".repeat(130))));
    }
}
