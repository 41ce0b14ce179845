#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod colour;
mod error;
mod font;
mod heatmap;
mod line;
mod output;
mod ticks;

use std::path::{Path, PathBuf};

pub use colour::{diverging_colour, palette_colour, NAN_GREY, PALETTE};
pub use error::PlotError;
pub use font::{FONT_ENV, FONT_FAMILY};

/// One curve of a line panel.
///
/// `x` and `y` have the same length (one value per point). Points where `x` or `y` is not
/// finite (or `x <= 0` on a log-x panel) are skipped, and the line is broken there rather
/// than joined across the gap. An empty series is allowed: it still gets a legend entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Legend text. An empty label gives no legend entry.
    pub label: String,
    /// x values, one per point.
    pub x: Vec<f64>,
    /// y values, one per point.
    pub y: Vec<f64>,
    /// Optional **symmetric** confidence half-width per point (same length as `y`), drawn as
    /// `y - e ..= y + e`: error bars when the series has at most
    /// [`ERROR_BAR_MAX_POINTS`] drawable points, a shaded band otherwise. A non-finite
    /// half-width skips that point's bar; a negative one is an error.
    pub y_err: Option<Vec<f64>>,
    /// Vertical markers `(x, label)` drawn as dashed lines in the series colour, e.g. a zero
    /// crossing or the onset of overfitting. Non-finite `x` (e.g. "no crossing found") is skipped.
    pub markers: Vec<(f64, String)>,
}

impl Series {
    /// A series without error bars or markers.
    pub fn new(label: impl Into<String>, x: Vec<f64>, y: Vec<f64>) -> Self {
        Self { label: label.into(), x, y, y_err: None, markers: Vec::new() }
    }

    /// Adds symmetric confidence half-widths (same length as `y`).
    pub fn with_err(mut self, y_err: Vec<f64>) -> Self {
        self.y_err = Some(y_err);
        self
    }

    /// Adds one vertical marker at `x`.
    pub fn with_marker(mut self, x: f64, label: impl Into<String>) -> Self {
        self.markers.push((x, label.into()));
        self
    }
}

/// Series with at most this many drawable points get error bars; denser ones get a band.
pub const ERROR_BAR_MAX_POINTS: usize = 15;

/// A second y axis on the right of a panel (e.g. stiffness next to a loss, Fig 2 of the paper).
///
/// Its series share the panel's x axis; their legend entries are suffixed with " (right)" and
/// their colours continue the palette after the primary series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecondaryAxis {
    /// Right axis title.
    pub label: String,
    /// Curves measured against the right axis.
    pub series: Vec<Series>,
    /// Fixed `(lo, hi)` for the right axis; `None` = fit the data with 5% padding.
    pub y_range: Option<(f64, f64)>,
    /// Optional dashed horizontal reference line on the right axis (e.g. stiffness 0).
    pub hline: Option<f64>,
}

/// Where a panel's legend box goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LegendPlacement {
    /// The inner corner that covers the fewest data points (default).
    #[default]
    Auto,
    /// Upper left corner.
    UpperLeft,
    /// Upper right corner.
    UpperRight,
    /// Lower left corner.
    LowerLeft,
    /// Lower right corner.
    LowerRight,
    /// No legend.
    Hidden,
}

/// One set of axes in a [`LineFigure`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Panel {
    /// Panel title, drawn above the axes.
    pub title: String,
    /// x axis title.
    pub x_label: String,
    /// Left y axis title.
    pub y_label: String,
    /// Logarithmic x axis (base 10, ticks at decades). Default `false`.
    pub log_x: bool,
    /// Curves on the left y axis.
    pub series: Vec<Series>,
    /// Fixed `(lo, hi)` for the left y axis; `None` = fit the data with 5% padding.
    pub y_range: Option<(f64, f64)>,
    /// Optional dashed horizontal reference line on the left axis (e.g. `Some(0.0)`).
    pub hline: Option<f64>,
    /// Optional right y axis.
    pub secondary: Option<SecondaryAxis>,
    /// Legend position; default [`LegendPlacement::Auto`].
    pub legend: LegendPlacement,
}

/// A grid of line panels, filled row by row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineFigure {
    /// Figure title (empty = none).
    pub title: String,
    /// At least one panel.
    pub panels: Vec<Panel>,
    /// Panels per row, at least 1 (capped at the number of panels).
    pub columns: usize,
}

/// One matrix in a [`HeatmapFigure`], e.g. a class stiffness matrix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heatmap {
    /// Panel title.
    pub title: String,
    /// Row-major values, `values[row][col]`, all rows the same length. NaN = no data (grey).
    pub values: Vec<Vec<f64>>,
    /// One label per row, or empty for indices `0..rows`.
    pub row_labels: Vec<String>,
    /// One label per column, or empty for indices `0..cols`.
    pub col_labels: Vec<String>,
    /// Colour scale `(lo, hi)` with `lo < 0 < hi`; 0 is white, `lo` full blue, `hi` full red,
    /// values outside are clamped to the end colours. Use a symmetric range such as `(-1, 1)`.
    pub range: (f64, f64),
    /// Group separators: for each `b`, a line is drawn between index `b - 1` and `b` on both
    /// axes (e.g. `[5, 10, .., 95]` for the CIFAR-100 super-class blocks). `0 < b < rows, cols`.
    pub group_boundaries: Vec<usize>,
}

/// A grid of heatmap panels, filled row by row, each with its own colour bar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeatmapFigure {
    /// Figure title (empty = none).
    pub title: String,
    /// At least one panel.
    pub panels: Vec<Heatmap>,
    /// Panels per row, at least 1 (capped at the number of panels).
    pub columns: usize,
}

/// Writes `fig` as `<out_stem>.png` and `<out_stem>.svg` (same content) and returns both paths
/// (PNG first). Each file is written to a temporary file in the same directory and renamed, so
/// a reader never sees half a figure. The parent directory must exist.
///
/// Size: 800 x 500 pixels per panel plus a 60-pixel title band (a 2x2 grid is 1600 x 1060).
pub fn line_figure(fig: &LineFigure, out_stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    line::validate(fig)?;
    let (png, svg) = output::paths(out_stem)?;
    font::ensure_font()?;
    let size = line::figure_size(fig);
    output::write_svg(&svg, size, |root| line::draw(root, fig))?;
    output::write_png(&png, size, |root| line::draw(root, fig))?;
    Ok(vec![png, svg])
}

/// Writes `fig` as `<out_stem>.png` and `<out_stem>.svg` (same content) and returns both paths
/// (PNG first), atomically like [`line_figure`].
///
/// Size: 820 x 820 pixels per panel plus a 60-pixel title band.
pub fn heatmap_figure(fig: &HeatmapFigure, out_stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    heatmap::validate(fig)?;
    let (png, svg) = output::paths(out_stem)?;
    font::ensure_font()?;
    let size = heatmap::figure_size(fig);
    output::write_svg(&svg, size, |root| heatmap::draw(root, fig))?;
    output::write_png(&png, size, |root| heatmap::draw(root, fig))?;
    Ok(vec![png, svg])
}

/// Rows and columns of a grid of `n` panels with at most `columns` per row.
fn grid_shape(n: usize, columns: usize) -> (usize, usize) {
    let cols = columns.clamp(1, n.max(1));
    (n.div_ceil(cols), cols)
}
