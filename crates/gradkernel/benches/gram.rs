//! Criterion benches of the Gram kernels: fc6 on MNIST-shaped inputs (fast CPU kernel and the
//! general engine, no CPU kernel), cnn5 on CIFAR-shaped inputs (auto vs materialised), N = 500.

use candle::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use stiff_gradkernel::{gram, GramOptions, Method};
use stiff_models::{InputShape, Model, ModelConfig, Preset};

fn setup(preset: Preset, shape: InputShape, n: usize) -> (Model, Tensor, Tensor) {
    let model = Model::new(&ModelConfig::preset(preset, shape, 10), 0, DType::F32, &Device::Cpu).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let v: Vec<f32> = (0..n * shape.numel()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let x = Tensor::from_vec(v, (n, shape.numel()), &Device::Cpu).unwrap();
    let y = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, &Device::Cpu).unwrap();
    (model, x, y)
}

fn benches(c: &mut Criterion) {
    let (m, x, y) = setup(Preset::Fc6, InputShape::new(1, 28, 28), 500);
    let mut g = c.benchmark_group("gram_fc6_n500");
    g.sample_size(20);
    let fast = GramOptions::default().with_per_layer(false);
    g.bench_function("cpu_kernel", |b| b.iter(|| gram(&m, &x, &y, &fast).unwrap()));
    let tensor = GramOptions::default().with_per_layer(false).with_cpu_fast_path(false);
    g.bench_function("tensor_path", |b| b.iter(|| gram(&m, &x, &y, &tensor).unwrap()));
    g.finish();

    let (m, x, y) = setup(Preset::Cnn5, InputShape::new(3, 32, 32), 500);
    let mut g = c.benchmark_group("gram_cnn5_cifar_n500");
    g.sample_size(10);
    let auto = GramOptions::default().with_per_layer(false);
    g.bench_function("auto", |b| b.iter(|| gram(&m, &x, &y, &auto).unwrap()));
    let mat = GramOptions::default().with_per_layer(false).with_method(Method::Materialised);
    g.bench_function("materialised", |b| b.iter(|| gram(&m, &x, &y, &mat).unwrap()));
    g.finish();
}

criterion_group!(gram_benches, benches);
criterion_main!(gram_benches);
