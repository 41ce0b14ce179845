//! The general engine on PyTorch-style specs: tapped fast path vs an independent per-example
//! autograd oracle (plain forward, one backward per example, f64), finite differences per layer
//! type, invariances, losses, and inputs with flat regions so that max-pool ties and ReLU inputs
//! at exactly 0 occur.

mod common;

use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use common::cos_err_zero_ok;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_gradkernel::{
    cross_gram_net, gram_net, per_example_gradients_net, reference_gram_net, reference_per_example_gradients_net,
    GramOptions, LayerForm, Loss, Method, PlainSpec,
};
use stiff_models::{KeyMap, ModelSpec, SpecModel};

/// Fast path vs oracle in f64, cosine units `|dK_ij| / sqrt(K_ii K_jj)`: only rounding differs.
const COS_TOL_F64: f64 = 1e-9;
/// The issue's acceptance bound for `stiff gram --spec` (f64).
const COS_TOL_DONE: f64 = 1e-6;

fn spec(json: &str) -> ModelSpec {
    serde_json::from_str(json).unwrap()
}

/// Inputs `(n, dims...)` uniform in (-1, 1) with half of each example set to one constant (flat regions: tied max-pool windows, zero conv responses).
fn flat_inputs(n: usize, dims: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let per: usize = dims.iter().product();
    let mut v = Vec::with_capacity(n * per);
    for _ in 0..n {
        let c: f64 = rng.random_range(-1.0..1.0);
        // Images (C, H, W): the left half of every row of every channel; vectors: the first half.
        let w = *dims.last().unwrap();
        for k in 0..per {
            let flat = if dims.len() == 3 { k % w < w / 2 } else { k < per / 2 };
            v.push(if flat { c } else { rng.random_range(-1.0..1.0) });
        }
    }
    let mut shape = vec![n];
    shape.extend_from_slice(dims);
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn labels(n: usize, classes: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xabc);
    Tensor::from_vec((0..n).map(|_| rng.random_range(0..classes as u32)).collect::<Vec<_>>(), n, &Device::Cpu).unwrap()
}

/// A random f64 model of `spec`; batch norm running statistics and affine parameters random
/// (not the 0/1 defaults, so that they matter).
fn model(spec: &ModelSpec, seed: u64) -> SpecModel {
    let m = SpecModel::new(spec, seed, DType::F64, &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 7);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    for (k, v) in m.named_tensors() {
        let n = v.elem_count();
        let val = if k.ends_with("running_var") {
            let r: Vec<f64> = (0..n).map(|_| rng.random_range(0.5..2.0)).collect();
            Tensor::from_vec(r, v.dims(), &Device::Cpu).unwrap()
        } else if k.ends_with("running_mean")
            || (spec.layers[k.split('.').next().unwrap().parse::<usize>().unwrap()].type_name().contains("Norm"))
        {
            let r: Vec<f64> =
                (0..n).map(|_| rng.random_range(-0.5..0.5) + if k.ends_with("weight") { 1.0 } else { 0.0 }).collect();
            Tensor::from_vec(r, v.dims(), &Device::Cpu).unwrap()
        } else {
            v
        };
        t.insert(k, val);
    }
    SpecModel::from_tensors(spec, t, std::path::Path::new("test"), &KeyMap::default(), DType::F64, &Device::Cpu)
        .unwrap()
}

fn opts() -> GramOptions {
    GramOptions::default().with_accumulate_f64(true)
}

/// The issue's acceptance network: stride-2 conv, BatchNorm2d (eval), a conv without bias,
/// max pooling with tied windows, average pooling, Tanh and GELU.
const DONE_SPEC: &str = r#"{"input": [3, 12, 12], "layers": [
  {"type": "Conv2d", "in_channels": 3, "out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1},
  {"type": "BatchNorm2d", "num_features": 6},
  {"type": "ReLU"},
  {"type": "Conv2d", "in_channels": 6, "out_channels": 8, "kernel_size": 3, "padding": 1, "bias": false},
  {"type": "MaxPool2d", "kernel_size": 2},
  {"type": "AvgPool2d", "kernel_size": 3, "stride": 1, "padding": 1},
  {"type": "Tanh"},
  {"type": "Flatten"},
  {"type": "Linear", "in_features": 72, "out_features": 16},
  {"type": "GELU"},
  {"type": "Dropout", "p": 0.5},
  {"type": "Linear", "in_features": 16, "out_features": 5}]}"#;

