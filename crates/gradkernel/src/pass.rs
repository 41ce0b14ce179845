//! One batched forward and one batched backward over a chunk of examples: every layer's input
//! `A_l` and pre-activation delta `D_l = dL/dz_l` of the **summed** objective, so row `i` of `D_l`
//! is example `i`'s own delta (no `1/N` factor anywhere).

use candle::{DType, Tensor, D};
use stiff_models::{LayerKind, Model};

use crate::{DeltaRoute, GradKernelError, Result};

/// What is differentiated, per example, at the logits.
#[derive(Clone, Copy)]
pub(crate) enum Seed<'a> {
    /// Cross-entropy with these labels: u32 `(n)`.
    CrossEntropy(&'a Tensor),
    /// `sum_c w[i,c] * logits[i,c]` with a fixed `w: (n, C)` (e.g. a one-hot column for Jacobians).
    Fixed(&'a Tensor),
}

/// The result of [`forward_backward`] for `n` examples.
pub(crate) struct Pass {
    /// Per layer, the input as the layer sees it: `(n, in)` or `(n, C, H, W)` (detached).
    pub inputs: Vec<Tensor>,
    /// Per layer, `dObjective/dz`: `(n, out)` or `(n, C_out, H, W)` (before pooling).
    pub deltas: Vec<Tensor>,
    /// `(n, C)`.
    pub logits: Tensor,
}

/// Whether the hand-written backward applies (dense layers only).
pub(crate) fn manual_supported(model: &Model) -> bool {
    model.layers().iter().all(|l| l.kind == LayerKind::Dense)
}

/// x: prepared input `(n, ...)` as [`Model::prepare_input`] returns it.
pub(crate) fn forward_backward(model: &Model, x: &Tensor, seed: Seed, route: DeltaRoute) -> Result<Pass> {
    let manual = match route {
        DeltaRoute::Auto => manual_supported(model),
        DeltaRoute::Autograd => false,
        DeltaRoute::Manual => {
            if !manual_supported(model) {
                return Err(GradKernelError::Unsupported(
                    "the hand-written backward covers dense layers only; use DeltaRoute::Autograd for conv nets".into(),
                ));
            }
            true
        }
    };
    if manual {
        manual_pass(model, x, seed)
    } else {
        autograd_pass(model, x, seed)
    }
}

/// Gradient of the summed objective with respect to the logits: `softmax - onehot` or the fixed weights.
fn seed_grad(logits: &Tensor, seed: Seed) -> Result<Tensor> {
    Ok(match seed {
        Seed::CrossEntropy(y) => {
            let (n, c) = logits.dims2()?;
            let p = candle_nn::ops::softmax_last_dim(logits)?;
            let onehot = candle_nn::encoding::one_hot(y.to_dtype(DType::U32)?, c, 1f32, 0f32)?;
            debug_assert_eq!(onehot.dims(), &[n, c]);
            (p - onehot.to_dtype(logits.dtype())?)?
        }
        Seed::Fixed(w) => w.to_dtype(logits.dtype())?,
    })
}

/// Probe route: zero `Var`s on every pre-activation, candle autograd on the summed objective.
fn autograd_pass(model: &Model, x: &Tensor, seed: Seed) -> Result<Pass> {
    let taps = model.forward_taps(x, true)?;
    let objective = match seed {
        Seed::CrossEntropy(y) => stiff_models::loss::cross_entropy_sum(&taps.logits, y)?,
        Seed::Fixed(w) => (&taps.logits * w.to_dtype(taps.logits.dtype())?.detach())?.sum_all()?,
    };
    let grads = objective.backward()?;
    let deltas = taps
        .probes
        .iter()
        .zip(model.layers())
        .map(|(p, l)| {
            grads.get(p.as_tensor()).map(|g| g.detach()).ok_or_else(|| GradKernelError::MissingGradient(l.name.clone()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Pass { inputs: taps.inputs.iter().map(Tensor::detach).collect(), deltas, logits: taps.logits.detach() })
}

/// Hand-written backward for dense nets: `D_L = dObj/dlogits`,
/// `D_{l-1} = (D_l W_l) o relu'(z_{l-1})`. No autograd graph is built.
fn manual_pass(model: &Model, x: &Tensor, seed: Seed) -> Result<Pass> {
    let layers = model.layers();
    let mut inputs = Vec::with_capacity(layers.len());
    let mut pre = Vec::with_capacity(layers.len());
    let mut a = x.detach();
    if a.rank() > 2 {
        a = a.flatten_from(1)?;
    }
    for l in layers {
        let w = l.weight.as_tensor().detach();
        let b = l.bias.as_tensor().detach();
        let z = a.matmul(&w.t()?)?.broadcast_add(&b)?;
        inputs.push(a);
        a = if l.relu { z.relu()? } else { z.clone() };
        pre.push(z);
    }
    let logits = a;
    let mut deltas = vec![seed_grad(&logits, seed)?];
    for l in (1..layers.len()).rev() {
        let w = layers[l].weight.as_tensor().detach();
        let mut d = deltas.last().expect("non-empty").matmul(&w)?;
        if layers[l - 1].relu {
            // relu'(z) = 1[z > 0], the convention of `stiff_models::ops::relu` (the model's forward).
            let mask = pre[l - 1].gt(0.0)?.to_dtype(d.dtype())?;
            d = (d * mask)?;
        }
        deltas.push(d);
    }
    deltas.reverse();
    Ok(Pass { inputs, deltas, logits })
}

/// Per-example cross-entropy from logits `(n, C)` and labels u32 `(n)`, as f64 on the host.
pub(crate) fn per_example_loss(logits: &Tensor, y: &Tensor) -> Result<Vec<f64>> {
    let l = stiff_models::loss::cross_entropy_per_example(logits, y)?;
    Ok(l.to_dtype(DType::F64)?.to_device(&candle::Device::Cpu)?.to_vec1::<f64>()?)
}

/// Unfolds `a: (n, C, H, W)` into patches `(n, C*k*k, H*W)` for a stride-1 `k`x`k` conv with
/// `padding` on each side and output size `H x W` ("same" padding). The patch index runs over
/// `(c, ki, kj)` in row-major order, matching the weight layout `(out, in, k, k)`.
pub(crate) fn unfold(a: &Tensor, kernel: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, w) = a.dims4()?;
    let (ho, wo) = (h + 2 * padding + 1 - kernel, w + 2 * padding + 1 - kernel);
    let padded = a.pad_with_zeros(2, padding, padding)?.pad_with_zeros(3, padding, padding)?;
    let mut cols = Vec::with_capacity(kernel * kernel);
    for ki in 0..kernel {
        for kj in 0..kernel {
            cols.push(padded.narrow(2, ki, ho)?.narrow(3, kj, wo)?);
        }
    }
    // (n, C, k*k, ho, wo) -> (n, C*k*k, ho*wo)
    Ok(Tensor::stack(&cols, 2)?.reshape((n, c * kernel * kernel, ho * wo))?)
}

/// Sum over the last dim, used for conv bias gradients: `(n, C, S) -> (n, C)`.
pub(crate) fn sum_positions(d: &Tensor) -> Result<Tensor> {
    Ok(d.sum(D::Minus1)?)
}
