//! Cross-entropy losses. The gradient kernel needs the **summed** loss (one row of deltas per
//! example); `candle_nn::loss::cross_entropy` is mean-reduced, hence these.

use candle::{Tensor, D};

use crate::Result;

/// Per-example cross-entropy. logits: `(N, C)`, labels: u32 `(N)` → `(N)`.
pub fn cross_entropy_per_example(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let idx = labels.to_dtype(candle::DType::U32)?.unsqueeze(1)?;
    Ok(logp.gather(&idx, 1)?.squeeze(1)?.neg()?)
}

/// Summed cross-entropy over the batch (a scalar).
pub fn cross_entropy_sum(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(cross_entropy_per_example(logits, labels)?.sum_all()?)
}

/// Mean cross-entropy over the batch (a scalar).
pub fn cross_entropy_mean(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(cross_entropy_per_example(logits, labels)?.mean_all()?)
}
