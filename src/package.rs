//! Packaging of data files for the wire (bureau-protocol.md sections 2, 3 and 5): GBK text,
//! a one-entry zip, MD5, AES-128-CBC and base64 — both directions.
//!
//! Owns: bytes in, bytes out. Must not touch XML structure, I/O, the network or the store.
//! The sandbox bureau uses the same functions to unpack what the client packed, so the round trip
//! test here is backed by known-answer tests against independent values.

use std::io::{Cursor, Read};

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

/// How the entry is deflated. Both are plain deflate (method 8) that any unzip reads; they
/// differ only in how hard the compressor looks for repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deflate {
    /// zlib level 6 with its usual string matching: for text (records without attachments).
    Text,
    /// Huffman coding only, no string matching: for files that are mostly base64 attachments.
    /// Base64 of a JPEG has no repeats to find, so level 6 spends its time searching in vain
    /// (about 25–40 MB/s here) for a zip only ~0.5% smaller than Huffman-only (100+ MB/s).
    Base64,
}

/// Picks [`Deflate::Base64`] when a few evenly spaced samples of `data` hardly compress with
/// deflate's fixed codes (base64 costs ~8 bits a character there, XML text far less).
pub fn deflate_for(data: &[u8]) -> Deflate {
    const WINDOW: usize = 16 * 1024;
    const SAMPLES: usize = 4;
    if data.len() < 4 * WINDOW {
        return Deflate::Text;
    }
    let step = (data.len() - WINDOW) / (SAMPLES - 1);
    let mut out = vec![0u8; zlib_rs::compress_bound(WINDOW)];
    let mut compressed = 0usize;
    for k in 0..SAMPLES {
        let sample = &data[k * step..k * step + WINDOW];
        compressed += deflate_raw(sample, 1, zlib_rs::Strategy::Fixed, &mut out).unwrap_or(WINDOW);
    }
    if compressed as f64 > 0.85 * (SAMPLES * WINDOW) as f64 {
        Deflate::Base64
    } else {
        Deflate::Text
    }
}

/// Raw deflate of `input` into `out`; the compressed length, or `None` if zlib failed.
fn deflate_raw(
    input: &[u8],
    level: i32,
    strategy: zlib_rs::Strategy,
    out: &mut [u8],
) -> Option<usize> {
    let config = zlib_rs::DeflateConfig {
        level,
        method: zlib_rs::Method::Deflated,
        window_bits: -15, // raw deflate, as zip stores it
        mem_level: 8,
        strategy,
    };
    let (compressed, rc) = zlib_rs::compress_slice(out, input, config);
    (rc == zlib_rs::ReturnCode::Ok).then_some(compressed.len())
}

/// One zip with one deflated entry, deflated as [`deflate_for`] picks.
pub fn zip_one(entry_name: &str, data: &[u8]) -> Result<Vec<u8>, PackageError> {
    zip_one_with(entry_name, data, deflate_for(data))
}

