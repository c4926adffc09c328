//! The packaging chain per MB on a base64-heavy data file (first filings, five attachments at
//! their limits): GBK, zip, MD5, AES-128-CBC and base64, each alone and all together, and the
//! previous implementation of each step beside it (`before`). Throughput is per byte of the
//! GBK data file.
//!
//! `cargo bench --bench packaging -- --measurement-time 3 --warm-up-time 1`

mod common;

use std::hint::black_box;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use beian_gateway::package::{
    AesKey, Deflate, encode_gbk, hash_encrypt_base64, pack, pack_zip, zip_one, zip_one_with,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use md5::{Digest, Md5};

const NAME: &str = "1100001234U0000000001.xml";

fn chain(c: &mut Criterion) {
    let xml = common::base64_heavy_xml(8);
    let gbk = encode_gbk(&xml).unwrap();
    let zip = zip_one(NAME, &gbk).unwrap();
    let key = AesKey::new(b"0123456789abcdef", b"fedcba9876543210").unwrap();
    eprintln!(
        "data file: {} bytes GBK; zip {} bytes (Huffman-only), {} bytes (level 6, before)",
        gbk.len(),
        zip.len(),
        common::before::zip_one_before(NAME, &gbk).len()
    );
    let mut g = c.benchmark_group("packaging");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(gbk.len() as u64));
    g.bench_function("gbk", |b| b.iter(|| encode_gbk(black_box(&xml)).unwrap()));
    g.bench_function("zip/now (Huffman-only)", |b| {
        b.iter(|| zip_one_with(NAME, black_box(&gbk), Deflate::Base64).unwrap())
    });
    g.bench_function("zip/level 6", |b| {
        b.iter(|| zip_one_with(NAME, black_box(&gbk), Deflate::Text).unwrap())
    });
    g.bench_function("zip/before (zip crate, level 6)", |b| {
        b.iter(|| common::before::zip_one_before(NAME, black_box(&gbk)))
    });
    // The steps after the zip, over the zip's bytes (reported per byte of the data file).
    g.bench_function("md5", |b| b.iter(|| Md5::digest(black_box(&zip))));
    g.bench_function("aes", |b| b.iter(|| key.encrypt(black_box(&zip))));
    let cipher = key.encrypt(&zip);
    g.bench_function("base64", |b| b.iter(|| B64.encode(black_box(&cipher))));
    g.bench_function("md5+aes+base64/now (one pass)", |b| {
        b.iter(|| hash_encrypt_base64(black_box(&zip), Some(&key)))
    });
    g.bench_function("md5+aes+base64/before (three passes)", |b| {
        b.iter(|| common::before::pack_zip_before(black_box(&zip), &key))
    });
    g.bench_function("chain/now", |b| {
        b.iter(|| {
            let gbk = encode_gbk(black_box(&xml)).unwrap();
            pack(NAME, &gbk, Some(&key)).unwrap()
        })
    });
    g.bench_function("chain/before", |b| {
        b.iter(|| {
            let gbk = encode_gbk(black_box(&xml)).unwrap();
            let zip = common::before::zip_one_before(NAME, &gbk);
            common::before::pack_zip_before(&zip, &key)
        })
    });
    g.bench_function("resend (pack_zip of a stored zip)", |b| {
        b.iter(|| pack_zip(black_box(zip.clone()), Some(&key)))
    });
    g.finish();
}

criterion_group!(benches, chain);
criterion_main!(benches);
