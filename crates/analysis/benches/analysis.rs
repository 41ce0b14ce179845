//! Full analysis on synthetic data: K = G G^T (G random N x 64, f32), 100 classes, random
//! representations of widths 784, 500, 300, 100, 100, 100.
//! Run: `cargo bench -p stiff-analysis --bench analysis`.

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_analysis::{
    bootstrap_within_between, class_stiffness, distance_curves, BinSpec, PairFilter, StiffnessSettings,
};

const WIDTHS: [usize; 6] = [784, 500, 300, 100, 100, 100];
const CLASSES: usize = 100;
const BOOT_REPS: usize = 50;

struct Data {
    k: Array2<f32>,
    labels: Vec<u32>,
    reps: Vec<Array2<f32>>,
}

fn data(n: usize) -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let g = Array2::from_shape_fn((n, 64), |_| rng.random_range(-1.0f32..1.0));
    let k = g.dot(&g.t());
    let labels = (0..n).map(|i| (i % CLASSES) as u32).collect();
    let reps = WIDTHS.iter().map(|&d| Array2::from_shape_fn((n, d), |_| rng.random_range(0.0f32..1.0))).collect();
    Data { k, labels, reps }
}

fn full(d: &Data) {
    let s = StiffnessSettings::default();
    let c = class_stiffness(d.k.view(), &d.labels, CLASSES, &s).unwrap();
    let b = bootstrap_within_between(
        d.k.view(),
        &d.labels,
        CLASSES,
        &s,
        &stiff_analysis::BootstrapOptions::new(BOOT_REPS, 1, 0.95),
    )
    .unwrap();
    let names = ["input", "l1", "l2", "l3", "l4", "l5"];
    let spaces: Vec<_> = names.iter().zip(&d.reps).map(|(n, r)| (*n, r.view())).collect();
    let curves = distance_curves(d.k.view(), &spaces, &d.labels, PairFilter::All, &BinSpec::default(), &s).unwrap();
    std::hint::black_box((c, b, curves));
}

fn bench(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("full_analysis");
    g.sample_size(10);
    for n in [3000usize, 10_000] {
        let d = data(n);
        g.bench_function(format!("n{n}"), |b| b.iter(|| full(&d)));
    }
    g.finish();
    let d = data(3000);
    let s = StiffnessSettings::default();
    let mut g = cr.benchmark_group("parts_n3000");
    g.sample_size(10);
    g.bench_function("class_stiffness", |b| b.iter(|| class_stiffness(d.k.view(), &d.labels, CLASSES, &s).unwrap()));
    g.bench_function("bootstrap_50", |b| {
        b.iter(|| {
            bootstrap_within_between(
                d.k.view(),
                &d.labels,
                CLASSES,
                &s,
                &stiff_analysis::BootstrapOptions::new(BOOT_REPS, 1, 0.95),
            )
            .unwrap()
        })
    });
    g.bench_function("distance_curve_784", |b| {
        b.iter(|| {
            stiff_analysis::distance_curve(
                d.k.view(),
                d.reps[0].view(),
                &d.labels,
                PairFilter::All,
                &BinSpec::default(),
                &s,
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
