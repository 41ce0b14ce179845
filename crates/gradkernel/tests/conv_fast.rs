//! The conv CPU kernel (`gram` on conv presets with `Method::Auto`) against the one-backward-per-
//! example oracle and against the candle route, on inputs with flat regions so that max-pool
//! windows tie and ReLU inputs are exactly 0.
#![allow(clippy::needless_range_loop)] // explicit (i, j) loops read like the matrix maths

mod common;

use candle::{DType, Device, Tensor};
use common::*;
use stiff_gradkernel::{
    cross_gram, gram, pooling_stats, reference_gram, reference_per_example_gradients, GramOptions, GramResult,
    LayerForm,
};
use stiff_models::{ArchSpec, InputShape, Model, ModelConfig, Preset};

/// f64 end to end: only rounding separates the kernel's sums from the oracle's, in cosine units.
const COS_TOL_F64: f64 = 1e-11;
/// f32 kernel (f32 products over up to ~10^4 terms) against f32 per-example gradients dotted in
/// f64, in cosine units.
const COS_TOL_F32: f64 = 5e-5;
/// The same f64 Gram computed with different tile sizes / routes (summation order differs).
const COS_TOL_SAME_F64: f64 = 1e-12;

/// Images whose left half is exactly 0 and whose bottom-right quadrant is one constant, the rest
/// seeded noise: zero patches give pre-activations exactly equal to the bias (0 where the bias is
/// zeroed below), constant patches give exactly equal pre-activations, hence tied pooling windows.
fn flat_input(n: usize, shape: InputShape, seed: u64, dtype: DType) -> Tensor {
    let x = rand_input(n, shape, seed, DType::F64, &Device::Cpu);
    let mut v = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let (h, w) = (shape.height, shape.width);
    for (idx, val) in v.iter_mut().enumerate() {
        let (y, xx) = ((idx / w) % h, idx % w);
        if xx < w / 2 {
            *val = 0.0;
        } else if y >= h / 2 {
            *val = 0.75;
        }
    }
    Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

/// Zeroes the bias of the first half of conv.0's channels so zero inputs give `z = 0` exactly.
fn zero_some_biases(model: &Model) {
    let b = &model.layers()[0].bias;
    let c = b.dim(0).unwrap();
    let mut v = b.as_tensor().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    v[..c / 2].iter_mut().for_each(|x| *x = 0.0);
    b.set(&Tensor::from_vec(v, c, &Device::Cpu).unwrap().to_dtype(b.dtype()).unwrap()).unwrap();
}

fn small_cnn(channels: Vec<usize>, shape: InputShape, classes: usize, dtype: DType, seed: u64) -> Model {
    let cfg = ModelConfig::new(ArchSpec::Cnn { channels, kernel: 3, pool: 2 }, shape, classes);
    let m = Model::new(&cfg, seed, dtype, &Device::Cpu).unwrap();
    zero_some_biases(&m);
    m
}

fn assert_fast(r: &GramResult) {
    let convs = r.routes.len() - 1;
    let kernel = |f: &LayerForm| matches!(f, LayerForm::ConvTiles | LayerForm::ConvPixelGhost);
    assert!(r.routes[..convs].iter().all(|u| kernel(&u.form)), "conv kernel not used: {:?}", r.routes);
    assert_eq!(r.routes[convs].form, LayerForm::DenseFactorised);
}

/// Ties and exact zeros really occur on these inputs: otherwise the tests below prove nothing
/// about the pooling and ReLU conventions.
fn assert_ties(model: &Model, x: &Tensor) {
    let st = pooling_stats(model, x).unwrap();
    let tied_live: u64 = st.iter().map(|s| s.tied_live).sum();
    assert!(st[0].zero > 0, "no all-zero windows in conv.0: {st:?}");
    assert!(tied_live > 0, "no tied windows with a positive maximum: {st:?}");
}

#[test]
fn kernel_matches_oracle_f64_and_f32_with_ties() {
    let shape = InputShape::new(2, 12, 12);
    for dtype in [DType::F64, DType::F32] {
        // Odd N; two and three conv layers; 12 -> 6 -> 3 -> 1 exercises odd maps and floor-mode pooling.
        for channels in [vec![4, 6], vec![3, 5, 4]] {
            let model = small_cnn(channels.clone(), shape, 5, dtype, 7);
            if dtype == DType::F32 {
                sgd_steps(&model, shape, 2, 0.05, 3);
            }
            let x = flat_input(7, shape, 11, dtype);
            let y = rand_labels(7, 5, 11, &Device::Cpu);
            assert_ties(&model, &x);
            let r = gram(&model, &x, &y, &GramOptions::default()).unwrap();
            assert_fast(&r);
            let oracle = reference_gram(&model, &x, &y).unwrap();
            let tol = if dtype == DType::F64 { COS_TOL_F64 } else { COS_TOL_F32 };
            let e = cos_err(&r.k, &oracle);
            assert!(e < tol, "{channels:?} {dtype:?}: cosine error {e:e} vs oracle");
            let k = host(&r.k);
            for i in 0..7 {
                for j in 0..7 {
                    assert_eq!(k[i][j], k[j][i], "K is exactly symmetric");
                }
                assert!((r.norms[i] - k[i][i].sqrt()).abs() <= 1e-12 * r.norms[i].max(1.0));
            }
        }
    }
}

#[test]
fn presets_match_oracle() {
    // cnn4 on MNIST-shaped inputs (28 -> 14 -> 7 -> 3: odd maps), cnn5 on CIFAR-shaped ones, f64.
    for (preset, shape, n) in [(Preset::Cnn4, MNIST, 5), (Preset::Cnn5, CIFAR, 3)] {
        let model = Model::new(&ModelConfig::preset(preset, shape, 10), 2, DType::F64, &Device::Cpu).unwrap();
        zero_some_biases(&model);
        let x = flat_input(n, shape, 5, DType::F64);
        let y = rand_labels(n, 10, 5, &Device::Cpu);
        assert_ties(&model, &x);
        let r = gram(&model, &x, &y, &GramOptions::default()).unwrap();
        assert_fast(&r);
        let e = cos_err(&r.k, &reference_gram(&model, &x, &y).unwrap());
        assert!(e < COS_TOL_F64, "{preset}: cosine error {e:e}");
    }
}

#[test]
fn per_layer_loss_and_norms_match_the_candle_route() {
    let shape = InputShape::new(3, 8, 8);
    let model = small_cnn(vec![4, 8], shape, 4, DType::F64, 3);
    let x = flat_input(9, shape, 4, DType::F64);
    let y = rand_labels(9, 4, 4, &Device::Cpu);
    let fast = gram(&model, &x, &y, &GramOptions::default()).unwrap();
    assert_fast(&fast);
    let slow = gram(&model, &x, &y, &GramOptions::default().with_cpu_fast_path(false)).unwrap();
    assert!(slow.routes.iter().all(|u| u.form != LayerForm::ConvTiles), "the cross-check must use the candle route");
    assert_eq!(fast.per_layer.len(), slow.per_layer.len());
    for ((na, a), (nb, b)) in fast.per_layer.iter().zip(&slow.per_layer) {
        assert_eq!(na, nb);
        // Per-layer Grams can be tiny (near-dead layers): scale by the whole K's diagonal.
        let (a, b, k) = (host(a), host(b), host(&slow.k));
        for i in 0..9 {
            for j in 0..9 {
                let e = (a[i][j] - b[i][j]).abs() / (k[i][i] * k[j][j]).sqrt();
                assert!(e < COS_TOL_SAME_F64 * 10.0, "{na}[{i},{j}]: {e:e}");
            }
        }
    }
    let mut sum = fast.per_layer[0].1.zeros_like().unwrap();
    for (_, p) in &fast.per_layer {
        sum = (sum + p).unwrap();
    }
    assert!(cos_err(&sum, &fast.k) < COS_TOL_SAME_F64, "per-layer Grams sum to K");
    for i in 0..9 {
        assert!((fast.loss_per_example[i] - slow.loss_per_example[i]).abs() < 1e-12, "loss {i}");
        assert!((fast.norms[i] - slow.norms[i]).abs() < 1e-10 * slow.norms[i], "norm {i}");
    }
    assert!(cos_err(&fast.k, &slow.k) < COS_TOL_SAME_F64);
}

#[test]
fn tiles_from_the_budget_do_not_change_k() {
    // f64: different tile sizes change only the blocking of the same sums. Within COS_TOL_SAME_F64,
    // not bit-identical (gemm's summation order may depend on the block shape).
    let shape = InputShape::new(2, 8, 8);
    let model = small_cnn(vec![8, 16], shape, 3, DType::F64, 5);
    let n = 13;
    let x = flat_input(n, shape, 6, DType::F64);
    let y = rand_labels(n, 3, 6, &Device::Cpu);
    let opts = |b: usize| GramOptions::default().with_memory_budget_bytes(b).with_per_layer(false);
    let whole = gram(&model, &x, &y, &opts(2 << 30)).unwrap();
    assert_fast(&whole);
    assert_eq!(whole.chunk, n);
    let mut tiles_seen = Vec::new();
    // Shrink the budget until the kernel declines; every fast result must agree.
    let mut budget = 2_000_000usize;
    while budget > 10_000 {
        let r = gram(&model, &x, &y, &opts(budget)).unwrap();
        if r.routes[0].form != LayerForm::ConvTiles {
            break;
        }
        if r.chunk < n && !tiles_seen.contains(&r.chunk) {
            tiles_seen.push(r.chunk);
        }
        let e = cos_err(&r.k, &whole.k);
        assert!(e < COS_TOL_SAME_F64, "budget {budget} (tile {}): {e:e}", r.chunk);
        budget = budget * 15 / 16;
    }
    // Tiles that do not divide 13, and at least two distinct sizes, were exercised.
    assert!(tiles_seen.len() >= 2 && tiles_seen.iter().any(|t| n % t != 0), "tiles seen: {tiles_seen:?}");
    // Below the kernel's needs, gram still answers (the candle route), correctly.
    let r = gram(&model, &x, &y, &opts(budget)).unwrap();
    assert!(cos_err(&r.k, &whole.k) < COS_TOL_SAME_F64 * 100.0);
}

#[test]
fn same_inputs_give_bit_identical_k_and_f64_accumulation_matches_oracle() {
    let shape = InputShape::new(2, 8, 8);
    let model = small_cnn(vec![4, 4], shape, 3, DType::F32, 9);
    let x = flat_input(6, shape, 8, DType::F32);
    let y = rand_labels(6, 3, 8, &Device::Cpu);
    let a = gram(&model, &x, &y, &GramOptions::default()).unwrap();
    let b = gram(&model, &x, &y, &GramOptions::default()).unwrap();
    assert_eq!(host(&a.k), host(&b.k), "same seed, same machine: bit-identical");
    let r = gram(&model, &x, &y, &GramOptions::default().with_accumulate_f64(true)).unwrap();
    assert_fast(&r);
    assert_eq!(r.k.dtype(), DType::F64);
    // The f32 model's weights, run in f64: the oracle on the same weights in f64.
    let oracle = reference_gram(&model.to_dtype(DType::F64).unwrap(), &x.to_dtype(DType::F64).unwrap(), &y).unwrap();
    let e = cos_err(&r.k, &oracle);
    assert!(e < COS_TOL_F64, "accumulate_f64: {e:e}");
}

/// One channel, 1x4x4 input, a 3x3 kernel with only the centre tap = 1 and bias 0: `z = x`
/// exactly, so the pooling windows are the input's 2x2 blocks.
fn centre_tap_model() -> Model {
    let cfg = ModelConfig::new(ArchSpec::Cnn { channels: vec![1], kernel: 3, pool: 2 }, InputShape::new(1, 4, 4), 2);
    let model = Model::new(&cfg, 0, DType::F64, &Device::Cpu).unwrap();
    let mut w = vec![0.0f64; 9];
    w[4] = 1.0;
    model.layers()[0].weight.set(&Tensor::from_vec(w, (1, 1, 3, 3), &Device::Cpu).unwrap()).unwrap();
    model.layers()[0].bias.set(&Tensor::zeros(1, DType::F64, &Device::Cpu).unwrap()).unwrap();
    model
}

#[rustfmt::skip]
const TIED: [f64; 16] = [
    1.0, 1.0,   2.0, 0.5,   // window (0,0): tie at 1.0 (live), the two 1.0s have different neighbours
    0.0, -1.0,  0.0, 2.0,   // window (0,1): 2.0 twice -> tied, live
    -1.0, -2.0, 0.0, 0.0,   // window (1,0): all <= 0 -> zero (and tied at 0 after ReLU)
    -3.0, -1.0, 0.0, 0.0,   // window (1,1): all exactly 0 -> zero, tied
];

#[test]
fn pooling_stats_count_by_hand() {
    let model = centre_tap_model();
    let x = Tensor::from_vec(TIED.to_vec(), (1, 16), &Device::Cpu).unwrap();
    let st = pooling_stats(&model, &x).unwrap();
    assert_eq!(st.len(), 1);
    assert_eq!((st[0].windows, st[0].tied, st[0].tied_live, st[0].zero), (4, 4, 2, 2), "{st:?}");
}

#[test]
fn first_maximum_gets_the_gradient_where_tied_patches_differ() {
    // The tied maxima of TIED have different neighbourhoods, so the weight gradient depends on
    // which one receives the pooled gradient: first-max (ours, PyTorch, JAX), last-max or
    // "every tied maximum" all give different Grams. Three examples: TIED scaled and shifted
    // on the non-tied entries only.
    let model = centre_tap_model();
    let mut v = Vec::new();
    for e in 0..3 {
        v.extend(TIED.iter().enumerate().map(|(i, &t)| if [3, 4, 5].contains(&i) { t + 0.25 * e as f64 } else { t }));
    }
    let x = Tensor::from_vec(v, (3, 16), &Device::Cpu).unwrap();
    let y = Tensor::new(&[0u32, 1, 0], &Device::Cpu).unwrap();
    let r = gram(&model, &x, &y, &GramOptions::default()).unwrap();
    assert_fast(&r);
    let e = cos_err(&r.k, &reference_gram(&model, &x, &y).unwrap());
    assert!(e < COS_TOL_F64, "cosine error {e:e}");
}

/// A last conv on a small map with many channels (4x4, 128 -> 256, like cnn5's) takes the
/// pixel-Gram route; 70 examples make two blocks (64 + 6), so off-diagonal block pairs and a
/// ragged block are exercised. Checked against the oracle (f64 and f32) and, per layer, against
/// the candle route.
#[test]
fn pixel_gram_route_matches_oracle_and_candle_route_per_layer() {
    let shape = InputShape::new(2, 16, 16);
    let n = 70;
    let y = rand_labels(n, 4, 3, &Device::Cpu);
    for dtype in [DType::F64, DType::F32] {
        let model = small_cnn(vec![6, 128, 256], shape, 4, dtype, 13);
        let x = flat_input(n, shape, 12, dtype);
        assert_ties(&model, &x);
        let r = gram(&model, &x, &y, &GramOptions::default()).unwrap();
        let forms: Vec<LayerForm> = r.routes.iter().map(|u| u.form).collect();
        assert_eq!(
            forms,
            [LayerForm::ConvTiles, LayerForm::ConvTiles, LayerForm::ConvPixelGhost, LayerForm::DenseFactorised]
        );
        let oracle = reference_gram(&model, &x, &y).unwrap();
        let tol = if dtype == DType::F64 { COS_TOL_F64 } else { COS_TOL_F32 };
        let e = cos_err(&r.k, &oracle);
        assert!(e < tol, "{dtype:?}: cosine error {e:e} vs oracle");
        // Same inputs, same machine: bit-identical (block results are added in a fixed order).
        let again = gram(&model, &x, &y, &GramOptions::default()).unwrap();
        assert_eq!(host(&r.k), host(&again.k), "{dtype:?}: rerun not bit-identical");
        if dtype == DType::F64 {
            let slow = gram(&model, &x, &y, &GramOptions::default().with_cpu_fast_path(false)).unwrap();
            let (a, b, k) = (host(&r.per_layer[2].1), host(&slow.per_layer[2].1), host(&slow.k));
            for i in 0..n {
                for j in 0..n {
                    let e = (a[i][j] - b[i][j]).abs() / (k[i][i] * k[j][j]).sqrt();
                    assert!(e < COS_TOL_SAME_F64 * 10.0, "conv.2 [{i},{j}]: {e:e}");
                }
            }
        }
    }
}

/// `cross_gram` through the kernel (both routes; whole sets, then budgets shrinking until the
/// kernel declines, so row/column tiles that do not divide the sets occur) against the oracle's
/// `G_a G_bᵀ`, in cosine units; norms of both sets against the oracle's row norms, losses against
/// `gram`'s, per-layer Grams summing to `K`.
#[test]
fn cross_gram_through_the_kernel_matches_oracle() {
    let cases =
        [(vec![6, 128, 256], InputShape::new(2, 16, 16), 70, 9), (vec![8, 16], InputShape::new(2, 8, 8), 13, 11)];
    for (channels, shape, n, m) in cases {
        let model = small_cnn(channels.clone(), shape, 4, DType::F64, 21);
        let (xa, ya) = (flat_input(n, shape, 31, DType::F64), rand_labels(n, 4, 31, &Device::Cpu));
        let (xb, yb) = (flat_input(m, shape, 32, DType::F64), rand_labels(m, 4, 32, &Device::Cpu));
        let ga = reference_per_example_gradients(&model, &xa, &ya).unwrap();
        let gb = reference_per_example_gradients(&model, &xb, &yb).unwrap();
        let oracle = host(&ga.matmul(&gb.t().unwrap()).unwrap());
        let row_norms =
            |g: &Tensor| host(&g.sqr().unwrap().sum(1).unwrap().sqrt().unwrap().unsqueeze(0).unwrap())[0].clone();
        let (na, nb) = (row_norms(&ga), row_norms(&gb));
        let own = gram(&model, &xa, &ya, &GramOptions::default()).unwrap();
        let kernel = |f: &LayerForm| matches!(f, LayerForm::ConvTiles | LayerForm::ConvPixelGhost);
        let mut tiles_seen = Vec::new();
        let mut budget = 2usize << 30;
        loop {
            let opts = GramOptions::default().with_memory_budget_bytes(budget);
            let Ok(r) = cross_gram(&model, &xa, &ya, &xb, &yb, &opts) else { break };
            if !r.routes.iter().any(|u| kernel(&u.form)) {
                break;
            }
            if r.chunk < n && !tiles_seen.contains(&r.chunk) {
                tiles_seen.push(r.chunk);
            }
            let k = host(&r.k);
            for i in 0..n {
                for j in 0..m {
                    let e = (k[i][j] - oracle[i][j]).abs() / (na[i] * nb[j]);
                    assert!(e < COS_TOL_F64, "{channels:?} budget {budget} [{i},{j}]: {e:e}");
                }
            }
            for (got, want) in r.norms_a.iter().zip(&na).chain(r.norms_b.iter().zip(&nb)) {
                assert!((got - want).abs() < 1e-10 * want, "norm {got} vs {want}");
            }
            for (a, b) in r.loss_a.iter().zip(&own.loss_per_example) {
                assert!((a - b).abs() < 1e-12, "set a's losses: {a} vs {b}");
            }
            let mut sum = r.per_layer[0].1.zeros_like().unwrap();
            for (_, p) in &r.per_layer {
                sum = (sum + p).unwrap();
            }
            let s = host(&sum);
            for i in 0..n {
                for j in 0..m {
                    assert!((s[i][j] - k[i][j]).abs() / (na[i] * nb[j]) < COS_TOL_SAME_F64, "per-layer sum [{i},{j}]");
                }
            }
            budget = if budget > 4_000_000 { 4_000_000 } else { budget * 15 / 16 };
        }
        if channels.len() == 2 {
            // The small net's conv.1 ran in row tiles of several sizes, some not dividing 13.
            assert!(tiles_seen.len() >= 2 && tiles_seen.iter().any(|t| n % t != 0), "tiles seen: {tiles_seen:?}");
        } else {
            assert!(budget < 2 << 30, "the pixel-Gram net ran through the kernel at the default budget");
        }
    }
}
