use std::path::PathBuf;

/// Everything that can go wrong setting up, running, checkpointing or resuming a training run.
///
/// Divergence (NaN/inf loss, exploding weights) is *not* an error: it is an outcome, reported as
/// [`crate::RunStatus::Diverged`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A configuration value that cannot work (the message names the field).
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// The training or validation data are unusable (shape, labels, too few examples).
    #[error("invalid training data ({what}): {msg}")]
    Data {
        /// Which data: `training data`, `validation data`, `labels`, ...
        what: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// [`crate::Backend::FastMlp`] was asked for a model it cannot train (says why).
    #[error("the fast MLP path cannot train this model: {0}")]
    FastPathUnsupported(String),
    /// Reading or writing a file (checkpoint, metrics log) failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint that cannot be read or does not fit this run.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// The snapshot callback returned an error.
    #[error("snapshot callback failed at step {step} ({reason}): {source}")]
    Sink {
        /// Step of the snapshot.
        step: u64,
        /// Why the snapshot was taken.
        reason: String,
        /// The callback's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Building, loading or running the model failed.
    #[error(transparent)]
    Model(#[from] stiff_models::ModelError),
    /// A tensor operation failed (candle's own error).
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
