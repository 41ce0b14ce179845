//! The oracle: one backward pass per example through candle autograd on the plain forward
//! (no probes, no unfolding, no factorisation), then explicit dot products in f64.

use candle::{DType, Device, Tensor};
use stiff_models::Model;

use crate::engine::validate;
use crate::Result;

/// Per-example loss gradients by one backward per example: `(N, P)` f64 on the CPU, columns in
/// [`Model::vars`] order (per layer: weight row-major, then bias).
pub fn reference_per_example_gradients(model: &Model, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let set = validate(model, x, Some(y), "reference inputs")?;
    let vars = model.vars();
    let mut rows = Vec::with_capacity(set.n);
    for i in 0..set.n {
        let xi = set.x.narrow(0, i, 1)?;
        let yi = set.y.narrow(0, i, 1)?;
        let loss = stiff_models::loss::cross_entropy_sum(&model.forward(&xi)?, &yi)?;
        let grads = loss.backward()?;
        let mut row = Vec::new();
        for v in &vars {
            let g = match grads.get(v.as_tensor()) {
                Some(g) => g.clone(),
                None => v.as_tensor().zeros_like()?,
            };
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