#[test]
fn acceptance_spec_matches_the_independent_oracle_in_f64() {
    let s = spec(DONE_SPEC);
    let m = model(&s, 3);
    let x = flat_inputs(10, &[3, 12, 12], 1);
    let y = labels(10, 5, 1);
    let r = gram_net(&m, &x, &y, &Loss::CrossEntropy, &opts()).unwrap();
    let oracle = reference_gram_net(&PlainSpec(&m), &x, &y, &Loss::CrossEntropy).unwrap();
    let err = cos_err_zero_ok(&r.k, &oracle);
    assert!(err < COS_TOL_DONE, "cosine error {err:e}");
    assert!(err < COS_TOL_F64, "cosine error {err:e}");
    // Every parameter took a tapped route; nothing fell back.
    assert!(r.routes.iter().all(|u| u.form != LayerForm::Fallback), "{:?}", r.routes);
    assert_eq!(r.routes.len(), 5);
    // The plain model has no taps: all of it goes through the exact fallback, same answer.
    let fb = gram_net(&PlainSpec(&m), &x, &y, &Loss::CrossEntropy, &opts()).unwrap();
    assert_eq!(fb.routes.len(), 1);
    assert_eq!(fb.routes[0].form, LayerForm::Fallback);
    assert!(cos_err_zero_ok(&fb.k, &oracle) < COS_TOL_F64);
}

#[test]
fn tied_max_pool_windows_really_occur() {
    // Guards the acceptance test's premise: on flat inputs, after the first conv + BN + ReLU,
    // max-pool windows with tied maxima exist (else the convention would not be exercised).
    let s = spec(DONE_SPEC);
    let m = model(&s, 3);
    let x = m.prepare_input(&flat_inputs(10, &[3, 12, 12], 1)).unwrap();
    let mut a = x;
    for i in 0..4 {
        a = m.layer_forward(i, &a).unwrap();
    }
    let v = a.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let (n, c, h, w) = a.dims4().unwrap();
    let mut ties = 0;
    for b in 0..n * c {
        for i in 0..h / 2 {
            for j in 0..w / 2 {
                let win: Vec<f64> = (0..4).map(|k| v[b * h * w + (2 * i + k / 2) * w + 2 * j + k % 2]).collect();
                let mx = win.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if win.iter().filter(|&&u| u == mx).count() > 1 {
                    ties += 1;
                }
            }
        }
    }
    assert!(ties > 10, "only {ties} tied windows");
}

