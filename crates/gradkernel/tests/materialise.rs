//! Materialised gradients, Jacobians, the finite-difference check and typed errors.
#![allow(clippy::needless_range_loop)] // explicit (i, j) loops read like the matrix maths

mod common;

use candle::{DType, Device, Tensor};
use common::*;
use stiff_gradkernel::{
    gram, logit_jacobians, per_example_gradients, reference_per_example_gradients, GradKernelError, GramOptions,
};
use stiff_models::{ArchSpec, InputShape, Model, ModelConfig, Preset};

/// f64 end to end: rounding only.
const TOL_F64: f64 = 1e-10;
/// Central finite difference: O(eps^2) truncation relative to |K| (eps = 1e-4).
const TOL_FD: f64 = 1e-6;

fn per_example_gradients_match(dev: &Device) -> anyhow::Result<()> {
    for (preset, shape) in [(Preset::Fc4, MNIST), (Preset::Cnn4, MNIST)] {
        let model = Model::new(&ModelConfig::preset(preset, shape, 10), 2, DType::F64, dev)?;
        let x = rand_input(5, shape, 3, DType::F64, dev);
        let y = rand_labels(5, 10, 3, dev);
        let g = per_example_gradients(&model, &x, &y, &GramOptions::default())?;
        assert_eq!(g.dims(), &[5, model.num_params()]);
        // Oracle: one autograd backward per example, same parameter order (Model::vars).
        assert!(rel_err(&g, &reference_per_example_gradients(&model, &x, &y)?) < TOL_F64);
    }
    Ok(())
}
test_device!(per_example_gradients_match, per_example_gradients_cpu, per_example_gradients_cuda);

fn jacobians_match(dev: &Device) -> anyhow::Result<()> {
    let cfg = ModelConfig::new(ArchSpec::Cnn { channels: vec![3, 4], kernel: 3, pool: 2 }, InputShape::new(2, 6, 6), 4);
    for cfg in [cfg, ModelConfig::new(ArchSpec::Mlp { hidden: vec![7, 5] }, InputShape::new(1, 3, 3), 3)] {
        let model = Model::new(&cfg, 1, DType::F64, dev)?;
        let x = rand_input(3, cfg.input, 5, DType::F64, dev);
        let j = logit_jacobians(&model, &x, &GramOptions::default())?;
        let c = cfg.num_classes;
        assert_eq!(j.dims(), &[3, c, model.num_params()]);
        // Oracle: autograd of one logit of one example at a time.
        for i in 0..3 {
            let logits = model.forward(&x.narrow(0, i, 1)?)?;
            for k in 0..c {
                let grads = logits.narrow(1, k, 1)?.sum_all()?.backward()?;
                let row: Vec<Tensor> = model
                    .vars()
                    .iter()
                    .map(|v| grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_device(&Device::Cpu).unwrap())
                    .collect();
                let expect = Tensor::cat(&row, 0)?.unsqueeze(0)?;
                let got = j.get(i)?.get(k)?.unsqueeze(0)?;
                assert!(rel_err(&got, &expect) < TOL_F64, "example {i} class {k}");
            }
        }
    }
    Ok(())
}
test_device!(jacobians_match, jacobians_cpu, jacobians_cuda);

