use std::path::{Path, PathBuf};

/// Errors of the figure pipelines.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExperimentError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file that cannot be read or written as JSON/CSV (names the file).
    #[error("{0}")]
    Format(String),
    /// A file written by a newer build (its `schema_version` is above what this build reads):
    /// refused, never overwritten.
    #[error("{path}: schema_version {found} is newer than this build reads ({supported}); use a newer build or another --out")]
    NewerSchema {
        /// The file.
        path: String,
        /// Its `schema_version`.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A flag or option value that cannot work (names the flag).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Locating, verifying or loading a dataset failed.
    #[error("data: {0}")]
    Data(#[from] stiff_data::DataError),
    /// Building or loading a model failed.
    #[error("model: {0}")]
    Model(#[from] stiff_models::ModelError),
    /// Training failed (divergence is not an error but a recorded outcome).
    #[error("training: {0}")]
    Train(#[from] stiff_train::TrainError),
    /// The Gram computation failed.
    #[error("gradient kernel: {0}")]
    GradKernel(#[from] stiff_gradkernel::GradKernelError),
    /// The stiffness analysis failed.
    #[error("analysis: {0}")]
    Analysis(#[from] stiff_analysis::AnalysisError),
    /// Drawing a figure failed.
    #[error("plot: {0}")]
    Plot(#[from] stiff_plot::PlotError),
    /// A tensor operation failed (candle's own error).
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

impl ExperimentError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}
