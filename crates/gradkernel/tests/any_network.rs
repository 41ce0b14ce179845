//! One front door for every network: a spec model shaped like a preset takes the presets' CPU
//! kernels (same routes, the same Gram bit for bit), the dense cross kernel matches the oracle,
//! specs the kernels do not cover fall back to the general engine and still match the oracle,
//! and a parameter that gets no gradient is refused instead of contributing a silent 0.
#![allow(clippy::needless_range_loop)]

mod common;

use candle::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::*;
use stiff_gradkernel::{
    cross_gram, gram, nn, reference_gram_net, reference_per_example_gradients_net, GradKernelError, GramOptions,
    GramResult, LayerForm, Loss, ModuleNet, Network, PlainSpec,
};
use stiff_models::{ArchSpec, InputShape, Model, ModelConfig, ModelSpec, SpecModel};

/// f64 end to end against the one-backward-per-example oracle, in cosine units.
const COS_TOL_F64: f64 = 1e-10;
/// f32 Gram against the oracle's f32 gradients dotted in f64, in cosine units.
const COS_TOL_F32: f64 = 5e-5;

/// Inputs with an all-zero left half and a constant bottom-right quadrant (ReLU inputs exactly
/// at the bias, tied max-pool windows), seeded noise elsewhere.
fn flat_input(n: usize, shape: InputShape, seed: u64) -> Tensor {
    let x = rand_input(n, shape, seed, DType::F64, &Device::Cpu);
    let mut v = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let (h, w) = (shape.height, shape.width);
    for (i, val) in v.iter_mut().enumerate() {
        let (y, xx) = ((i / w) % h, i % w);
        if xx < w / 2 {
            *val = 0.0;
        } else if y >= h / 2 {
            *val = 0.75;
        }
    }
    Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap()
}

/// Zeroes half of the first layer's biases so zero inputs give pre-activations exactly 0.
fn zero_first_biases(model: &Model) {
    let b = &model.layers()[0].bias;
    let c = b.dim(0).unwrap();
    let mut v = b.as_tensor().to_vec1::<f64>().unwrap();
    v[..c / 2].iter_mut().for_each(|x| *x = 0.0);
    b.set(&Tensor::from_vec(v, c, &Device::Cpu).unwrap()).unwrap();
}

fn forms(r: &GramResult) -> Vec<LayerForm> {
    r.routes.iter().map(|u| u.form).collect()
}

fn preset(arch: ArchSpec, shape: InputShape, classes: usize, seed: u64) -> Model {
    let m = Model::new(&ModelConfig::new(arch, shape, classes), seed, DType::F64, &Device::Cpu).unwrap();
    zero_first_biases(&m);
    m
}

/// The preset and the same net as a PyTorch-style spec (state_dict keys) give the same routes and
/// the same Gram bit for bit (the same kernel on the same numbers), and both match the oracle of
/// the spec's plain forward (untapped, one backward per example).
#[test]
fn a_spec_shaped_like_a_preset_takes_its_kernels() {
    let conv_shape = InputShape::new(2, 12, 12);
    let cases = [
        (ArchSpec::Mlp { hidden: vec![16, 12, 8] }, InputShape::new(1, 6, 6), vec![LayerForm::DenseFactorised; 4]),
        (ArchSpec::Cnn { channels: vec![4, 6, 8], kernel: 3, pool: 2 }, conv_shape, vec![]),
    ];
    for (arch, shape, want) in cases {
        let model = preset(arch, shape, 5, 3);
        let spec = model.to_spec_model().unwrap();
        assert!(spec.chain().is_some(), "the spec of {:?} is a chain", model.config().arch);
        let x = flat_input(29, shape, 1);
        let y = rand_labels(29, 5, 2, &Device::Cpu);
        let opts = GramOptions::default();
        let (a, b) = (gram(&model, &x, &y, &opts).unwrap(), gram(&spec, &x, &y, &opts).unwrap());
        assert_eq!(forms(&a), forms(&b));
        if !want.is_empty() {
            assert_eq!(forms(&a), want);
        } else {
            let f = forms(&a);
            let (head, convs) = f.split_last().unwrap();
            assert_eq!(*head, LayerForm::DenseFactorised);
            assert!(convs.iter().all(|f| matches!(f, LayerForm::ConvTiles | LayerForm::ConvPixelGhost)), "{f:?}");
        }
        assert_eq!(host(&a.k), host(&b.k), "same kernel, same numbers");
        // The spec's per-layer names are its layer indices, its parameters its state_dict keys.
        assert!(b.routes.iter().all(|r| r.params == [format!("{}.weight", r.name), format!("{}.bias", r.name)]));
        let oracle = reference_gram_net(&PlainSpec(&spec), &x, &y, &Loss::CrossEntropy).unwrap();
        let err = cos_err(&b.k, &oracle);
        assert!(err < COS_TOL_F64, "{:?}: {err:e}", model.config().arch);
        // Per-layer Grams sum to K.
        let sum = b.per_layer.iter().fold(b.k.zeros_like().unwrap(), |s, (_, t)| (s + t).unwrap());
        assert!(cos_err(&sum, &oracle) < COS_TOL_F64);
        // Cross Grams: the spec through the kernel equals the oracle's G_a G_bᵀ.
        let (xb, yb) = (flat_input(13, shape, 5), rand_labels(13, 5, 6, &Device::Cpu));
        let c = cross_gram(&spec, &x, &y, &xb, &yb, &opts).unwrap();
        assert!(c.routes.iter().all(|r| r.form != LayerForm::Materialised), "{:?}", c.routes);
        let ga = reference_per_example_gradients_net(&PlainSpec(&spec), &x, &y, &Loss::CrossEntropy).unwrap();
        let gb = reference_per_example_gradients_net(&PlainSpec(&spec), &xb, &yb, &Loss::CrossEntropy).unwrap();
        let want = host(&ga.matmul(&gb.t().unwrap()).unwrap());
        let got = host(&c.k);
        for i in 0..29 {
            for j in 0..13 {
                let scale = (c.norms_a[i] * c.norms_b[j]).max(1e-300);
                assert!((got[i][j] - want[i][j]).abs() / scale < COS_TOL_F64, "cross ({i},{j})");
            }
        }
    }
}

