use std::path::PathBuf;

/// Everything that can go wrong setting up, running, checkpointing or resuming a training run.
///
/// Divergence (NaN/inf loss, exploding weights) is *not* an error: it is an outcome, reported as
/// [`crate::RunStatus::Diverged`].
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training configuration: {0}")]
    Config(String),
    #[error("invalid training data ({what}): {msg}")]
    Data { what: &'static str, msg: String },
    #[error("the fast MLP path cannot train this model: {0}")]
    FastPathUnsupported(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("snapshot callback failed at step {step} ({reason}): {source}")]
    Sink { step: u64, reason: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error(transparent)]
    Model(#[from] stiff_models::ModelError),
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
