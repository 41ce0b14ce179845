//! The same Gram, bit for bit, whatever the thread count: every kernel computed inside rayon
//! pools of 1, 2 and 3 threads (the CLI's `--threads`, a Slurm task's `--cpus-per-task`) gives the
//! same `K`, per-layer Grams and losses. The CPU kernels cut their work into blocks that depend on
//! the problem only; threads merely choose who computes a block.

use candle::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_gradkernel::{cross_gram, gram, GramOptions, LayerForm};
use stiff_models::{ArchSpec, InputShape, Model, ModelConfig, Preset};

const THREADS: [usize; 3] = [1, 2, 3];

/// Seeded inputs `(n, C, H, W)` in [0, 1) (image-like: many ReLUs live) and labels.
fn data(n: usize, shape: InputShape, classes: u32, seed: u64) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..n * shape.numel()).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..classes)).collect();
    let x = Tensor::from_vec(x, (n, shape.channels, shape.height, shape.width), &Device::Cpu).unwrap();
    (x, Tensor::from_vec(y, n, &Device::Cpu).unwrap())
}

/// Every bit of a tensor (any float dtype).
fn bits(t: &Tensor) -> Vec<u64> {
    let v = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    v.into_iter().map(f64::to_bits).collect()
}

/// `K`, the per-layer Grams and the per-example losses as bits.
type Bits = (Vec<u64>, Vec<Vec<u64>>, Vec<u64>);

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// Runs `f` in pools of 1, 2 and 3 threads and asserts the results are bit-identical; returns the
/// single-thread result.
fn same_at_every_thread_count(what: &str, f: impl Fn() -> Bits + Sync) -> Bits {
    let one = in_pool(1, &f);
    for &t in &THREADS[1..] {
        let other = in_pool(t, &f);
        let differ = |a: &[u64], b: &[u64]| a.iter().zip(b).filter(|(x, y)| x != y).count();
        assert_eq!(one.0.len(), other.0.len(), "{what}: K shape");
        assert!(one.0 == other.0, "{what}: K at 1 and {t} threads differs in {} entries", differ(&one.0, &other.0));
        assert_eq!(one.1.len(), other.1.len(), "{what}: per-layer count");
        for (l, (a, b)) in one.1.iter().zip(&other.1).enumerate() {
            assert!(a == b, "{what}: layer {l}'s Gram at 1 and {t} threads differs in {} entries", differ(a, b));
        }
        assert!(one.2 == other.2, "{what}: losses at 1 and {t} threads differ");
    }
    one
}

fn gram_bits(model: &Model, x: &Tensor, y: &Tensor, opts: &GramOptions) -> Bits {
    let r = gram(model, x, y, opts).unwrap();
    let per = r.per_layer.iter().map(|(_, k)| bits(k)).collect();
    (bits(&r.k), per, r.loss_per_example.iter().map(|v| v.to_bits()).collect())
}

fn cross_bits(model: &Model, a: &(Tensor, Tensor), b: &(Tensor, Tensor), opts: &GramOptions) -> Bits {
    let r = cross_gram(model, &a.0, &a.1, &b.0, &b.1, opts).unwrap();
    let per = r.per_layer.iter().map(|(_, k)| bits(k)).collect();
    let loss = r.loss_a.iter().chain(&r.loss_b).map(|v| v.to_bits()).collect();
    (bits(&r.k), per, loss)
}

/// The result is not trivially equal: `K` has distinct, finite, non-zero entries.
fn assert_informative(what: &str, r: &Bits) {
    let k: Vec<f64> = r.0.iter().map(|&b| f64::from_bits(b)).collect();
    assert!(k.iter().all(|v| v.is_finite()), "{what}: non-finite K");
    let distinct: std::collections::BTreeSet<u64> = r.0.iter().copied().collect();
    assert!(distinct.len() > k.len() / 4, "{what}: only {} distinct entries", distinct.len());
}

const MNIST: InputShape = InputShape { channels: 1, height: 28, width: 28 };

/// fc6 (784-500-300-100-100-100-10) in f32 through the dense CPU kernel at N = 500, the size where
/// the forward blocks and the Gram strips used to follow the thread count; per-layer Grams too.
#[test]
fn dense_fc6_gram_is_bit_identical_at_1_2_3_threads() {
    let model = Model::new(&ModelConfig::preset(Preset::Fc6, MNIST, 10), 1, DType::F32, &Device::Cpu).unwrap();
    let (x, y) = data(500, MNIST, 10, 2);
    let opts = GramOptions::default();
    let r = same_at_every_thread_count("fc6 gram", || gram_bits(&model, &x, &y, &opts));
    assert_informative("fc6 gram", &r);
    assert_eq!(r.1.len(), 6, "per-layer Grams were not returned");
}