fn spec_model(json: &str, seed: u64) -> SpecModel {
    let spec: ModelSpec = serde_json::from_str(json).unwrap();
    SpecModel::new(&spec, seed, DType::F64, &Device::Cpu).unwrap()
}

/// Layers the kernels do not take (a stride-2 conv, overlapping pooling, GELU, a conv without
/// bias) keep the spec off the chain; the general engine then computes the same Gram as the
/// oracle. Identity, Dropout and Flatten do not.
#[test]
fn specs_outside_the_chain_run_the_general_engine_exactly() {
    let conv = |extra: &str| {
        format!(
            r#"{{"input": [2, 8, 8], "layers": [
            {{"type": "Conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1{extra}}},
            {{"type": "ReLU"}}, {{"type": "MaxPool2d", "kernel_size": 2}}, {{"type": "Dropout", "p": 0.5}},
            {{"type": "Flatten"}}, {{"type": "Identity"}}, {{"type": "Linear", "in_features": 48, "out_features": 4}}]}}"#
        )
    };
    let chain = spec_model(&conv(""), 1);
    assert!(chain.chain().is_some(), "Dropout, Identity and Flatten keep the chain");
    let no_bias = spec_model(&conv(r#", "bias": false"#), 1);
    assert!(no_bias.chain().is_none());
    let overlapping = spec_model(
        r#"{"input": [2, 8, 8], "layers": [
        {"type": "Conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 3, "stride": 2},
        {"type": "Flatten"}, {"type": "Linear", "in_features": 27, "out_features": 4}]}"#,
        2,
    );
    assert!(overlapping.chain().is_none());
    let strided = spec_model(
        r#"{"input": [2, 8, 8], "layers": [
        {"type": "Conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1, "stride": 2},
        {"type": "ReLU"}, {"type": "Flatten"}, {"type": "Linear", "in_features": 48, "out_features": 4}]}"#,
        3,
    );
    assert!(strided.chain().is_none());
    let gelu = spec_model(
        r#"{"input": [12], "layers": [{"type": "Linear", "in_features": 12, "out_features": 7},
        {"type": "GELU"}, {"type": "Linear", "in_features": 7, "out_features": 4}]}"#,
        4,
    );
    assert!(gelu.chain().is_none());
    for (name, m) in [("chain", &chain), ("no bias", &no_bias), ("overlapping", &overlapping), ("strided", &strided)] {
        let x = flat_input(11, InputShape::new(2, 8, 8), 9);
        let y = rand_labels(11, 4, 3, &Device::Cpu);
        let r = gram(m, &x, &y, &GramOptions::default()).unwrap();
        let oracle = reference_gram_net(&PlainSpec(m), &x, &y, &Loss::CrossEntropy).unwrap();
        assert!(cos_err(&r.k, &oracle) < COS_TOL_F64, "{name}");
        let kernel = forms(&r).contains(&LayerForm::ConvTiles) || forms(&r).contains(&LayerForm::ConvPixelGhost);
        assert_eq!(kernel, name == "chain", "{name}: {:?}", r.routes);
    }
    let x = rand_input(9, InputShape::new(1, 1, 12), 4, DType::F64, &Device::Cpu);
    let y = rand_labels(9, 4, 5, &Device::Cpu);
    let r = gram(&gelu, &x, &y, &GramOptions::default()).unwrap();
    assert!(cos_err(&r.k, &reference_gram_net(&PlainSpec(&gelu), &x, &y, &Loss::CrossEntropy).unwrap()) < COS_TOL_F64);
}