/// One zip with one deflated entry: a local header, the data, one central directory entry and
/// the end record (APPNOTE 4.3), with sizes and CRC in the local header (no data descriptor),
/// no extra fields, DOS time 1980-01-01 00:00 — the plainest zip every unzip reads.
pub fn zip_one_with(entry_name: &str, data: &[u8], how: Deflate) -> Result<Vec<u8>, PackageError> {
    if !valid_entry_name(entry_name) {
        return Err(PackageError::EntryName(entry_name.to_owned()));
    }
    let too_large = || PackageError::Zip("the entry is over 4 GiB (zip64 is not used)".into());
    let size = u32::try_from(data.len()).map_err(|_| too_large())?;
    let name = entry_name.as_bytes();
    let header_len = 30 + name.len();
    let bound = zlib_rs::compress_bound(data.len());
    let mut zip = vec![0u8; header_len + bound + 46 + name.len() + 22];
    let (level, strategy) = match how {
        Deflate::Text => (6, zlib_rs::Strategy::Default),
        Deflate::Base64 => (1, zlib_rs::Strategy::HuffmanOnly),
    };
    let compressed = deflate_raw(
        data,
        level,
        strategy,
        &mut zip[header_len..header_len + bound],
    )
    .ok_or_else(|| PackageError::Zip("deflate failed".into()))?;
    let csize = u32::try_from(compressed).map_err(|_| too_large())?;
    let crc = zlib_rs::crc32::crc32(0, data);
    let name_len = name.len() as u16; // ≤ 128, checked above

    // Fields shared by the local header (from "version needed") and the central directory entry.
    let mut common = Vec::with_capacity(26);
    common.extend_from_slice(&20u16.to_le_bytes()); // version needed: 2.0 (deflate)
    common.extend_from_slice(&0u16.to_le_bytes()); // flags
    common.extend_from_slice(&8u16.to_le_bytes()); // method: deflate
    common.extend_from_slice(&0u16.to_le_bytes()); // time 00:00:00
    common.extend_from_slice(&0x0021u16.to_le_bytes()); // date 1980-01-01
    common.extend_from_slice(&crc.to_le_bytes());
    common.extend_from_slice(&csize.to_le_bytes());
    common.extend_from_slice(&size.to_le_bytes());
    common.extend_from_slice(&name_len.to_le_bytes());
    common.extend_from_slice(&0u16.to_le_bytes()); // extra field length

    let mut header = Vec::with_capacity(header_len);
    header.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    header.extend_from_slice(&common);
    header.extend_from_slice(name);
    zip[..header_len].copy_from_slice(&header);
    zip.truncate(header_len + compressed);

    let cd_offset = u32::try_from(zip.len()).map_err(|_| too_large())?;
    zip.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    zip.extend_from_slice(&(3u16 << 8 | 20).to_le_bytes()); // made by: Unix, 2.0
    zip.extend_from_slice(&common);
    zip.extend_from_slice(&0u16.to_le_bytes()); // comment length
    zip.extend_from_slice(&0u16.to_le_bytes()); // disk number
    zip.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
    zip.extend_from_slice(&(0o100644u32 << 16).to_le_bytes()); // external: a regular file
    zip.extend_from_slice(&0u32.to_le_bytes()); // offset of the local header
    zip.extend_from_slice(name);
    let cd_size = zip.len() as u32 - cd_offset;

    zip.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes()); // this disk
    zip.extend_from_slice(&0u16.to_le_bytes()); // disk with the central directory
    zip.extend_from_slice(&1u16.to_le_bytes()); // entries on this disk
    zip.extend_from_slice(&1u16.to_le_bytes()); // entries in all
    zip.extend_from_slice(&cd_size.to_le_bytes());
    zip.extend_from_slice(&cd_offset.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes()); // comment length
    Ok(zip)
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
    let (beian_info, digest) = hash_encrypt_base64(&zip, key);
    Packed {
        beian_info,
        beian_info_hash: B64.encode(digest),
        zip,
    }
}

/// Bytes per step of [`hash_encrypt_base64`]: a multiple of 16 (AES blocks) and 3 (base64
/// groups, so no `=` mid-stream), small enough that a chunk stays in L2 between the passes.
const CHUNK: usize = 48 * 1024;