#[test]
fn max_pool_gradient_goes_to_the_first_maximum_and_relu_prime_is_zero_at_zero() {
    // All-equal 4x4 map, 2x2 windows: exactly one gradient entry per window, at its top-left.
    let x = candle::Var::from_tensor(&Tensor::ones((1, 1, 4, 4), DType::F64, &Device::Cpu).unwrap()).unwrap();
    let y = stiff_gradkernel::nn::max_pool2d(x.as_tensor(), 2, 2, 0).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap().get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let want = [1., 0., 1., 0., 0., 0., 0., 0., 1., 0., 1., 0., 0., 0., 0., 0.];
    assert_eq!(g, want);
    // Overlapping windows with padding (3x3, stride 1, pad 1) on a flat map: each output sends
    // its gradient to one element; the counts add up to the number of outputs.
    let y = stiff_gradkernel::nn::max_pool2d(x.as_tensor(), 3, 1, 1).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap().get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(g.iter().sum::<f64>(), 16.0);
    // First in row-major window order: window at (0,0) covers padding then x[0,0] -> x[0,0].
    assert!(g[0] >= 1.0);
    // relu'(0) = 0.
    let z = candle::Var::from_tensor(&Tensor::zeros(3, DType::F64, &Device::Cpu).unwrap()).unwrap();
    let y = stiff_gradkernel::nn::relu(z.as_tensor()).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap().get(z.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(g, vec![0.0; 3]);
}

#[test]
fn invariances_subset_budget_permutation_cross() {
    let s = spec(DONE_SPEC);
    let m = model(&s, 5);
    let n = 9;
    let x = flat_inputs(n, &[3, 12, 12], 2);
    let y = labels(n, 5, 2);
    let full = gram_net(&m, &x, &y, &Loss::CrossEntropy, &opts()).unwrap();
    let kf = full.k.to_vec2::<f64>().unwrap();
    // Memory budget (chunking) does not change K.
    let small = opts().with_memory_budget_bytes(400_000);
    let r = gram_net(&m, &x, &y, &Loss::CrossEntropy, &small).unwrap();
    assert!(r.chunk < n, "budget did not force chunking (chunk {})", r.chunk);
    assert!(cos_err_zero_ok(&r.k, &full.k) < COS_TOL_F64);
    // Forced forms agree too.
    for method in [Method::Materialised, Method::Factorised] {
        let r = gram_net(&m, &x, &y, &Loss::CrossEntropy, &opts().with_method(method)).unwrap();
        assert!(cos_err_zero_ok(&r.k, &full.k) < COS_TOL_F64, "{method:?}");
    }
    // A subset's K is the sub-block.
    let idx = [7u32, 2, 4];
    let it = Tensor::new(&idx, &Device::Cpu).unwrap();
    let sub =
        gram_net(&m, &x.index_select(&it, 0).unwrap(), &y.index_select(&it, 0).unwrap(), &Loss::CrossEntropy, &opts())
            .unwrap();
    let ks = sub.k.to_vec2::<f64>().unwrap();
    for (a, &i) in idx.iter().enumerate() {
        for (b, &j) in idx.iter().enumerate() {
            let s = (kf[i as usize][i as usize] * kf[j as usize][j as usize]).sqrt();
            assert!((ks[a][b] - kf[i as usize][j as usize]).abs() / s < COS_TOL_F64);
        }
    }
    // Permutation equivariance: K(P x) = P K P^T.
    let perm: Vec<u32> = vec![3, 8, 0, 5, 1, 7, 2, 6, 4];
    let pt = Tensor::new(perm.as_slice(), &Device::Cpu).unwrap();
    let kp =
        gram_net(&m, &x.index_select(&pt, 0).unwrap(), &y.index_select(&pt, 0).unwrap(), &Loss::CrossEntropy, &opts())
            .unwrap()
            .k
            .to_vec2::<f64>()
            .unwrap();
    for a in 0..n {
        for b in 0..n {
            let (i, j) = (perm[a] as usize, perm[b] as usize);
            let s = (kf[i][i] * kf[j][j]).sqrt();
            assert!((kp[a][b] - kf[i][j]).abs() / s < COS_TOL_F64);
        }
    }
    // cross_gram(x, x) == gram(x).
    let c = cross_gram_net(&m, &x, &y, &x, &y, &Loss::CrossEntropy, &opts()).unwrap();
    assert!(cos_err_zero_ok(&c.k, &full.k) < COS_TOL_F64);
    for i in 0..n {
        assert!((c.norms_a[i] - full.norms[i]).abs() <= 1e-9 * full.norms[i]);
    }
    // Per-unit Grams sum to K.
    let sum = full.per_layer.iter().fold(full.k.zeros_like().unwrap(), |a, (_, t)| (a + t).unwrap());
    assert!(cos_err_zero_ok(&sum, &full.k) < COS_TOL_F64);
}

#[test]
fn per_example_gradients_match_the_oracle_columnwise() {
    let s = spec(DONE_SPEC);
    let m = model(&s, 9);
    let x = flat_inputs(4, &[3, 12, 12], 4);
    let y = labels(4, 5, 4);
    let g = per_example_gradients_net(&m, &x, &y, &Loss::CrossEntropy, &opts()).unwrap();
    let o = reference_per_example_gradients_net(&PlainSpec(&m), &x, &y, &Loss::CrossEntropy).unwrap();
    assert_eq!(g.dims(), o.dims());
    assert_eq!(g.dim(1).unwrap(), m.num_params());
    let d = (g - &o).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    let scale = o.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    assert!(d <= 1e-10 * scale, "max abs diff {d:e} (scale {scale:e})");
}

#[test]
fn other_losses_match_the_oracle() {
    let s = spec(
        r#"{"input": [10], "layers": [
        {"type": "Linear", "in_features": 10, "out_features": 7},
        {"type": "LayerNorm", "normalized_shape": 7},
        {"type": "SiLU"},
        {"type": "Linear", "in_features": 7, "out_features": 6, "bias": false},
        {"type": "BatchNorm1d", "num_features": 6},
        {"type": "Sigmoid"},
        {"type": "Linear", "in_features": 6, "out_features": 3}]}"#,
    );
    let m = model(&s, 11);
    let x = flat_inputs(7, &[10], 8);
    let y = labels(7, 3, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let t = Tensor::from_vec((0..21).map(|_| rng.random_range(-1.0..1.0)).collect::<Vec<f64>>(), (7, 3), &Device::Cpu)
        .unwrap();
    let closure: stiff_gradkernel::LossFn =
        std::sync::Arc::new(|out: &Tensor, t: &Tensor| (out - t.to_dtype(out.dtype())?)?.abs()?.sqr()?.sum(1)?.sqrt());
    for (loss, targets) in
        [(Loss::MseOneHot, &y), (Loss::Mse, &t), (Loss::PerExample(closure), &t), (Loss::CrossEntropy, &y)]
    {
        let r = gram_net(&m, &x, targets, &loss, &opts()).unwrap();
        let o = reference_gram_net(&PlainSpec(&m), &x, targets, &loss).unwrap();
        let err = cos_err_zero_ok(&r.k, &o);
        assert!(err < COS_TOL_F64, "{loss:?}: {err:e}");
    }
    // Wrong targets are typed errors, not panics.
    assert!(gram_net(&m, &x, &y, &Loss::Mse, &opts()).is_err());
    assert!(gram_net(&m, &x, &t, &Loss::CrossEntropy, &opts()).is_err());
    let bad = Tensor::new(&[0u32, 1, 2, 3, 0, 1, 2], &Device::Cpu).unwrap();
    assert!(matches!(
        gram_net(&m, &x, &bad, &Loss::CrossEntropy, &opts()),
        Err(stiff_gradkernel::GradKernelError::LabelOutOfRange { index: 3, .. })
    ));
}

