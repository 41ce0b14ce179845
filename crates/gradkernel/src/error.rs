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
    /// The model could not run (shapes, weights).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}
