use std::path::PathBuf;

/// Everything that can go wrong when drawing a figure.
#[derive(Debug, thiserror::Error)]
// Variant fields are named in each variant's doc and message; documenting each again adds nothing.
#[allow(missing_docs)]
#[non_exhaustive]
pub enum PlotError {
    /// The figure has no panels.
    #[error("figure `{figure}` has no panels")]
    EmptyFigure { figure: String },

    /// `columns` is 0.
    #[error("figure `{figure}`: columns must be at least 1, got 0")]
    ZeroColumns { figure: String },

    /// A series' `x` and `y` (or `y_err`) lengths differ.
    #[error("panel `{panel}`, series `{series}`: {what} has {got} values but y has {expected}")]
    LengthMismatch {
        panel: String,
        series: String,
        /// `"x"` or `"y_err"`.
        what: &'static str,
        got: usize,
        expected: usize,
    },

    /// A confidence half-width is negative.
    #[error("panel `{panel}`, series `{series}`: y_err[{index}] = {value} is negative (half-widths must be >= 0)")]
    NegativeError { panel: String, series: String, index: usize, value: f64 },

    /// An axis or colour range is not finite or not increasing (or, for a heatmap, does not
    /// contain 0).
    #[error("panel `{panel}`: {what} ({lo}, {hi}) is invalid: {reason}")]
    InvalidRange {
        panel: String,
        /// `"y_range"`, `"secondary y_range"` or `"colour range"`.
        what: &'static str,
        lo: f64,
        hi: f64,
        reason: &'static str,
    },

    /// A heatmap has no rows or no columns.
    #[error("heatmap `{panel}` has no values ({rows} rows, {cols} columns)")]
    EmptyHeatmap { panel: String, rows: usize, cols: usize },

    /// A heatmap row has a different length from row 0.
    #[error("heatmap `{panel}`: row {row} has {got} values, row 0 has {expected}")]
    RaggedHeatmap { panel: String, row: usize, got: usize, expected: usize },

    /// The number of row or column labels does not match the matrix.
    #[error("heatmap `{panel}`: {got} {axis} labels for {expected} {axis}s")]
    LabelCountMismatch {
        panel: String,
        /// `"row"` or `"column"`.
        axis: &'static str,
        got: usize,
        expected: usize,
    },

    /// A group boundary is 0 or not inside the matrix.
    #[error("heatmap `{panel}`: group boundary {boundary} must satisfy 0 < b < {limit}")]
    BadGroupBoundary { panel: String, boundary: usize, limit: usize },

    /// The output stem has no file name.
    #[error("output stem `{path}` has no file name")]
    BadOutputPath { path: PathBuf },

    /// Reading or writing a file failed.
    #[error("I/O error on `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The font for text rendering could not be loaded.
    #[error("font `{path}`: {reason}; set ${env} to a readable TrueType file such as /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf (or unset it to use the embedded DejaVu Sans)", env = crate::FONT_ENV)]
    Font { path: PathBuf, reason: String },

    /// The drawing library failed while rendering or encoding.
    #[error("rendering `{path}` failed: {message}")]
    Render { path: PathBuf, message: String },
}
