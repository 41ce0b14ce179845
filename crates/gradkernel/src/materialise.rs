//! Materialised per-example gradients `(N, P)` and logit Jacobians `(N, C, P)`, chunked.

use candle::{DType, Tensor};
use stiff_models::Model;

use crate::engine::{acc_dtype, pass_bytes, validate};
use crate::factors::layer_grads;
use crate::pass::{forward_backward, Pass, Seed};
use crate::{GradKernelError, GramOptions, Result};

/// All layers' per-example gradients of one pass, in [`Model::vars`] order: `(n, P)`.
fn pass_grads(model: &Model, pass: &Pass, acc: DType) -> Result<Tensor> {
    let parts = model
        .layers()
        .iter()
        .enumerate()
        .map(|(l, layer)| layer_grads(layer, pass, l, acc))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 1)?)
}

/// Largest chunk whose pass and `per_example` output bytes fit in what the output leaves free.
fn chunk_for(model: &Model, budget: usize, output: usize, per_example: usize, n: usize) -> usize {
    let free = budget.saturating_sub(output);
    let pe = pass_bytes(model) + 3 * per_example;
    (free / pe.max(1)).clamp(1, n)
}

/// Per-example loss gradients `g_i = dL(f(x_i), y_i)/dW`, all parameters flattened in
/// [`Model::vars`] order (per layer: weight row-major, then bias): `(N, P)` on the model's device,
/// in f64 if the model is f64 or `opts.accumulate_f64`, else the model's dtype.
///
/// x: `(N, ...)`; y: integer labels `(N)`. Fails with [`GradKernelError::OverBudget`] when
/// `N * P` values exceed `opts.memory_budget_bytes`.
pub fn per_example_gradients(model: &Model, x: &Tensor, y: &Tensor, opts: &GramOptions) -> Result<Tensor> {
    let set = validate(model, x, Some(y), "per_example_gradients inputs")?;
    let acc = acc_dtype(model, opts);
    let row = model.num_params() * acc.size_in_bytes();
    let output = set.n.saturating_mul(row);
    if output > opts.memory_budget_bytes {
        return Err(GradKernelError::OverBudget {
            what: format!("per-example gradients ({} x {})", set.n, model.num_params()),
            needed: output,
            budget: opts.memory_budget_bytes,
        });
    }
    let c = chunk_for(model, opts.memory_budget_bytes, output, row, set.n);
    let mut parts = Vec::new();
    for s in (0..set.n).step_by(c) {
        let len = c.min(set.n - s);
        let (xc, yc) = (set.x.narrow(0, s, len)?, set.y.narrow(0, s, len)?);
        let pass = forward_backward(model, &xc, Seed::CrossEntropy(&yc), opts.delta_route)?;
        parts.push(pass_grads(model, &pass, acc)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Per-example Jacobians of the logits, `J[i, c, :] = d logit_c(x_i) / dW` in [`Model::vars`]
/// order: `(N, C, P)`, dtype as in [`per_example_gradients`]. Meant for small models: fails with
/// [`GradKernelError::OverBudget`] when `N * C * P` values exceed the memory budget.
pub fn logit_jacobians(model: &Model, x: &Tensor, opts: &GramOptions) -> Result<Tensor> {
    let set = validate(model, x, None, "logit_jacobians inputs")?;
    let acc = acc_dtype(model, opts);
    let classes = model.config().num_classes;
    let row = classes * model.num_params() * acc.size_in_bytes();
    let output = set.n.saturating_mul(row);
    if output > opts.memory_budget_bytes {
        return Err(GradKernelError::OverBudget {
            what: format!("logit Jacobians ({} x {} x {})", set.n, classes, model.num_params()),
            needed: output,
            budget: opts.memory_budget_bytes,
        });
    }
    let c = chunk_for(model, opts.memory_budget_bytes, output, row, set.n);
    let mut parts = Vec::new();
    for s in (0..set.n).step_by(c) {
        let len = c.min(set.n - s);
        let xc = set.x.narrow(0, s, len)?;
        let mut per_class = Vec::with_capacity(classes);
        for k in 0..classes {
            // Seed e_k on every row: the summed objective's deltas are each example's d logit_k.
            let w = Tensor::ones(len, model.dtype(), model.device())?.unsqueeze(1)?.pad_with_zeros(
                1,
                k,
                classes - 1 - k,
            )?;
            let pass = forward_backward(model, &xc, Seed::Fixed(&w), opts.delta_route)?;
            per_class.push(pass_grads(model, &pass, acc)?);
        }
        parts.push(Tensor::stack(&per_class, 1)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}
