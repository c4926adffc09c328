//! Attachment re-encoding per image: a generated 2400×1800 photo of about 1 MB made to fit the
//! 100 KB limit (75 KiB JPEG) and the verification form's 150 KB limit, by
//! `attachments::prepare_jpeg`, beside the same chain with a full-size decode (`full-decode`,
//! as of 3f0dbd2, before DCT-scaled decoding) and the `image`-crate version (`before`).
//!
//! `cargo bench --bench attachments -- --measurement-time 3 --warm-up-time 1`

mod common;

use std::hint::black_box;

use beian_gateway::attachments::{max_jpeg_bytes, prepare_jpeg};
use beian_gateway::domain::AttachmentKind;
use criterion::{Criterion, criterion_group, criterion_main};

fn reencode(c: &mut Criterion) {
    let photo = common::photo::photo_jpeg(1);
    eprintln!("input: 2400×1800 photo, {} bytes", photo.len());
    let mut g = c.benchmark_group("reencode");
    g.sample_size(10);
    for (name, kind) in [
        ("photo-100KB", AttachmentKind::CurtainPhoto),
        ("form-150KB", AttachmentKind::VerificationForm),
    ] {
        let max = max_jpeg_bytes(kind);
        let out = prepare_jpeg(&photo, max, common::MIN_W, common::MIN_H).unwrap();
        let full = common::full_decode::prepare_jpeg_full_decode(
            &photo,
            max,
            common::MIN_W,
            common::MIN_H,
        )
        .unwrap();
        let old =
            common::before::prepare_jpeg_before(&photo, max, common::MIN_W, common::MIN_H).unwrap();
        eprintln!(
            "{name}: now {} bytes, full-decode {} bytes, before {} bytes (max {max})",
            out.len(),
            full.len(),
            old.len()
        );
        g.bench_function(format!("{name}/now"), |b| {
            b.iter(|| prepare_jpeg(black_box(&photo), max, common::MIN_W, common::MIN_H).unwrap())
        });
        g.bench_function(format!("{name}/full-decode"), |b| {
            b.iter(|| {
                common::full_decode::prepare_jpeg_full_decode(
                    black_box(&photo),
                    max,
                    common::MIN_W,
                    common::MIN_H,
                )
                .unwrap()
            })
        });
        g.bench_function(format!("{name}/before"), |b| {
            b.iter(|| {
                common::before::prepare_jpeg_before(
                    black_box(&photo),
                    max,
                    common::MIN_W,
                    common::MIN_H,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, reencode);
criterion_main!(benches);
