//! Property tests: random small architectures, batches and labels.
#![allow(clippy::needless_range_loop)] // explicit (i, j) loops read like the matrix maths

mod common;

use candle::{DType, Device};
use common::*;
use proptest::prelude::*;
use stiff_gradkernel::{gram, reference_gram, GramOptions, Method};
use stiff_models::{ArchSpec, InputShape, Model, ModelConfig};

/// f64 end to end: rounding only.
const TOL_F64: f64 = 1e-10;

fn arch() -> impl Strategy<Value = ModelConfig> {
    let mlp = (prop::collection::vec(1usize..12, 0..4), 1usize..3, 3usize..6, 2usize..5)
        .prop_map(|(hidden, c, hw, k)| ModelConfig::new(ArchSpec::Mlp { hidden }, InputShape::new(c, hw, hw), k));
    let cnn = (
        prop::collection::vec(1usize..5, 1..3),
        1usize..3,
        4usize..9,
        2usize..5,
        prop_oneof![Just(1usize), Just(3)],
        1usize..3,
    )
        .prop_map(|(channels, c, hw, k, kernel, pool)| {
            ModelConfig::new(ArchSpec::Cnn { channels, kernel, pool }, InputShape::new(c, hw, hw), k)
        })
        .prop_filter("image must not vanish", |cfg| cfg.validate().is_ok());
    prop_oneof![mlp, cnn]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn fast_gram_equals_oracle(cfg in arch(), n in 1usize..7, seed in 0u64..1000, method_i in 0usize..3) {
        let dev = Device::Cpu;
        let model = Model::new(&cfg, seed, DType::F64, &dev).unwrap();
        let x = rand_input(n, cfg.input, seed, DType::F64, &dev);
        let y = rand_labels(n, cfg.num_classes, seed, &dev);
        let method = [Method::Auto, Method::Factorised, Method::Materialised][method_i];
        let r = gram(&model, &x, &y, &GramOptions::default().with_method(method)).unwrap();
        let oracle = reference_gram(&model, &x, &y).unwrap();
        prop_assert!(rel_err(&r.k, &oracle) < TOL_F64);
        let k = host(&r.k);
        let scale = (0..n).map(|i| k[i][i]).fold(0.0, f64::max);
        for i in 0..n {
            for j in 0..n {
                prop_assert_eq!(k[i][j], k[j][i]);
            }
        }
        prop_assert!(is_psd(&k, 1e-9 * scale.max(1e-300) * n as f64 + 1e-300));
        let mut sum = r.per_layer[0].1.zeros_like().unwrap();
        for (_, p) in &r.per_layer {
            sum = (sum + p).unwrap();
        }
        prop_assert!(rel_err(&sum, &r.k) < TOL_F64);
    }
}