/// The dense cross kernel (several row strips and column tiles) against the oracle's
/// `G_a G_bᵀ`, its norms against the oracle's rows, per-layer parts summing to it, and the same
/// bits with 1, 2 and 3 threads.
#[test]
fn dense_cross_kernel_matches_the_oracle_across_tiles_and_threads() {
    let shape = InputShape::new(1, 4, 5);
    let model = preset(ArchSpec::Mlp { hidden: vec![9, 7] }, shape, 4, 11);
    let (n, m) = (300, 530);
    let (xa, ya) = (flat_input(n, shape, 1), rand_labels(n, 4, 2, &Device::Cpu));
    let (xb, yb) = (flat_input(m, shape, 3), rand_labels(m, 4, 4, &Device::Cpu));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| cross_gram(&model, &xa, &ya, &xb, &yb, &GramOptions::default()).unwrap())
    };
    let c = run(2);
    assert!(forms_of(&c.routes).iter().all(|f| *f == LayerForm::DenseFactorised));
    for t in [1, 3] {
        assert_eq!(host(&run(t).k), host(&c.k), "threads {t}");
    }
    let ga = reference_per_example_gradients_net(&model, &xa, &ya, &Loss::CrossEntropy).unwrap();
    let gb = reference_per_example_gradients_net(&model, &xb, &yb, &Loss::CrossEntropy).unwrap();
    let want = host(&ga.matmul(&gb.t().unwrap()).unwrap());
    let got = host(&c.k);
    let na = host(&ga.sqr().unwrap().sum_keepdim(1).unwrap());
    let nb = host(&gb.sqr().unwrap().sum_keepdim(1).unwrap());
    for i in 0..n {
        assert!((c.norms_a[i] - na[i][0].sqrt()).abs() <= 1e-12 * (1.0 + na[i][0].sqrt()), "norm a {i}");
        for j in 0..m {
            let scale = (na[i][0] * nb[j][0]).sqrt().max(1e-300);
            assert!((got[i][j] - want[i][j]).abs() / scale < COS_TOL_F64, "({i},{j})");
        }
    }
    for j in 0..m {
        assert!((c.norms_b[j] - nb[j][0].sqrt()).abs() <= 1e-12 * (1.0 + nb[j][0].sqrt()), "norm b {j}");
    }
    let sum = c.per_layer.iter().fold(c.k.zeros_like().unwrap(), |s, (_, t)| (s + t).unwrap());
    let diff = (sum - &c.k).unwrap().abs().unwrap().max_keepdim(0).unwrap().max_keepdim(1).unwrap();
    assert!(diff.flatten_all().unwrap().to_vec1::<f64>().unwrap()[0] < 1e-12);
}

fn forms_of(r: &[stiff_gradkernel::Route]) -> Vec<LayerForm> {
    r.iter().map(|u| u.form).collect()
}

/// candle's fused `candle_nn::layer_norm` (f32 only) has no backward: the layers before it would get no
/// gradient. The planning pass refuses, naming them; the oracle refuses too (it used to read the
/// missing gradient as 0 and agree). With the tapped `nn::layer_norm` the same net is exact.
#[test]
fn a_layer_norm_without_backward_is_refused_not_zeroed() {
    struct Net<L: Module> {
        embed: nn::Linear,
        norm: L,
        head: nn::Linear,
    }
    impl<L: Module> Module for Net<L> {
        fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
            self.head.forward(&nn::relu(&self.norm.forward(&self.embed.forward(x)?)?)?)
        }
    }
    let x = rand_input(6, InputShape::new(1, 1, 10), 1, DType::F32, &Device::Cpu).flatten_from(1).unwrap();
    let y = rand_labels(6, 3, 2, &Device::Cpu);
    // Fused candle layer norm.
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let net = Net {
        embed: nn::linear(10, 8, vb.pp("embed")).unwrap(),
        norm: candle_nn::layer_norm(8, 1e-5, vb.pp("norm")).unwrap(),
        head: nn::linear(8, 3, vb.pp("head")).unwrap(),
    };
    let wrapped = ModuleNet::new(&net, &vars);
    let err = gram(&wrapped, &x, &y, &GramOptions::default()).unwrap_err();
    let GradKernelError::NoGradient { params, layers } = &err else { panic!("expected NoGradient, got {err}") };
    assert!(params.contains("embed.weight") && params.contains("embed.bias"), "{err}");
    assert!(layers.contains("embed"), "{err}");
    assert!(!params.contains("head"), "the head does get its gradient: {err}");
    assert!(err.to_string().contains("layer_norm"), "the message names the likely cause: {err}");
    let oracle = reference_gram_net(&wrapped, &x, &y, &Loss::CrossEntropy);
    assert!(matches!(oracle, Err(GradKernelError::MissingGradient(_))), "the oracle must refuse too");
    // The tapped layer norm takes the same arguments and is exact.
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let net = Net {
        embed: nn::linear(10, 8, vb.pp("embed")).unwrap(),
        norm: nn::layer_norm(8, 1e-5, vb.pp("norm")).unwrap(),
        head: nn::linear(8, 3, vb.pp("head")).unwrap(),
    };
    let wrapped = ModuleNet::new(&net, &vars);
    let r = gram(&wrapped, &x, &y, &GramOptions::default()).unwrap();
    let oracle = reference_gram_net(&wrapped, &x, &y, &Loss::CrossEntropy).unwrap();
    assert!(cos_err(&r.k, &oracle) < COS_TOL_F32);
    assert_eq!(r.routes.iter().filter(|u| u.form == LayerForm::Fallback).count(), 0, "{:?}", r.routes);
}
