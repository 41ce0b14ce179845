use stiff_models::ModelError;

/// Everything that can go wrong computing Grams, per-example gradients or Jacobians.
#[derive(Debug, thiserror::Error)]
pub enum GradKernelError {
    /// An argument has the wrong shape; `what` names the argument.
    #[error("{what}: expected {expected}, got shape {got:?}")]
    Shape { what: &'static str, expected: String, got: Vec<usize> },
    /// An input set with no examples.
    #[error("{0} has no examples")]
    Empty(&'static str),
    /// A label outside `0..classes`.
    #[error("{what}: label {label} at index {index} is out of range for {classes} classes")]
    LabelOutOfRange { what: &'static str, index: usize, label: i64, classes: usize },
    /// The computation cannot fit in the memory budget.
    #[error(
        "{what} needs about {needed} bytes but the memory budget is {budget} bytes \
         (raise GramOptions::memory_budget_bytes or use fewer examples)"
    )]
    OverBudget { what: String, needed: usize, budget: usize },
    /// A combination of options the model does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The autograd pass returned no gradient for a probe (a bug, never expected).
    #[error("the backward pass produced no gradient for {0}")]
    MissingGradient(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Candle(#[from] candle::Error),
}
