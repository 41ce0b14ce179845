//! One training step of fc6 (784-500-300-100-100-100-10) at batch 32, the unit of every sweep.
//! Run with `RAYON_NUM_THREADS=1 cargo bench -p stiff-train --bench step` (and 2).

use candle::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_models::{InputShape, Model, ModelConfig, Preset};
use stiff_train::fast_mlp::FastMlp;
use stiff_train::{AutogradStep, OptimizerConfig};

const BATCH: usize = 32;

fn batch() -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = (0..BATCH * 784).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let y = (0..BATCH).map(|_| rng.random_range(0..10u32)).collect();
    (x, y)
}

fn bench(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    let cfg = ModelConfig::preset(Preset::Fc6, InputShape::new(1, 28, 28), 10);
    let (x, y) = batch();
    for opt in [OptimizerConfig::sgd(0.01), OptimizerConfig::adam(1e-4)] {
        let model = Model::new(&cfg, 0, DType::F32, &Device::Cpu).unwrap();
        let mut fast = FastMlp::new(&model, opt, BATCH).unwrap();
        c.bench_function(&format!("fc6_step/fast/{}/threads={threads}", opt.name()), |b| {
            b.iter(|| std::hint::black_box(fast.step(&x, &y).unwrap()))
        });
        let mut auto = AutogradStep::new(&model, opt).unwrap();
        let xt = Tensor::from_slice(&x, (BATCH, 784), &Device::Cpu).unwrap();
        let yt = Tensor::from_slice(&y, BATCH, &Device::Cpu).unwrap();
        c.bench_function(&format!("fc6_step/autograd/{}/threads={threads}", opt.name()), |b| {
            b.iter(|| std::hint::black_box(auto.step(&model, &xt, &yt).unwrap()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
