//! Fast path vs exact fallback on one PyTorch-style spec (CIFAR-shaped CNN with batch norm):
//! `cargo run --release -p stiff-gradkernel --example spec_bench -- [N] [reps]`.
//! Prints the best wall time of `gram_net` through the tapped layers and through the plain
//! forward (every parameter via one backward per example), and their cosine-unit difference.

use candle::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_gradkernel::{gram_net, GramOptions, Loss, PlainSpec};
use stiff_models::{ModelSpec, SpecModel};

const SPEC: &str = r#"{"input": [3, 32, 32], "layers": [
  {"type": "Conv2d", "in_channels": 3, "out_channels": 16, "kernel_size": 3, "padding": 1},
  {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2},
  {"type": "Conv2d", "in_channels": 16, "out_channels": 32, "kernel_size": 3, "padding": 1, "bias": false},
  {"type": "BatchNorm2d", "num_features": 32},
  {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2},
  {"type": "Flatten"},
  {"type": "Linear", "in_features": 2048, "out_features": 64}, {"type": "GELU"},
  {"type": "Linear", "in_features": 64, "out_features": 10}]}"#;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let reps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let spec: ModelSpec = serde_json::from_str(SPEC)?;
    let m = SpecModel::new(&spec, 0, DType::F32, &Device::Cpu)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = Tensor::from_vec(
        (0..n * 3072).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>(),
        (n, 3, 32, 32),
        &Device::Cpu,
    )?;
    let y = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, &Device::Cpu)?;
    let opts = GramOptions::default().with_per_layer(false);
    let best = |f: &dyn Fn() -> anyhow::Result<(f64, Tensor)>| -> anyhow::Result<(f64, Tensor)> {
        let mut out = f()?;
        for _ in 1..reps {
            let r = f()?;
            if r.0 < out.0 {
                out = r;
            }
        }
        Ok(out)
    };
    let (t_fast, k_fast) = best(&|| {
        let r = gram_net(&m, &x, &y, &Loss::CrossEntropy, &opts)?;
        Ok((r.seconds, r.k))
    })?;
    let (t_fb, k_fb) = best(&|| {
        let r = gram_net(&PlainSpec(&m), &x, &y, &Loss::CrossEntropy, &opts)?;
        Ok((r.seconds, r.k))
    })?;
    let a = k_fast.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let b = k_fb.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut worst = 0f64;
    for i in 0..n {
        for j in 0..n {
            worst = worst.max((a[i][j] - b[i][j]).abs() / (b[i][i] * b[j][j]).sqrt());
        }
    }
    println!(
        "N = {n}, P = {}, threads = {}: fast path {t_fast:.3} s, fallback {t_fb:.3} s, ratio {:.1}x; max cosine-unit diff {worst:.1e} (f32)",
        m.num_params(),
        rayon::current_num_threads(),
        t_fb / t_fast
    );
    Ok(())
}
