//! The paper's presets are instances of the general description: `gram(&Model)` runs the general
//! engine (tapped layers, probe deltas) unless a specialised CPU kernel takes the call. Checked
//! here on inputs with flat regions, where the conventions bite: layer-0 units with bias 0 see
//! pre-activations of exactly 0 (relu'(0) = 0) and units with a positive bias give tied max-pool
//! windows (the gradient goes to the first maximum). Errors are in cosine units
//! `|dK_ij| / sqrt(K_ii K_jj)`, against the one-backward-per-example oracle (`reference_gram`).
#![allow(clippy::needless_range_loop)]

mod common;

use candle::{DType, Device, Tensor};
use common::*;
use stiff_gradkernel::{
    cross_gram, gram, per_example_gradients, reference_gram, GradKernelError, GramOptions, LayerForm, Method,
};
use stiff_models::{InputShape, LayerKind, Model, ModelConfig, Preset};

/// f64 end to end: only summation order separates the engine from the oracle.
const COS_TOL_F64: f64 = 1e-10;
/// f32 products of a few hundred thousand terms against the f64 oracle.
const COS_TOL_F32: f64 = 1e-4;

/// `(n, C, H, W)`: example 0 all 0 (a dense layer's pre-activations are then its bias), the
/// left half of every row of the others exactly 0, the rest uniform in (-1, 1).
fn flat_input(n: usize, shape: InputShape, seed: u64, dtype: DType) -> Tensor {
    let x = rand_input(n, shape, seed, DType::F64, &Device::Cpu);
    let (w, per) = (shape.width, shape.numel());
    let mask: Vec<f64> = (0..n * per).map(|k| if k < per || (k % per) % w < w / 2 { 0.0 } else { 1.0 }).collect();
    let mask = Tensor::from_vec(mask, (n, shape.channels, shape.height, shape.width), &Device::Cpu).unwrap();
    (x * mask).unwrap().to_dtype(dtype).unwrap()
}

/// Layer 0's bias: 0 on even units (pre-activations exactly 0 on flat patches), 0.1 on odd ones
/// (flat positive activations: tied pooling windows).
fn flat_biases(model: &Model) {
    let b = &model.layers()[0].bias;
    let v: Vec<f64> = (0..b.elem_count()).map(|i| if i % 2 == 0 { 0.0 } else { 0.1 }).collect();
    b.set(&Tensor::from_vec(v, b.elem_count(), &Device::Cpu).unwrap().to_dtype(b.dtype()).unwrap()).unwrap();
}

/// The premise of the flat-input tests: exact zeros at layer 0's ReLU, and (for conv nets) tied
/// 2x2 pooling windows with a positive maximum.
fn assert_conventions_bite(model: &Model, x: &Tensor) {
    let taps = model.forward_taps(x, false).unwrap();
    let z: Vec<f64> = taps.pre_activations[0].to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(z.iter().filter(|&&v| v == 0.0).count() > 10, "ReLU inputs at exactly 0");
    if let LayerKind::Conv2d { .. } = model.layers()[0].kind {
        let a = taps.pre_activations[0].relu().unwrap().to_dtype(DType::F64).unwrap();
        let (n, c, h, w) = a.dims4().unwrap();
        let v: Vec<f64> = a.flatten_all().unwrap().to_vec1().unwrap();
        let mut ties = 0;
        for p in 0..n * c {
            for i in (0..h - 1).step_by(2) {
                for j in (0..w - 1).step_by(2) {
                    let at = |di: usize, dj: usize| v[p * h * w + (i + di) * w + j + dj];
                    let m = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                    let count = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)].iter().filter(|&&u| u == m).count();
                    ties += usize::from(m > 0.0 && count > 1);
                }
            }
        }
        assert!(ties > 10, "tied pooling windows with a positive maximum: {ties}");
    }
}

fn flat_model(preset: Preset, shape: InputShape, dtype: DType) -> Model {
    let model = Model::new(&ModelConfig::preset(preset, shape, 10), 4, dtype, &Device::Cpu).unwrap();
    sgd_steps(&model, shape, 2, 0.05, 5);
    flat_biases(&model);
    model
}

