//! Loading + preprocessing all 70,000 MNIST images (train + test).
//! Data from `STIFF_DATA_DIR`, else the project's `../shared/datasets` (three levels up from this
//! crate), else `../../shared/datasets` from the crate; skipped when absent.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use stiff_data::preprocess::Preprocess;
use stiff_data::{load, locate, DatasetName};

fn data_dir() -> PathBuf {
    std::env::var_os("STIFF_DATA_DIR").filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let project_sibling = crate_dir.join("../../../shared/datasets");
        if project_sibling.is_dir() {
            project_sibling
        } else {
            crate_dir.join("../../shared/datasets")
        }
    })
}

fn bench_load(c: &mut Criterion) {
    let dir = data_dir();
    if locate(DatasetName::Mnist, Some(&dir)).is_err() {
        eprintln!("skipping load bench: no MNIST under {}", dir.display());
        return;
    }
    let mut g = c.benchmark_group("mnist");
    g.sample_size(10);
    g.bench_function("load", |b| b.iter(|| load(DatasetName::Mnist, Some(&dir)).unwrap()));
    g.bench_function("load+preprocess", |b| {
        b.iter(|| {
            let ds = load(DatasetName::Mnist, Some(&dir)).unwrap();
            let p = Preprocess::default();
            (p.apply(&ds.train.images).unwrap(), p.apply(&ds.test.images).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_load);
criterion_main!(benches);
