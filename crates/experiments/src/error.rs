use std::path::{Path, PathBuf};

/// Errors of the figure pipelines.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Format(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("data: {0}")]
    Data(#[from] stiff_data::DataError),
    #[error("model: {0}")]
    Model(#[from] stiff_models::ModelError),
    #[error("training: {0}")]
    Train(#[from] stiff_train::TrainError),
    #[error("gradient kernel: {0}")]
    GradKernel(#[from] stiff_gradkernel::GradKernelError),
    #[error("analysis: {0}")]
    Analysis(#[from] stiff_analysis::AnalysisError),
    #[error("plot: {0}")]
    Plot(#[from] stiff_plot::PlotError),
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

impl ExperimentError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}