/// fc4 and cnn4 in f64 through the general engine (`cpu_fast_path = false`), every method, and
/// a budget small enough to chunk: equal to the oracle in cosine units; per-layer Grams keep the
/// preset's layer names and sum to K.
#[test]
fn presets_through_the_general_engine_match_the_oracle_on_flat_inputs() {
    for (preset, shape) in [(Preset::Fc4, MNIST), (Preset::Cnn4, MNIST)] {
        let model = flat_model(preset, shape, DType::F64);
        let x = flat_input(7, shape, 11, DType::F64);
        let y = rand_labels(7, 10, 11, &Device::Cpu);
        assert_conventions_bite(&model, &x);
        let oracle = reference_gram(&model, &x, &y).unwrap();
        let names: Vec<String> = model.layers().iter().map(|l| l.name.clone()).collect();
        for method in [Method::Auto, Method::Factorised, Method::Materialised] {
            // The small budget chunks (materialised fc4 gradients are 5.2 MB per example in f64).
            let small = if preset == Preset::Fc4 && method == Method::Materialised { 16 << 20 } else { 6 << 20 };
            for budget in [2 << 30, small] {
                let opts = GramOptions::default()
                    .with_cpu_fast_path(false)
                    .with_method(method)
                    .with_memory_budget_bytes(budget);
                let r = gram(&model, &x, &y, &opts).unwrap();
                let e = cos_err(&r.k, &oracle);
                assert!(e < COS_TOL_F64, "{preset} {method:?} budget {budget}: cosine error {e:e}");
                let got: Vec<&String> = r.per_layer.iter().map(|(n, _)| n).collect();
                assert_eq!(got, names.iter().collect::<Vec<_>>(), "per-layer names are the preset's");
                let mut sum = r.per_layer[0].1.zeros_like().unwrap();
                for (_, p) in &r.per_layer {
                    sum = (sum + p).unwrap();
                }
                assert!(cos_err(&sum, &oracle) < COS_TOL_F64, "per-layer Grams sum to K");
                let forms: Vec<LayerForm> = r.routes.iter().map(|u| u.form).collect();
                match method {
                    Method::Materialised => assert!(forms.iter().all(|f| *f == LayerForm::Materialised)),
                    Method::Factorised if preset == Preset::Cnn4 => assert_eq!(forms[0], LayerForm::Ghost),
                    _ => assert_eq!(*forms.last().unwrap(), LayerForm::DenseFactorised),
                }
            }
        }
        // The cross Gram goes through the same engine: its square case is the Gram.
        let c = cross_gram(&model, &x, &y, &x, &y, &GramOptions::default()).unwrap();
        assert!(cos_err(&c.k, &oracle) < COS_TOL_F64);
    }
}

/// The hand-written CPU dense kernel and the general engine agree on fc6 (flat inputs), in f32
/// and f64, per layer and in the loss; both agree with the oracle. `DeltaRoute::Manual` proves
/// the kernel ran: it is refused wherever the kernel does not.
#[test]
#[allow(deprecated)]
fn cpu_dense_kernel_equals_the_general_engine_on_fc6() {
    for (dtype, n, tol) in [(DType::F64, 9, COS_TOL_F64), (DType::F32, 9, COS_TOL_F32)] {
        let model = flat_model(Preset::Fc6, MNIST, dtype);
        let x = flat_input(n, MNIST, 13, dtype);
        let y = rand_labels(n, 10, 13, &Device::Cpu);
        assert_conventions_bite(&model, &x);
        let manual = GramOptions::default().with_delta_route(stiff_gradkernel::DeltaRoute::Manual);
        let fast = gram(&model, &x, &y, &manual).unwrap();
        let general = gram(&model, &x, &y, &GramOptions::default().with_cpu_fast_path(false)).unwrap();
        let oracle = reference_gram(&model, &x, &y).unwrap();
        assert!(cos_err(&fast.k, &oracle) < tol, "kernel vs oracle");
        assert!(cos_err(&general.k, &oracle) < tol, "general engine vs oracle");
        assert!(cos_err(&fast.k, &general.k) < tol, "kernel vs general engine");
        assert_eq!(fast.per_layer.len(), general.per_layer.len());
        for ((na, a), (nb, b)) in fast.per_layer.iter().zip(&general.per_layer) {
            assert_eq!(na, nb);
            let (ha, hb) = (host(a), host(b));
            let scale = host(&oracle).iter().enumerate().map(|(i, r)| r[i]).fold(0f64, f64::max);
            for i in 0..n {
                for j in 0..n {
                    assert!((ha[i][j] - hb[i][j]).abs() <= tol * scale, "{na}[{i},{j}]");
                }
            }
        }
        for (a, b) in fast.loss_per_example.iter().zip(&general.loss_per_example) {
            assert!((a - b).abs() < 1e-5 * b.abs().max(1.0));
        }
    }
}