/// Per-example loss of example `i` with every parameter read from `m`, in f64.
fn loss_of(m: &SpecModel, x: &Tensor, y: &Tensor) -> f64 {
    let out = m.forward(x).unwrap();
    Loss::CrossEntropy.per_example(&out, y).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
}

/// One small spec per layer type (each followed by a head), for the finite-difference check.
fn per_type_specs() -> Vec<(&'static str, String)> {
    let head =
        |f: usize| format!(r#"{{"type": "Flatten"}}, {{"type": "Linear", "in_features": {f}, "out_features": 3}}"#);
    let conv = |extra: &str, f: usize| {
        format!(
            r#"{{"input": [2, 6, 6], "layers": [{{"type": "Conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3 {extra}}}, {}]}}"#,
            head(f)
        )
    };
    let after_conv = |layer: &str, f: usize| {
        format!(
            r#"{{"input": [2, 6, 6], "layers": [{{"type": "Conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1}}, {layer}, {}]}}"#,
            head(f)
        )
    };
    let dense = |layer: &str| {
        format!(
            r#"{{"input": [5], "layers": [{{"type": "Linear", "in_features": 5, "out_features": 4}}, {layer}, {{"type": "Linear", "in_features": 4, "out_features": 3}}]}}"#
        )
    };
    vec![
        ("Linear", dense(r#"{"type": "Identity"}"#)),
        ("Conv2d stride 2 pad 1", conv(r#", "stride": 2, "padding": 1"#, 27)),
        ("Conv2d dilation 2 no bias", conv(r#", "dilation": 2, "bias": false"#, 12)),
        ("Conv2d unequal stride/padding", conv(r#", "stride": [1, 2], "padding": [0, 1]"#, 36)),
        ("MaxPool2d 3/2/1", after_conv(r#"{"type": "MaxPool2d", "kernel_size": 3, "stride": 2, "padding": 1}"#, 27)),
        ("AvgPool2d 2", after_conv(r#"{"type": "AvgPool2d", "kernel_size": 2}"#, 27)),
        ("AdaptiveAvgPool2d", after_conv(r#"{"type": "AdaptiveAvgPool2d", "output_size": 1}"#, 3)),
        ("BatchNorm2d", after_conv(r#"{"type": "BatchNorm2d", "num_features": 3}"#, 108)),
        ("ReLU", dense(r#"{"type": "ReLU"}"#)),
        ("LeakyReLU", dense(r#"{"type": "LeakyReLU", "negative_slope": 0.1}"#)),
        ("GELU", dense(r#"{"type": "GELU"}"#)),
        ("SiLU", dense(r#"{"type": "SiLU"}"#)),
        ("Tanh", dense(r#"{"type": "Tanh"}"#)),
        ("Sigmoid", dense(r#"{"type": "Sigmoid"}"#)),
        ("BatchNorm1d", dense(r#"{"type": "BatchNorm1d", "num_features": 4}"#)),
        ("LayerNorm", dense(r#"{"type": "LayerNorm", "normalized_shape": [4]}"#)),
    ]
}

#[test]
fn finite_differences_per_layer_type_f64() {
    // Central differences, h = 1e-6, on random (tie-free) inputs: per-example gradients from the
    // fast path agree to 1e-6 relative to the gradient's scale (FD truncation ~h^2, rounding ~eps/h).
    const H: f64 = 1e-6;
    const FD_TOL: f64 = 1e-6;
    for (name, js) in per_type_specs() {
        let s = spec(&js);
        let m = model(&s, 21);
        let dims = s.input.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let per: usize = dims.iter().product();
        let mut shape = vec![1];
        shape.extend(&dims);
        let x =
            Tensor::from_vec((0..per).map(|_| rng.random_range(-1.0..1.0)).collect::<Vec<f64>>(), shape, &Device::Cpu)
                .unwrap();
        let y = labels(1, 3, 5);
        let g = per_example_gradients_net(&m, &x, &y, &Loss::CrossEntropy, &opts()).unwrap();
        let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let scale = g.iter().fold(0f64, |a, b| a.max(b.abs()));
        let mut col = 0;
        for (_, v) in m.params() {
            let base = v.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            // A few coordinates of every parameter tensor.
            for &k in &[0, base.len() / 2, base.len() - 1] {
                let set = |delta: f64| {
                    let mut b = base.clone();
                    b[k] += delta;
                    v.set(&Tensor::from_vec(b, v.dims(), &Device::Cpu).unwrap()).unwrap();
                };
                set(H);
                let lp = loss_of(&m, &x, &y);
                set(-H);
                let lm = loss_of(&m, &x, &y);
                set(0.0);
                let fd = (lp - lm) / (2.0 * H);
                assert!(
                    (fd - g[col + k]).abs() <= FD_TOL * scale.max(1e-3),
                    "{name}: coordinate {k}: fd {fd} vs {}",
                    g[col + k]
                );
            }
            col += base.len();
        }
    }
}

/// A random `nn.Sequential` over `(C, H, W)` inputs: conv/pool/norm/activation blocks, then
/// flatten, optional hidden dense layers, a head.
fn random_spec(seed: u64) -> ModelSpec {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let c0 = rng.random_range(1..=3usize);
    let hw = rng.random_range(5..=9usize);
    let mut layers = Vec::new();
    let (mut c, mut h, mut w) = (c0, hw, hw);
    let blocks = rng.random_range(1..=2);
    let acts = [
        r#"{"type": "ReLU"}"#,
        r#"{"type": "Tanh"}"#,
        r#"{"type": "GELU"}"#,
        r#"{"type": "LeakyReLU"}"#,
        r#"{"type": "SiLU"}"#,
        r#"{"type": "Sigmoid"}"#,
    ];
    for _ in 0..blocks {
        let co = rng.random_range(1..=4usize);
        let k = rng.random_range(1..=3usize);
        let s = rng.random_range(1..=2usize);
        let p = rng.random_range(0..=k / 2 + 1);
        let d = if k > 1 { rng.random_range(1..=2usize) } else { 1 };
        let span = d * (k - 1) + 1;
        if h + 2 * p < span || w + 2 * p < span {
            continue;
        }
        let bias = rng.random_bool(0.5);
        layers.push(format!(
            r#"{{"type": "Conv2d", "in_channels": {c}, "out_channels": {co}, "kernel_size": {k}, "stride": {s}, "padding": {p}, "dilation": {d}, "bias": {bias}}}"#
        ));
        c = co;
        h = (h + 2 * p - span) / s + 1;
        w = (w + 2 * p - span) / s + 1;
        if rng.random_bool(0.4) {
            layers.push(format!(r#"{{"type": "BatchNorm2d", "num_features": {c}}}"#));
        }
        layers.push(acts[rng.random_range(0..acts.len())].to_string());
        if h >= 2 && w >= 2 && rng.random_bool(0.6) {
            let pk = 2;
            let ps = rng.random_range(1..=2usize);
            let pp = rng.random_range(0..=1usize);
            let kind = if rng.random_bool(0.6) { "MaxPool2d" } else { "AvgPool2d" };
            layers.push(format!(r#"{{"type": "{kind}", "kernel_size": {pk}, "stride": {ps}, "padding": {pp}}}"#));
            h = (h + 2 * pp - pk) / ps + 1;
            w = (w + 2 * pp - pk) / ps + 1;
        }
    }
    layers.push(r#"{"type": "Flatten"}"#.into());
    let mut f = c * h * w;
    if rng.random_bool(0.5) {
        let o = rng.random_range(2..=6usize);
        layers.push(format!(
            r#"{{"type": "Linear", "in_features": {f}, "out_features": {o}, "bias": {}}}"#,
            rng.random_bool(0.5)
        ));
        if rng.random_bool(0.5) {
            layers.push(format!(r#"{{"type": "LayerNorm", "normalized_shape": {o}}}"#));
        }
        layers.push(acts[rng.random_range(0..acts.len())].to_string());
        f = o;
    }
    layers.push(format!(r#"{{"type": "Linear", "in_features": {f}, "out_features": 3}}"#));
    spec(&format!(r#"{{"input": [{c0}, {hw}, {hw}], "layers": [{}]}}"#, layers.join(",")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn random_layer_lists_fast_path_equals_oracle(seed in 0u64..1_000_000) {
        let s = random_spec(seed);
        let m = model(&s, seed);
        let x = flat_inputs(5, &s.input, seed);
        let y = labels(5, 3, seed);
        let r = gram_net(&m, &x, &y, &Loss::CrossEntropy, &opts()).unwrap();
        let o = reference_gram_net(&PlainSpec(&m), &x, &y, &Loss::CrossEntropy).unwrap();
        let err = cos_err_zero_ok(&r.k, &o);
        prop_assert!(err < COS_TOL_F64, "spec {}: cosine error {err:e}", serde_json::to_string(&s).unwrap());
    }
}

#[test]
fn presets_are_spec_instances_with_the_same_gram() {
    // cnn-style and mlp-style configurations: the spec twin shares the model's Vars (key map
    // `conv.i`/`layers.i`/`head` -> indices) and gives the same Gram through the general engine.
    use stiff_models::{ArchSpec, InputShape, Model, ModelConfig};
    for (arch, shape) in [
        (ArchSpec::Cnn { channels: vec![3, 4], kernel: 3, pool: 2 }, InputShape::new(2, 9, 9)),
        (ArchSpec::Mlp { hidden: vec![6, 5] }, InputShape::new(1, 4, 4)),
    ] {
        let cfg = ModelConfig::new(arch, shape, 3);
        let model = Model::new(&cfg, 4, DType::F64, &Device::Cpu).unwrap();
        let x = flat_inputs(6, &[shape.channels, shape.height, shape.width], 3);
        let y = labels(6, 3, 3);
        let old = stiff_gradkernel::gram(&model, &x, &y, &opts()).unwrap();
        let twin = model.to_spec_model().unwrap();
        assert_eq!(twin.num_params(), model.num_params());
        let new = gram_net(&twin, &x, &y, &Loss::CrossEntropy, &opts()).unwrap();
        assert!(cos_err_zero_ok(&new.k, &old.k) < COS_TOL_F64, "{cfg:?}");
        // The model's checkpoint loads as the spec through the key map.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        model.save(&path).unwrap();
        let (spec, keys) = cfg.to_spec().unwrap();
        let loaded = SpecModel::load(&spec, &path, &keys, DType::F64, &Device::Cpu).unwrap();
        let again = gram_net(&loaded, &x, &y, &Loss::CrossEntropy, &opts()).unwrap();
        assert!(cos_err_zero_ok(&again.k, &old.k) < COS_TOL_F64);
    }
}

type Named = Vec<(String, Tensor)>;

#[test]
fn loading_a_pytorch_state_dict_round_trips_and_bad_keys_are_typed_errors() {
    // The exact key layout `torch.nn.Sequential(Linear(4, 3), BatchNorm1d(3), ReLU(),
    // Linear(3, 2, bias=False)).state_dict()` produces, written here with the safetensors crate,
    // wrapped by DataParallel (`module.` prefix) and with the `num_batches_tracked` counter.
    let s = spec(
        r#"{"input": [4], "layers": [{"type": "Linear", "in_features": 4, "out_features": 3},
        {"type": "BatchNorm1d", "num_features": 3}, {"type": "ReLU"},
        {"type": "Linear", "in_features": 3, "out_features": 2, "bias": false}]}"#,
    );
    let keys = ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "3.weight"];
    let got: Vec<String> = s.tensors().iter().map(|p| p.key.clone()).collect();
    assert_eq!(got, keys);
    let m = model(&s, 1);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, edit: &dyn Fn(&mut Named)| {
        let mut t: Vec<(String, Tensor)> = m
            .named_tensors()
            .into_iter()
            .map(|(k, v)| (format!("module.{k}"), v.to_dtype(DType::F32).unwrap()))
            .collect();
        t.push(("module.1.num_batches_tracked".into(), Tensor::new(&[7i64], &Device::Cpu).unwrap()));
        edit(&mut t);
        let p = dir.path().join(name);
        stiff_models::io::save_tensors_atomic(&t, HashMap::new(), &p).unwrap();
        p
    };
    let ok = write("ok.safetensors", &|_| {});
    let back = SpecModel::load(&s, &ok, &KeyMap::default(), DType::F32, &Device::Cpu).unwrap();
    for ((ka, va), (kb, vb)) in m.named_tensors().iter().zip(back.named_tensors()) {
        assert_eq!(ka, &kb);
        let d = (va.to_dtype(DType::F32).unwrap() - vb)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0);
    }
    use stiff_models::ModelError as E;
    let missing = write("missing.safetensors", &|t| t.retain(|(k, _)| k != "module.1.running_var"));
    match SpecModel::load(&s, &missing, &KeyMap::default(), DType::F32, &Device::Cpu) {
        Err(E::SpecMissingKey(e)) => assert_eq!((e.index, e.key.as_str()), (1, "1.running_var")),
        other => panic!("{other:?}"),
    }
    let extra = write("extra.safetensors", &|t| {
        t.push(("module.4.weight".into(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()))
    });
    assert!(
        matches!(SpecModel::load(&s, &extra, &KeyMap::default(), DType::F32, &Device::Cpu), Err(E::UnexpectedKey { key, .. }) if key == "module.4.weight")
    );
    let wrong = write("wrong.safetensors", &|t| {
        let i = t.iter().position(|(k, _)| k == "module.3.weight").unwrap();
        t[i].1 = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
    });
    match SpecModel::load(&s, &wrong, &KeyMap::default(), DType::F32, &Device::Cpu) {
        Err(E::SpecShape(e)) => {
            assert_eq!((e.index, e.expected.clone(), e.got.clone()), (3, vec![2, 3], Some(vec![3, 2])))
        }
        other => panic!("{other:?}"),
    }
    // Other names through a key map.
    let renamed = write("renamed.safetensors", &|t| {
        for (k, _) in t.iter_mut() {
            *k = k.replace("module.0.", "features.fc.");
        }
    });
    assert!(SpecModel::load(&s, &renamed, &KeyMap::default(), DType::F32, &Device::Cpu).is_err());
    let map = KeyMap {
        rename: [("features.fc.weight", "0.weight"), ("features.fc.bias", "0.bias")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    };
    SpecModel::load(&s, &renamed, &map, DType::F32, &Device::Cpu).unwrap();
    // Spec errors name the layer.
    let bad: ModelSpec = spec(r#"{"input": [4], "layers": [{"type": "Linear", "in_features": 5, "out_features": 3}]}"#);
    assert!(matches!(bad.shapes(), Err(E::SpecLayer { index: 0, .. })));
    assert!(serde_json::from_str::<ModelSpec>(
        r#"{"input": [4], "layers": [{"type": "Linear", "in_feature": 4, "out_features": 3}]}"#
    )
    .is_err());
}

#[test]
fn own_candle_code_with_sharing_and_untapped_parameters() {
    // A user module: a tapped linear used twice (weight sharing -> shared route), a residual
    // connection, a bare scalar parameter (fallback route), tapped layer norm.
    use candle::Module;
    use candle_nn::{VarBuilder, VarMap};
    use stiff_gradkernel::{nn, ModuleNet};
    struct Net {
        a: nn::Linear,
        shared: nn::Linear,
        ln: nn::LayerNorm,
        scale: Tensor,
        head: nn::Linear,
    }
    impl Module for Net {
        fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
            let h = nn::relu(&self.a.forward(x)?)?;
            let h = (&h + nn::gelu(&self.shared.forward(&h)?)?)?;
            let h = self.shared.forward(&h)?.broadcast_mul(&self.scale)?;
            self.head.forward(&nn::leaky_relu(&self.ln.forward(&h)?, 0.1)?)
        }
    }
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F64, &Device::Cpu);
    let net = Net {
        a: nn::linear(6, 5, vb.pp("a")).unwrap(),
        shared: nn::linear(5, 5, vb.pp("shared")).unwrap(),
        ln: nn::layer_norm(5, 1e-5, vb.pp("ln")).unwrap(),
        scale: vb.get_with_hints((), "scale", candle_nn::Init::Const(1.3)).unwrap(),
        head: nn::linear_no_bias(5, 3, vb.pp("head")).unwrap(),
    };
    let m = ModuleNet::new(&net, &vars);
    let x = flat_inputs(7, &[6], 2);
    let y = labels(7, 3, 2);
    let r = gram_net(&m, &x, &y, &Loss::CrossEntropy, &opts()).unwrap();
    let forms: Vec<(String, LayerForm)> = r.routes.iter().map(|u| (u.name.clone(), u.form)).collect();
    assert!(forms.contains(&("shared+shared".to_string(), LayerForm::Shared)), "{forms:?}");
    assert!(forms.contains(&("fallback".to_string(), LayerForm::Fallback)), "{forms:?}");
    assert!(forms.contains(&("a".to_string(), LayerForm::DenseFactorised)), "{forms:?}");
    let o = reference_gram_net(&m, &x, &y, &Loss::CrossEntropy).unwrap();
    let err = cos_err_zero_ok(&r.k, &o);
    assert!(err < COS_TOL_F64, "{err:e}");
    // Per-example gradients (shared weight: per-call gradients summed) column by column.
    let g = per_example_gradients_net(&m, &x, &y, &Loss::CrossEntropy, &opts()).unwrap();
    let og = stiff_gradkernel::reference_per_example_gradients_net(&m, &x, &y, &Loss::CrossEntropy).unwrap();
    let d = (g - og).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    assert!(d < 1e-10, "{d:e}");
}
