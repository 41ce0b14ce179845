//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in `stiff-cross`; each variant names the file or argument.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrossError {
    /// An argument is outside its domain (names the argument).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The argument or input.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// `--shard` is not `K/N` with `0 <= K < N`.
    #[error("invalid shard `{0}`: expected K/N with 0 <= K < N, e.g. 0/4")]
    Shard(String),

    /// The output folder holds a job with other settings, data or model.
    #[error("{} belongs to a different job: {field} is {existing} there but {new} now (use another --out, or delete the folder)", path.display())]
    PlanMismatch {
        /// The stored file (`plan.json`, `examples.json`).
        path: PathBuf,
        /// The first field that differs.
        field: String,
        /// Its value in the stored file.
        existing: String,
        /// Its value for this job.
        new: String,
    },

    /// `merge` found tiles missing.
    #[error("{}: {missing} of {total} tiles are not finished yet (first missing: {first:?}); run the remaining shards first", dir.display())]
    Incomplete {
        /// The job folder.
        dir: PathBuf,
        /// Tiles not finished.
        missing: usize,
        /// Tiles in the grid.
        total: usize,
        /// The first few missing tile indices.
        first: Vec<usize>,
    },

    /// A tile or plan file is unreadable or inconsistent.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Reading a file.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Creating a folder of the job (e.g. `--out` is read-only).
    #[error("cannot create folder {}: {source}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Writing a file atomically.
    #[error(transparent)]
    Write(#[from] stiff_fs::WriteError),

    /// The Gram computation.
    #[error("cross Gram of tile {tile}: {source}")]
    Gram {
        /// Index of the tile.
        tile: usize,
        /// The gradient kernel's error.
        #[source]
        source: stiff_gradkernel::GradKernelError,
    },

    /// Stiffness math.
    #[error(transparent)]
    Analysis(#[from] stiff_analysis::AnalysisError),

    /// Tensor handling.
    #[error(transparent)]
    Candle(#[from] candle::Error),

    /// Figures.
    #[error(transparent)]
    Plot(#[from] stiff_plot::PlotError),
}

/// Short alias used throughout the crate.
pub type Result<T> = std::result::Result<T, CrossError>;
