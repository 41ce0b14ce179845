//! Shared helpers for the gradient-kernel tests.
#![allow(dead_code, clippy::needless_range_loop)]

use candle::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_models::{InputShape, Model};

pub const MNIST: InputShape = InputShape { channels: 1, height: 28, width: 28 };
pub const CIFAR: InputShape = InputShape { channels: 3, height: 32, width: 32 };

/// Runs a numeric test on the CPU always and on CUDA device 0 under the `cuda` feature.
#[macro_export]
macro_rules! test_device {
    ($body:ident, $cpu:ident, $cuda:ident) => {
        #[test]
        fn $cpu() -> anyhow::Result<()> {
            $body(&candle::Device::Cpu)
        }
        #[cfg(feature = "cuda")]
        #[test]
        fn $cuda() -> anyhow::Result<()> {
            $body(&candle::Device::new_cuda(0)?)
        }
    };
}

/// Uniform(-1, 1) inputs `(n, C, H, W)`, seeded.
pub fn rand_input(n: usize, shape: InputShape, seed: u64, dtype: DType, dev: &Device) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * shape.numel()).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, (n, shape.channels, shape.height, shape.width), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .to_device(dev)
        .unwrap()
}

/// Seeded labels u32 `(n)` in `0..classes`.
pub fn rand_labels(n: usize, classes: usize, seed: u64, dev: &Device) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let v: Vec<u32> = (0..n).map(|_| rng.random_range(0..classes as u32)).collect();
    Tensor::from_vec(v, n, dev).unwrap()
}

/// "Trained" weights: a few plain SGD steps on the mean loss of a random batch.
pub fn sgd_steps(model: &Model, shape: InputShape, steps: usize, lr: f64, seed: u64) {
    let dev = model.device().clone();
    let classes = model.config().num_classes;
    for s in 0..steps {
        let x = rand_input(16, shape, seed + 100 + s as u64, model.dtype(), &dev);
        let y = rand_labels(16, classes, seed + 100 + s as u64, &dev);
        let loss = stiff_models::loss::cross_entropy_mean(&model.forward(&x).unwrap(), &y).unwrap();
        let grads = loss.backward().unwrap();
        for v in model.vars() {
            let g = grads.get(v.as_tensor()).unwrap();
            v.set(&(v.as_tensor() - (g * lr).unwrap()).unwrap()).unwrap();
        }
    }
}

/// Host copy of a 2-D tensor as f64 rows.
pub fn host(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_device(&Device::Cpu).unwrap().to_vec2::<f64>().unwrap()
}

/// max |a - b| / max |b| over all entries (b is the oracle).
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (host(a), host(b));
    assert_eq!(a.len(), b.len());
    let mut num = 0f64;
    let mut den = 0f64;
    for (ra, rb) in a.iter().zip(&b) {
        assert_eq!(ra.len(), rb.len());
        for (x, y) in ra.iter().zip(rb) {
            num = num.max((x - y).abs());
            den = den.max(y.abs());
        }
    }
    num / den.max(f64::MIN_POSITIVE)
}

/// Whether `k + jitter*I` has a Cholesky factorisation (k symmetric PSD up to `jitter`).
pub fn is_psd(k: &[Vec<f64>], jitter: f64) -> bool {
    let n = k.len();
    let mut l = vec![vec![0f64; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = k[i][j] + if i == j { jitter } else { 0.0 };
            for p in 0..j {
                s -= l[i][p] * l[j][p];
            }
            if i == j {
                if s <= 0.0 {
                    return false;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    true
}

/// Gram error in cosine units, the unit stiffness reads: max over i, j of
/// `|a_ij - o_ij| / sqrt(o_ii o_jj)`, `o` the oracle, whose gradients must all be non-zero.
pub fn cos_err(a: &Tensor, oracle: &Tensor) -> f64 {
    cos_err_inner(a, oracle, false)
}

/// [`cos_err`] for inputs that include zero-gradient examples on purpose: their pairs are
/// scaled by 1e-300 instead (so any error there fails the test).
pub fn cos_err_zero_ok(a: &Tensor, oracle: &Tensor) -> f64 {
    cos_err_inner(a, oracle, true)
}

fn cos_err_inner(a: &Tensor, oracle: &Tensor, zero_ok: bool) -> f64 {
    let (a, o) = (host(a), host(oracle));
    let n = o.len();
    let mut e = 0f64;
    for i in 0..n {
        for j in 0..n {
            let s = (o[i][i] * o[j][j]).sqrt();
            assert!(
                zero_ok || s > 0.0,
                "zero-norm oracle gradient at {i} or {j}: the comparison needs non-zero gradients"
            );
            e = e.max((a[i][j] - o[i][j]).abs() / s.max(1e-300));
        }
    }
    e
}
