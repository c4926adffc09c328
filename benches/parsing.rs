//! Parsing what comes back: SOAP answers (`wire::parse_response`) and download data files
//! (`parse_download_bytes`), from the fixtures and a generated 1000-result BAJG file (the
//! results of one full upload).
//!
//! `cargo bench --bench parsing -- --measurement-time 3 --warm-up-time 1`

mod common;

use std::hint::black_box;

use beian_gateway::bureau::wire::{Operation, parse_response};
use beian_gateway::datafile::download::parse_download_bytes;
use beian_gateway::package::encode_gbk;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A GBK `BAJG` download with `n` results (all approved), as a bureau sends for a full file.
fn bajg(n: usize) -> Vec<u8> {
    let mut xml = String::from(
        r#"<?xml version="1.0" encoding="GBK"?><DownloadData version="V.3.0"><ICP><BAJG>"#,
    );
    for i in 0..n {
        xml.push_str(&format!(
            "<Jg_xx><Jgxx><Jgdm>1001</Jgdm><Dmms>审核通过</Dmms></Jgxx><Czlx>1</Czlx>\
             <Bs>京ICP备2026{i:06}号</Bs></Jg_xx>"
        ));
    }
    xml.push_str("<GJSHS>");
    for i in 0..n {
        xml.push_str(&format!(
            "<Gjsh><Shrxm>张审核</Shrxm><Shsj>2026-03-01 10:22:05</Shsj><Shjg>1</Shjg>\
             <Czlx>1</Czlx><Jlid>{}</Jlid></Gjsh>",
            700_000 + i
        ));
    }
    xml.push_str("</GJSHS></BAJG></ICP></DownloadData>");
    encode_gbk(&xml).unwrap()
}

fn answers(c: &mut Criterion) {
    let dir = common::fixtures_dir().join("bureau/answers");
    let mut g = c.benchmark_group("answer");
    for (file, op) in [
        ("upload-ok.xml", Operation::Upload),
        ("download-file-1-last.xml", Operation::Download),
        ("querypreviousupload-17.xml", Operation::QueryPreviousUpload),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        parse_response(op, &text).unwrap();
        g.bench_function(file, |b| {
            b.iter(|| parse_response(op, black_box(&text)).unwrap())
        });
    }
    g.finish();
}

fn downloads(c: &mut Criterion) {
    let dir = common::fixtures_dir().join("bureau/downloads");
    let mut g = c.benchmark_group("download");
    for file in ["bajg-results.xml", "basj-subject-two-websites.gbk.xml"] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        parse_download_bytes(&bytes).unwrap();
        g.bench_function(file, |b| {
            b.iter(|| parse_download_bytes(black_box(&bytes)).unwrap())
        });
    }
    let big = bajg(1000);
    parse_download_bytes(&big).unwrap();
    g.throughput(Throughput::Elements(1000));
    g.sample_size(20);
    g.bench_function("bajg 1000 results", |b| {
        b.iter(|| parse_download_bytes(black_box(&big)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, answers, downloads);
criterion_main!(benches);
