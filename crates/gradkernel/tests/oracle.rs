//! The fast Gram against the one-backward-per-example oracle (`reference_gram`), for the paper's
//! presets at random and "trained" weights, in f32 and f64, on every device compiled in.
#![allow(clippy::needless_range_loop)] // explicit (i, j) loops read like the matrix maths

mod common;

use candle::{DType, Device, Tensor};
use common::*;
use stiff_gradkernel::{cross_gram, gram, reference_gram, DeltaRoute, GramOptions, LayerForm, Method};
use stiff_models::{InputShape, Model, ModelConfig, Preset};

/// f64 end to end: only rounding separates the factorised and per-example sums.
const TOL_F64: f64 = 1e-10;
/// f32 factors and products against f32 per-example gradients dotted in f64: sums over up to
/// ~10^6 products of f32 values, relative to the largest entry of K.
const TOL_F32: f64 = 2e-4;

fn tol(dtype: DType) -> f64 {
    if dtype == DType::F64 {
        TOL_F64
    } else {
        TOL_F32
    }
}

/// Fast Gram vs oracle, per-layer sum, symmetry and PSD for one preset and weight state.
fn check_preset(dev: &Device, preset: Preset, shape: InputShape, n: usize, dtype: DType, trained: bool) {
    let cfg = ModelConfig::preset(preset, shape, 10);
    let model = Model::new(&cfg, 3, dtype, dev).unwrap();
    if trained {
        sgd_steps(&model, shape, 3, 0.05, 11);
    }
    let x = rand_input(n, shape, 21, dtype, dev);
    let y = rand_labels(n, 10, 21, dev);
    let r = gram(&model, &x, &y, &GramOptions::default()).unwrap();
    let oracle = reference_gram(&model, &x, &y).unwrap();
    let e = rel_err(&r.k, &oracle);
    assert!(e < tol(dtype), "{preset} {dtype:?} trained={trained}: rel err {e:e} vs oracle");
    // Per-layer Grams sum to K (same products, summed in a different order).
    let mut sum = r.per_layer[0].1.zeros_like().unwrap();
    for (_, p) in &r.per_layer {
        sum = (sum + p).unwrap();
    }
    assert!(rel_err(&sum, &r.k) < tol(dtype) / 10.0, "{preset}: per-layer sum");
    let k = host(&r.k);
    for i in 0..n {
        for j in 0..n {
            assert_eq!(k[i][j], k[j][i], "K is assembled exactly symmetric");
        }
        assert!((r.norms[i] - k[i][i].sqrt()).abs() <= 1e-12 * r.norms[i].max(1.0));
    }
    let scale = (0..n).map(|i| k[i][i]).fold(0.0, f64::max);
    assert!(is_psd(&k, tol(dtype) * scale * n as f64), "{preset}: K not PSD");
}

fn presets_f32(dev: &Device) -> anyhow::Result<()> {
    for trained in [false, true] {
        check_preset(dev, Preset::Fc6, MNIST, 8, DType::F32, trained);
        check_preset(dev, Preset::Fc4, MNIST, 8, DType::F32, trained);
        check_preset(dev, Preset::Cnn4, CIFAR, 6, DType::F32, trained);
        check_preset(dev, Preset::Cnn5, CIFAR, 6, DType::F32, trained);
    }
    Ok(())
}
test_device!(presets_f32, presets_f32_cpu, presets_f32_cuda);

fn presets_f64(dev: &Device) -> anyhow::Result<()> {
    for trained in [false, true] {
        check_preset(dev, Preset::Fc6, MNIST, 7, DType::F64, trained);
        check_preset(dev, Preset::Fc4, MNIST, 7, DType::F64, trained);
        check_preset(dev, Preset::Cnn4, MNIST, 6, DType::F64, trained);
        check_preset(dev, Preset::Cnn5, CIFAR, 6, DType::F64, trained);
    }
    Ok(())
}
test_device!(presets_f64, presets_f64_cpu, presets_f64_cuda);

