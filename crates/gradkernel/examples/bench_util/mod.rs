//! Helpers shared by the benchmark examples (`conv_bench`, `preset_vs_spec`): peak RSS, CPU
//! seconds and the half-flat image inputs (tied max-pool windows, zero windows after ReLU).

use candle::{Device, Tensor};
use rand::{Rng, SeedableRng};
use stiff_models::InputShape;

pub fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// CPU seconds (user + system, all threads) this process has used so far, from /proc/self/stat
/// (clock ticks of 1/100 s, Linux's USER_HZ): unlike wall time, it barely depends on how busy
/// the machine is.
pub fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// Half-flat CIFAR-shaped inputs: `(n, 3, 32, 32)` f32.
pub fn inputs(n: usize, shape: InputShape, seed: u64) -> anyhow::Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (c, h, w) = (shape.channels, shape.height, shape.width);
    let mut v = Vec::with_capacity(n * shape.numel());
    for _ in 0..n {
        let flat: f32 = rng.random_range(-1.0..1.0);
        for _ in 0..c * h {
            for col in 0..w {
                v.push(if col < w / 2 { flat } else { rng.random_range(-1.0..1.0) });
            }
        }
    }
    Ok(Tensor::from_vec(v, (n, c, h, w), &Device::Cpu)?)
}
