//! Data-file building (`build_upload_xml`, prepared attachments given): per filing and per
//! 100-filing file, for a first filing with five attachments at their limits and for the
//! records mix (changes, cancellations, access filings).
//!
//! `cargo bench --bench datafile -- --measurement-time 3 --warm-up-time 1`

mod common;

use std::hint::black_box;

use beian_gateway::codes::CodeTables;
use beian_gateway::datafile::upload::{BuildRecord, build_upload_xml};
use beian_gateway::domain::Filing;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

struct Set {
    filings: Vec<Filing>,
    ids: Vec<beian_gateway::datafile::ids::RecordIds>,
    prepared: Vec<Vec<beian_gateway::datafile::upload::PreparedAttachment>>,
}

impl Set {
    fn new(filings: Vec<Filing>) -> Self {
        let ids = common::plan_all(&filings);
        let prepared = filings
            .iter()
            .enumerate()
            .map(|(i, f)| common::noise_prepared(f, i as u64 % 8))
            .collect();
        Self {
            filings,
            ids,
            prepared,
        }
    }

    fn records(&self, n: usize) -> Vec<BuildRecord<'_>> {
        (0..n)
            .map(|i| BuildRecord {
                filing: &self.filings[i],
                ids: &self.ids[i],
                attachments: &self.prepared[i],
            })
            .collect()
    }
}

fn build(c: &mut Criterion) {
    let codes = CodeTables::bundled().unwrap();
    let first = Set::new(common::copies(&common::fixture("first"), 100, "FIRST"));
    let records = Set::new(
        (0..100)
            .map(|i| {
                let mut f = common::fixture(common::RECORD_FIXTURES[i % 7]);
                f.id = format!("F-REC-{i:06}");
                f
            })
            .collect(),
    );
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    for (name, set) in [("first", &first), ("records", &records)] {
        for n in [1usize, 100] {
            let recs = set.records(n);
            let bytes = build_upload_xml(&recs, &codes, &common::OPTS)
                .unwrap()
                .len();
            eprintln!("{name} × {n}: {bytes} bytes");
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(format!("{name}/{n} per file"), |b| {
                b.iter(|| build_upload_xml(black_box(&recs), &codes, &common::OPTS).unwrap())
            });
        }
    }
    g.finish();
}

// Slot: preflight per filing (issue 10). Its owner adds `fn preflight(c: &mut Criterion)` here
// (the filings above are ready to use) and lists it in `criterion_group!` below.

criterion_group!(benches, build);
criterion_main!(benches);
