//! Best and median time of single fc6 training steps at batch 32 (fast MLP path), robust to a
//! shared machine (the best of many steps is the least disturbed one):
//! `RAYON_NUM_THREADS=2 cargo run --release -p stiff-train --example step_bench -- [steps] [sgd|adam]`.

use candle::{DType, Device};
use rand::{Rng, SeedableRng};
use stiff_models::{InputShape, Model, ModelConfig, Preset};
use stiff_train::fast_mlp::FastMlp;
use stiff_train::OptimizerConfig;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let opt = match args.get(1).map(String::as_str) {
        Some("adam") => OptimizerConfig::adam(1e-4),
        _ => OptimizerConfig::sgd(0.01),
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..32 * 784).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let y: Vec<u32> = (0..32).map(|_| rng.random_range(0..10u32)).collect();
    let cfg = ModelConfig::preset(Preset::Fc6, InputShape::new(1, 28, 28), 10);
    let model = Model::new(&cfg, 0, DType::F32, &Device::Cpu)?;
    let mut fast = FastMlp::new(&model, opt, 32)?;
    for _ in 0..50 {
        fast.step(&x, &y)?;
    }
    let mut t: Vec<f64> = (0..steps)
        .map(|_| {
            let s = std::time::Instant::now();
            fast.step(&x, &y).map(|_| s.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    t.sort_by(f64::total_cmp);
    println!(
        "fc6 step batch 32 {} threads={} best_ms={:.4} median_ms={:.4} steps={steps}",
        opt.name(),
        rayon::current_num_threads(),
        t[0],
        t[t.len() / 2]
    );
    Ok(())
}