/// A budget that leaves room for only one or two examples per chunk (sized from the per-example
/// pass estimate: ~60 kB for fc4, ~3.5 MB for cnn4 on MNIST in f64, 5.5 MB with its ghost factors, which at
/// 4 MiB would not fit one example; materialised fc4 gradients are
/// 4.6 MB per example in f64). For fc4 it must also stay under the CPU kernel's ~340 kB at
/// N = 11 in f64 (activations, deltas and two strip tiles), or that kernel runs unchunked.
fn small_budget(preset: Preset, method: Method) -> usize {
    match (preset, method) {
        (Preset::Fc4, Method::Materialised) => 12 << 20,
        (Preset::Fc4, _) => 300 << 10,
        (_, Method::Factorised) => 8 << 20,
        _ => 4 << 20,
    }
}

/// Every method and delta route gives the same K; small budgets (chunking, recomputation) too.
fn methods_and_chunking_agree(dev: &Device) -> anyhow::Result<()> {
    for (preset, shape) in [(Preset::Fc4, MNIST), (Preset::Cnn4, MNIST)] {
        let model = Model::new(&ModelConfig::preset(preset, shape, 10), 5, DType::F64, dev)?;
        sgd_steps(&model, shape, 2, 0.05, 1);
        let x = rand_input(11, shape, 9, DType::F64, dev);
        let y = rand_labels(11, 10, 9, dev);
        let oracle = reference_gram(&model, &x, &y)?;
        // Auto: the CPU dense kernel where it applies (fc4 at the large budget), else the general
        // engine; Autograd: always the general engine.
        for delta_route in [DeltaRoute::Auto, DeltaRoute::Autograd] {
            for method in [Method::Auto, Method::Factorised, Method::Materialised] {
                // A tiny budget forces chunks of a few examples and recomputed factors.
                for budget in [2 << 30, small_budget(preset, method)] {
                    let opts = GramOptions::default()
                        .with_memory_budget_bytes(budget)
                        .with_method(method)
                        .with_delta_route(delta_route);
                    let r = gram(&model, &x, &y, &opts)?;
                    let e = rel_err(&r.k, &oracle);
                    assert!(e < TOL_F64, "{preset} {method:?} {delta_route:?} budget {budget}: {e:e}");
                    if budget < 1 << 30 {
                        assert!(r.chunk < 11, "small budget must chunk (chunk {})", r.chunk);
                    }
                    if method == Method::Factorised && preset == Preset::Cnn4 {
                        assert_eq!(r.routes[0].form, LayerForm::Ghost);
                    }
                }
            }
        }
    }
    Ok(())
}
test_device!(methods_and_chunking_agree, methods_and_chunking_agree_cpu, methods_and_chunking_agree_cuda);

/// f32 model with f64 accumulation returns f64 and matches the oracle.
fn accumulate_f64(dev: &Device) -> anyhow::Result<()> {
    let model = Model::new(&ModelConfig::preset(Preset::Cnn4, MNIST, 10), 1, DType::F32, dev)?;
    let x = rand_input(6, MNIST, 2, DType::F32, dev);
    let y = rand_labels(6, 10, 2, dev);
    let opts = GramOptions::default().with_accumulate_f64(true);
    let r = gram(&model, &x, &y, &opts)?;
    assert_eq!(r.k.dtype(), DType::F64);
    assert!(rel_err(&r.k, &reference_gram(&model, &x, &y)?) < TOL_F32);
    Ok(())
}
test_device!(accumulate_f64, accumulate_f64_cpu, accumulate_f64_cuda);

