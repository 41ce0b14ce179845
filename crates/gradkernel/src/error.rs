use stiff_models::ModelError;

/// Everything that can go wrong computing Grams, per-example gradients or Jacobians.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GradKernelError {
    /// An argument has the wrong shape; `what` names the argument.
    #[error("{what}: expected {expected}, got shape {got:?}")]
    Shape {
        /// The argument (e.g. "gram inputs").
        what: &'static str,
        /// The shape that was expected, in words.
        expected: String,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// An input set with no examples.
    #[error("{0} has no examples")]
    Empty(&'static str),
    /// A label outside `0..classes`.
    #[error("{what}: label {label} at index {index} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The argument holding the labels.
        what: &'static str,
        /// Position of the first bad label.
        index: usize,
        /// Its value.
        label: i64,
        /// Number of classes of the model.
        classes: usize,
    },
    /// The computation cannot fit in the memory budget.
    #[error(
        "{what} needs about {needed} bytes but the memory budget is {budget} bytes \
         (raise GramOptions::memory_budget_bytes or use fewer examples)"
    )]
    OverBudget {
        /// What would not fit.
        what: String,
        /// Bytes it needs (an estimate from the shapes).
        needed: usize,
        /// The budget in bytes.
        budget: usize,
    },
    /// A combination of options the model does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The autograd pass returned no gradient for a probe (a bug, never expected).
    #[error("the backward pass produced no gradient for {0}")]
    MissingGradient(String),
    /// Parameters that should receive a gradient got none on the planning pass: an op without a
    /// backward (candle's fused `candle_nn::ops::layer_norm`, say) or a detached path lies between
    /// them and the loss. Their contribution to `K` would silently be 0, so nothing is computed.
    #[error(
        "no gradient reaches {params} (layers: {layers}): an op without a backward (e.g. the fused \
         candle_nn::layer_norm / candle_nn::ops::layer_norm; use stiff_gradkernel::nn::layer_norm) or a \
         detached tensor lies between them and the loss; their part of K would be 0. Remove them from the \
         network's parameters if they are frozen on purpose"
    )]
    NoGradient {
        /// The parameters without a gradient, comma-separated.
        params: String,
        /// The layers (tapped layer names) holding them, comma-separated (`-` when untapped).
        layers: String,
    },
    /// The model could not run (shapes, weights).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, GradKernelError>;
