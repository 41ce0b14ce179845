//! The oracle: one backward pass per example through candle autograd on the plain forward
//! (no probes, no unfolding, no factorisation), then explicit dot products in f64.

use candle::{DType, Device, Tensor};
use stiff_models::Model;

use crate::error::{GradKernelError, Result};
use crate::inputs::validate;

/// Per-example loss gradients by one backward per example: `(N, P)` f64 on the CPU, columns in
/// [`Model::vars`] order (per layer: weight row-major, then bias).
pub fn reference_per_example_gradients(model: &Model, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let set = validate(model, model.config().num_classes, x, Some(y), "reference inputs")?;
    let vars = model.vars();
    let names: Vec<String> = model
        .layers()
        .iter()
        .flat_map(|l| {
            let (w, b) = l.keys();
            [w, b]
        })
        .collect();
    let mut rows = Vec::with_capacity(set.n);
    for i in 0..set.n {
        let xi = set.x.narrow(0, i, 1)?;
        let yi = set.y.narrow(0, i, 1)?;
        let loss = stiff_models::loss::cross_entropy_sum(&model.forward(&xi)?, &yi)?;
        let grads = loss.backward()?;
        let mut row = Vec::new();
        for (v, name) in vars.iter().zip(names.iter()) {
            // A missing gradient is an error, never a zero the kernels could agree with.
            let g = grads.get(v.as_tensor()).ok_or_else(|| GradKernelError::MissingGradient(name.clone()))?;
            row.push(g.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.flatten_all()?);
        }
        rows.push(Tensor::cat(&row, 0)?);
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// The Gram matrix `K[i,j] = g_i . g_j` from [`reference_per_example_gradients`]: `(N, N)` f64 on the CPU.
/// Slow (N backward passes, N x P memory); for tests and cross-checks.
pub fn reference_gram(model: &Model, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let g = reference_per_example_gradients(model, x, y)?;
    Ok(g.matmul(&g.t()?)?)
}