/// The cross Gram of a dense net (validation rows against training columns), as `stiff cross`
/// computes its tiles.
#[test]
fn dense_fc6_cross_gram_is_bit_identical_at_1_2_3_threads() {
    let model = Model::new(&ModelConfig::preset(Preset::Fc6, MNIST, 10), 4, DType::F32, &Device::Cpu).unwrap();
    let (a, b) = (data(200, MNIST, 10, 5), data(150, MNIST, 10, 6));
    let opts = GramOptions::default().with_per_layer(false);
    let r = same_at_every_thread_count("fc6 cross", || cross_bits(&model, &a, &b, &opts));
    assert_informative("fc6 cross", &r);
}

/// cnn4 (16-32-32 channels, MNIST-shaped) through the conv CPU kernel (per-example gradient rows,
/// the head's factorised Gram), Gram and cross Gram.
#[test]
fn conv_cnn4_gram_and_cross_gram_are_bit_identical_at_1_2_3_threads() {
    let model = Model::new(&ModelConfig::preset(Preset::Cnn4, MNIST, 10), 7, DType::F32, &Device::Cpu).unwrap();
    let (x, y) = data(160, MNIST, 10, 8);
    let opts = GramOptions::default();
    let r = same_at_every_thread_count("cnn4 gram", || gram_bits(&model, &x, &y, &opts));
    assert_informative("cnn4 gram", &r);
    let (a, b) = (data(70, MNIST, 10, 9), data(90, MNIST, 10, 10));
    let r = same_at_every_thread_count("cnn4 cross", || cross_bits(&model, &a, &b, &opts));
    assert_informative("cnn4 cross", &r);
}

/// A small-map, many-channel conv (16 -> 128 -> 128 on 16x16 inputs: the last conv sees 4x4
/// maps), whose last conv takes the pixel-Gram ghost route.
#[test]
fn conv_ghost_route_gram_is_bit_identical_at_1_2_3_threads() {
    let shape = InputShape::new(1, 16, 16);
    let cfg = ModelConfig::new(ArchSpec::Cnn { channels: vec![16, 128, 128], kernel: 3, pool: 2 }, shape, 10);
    let model = Model::new(&cfg, 11, DType::F32, &Device::Cpu).unwrap();
    let (x, y) = data(150, shape, 10, 12);
    let opts = GramOptions::default();
    let routes = gram(&model, &x, &y, &opts).unwrap().routes;
    assert!(routes.iter().any(|u| u.form == LayerForm::ConvPixelGhost), "ghost route not taken: {routes:?}");
    let r = same_at_every_thread_count("ghost gram", || gram_bits(&model, &x, &y, &opts));
    assert_informative("ghost gram", &r);
}

/// A budget that forces row tiles of per-example gradient rows: the tile size follows the budget
/// left after each thread's scratch, so 1, 2 and 3 threads get different tiles (600 examples
/// whole at 1 thread, 256-example tiles at 2, at 90 MB on cnn4), yet the same blocks and bits.
#[test]
fn conv_tiled_gram_is_bit_identical_at_1_2_3_threads_under_a_tight_budget() {
    let model = Model::new(&ModelConfig::preset(Preset::Cnn4, MNIST, 10), 7, DType::F32, &Device::Cpu).unwrap();
    let (x, y) = data(600, MNIST, 10, 8);
    for mb in [88usize, 90] {
        let opts = GramOptions::default().with_memory_budget_bytes(mb << 20).with_per_layer(false);
        let chunks: Vec<usize> =
            THREADS.iter().map(|&t| in_pool(t, || gram(&model, &x, &y, &opts).unwrap().chunk)).collect();
        assert!(chunks.iter().any(|&c| c < 600), "{mb} MB: the budget no longer forces tiles ({chunks:?})");
        let what = format!("cnn4 N = 600 at {mb} MB (tiles {chunks:?})");
        let r = same_at_every_thread_count(&what, || gram_bits(&model, &x, &y, &opts));
        assert_informative(&what, &r);
    }
}