/// MD5 of `zip`, and base64 of (AES-128-CBC/PKCS#7 of `zip` when `key` is given, else `zip`),
/// in one walk over the bytes: each chunk is hashed, encrypted and encoded while it is in cache,
/// and no whole-size ciphertext is ever allocated. Byte for byte the same as
/// `(B64.encode(key.encrypt(zip)), Md5::digest(zip))`.
pub fn hash_encrypt_base64(zip: &[u8], key: Option<&AesKey>) -> (String, [u8; 16]) {
    use aes::cipher::array::Array;
    let encrypted_len = match key {
        Some(_) => (zip.len() / 16 + 1) * 16,
        None => zip.len(),
    };
    let mut out = String::with_capacity(encrypted_len.div_ceil(3) * 4);
    let mut md5 = Md5::new();
    let Some(k) = key else {
        for chunk in zip.chunks(CHUNK) {
            md5.update(chunk);
            B64.encode_string(chunk, &mut out);
        }
        return (out, md5.finalize().into());
    };
    let mut cbc = cbc::Encryptor::<aes::Aes128>::new(&k.key.into(), &k.iv.into());
    let blocks_per_chunk = CHUNK / 16;
    // One spare slot for the padded last block, encoded with the last chunk so that base64
    // pads only at the very end.
    let mut buf: Vec<Array<u8, _>> = vec![Array::default(); blocks_per_chunk + 1];
    let (mut blocks, tail) = Array::slice_as_chunks(zip);
    loop {
        let take = blocks.len().min(blocks_per_chunk);
        let (now, rest) = blocks.split_at(take);
        md5.update(Array::slice_as_flattened(now));
        cbc.encrypt_blocks_b2b(now, &mut buf[..take])
            .expect("same number of blocks in and out");
        blocks = rest;
        if blocks.is_empty() {
            // The tail (0–15 bytes) and its PKCS#7 padding: one last block, always present.
            md5.update(tail);
            let mut last = Array::from([(16 - tail.len()) as u8; 16]);
            last[..tail.len()].copy_from_slice(tail);
            cbc.encrypt_block(&mut last);
            buf[take] = last;
            B64.encode_string(Array::slice_as_flattened(&buf[..=take]), &mut out);
            break;
        }
        B64.encode_string(Array::slice_as_flattened(&buf[..take]), &mut out);
    }
    (out, md5.finalize().into())
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
    fn one_pass_equals_the_plain_composition_at_every_length() {
        let k = AesKey::new(b"0123456789abcdef", b"fedcba9876543210").unwrap();
        let data: Vec<u8> = (0..3 * CHUNK + 100)
            .map(|i| (i * 7 + i / 13) as u8)
            .collect();
        let mut lengths: Vec<usize> = (0..70).collect();
        for edge in [CHUNK, 2 * CHUNK, 3 * CHUNK] {
            lengths.extend(edge - 17..edge + 17);
        }
        for n in lengths {
            let zip = &data[..n];
            let (b64, digest) = hash_encrypt_base64(zip, Some(&k));
            assert_eq!(b64, B64.encode(k.encrypt(zip)), "AES, length {n}");
            assert_eq!(digest, <[u8; 16]>::from(Md5::digest(zip)), "length {n}");
            let (b64, digest) = hash_encrypt_base64(zip, None);
            assert_eq!(b64, B64.encode(zip), "plain, length {n}");
            assert_eq!(digest, <[u8; 16]>::from(Md5::digest(zip)));
        }
    }

    #[test]
    fn both_deflate_modes_make_zips_that_unzip() {
        let text = "<Baxx><Zbdwmc>北京示例科技有限公司</Zbdwmc></Baxx>".repeat(3000);
        let text = encode_gbk(&text).unwrap();
        let mut state = 0x2545_f491_u32;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        let b64 = B64.encode(noise);
        assert_eq!(deflate_for(&text), Deflate::Text);
        assert_eq!(deflate_for(b64.as_bytes()), Deflate::Base64);
        for data in [&text[..], b64.as_bytes(), b"", b"x"] {
            for how in [Deflate::Text, Deflate::Base64] {
                let zip = zip_one_with("1100001234U0000000001.xml", data, how).unwrap();
                let (name, back) = unzip_one(&zip, 1 << 24).unwrap();
                assert_eq!(name, "1100001234U0000000001.xml");
                assert_eq!(back, data, "{how:?}");
            }
        }
        // Huffman-only costs base64 almost nothing against level 6.
        let fast = zip_one_with("a.xml", b64.as_bytes(), Deflate::Base64).unwrap();
        let slow = zip_one_with("a.xml", b64.as_bytes(), Deflate::Text).unwrap();
        assert!(
            (fast.len() as f64) < slow.len() as f64 * 1.02,
            "{} vs {}",
            fast.len(),
            slow.len()
        );
    }

    #[test]
    fn entry_names() {
        assert!(valid_entry_name("1100001234U0000000017.xml"));
        assert!(!valid_entry_name("a_b.xml"));
        assert!(!valid_entry_name("abc.zip"));
        assert!(!valid_entry_name(&format!("{}.xml", "a".repeat(130))));
    }
}
