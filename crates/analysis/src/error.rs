//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in `stiff-analysis`. Each variant names the argument and the
/// offending index or value, so a caller can report it without re-deriving anything.
#[derive(Debug, thiserror::Error)]
// Variant fields are named in each variant's doc and message; documenting each again adds nothing.
#[allow(missing_docs)]
#[non_exhaustive]
pub enum AnalysisError {
    /// The Gram matrix `k` must be square for the self-pair analyses.
    #[error("gram matrix `k` must be square, got {rows} x {cols}")]
    NotSquare { rows: usize, cols: usize },

    /// Fewer than two examples: no pair exists.
    #[error("`{what}` needs at least 2 examples, got {n}")]
    TooFewExamples { what: &'static str, n: usize },

    /// Two inputs that must agree in length do not.
    #[error("length mismatch: `{what}` has {got} entries, expected {expected}")]
    LengthMismatch { what: &'static str, expected: usize, got: usize },

    /// `num_classes` is zero.
    #[error("`num_classes` must be at least 1")]
    NoClasses,

    /// A label is `>= num_classes`.
    #[error("`{what}`[{index}] = {label} is out of range for num_classes = {num_classes}")]
    LabelOutOfRange { what: &'static str, index: usize, label: u32, num_classes: usize },

    /// Only one class occurs among the examples: between-class stiffness is undefined.
    #[error("only class {class} is present in `{what}`; between-class stiffness is undefined")]
    SingleClass { what: &'static str, class: usize },

    /// Classes in `0..num_classes` with no example (an error unless
    /// `StiffnessSettings::allow_empty_classes` is set).
    #[error("classes {classes:?} have no examples in `{what}` (set allow_empty_classes to skip them)")]
    EmptyClass { what: &'static str, classes: Vec<usize> },

    /// Every example has a zero gradient: cosine stiffness is undefined for all pairs.
    #[error("all {n} examples in `{what}` have zero-norm gradients (diagonal of K is all 0)")]
    AllZeroGradients { what: &'static str, n: usize },

    /// NaN or infinity in an input matrix.
    #[error("non-finite value {value} in `{what}` at [{row}, {col}]")]
    NonFinite { what: &'static str, row: usize, col: usize, value: f64 },

    /// A squared norm (diagonal of a Gram matrix) is negative: not a Gram matrix.
    #[error("`{what}`[{index}] = {value} is a negative squared norm; not a Gram matrix")]
    NegativeDiagonal { what: &'static str, index: usize, value: f64 },

    /// `k[i,j]` and `k[j,i]` differ by more than `sym_tol * |g_i| |g_j|`.
    #[error("gram matrix `k` is not symmetric: k[{row},{col}] = {a}, k[{col},{row}] = {b}")]
    NotSymmetric { row: usize, col: usize, a: f64, b: f64 },

    /// A cosine `k[i,j] / (|g_i| |g_j|)` exceeds 1 in magnitude by more than `cos_tol`: the
    /// matrix is not positive semi-definite (or the norms passed do not belong to it).
    #[error("cosine {value} at [{row}, {col}] of `{what}` is outside [-1, 1] beyond tolerance {tol}; K is not a Gram matrix or the norms do not match it")]
    CosineOutOfBounds { what: &'static str, row: usize, col: usize, value: f64, tol: f64 },

    /// A row of a unit-gradient matrix is neither unit-norm nor exactly zero.
    #[error("row {row} of `{what}` has norm {norm}, expected 1 (within {tol}) or exactly 0")]
    NotUnitNorm { what: &'static str, row: usize, norm: f64, tol: f64 },

    /// A setting is outside its domain.
    #[error("invalid setting `{what}`: {reason}")]
    InvalidSetting { what: &'static str, reason: String },

    /// A summary has no pairs/cells to average over.
    #[error("no data for {what}")]
    NoData { what: String },

    /// File system error while writing a result.
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// JSON serialisation error.
    #[error("json error for {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// CSV serialisation error.
    #[error("csv error for {path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
}

/// Short alias used throughout the crate.
pub type Result<T> = std::result::Result<T, AnalysisError>;