/// Cross Gram equals the oracle's G_a G_b^T, and its norms equal the oracle's row norms.
fn cross_gram_matches(dev: &Device) -> anyhow::Result<()> {
    for (preset, shape) in [(Preset::Fc4, MNIST), (Preset::Cnn4, MNIST)] {
        let model = Model::new(&ModelConfig::preset(preset, shape, 10), 8, DType::F64, dev)?;
        let (xa, ya) = (rand_input(5, shape, 1, DType::F64, dev), rand_labels(5, 10, 1, dev));
        let (xb, yb) = (rand_input(7, shape, 2, DType::F64, dev), rand_labels(7, 10, 2, dev));
        let ga = stiff_gradkernel::reference_per_example_gradients(&model, &xa, &ya)?;
        let gb = stiff_gradkernel::reference_per_example_gradients(&model, &xb, &yb)?;
        let oracle = ga.matmul(&gb.t()?)?;
        for budget in [2 << 30, small_budget(preset, Method::Auto)] {
            let opts = GramOptions::default().with_memory_budget_bytes(budget);
            let r = cross_gram(&model, &xa, &ya, &xb, &yb, &opts)?;
            assert_eq!(r.k.dims(), &[5, 7]);
            assert!(rel_err(&r.k, &oracle) < TOL_F64);
            let nb = host(&gb.sqr()?.sum(1)?.sqrt()?.unsqueeze(0)?)[0].clone();
            for (a, b) in r.norms_b.iter().zip(&nb) {
                assert!((a - b).abs() < TOL_F64 * b.max(1.0));
            }
            let mut sum = r.per_layer[0].1.zeros_like()?;
            for (_, p) in &r.per_layer {
                sum = (sum + p)?;
            }
            assert!(rel_err(&sum, &r.k) < TOL_F64);
        }
    }
    Ok(())
}
test_device!(cross_gram_matches, cross_gram_matches_cpu, cross_gram_matches_cuda);

/// The loss per example equals the model's own per-example cross-entropy.
#[test]
fn loss_per_example_matches_model() {
    let dev = Device::Cpu;
    let model = Model::new(&ModelConfig::preset(Preset::Fc4, MNIST, 10), 4, DType::F64, &dev).unwrap();
    let x = rand_input(5, MNIST, 4, DType::F64, &dev);
    let y = rand_labels(5, 10, 4, &dev);
    let r = gram(&model, &x, &y, &GramOptions::default()).unwrap();
    let expect: Vec<f64> =
        stiff_models::loss::cross_entropy_per_example(&model.forward(&x).unwrap(), &y).unwrap().to_vec1().unwrap();
    for (a, b) in r.loss_per_example.iter().zip(&expect) {
        assert!((a - b).abs() < TOL_F64);
    }
}

/// Labels may be u8, u32 or i64 with the same result.
#[test]
fn label_dtypes_agree() {
    let dev = Device::Cpu;
    let model = Model::new(&ModelConfig::preset(Preset::Fc4, MNIST, 10), 4, DType::F64, &dev).unwrap();
    let x = rand_input(4, MNIST, 4, DType::F64, &dev);
    let y = rand_labels(4, 10, 4, &dev);
    let base = gram(&model, &x, &y, &GramOptions::default()).unwrap().k;
    for dt in [DType::U8, DType::I64] {
        let k = gram(&model, &x, &y.to_dtype(dt).unwrap(), &GramOptions::default()).unwrap().k;
        assert_eq!(rel_err(&k, &base), 0.0);
    }
    let _ = Tensor::zeros(1, DType::F32, &dev);
}

/// The hand-written CPU kernel equals the general engine (device-generic; `cpu_fast_path =
/// false`), and both the oracle, with per-layer Grams, in f32 and f64, for block sizes that do
/// and do not divide N.
#[test]
fn cpu_kernel_matches_general_engine() {
    let dev = Device::Cpu;
    for (dtype, n) in [(DType::F64, 7), (DType::F32, 9), (DType::F64, 150)] {
        let model = Model::new(&ModelConfig::preset(Preset::Fc6, MNIST, 10), 6, dtype, &dev).unwrap();
        sgd_steps(&model, MNIST, 2, 0.05, 3);
        let x = rand_input(n, MNIST, 13, dtype, &dev);
        let y = rand_labels(n, 10, 13, &dev);
        let fast = gram(&model, &x, &y, &GramOptions::default()).unwrap();
        let slow = gram(&model, &x, &y, &GramOptions::default().with_cpu_fast_path(false)).unwrap();
        assert!(rel_err(&fast.k, &slow.k) < tol(dtype) / 10.0);
        for ((_, a), (_, b)) in fast.per_layer.iter().zip(&slow.per_layer) {
            assert!(rel_err(a, b) < tol(dtype));
        }
        for (a, b) in fast.loss_per_example.iter().zip(&slow.loss_per_example) {
            assert!((a - b).abs() < 1e-5 * b.abs().max(1.0));
        }
        if n < 20 {
            assert!(rel_err(&fast.k, &reference_gram(&model, &x, &y).unwrap()) < tol(dtype));
        }
    }
}