/// `DeltaRoute::Manual` (deprecated) is an error wherever the hand-written backward does not run,
/// never a silent switch to autograd.
#[test]
#[allow(deprecated)]
fn manual_delta_route_is_refused_where_no_hand_backward_runs() {
    let dev = Device::Cpu;
    let manual = GramOptions::default().with_delta_route(stiff_gradkernel::DeltaRoute::Manual);
    let fc = Model::new(&ModelConfig::preset(Preset::Fc4, MNIST, 10), 0, DType::F32, &dev).unwrap();
    let cnn = Model::new(&ModelConfig::preset(Preset::Cnn4, MNIST, 10), 0, DType::F32, &dev).unwrap();
    let x = rand_input(3, MNIST, 0, DType::F32, &dev);
    let y = rand_labels(3, 10, 0, &dev);
    let unsupported =
        |r: Result<(), GradKernelError>| matches!(r, Err(GradKernelError::Unsupported(m)) if m.contains("Manual"));
    assert!(gram(&fc, &x, &y, &manual).is_ok(), "the dense kernel runs the hand backward");
    let no_kernel = manual.clone().with_cpu_fast_path(false);
    assert!(unsupported(gram(&fc, &x, &y, &no_kernel).map(|_| ())));
    assert!(unsupported(gram(&cnn, &x, &y, &manual).map(|_| ())));
    assert!(unsupported(cross_gram(&fc, &x, &y, &x, &y, &manual).map(|_| ())));
    assert!(unsupported(per_example_gradients(&fc, &x, &y, &manual).map(|_| ())));
}

/// A tapped weight that is also used in a plain op (which the tape does not see): the probe
/// check moves it to the exact fallback, so the Gram still equals the oracle.
#[test]
fn a_tapped_weight_used_in_a_plain_op_goes_to_the_fallback() {
    use candle::Var;
    use stiff_gradkernel::{gram_net, reference_gram_net, LayerForm, Loss, Network};
    struct Twice {
        w: Var,
        b: Var,
        plain_use: bool,
    }
    impl Network for Twice {
        fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
            let h = stiff_gradkernel::nn::linear_forward("fc", x, self.w.as_tensor(), Some(self.b.as_tensor()))?;
            if !self.plain_use {
                return Ok(h);
            }
            h + x.matmul(&self.w.as_tensor().t()?)?.tanh()?
        }
        fn parameters(&self) -> Vec<(String, Var)> {
            vec![("fc.weight".into(), self.w.clone()), ("fc.bias".into(), self.b.clone())]
        }
    }
    let dev = Device::Cpu;
    let w = Var::from_tensor(&rand_input(3, InputShape::new(1, 1, 5), 1, DType::F64, &dev).reshape((3, 5)).unwrap())
        .unwrap();
    let b = Var::from_tensor(&Tensor::new(&[0.1f64, -0.2, 0.3], &dev).unwrap()).unwrap();
    let x = rand_input(6, InputShape::new(1, 1, 5), 2, DType::F64, &dev).reshape((6, 5)).unwrap();
    let y = rand_labels(6, 3, 2, &dev);
    for plain_use in [false, true] {
        let net = Twice { w: w.clone(), b: b.clone(), plain_use };
        let r = gram_net(&net, &x, &y, &Loss::CrossEntropy, &GramOptions::default()).unwrap();
        let oracle = reference_gram_net(&net, &x, &y, &Loss::CrossEntropy).unwrap();
        let e = cos_err(&r.k, &oracle);
        assert!(e < COS_TOL_F64, "plain_use={plain_use}: cosine error {e:e}");
        let fallback = r.routes.iter().any(|u| u.form == LayerForm::Fallback && u.params.contains(&"fc.weight".into()));
        assert_eq!(fallback, plain_use, "routes {:?}", r.routes);
    }
}