/// A step `-eps g_i` changes example j's loss by `-eps K[i,j] + O(eps^2)`; the central difference
/// `(L_j(W - eps g_i) - L_j(W + eps g_i)) / (2 eps)` removes the even orders.
#[test]
fn finite_difference_matches_gram() {
    let dev = Device::Cpu;
    let cfg = ModelConfig::new(ArchSpec::Cnn { channels: vec![2], kernel: 3, pool: 2 }, InputShape::new(1, 5, 5), 3);
    let cfg_fc = ModelConfig::new(ArchSpec::Mlp { hidden: vec![6, 4] }, InputShape::new(1, 3, 3), 3);
    for cfg in [cfg, cfg_fc] {
        let model = Model::new(&cfg, 9, DType::F64, &dev).unwrap();
        let x = rand_input(4, cfg.input, 6, DType::F64, &dev);
        let y = rand_labels(4, 3, 6, &dev);
        let r = gram(&model, &x, &y, &GramOptions::default()).unwrap();
        let g = per_example_gradients(&model, &x, &y, &GramOptions::default()).unwrap();
        let k = host(&r.k);
        let scale = k.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
        let eps = 1e-4;
        let loss_after = |i: usize, sign: f64| -> Vec<f64> {
            let m = model.deep_clone().unwrap();
            let gi = g.get(i).unwrap();
            let mut off = 0;
            for v in m.vars() {
                let n = v.elem_count();
                let step = gi.narrow(0, off, n).unwrap().reshape(v.shape()).unwrap();
                v.set(&(v.as_tensor() - (step * (sign * eps)).unwrap()).unwrap()).unwrap();
                off += n;
            }
            stiff_models::loss::cross_entropy_per_example(&m.forward(&x).unwrap(), &y).unwrap().to_vec1().unwrap()
        };
        for i in 0..4 {
            let (plus, minus) = (loss_after(i, 1.0), loss_after(i, -1.0));
            for j in 0..4 {
                let dl = (plus[j] - minus[j]) / (2.0 * eps);
                assert!((dl + k[i][j]).abs() < TOL_FD * scale.max(1.0), "i={i} j={j}: {dl} vs -{}", k[i][j]);
            }
        }
    }
}

#[test]
#[allow(deprecated)] // DeltaRoute::Manual on a conv net: refused
fn bad_inputs_are_typed_errors() {
    let dev = Device::Cpu;
    let model = Model::new(&ModelConfig::preset(Preset::Fc4, MNIST, 10), 0, DType::F32, &dev).unwrap();
    let x = rand_input(3, MNIST, 0, DType::F32, &dev);
    let opts = GramOptions::default();
    let y_bad = Tensor::new(&[0u32, 10, 1], &dev).unwrap();
    assert!(matches!(
        gram(&model, &x, &y_bad, &opts),
        Err(GradKernelError::LabelOutOfRange { index: 1, label: 10, classes: 10, .. })
    ));
    let y_neg = Tensor::new(&[0i64, -1, 1], &dev).unwrap();
    assert!(matches!(gram(&model, &x, &y_neg, &opts), Err(GradKernelError::LabelOutOfRange { index: 1, .. })));
    let y_short = Tensor::new(&[0u32, 1], &dev).unwrap();
    assert!(matches!(gram(&model, &x, &y_short, &opts), Err(GradKernelError::Shape { .. })));
    let y_float = Tensor::new(&[0f32, 1., 2.], &dev).unwrap();
    assert!(matches!(gram(&model, &x, &y_float, &opts), Err(GradKernelError::Unsupported(_))));
    let empty = Tensor::zeros((0, 784), DType::F32, &dev).unwrap();
    let y_empty = Tensor::zeros(0, DType::U32, &dev).unwrap();
    assert!(matches!(gram(&model, &empty, &y_empty, &opts), Err(GradKernelError::Empty(_))));
    let wrong = Tensor::zeros((3, 100), DType::F32, &dev).unwrap();
    let y = Tensor::new(&[0u32, 1, 2], &dev).unwrap();
    assert!(matches!(gram(&model, &wrong, &y, &opts), Err(GradKernelError::Model(_))));
    // fc4 has ~648k parameters: 3 examples need ~7.8 MB of f32 gradients.
    let tight = GramOptions::default().with_memory_budget_bytes(1 << 20);
    assert!(matches!(per_example_gradients(&model, &x, &y, &tight), Err(GradKernelError::OverBudget { .. })));
    assert!(matches!(
        gram(&model, &x, &y, &GramOptions::default().with_memory_budget_bytes(1000)),
        Err(GradKernelError::OverBudget { .. })
    ));
    let manual = GramOptions::default().with_delta_route(stiff_gradkernel::DeltaRoute::Manual);
    let cnn = Model::new(&ModelConfig::preset(Preset::Cnn4, MNIST, 10), 0, DType::F32, &dev).unwrap();
    assert!(matches!(gram(&cnn, &x, &y, &manual), Err(GradKernelError::Unsupported(_))));
}
