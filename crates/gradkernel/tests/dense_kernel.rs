//! The hand-written dense CPU kernel (`cpu_fast`) at sizes where its splits show: several row
//! strips per thread count, diagonal blocks cut in halves, column tiles, the strip-height cap and a
//! short last strip; examples whose first-layer pre-activations are exactly 0 (relu'(0) = 0). The
//! oracle is the device-generic candle-tensor path (itself checked against one backward per
//! example in `oracle.rs`), in f64.
#![allow(clippy::needless_range_loop)] // explicit (i, j) loops read like the matrix maths

mod common;

use candle::{DType, Device, Tensor};
use common::*;
use stiff_gradkernel::{gram, GramOptions};
use stiff_models::{Model, ModelConfig, Preset};

/// f64 on both sides: only the summation order differs (cosine units).
const COS_TOL_F64: f64 = 1e-12;
/// f32 kernel against the f64 tensor path: f32 rounding of sums over ~10^3 products (cosine units).
const COS_TOL_F32: f64 = 2e-5;

/// fc6 after two SGD steps, with the first layer's bias set to 0 so that all-zero inputs give
/// pre-activations of exactly 0.
fn model(dtype: DType) -> Model {
    let m = Model::new(&ModelConfig::preset(Preset::Fc6, MNIST, 10), 9, dtype, &Device::Cpu).unwrap();
    sgd_steps(&m, MNIST, 2, 0.05, 5);
    let b = m.layers()[0].bias.as_tensor();
    m.layers()[0].bias.set(&b.zeros_like().unwrap()).unwrap();
    m
}

/// Uniform(-1, 1) inputs with every third example all zeros.
fn inputs(n: usize, dtype: DType) -> (Tensor, Tensor) {
    let x = rand_input(n, MNIST, 31, DType::F64, &Device::Cpu).flatten_from(1).unwrap();
    let mask: Vec<f64> = (0..n).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
    let mask = Tensor::from_vec(mask, (n, 1), &Device::Cpu).unwrap();
    let x = x.broadcast_mul(&mask).unwrap().to_dtype(dtype).unwrap();
    (x, rand_labels(n, 10, 31, &Device::Cpu))
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

/// 600 examples: 1 thread gives strips of 192 rows (the cap) and a last strip of 24 (one
/// diagonal piece); 2 threads 150-row strips, whose first strip needs two column tiles; 3
/// threads 100-row strips. Each agrees with the tensor path, per layer too, and repeats bit for bit.
#[test]
fn strips_tiles_and_threads_match_tensor_path() {
    let n = 600;
    let m = model(DType::F64);
    let (x, y) = inputs(n, DType::F64);
    let slow = gram(&m, &x, &y, &GramOptions::default().with_cpu_fast_path(false)).unwrap();
    let zero = (0..n).filter(|i| i % 3 == 0).map(|i| host(&slow.k)[i][i]).fold(f64::INFINITY, f64::min);
    assert!(zero > 0.0, "zero inputs still have gradients (biases), so the cosine scale is defined");
    for threads in [1, 2, 3] {
        let run = || pool(threads).install(|| gram(&m, &x, &y, &GramOptions::default()).unwrap());
        let fast = run();
        let e = cos_err_zero_ok(&fast.k, &slow.k);
        assert!(e < COS_TOL_F64, "{threads} threads: K off by {e:e} (cosine units)");
        for ((name, a), (_, b)) in fast.per_layer.iter().zip(&slow.per_layer) {
            let e = cos_err_zero_ok(a, b);
            assert!(e < COS_TOL_F64 * 10.0, "{threads} threads, layer {name}: off by {e:e}");
        }
        for (a, b) in fast.loss_per_example.iter().zip(&slow.loss_per_example) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0));
        }
        let again = run();
        assert_eq!(host(&fast.k), host(&again.k), "{threads} threads: not bit-identical across runs");
        let k = host(&fast.k);
        for i in 0..n {
            for j in 0..i {
                assert_eq!(k[i][j], k[j][i], "exactly symmetric");
            }
        }
    }
}

/// The same in f32 (the default dtype), against the f64 tensor path.
#[test]
fn f32_kernel_matches_f64_tensor_path() {
    let n = 600;
    let m64 = model(DType::F64);
    let (x64, y) = inputs(n, DType::F64);
    let oracle = gram(&m64, &x64, &y, &GramOptions::default().with_cpu_fast_path(false)).unwrap();
    let m32 = Model::new(&ModelConfig::preset(Preset::Fc6, MNIST, 10), 9, DType::F32, &Device::Cpu).unwrap();
    for (v32, v64) in m32.vars().iter().zip(m64.vars()) {
        v32.set(&v64.as_tensor().to_dtype(DType::F32).unwrap()).unwrap();
    }
    let x32 = x64.to_dtype(DType::F32).unwrap();
    for threads in [1, 2] {
        let fast = pool(threads).install(|| gram(&m32, &x32, &y, &GramOptions::default()).unwrap());
        assert_eq!(fast.k.dtype(), DType::F32);
        let e = cos_err_zero_ok(&fast.k, &oracle.k);
        assert!(e < COS_TOL_F32, "{threads} threads: f32 K off by {e:e} (cosine units)");
    }
}
