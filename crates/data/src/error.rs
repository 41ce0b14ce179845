//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while finding, reading, checking or downloading a dataset.
///
/// Variants that concern a file carry its path, so a message always says which file is bad and why.
#[derive(Debug, thiserror::Error)]
// Variant fields are named in each variant's doc and message; documenting each again adds nothing.
#[allow(missing_docs)]
#[non_exhaustive]
pub enum DataError {
    /// None of the searched folders holds the dataset's files.
    #[error("dataset {dataset} not found; searched: {}\n{hint}", display_paths(.searched))]
    NotFound { dataset: String, searched: Vec<PathBuf>, hint: String },
    /// The folder holds some of the dataset's files but not all.
    #[error("dataset {dataset} in {} is incomplete: missing {}", .dir.display(), .missing.join(", "))]
    Incomplete { dataset: String, dir: PathBuf, missing: Vec<String> },
    /// Reading or writing a file failed at the OS level.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A gzip stream is corrupt (bad header, bad deflate data, CRC or length mismatch).
    #[error("{}: corrupt gzip data: {source}", .path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tar archive is corrupt or lacks a member.
    #[error("{}: bad tar archive: {reason}", .path.display())]
    Tar { path: PathBuf, reason: String },
    /// The IDX magic number is not the expected one.
    #[error("{}: wrong IDX magic number {found:#010x}, expected {expected:#010x} ({what})", .path.display())]
    BadMagic { path: PathBuf, found: u32, expected: u32, what: &'static str },
    /// The file's length does not match what its header (or record size) implies.
    #[error("{}: wrong size: {reason}", .path.display())]
    BadSize { path: PathBuf, reason: String },
    /// The image dimensions in the header are not the dataset's.
    #[error("{}: images are {rows}x{cols}, expected {expected_rows}x{expected_cols}", .path.display())]
    BadDims { path: PathBuf, rows: usize, cols: usize, expected_rows: usize, expected_cols: usize },
    /// Image and label files disagree on the number of examples.
    #[error("{} holds {images} images but {} holds {labels} labels", .images_path.display(), .labels_path.display())]
    CountMismatch { images_path: PathBuf, images: usize, labels_path: PathBuf, labels: usize },
    /// The number of examples is not the official one (only checked when
    /// [`LoadOptions::check_official_counts`](crate::LoadOptions) is on).
    #[error("{}: {found} examples, the official {split} split has {expected}", .path.display())]
    UnofficialCount { path: PathBuf, split: &'static str, found: usize, expected: usize },
    /// A label is outside `0..num_classes`.
    #[error("{}: example {index} has label {label}, out of range 0..{num_classes}", .path.display())]
    LabelOutOfRange { path: PathBuf, index: usize, label: u32, num_classes: usize },
    /// A CIFAR-100 record's coarse label disagrees with the fine→coarse mapping.
    #[error("{}: example {index} has fine label {fine} whose super-class is {expected_coarse}, but the file says {coarse}", .path.display())]
    CoarseMismatch { path: PathBuf, index: usize, fine: u32, coarse: u32, expected_coarse: u32 },
    /// A checksum does not match the known value.
    #[error("{}: {algo} checksum mismatch ({what}): expected {expected}, got {actual}", .path.display())]
    ChecksumMismatch { path: PathBuf, algo: &'static str, what: &'static str, expected: String, actual: String },
    /// A caller passed an argument the function cannot work with.
    #[error("invalid argument `{arg}`: {reason}")]
    InvalidArgument { arg: &'static str, reason: String },
    /// A class has fewer examples than a balanced subset needs.
    #[error("class {class} has {available} examples, the balanced subset needs {needed}")]
    NotEnoughExamples { class: u32, available: usize, needed: usize },
    /// A download failed (network, HTTP status, or local mirror).
    #[error("download of {url} failed: {reason}\n{hint}")]
    Download { url: String, reason: String, hint: String },
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle::Error),
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(nothing)".into();
    }
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }
    pub(crate) fn bad_size(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::BadSize { path: path.into(), reason: reason.into() }
    }
}

/// `Result` with [`DataError`] as the default error.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
