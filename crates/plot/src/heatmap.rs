//! Heatmap figures, laid out by hand in pixel coordinates so class names sit centred on their
//! cells and every panel gets its own colour bar.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::colour::{diverging_colour, is_dark, NAN_GREY};
use crate::font::{bold, regular};
use crate::line::title_band;
use crate::ticks::{fmt_linear, nice_ticks};
use crate::{grid_shape, Heatmap, HeatmapFigure, PlotError};

/// Pixels per (square) panel.
const PANEL: u32 = 820;
/// Up to this many rows/columns every label is shown; above it every k-th.
const ALL_LABELS_MAX: usize = 20;
/// Cell values are printed inside cells for matrices up to this size (and cells >= 38 px).
const ANNOTATE_MAX: usize = 12;
/// Labels longer than this are cut with an ellipsis.
const LABEL_MAX_CHARS: usize = 18;

pub(crate) fn validate(fig: &HeatmapFigure) -> Result<(), PlotError> {
    if fig.panels.is_empty() {
        return Err(PlotError::EmptyFigure { figure: fig.title.clone() });
    }
    if fig.columns == 0 {
        return Err(PlotError::ZeroColumns { figure: fig.title.clone() });
    }
    fig.panels.iter().try_for_each(validate_one)
}

fn validate_one(h: &Heatmap) -> Result<(), PlotError> {
    let panel = || h.title.clone();
    let rows = h.values.len();
    let cols = h.values.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Err(PlotError::EmptyHeatmap { panel: panel(), rows, cols });
    }
    if let Some((row, r)) = h.values.iter().enumerate().find(|(_, r)| r.len() != cols) {
        return Err(PlotError::RaggedHeatmap { panel: panel(), row, got: r.len(), expected: cols });
    }
    for (axis, labels, n) in [("row", &h.row_labels, rows), ("column", &h.col_labels, cols)] {
        if !labels.is_empty() && labels.len() != n {
            return Err(PlotError::LabelCountMismatch { panel: panel(), axis, got: labels.len(), expected: n });
        }
    }
    let (lo, hi) = h.range;
    if !(lo.is_finite() && hi.is_finite() && lo < 0.0 && 0.0 < hi) {
        return Err(PlotError::InvalidRange {
            panel: panel(),
            what: "colour range",
            lo,
            hi,
            reason: "must be finite with lo < 0 < hi (the map is centred on 0)",
        });
    }
    let limit = rows.min(cols);
    if let Some(&b) = h.group_boundaries.iter().find(|&&b| b == 0 || b >= limit) {
        return Err(PlotError::BadGroupBoundary { panel: panel(), boundary: b, limit });
    }
    Ok(())
}

pub(crate) fn figure_size(fig: &HeatmapFigure) -> (u32, u32) {
    let (rows, cols) = grid_shape(fig.panels.len(), fig.columns);
    let title = if fig.title.is_empty() { 0 } else { crate::line::TITLE_H };
    (cols as u32 * PANEL, rows as u32 * PANEL + title)
}

pub(crate) fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &HeatmapFigure) -> Result<(), String> {
    let body = title_band(root, &fig.title)?;
    let (rows, cols) = grid_shape(fig.panels.len(), fig.columns);
    for (h, area) in fig.panels.iter().zip(body.split_evenly((rows, cols))) {
        draw_one(&area, h)?;
    }
    Ok(())
}

/// Every `k`-th label is shown so that at most [`ALL_LABELS_MAX`] appear (k = 1, 2, 5, 10, ...).
pub(crate) fn label_step(n: usize) -> usize {
    if n <= ALL_LABELS_MAX {
        return 1;
    }
    let mut base = 1;
    loop {
        for m in [2, 5, 10] {
            let k = base * m;
            if n.div_ceil(k) <= ALL_LABELS_MAX {
                return k;
            }
        }
        base *= 10;
    }
}

fn labels(given: &[String], n: usize) -> Vec<String> {
    if given.is_empty() {
        return (0..n).map(|i| i.to_string()).collect();
    }
    given
        .iter()
        .map(|l| {
            if l.chars().count() > LABEL_MAX_CHARS {
                let cut: String = l.chars().take(LABEL_MAX_CHARS - 1).collect();
                format!("{cut}\u{2026}")
            } else {
                l.clone()
            }
        })
        .collect()
}

struct Painter<'a, DB: DrawingBackend> {
    area: &'a DrawingArea<DB, Shift>,
}

impl<DB: DrawingBackend> Painter<'_, DB> {
    fn text(&self, s: &str, at: (i32, i32), font: FontDesc<'_>, pos: Pos, c: RGBColor) -> Result<(), String> {
        let style = font.color(&c).pos(pos);
        self.area.draw(&Text::new(s.to_string(), at, style)).map_err(|e| e.to_string())
    }

    fn width(&self, s: &str, font: FontDesc<'_>) -> Result<i32, String> {
        let style = font.into_text_style(self.area);
        let (w, _) = self.area.estimate_text_size(s, &style).map_err(|e| e.to_string())?;
        Ok(w as i32)
    }

    fn rect(&self, a: (i32, i32), b: (i32, i32), style: ShapeStyle) -> Result<(), String> {
        self.area.draw(&Rectangle::new([a, b], style)).map_err(|e| e.to_string())
    }

    fn line(&self, a: (i32, i32), b: (i32, i32), style: ShapeStyle) -> Result<(), String> {
        self.area.draw(&PathElement::new(vec![a, b], style)).map_err(|e| e.to_string())
    }
}

fn draw_one<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, h: &Heatmap) -> Result<(), String> {
    let p = Painter { area };
    let (w, hgt) = area.dim_in_pixel();
    let (w, hgt) = (w as i32, hgt as i32);
    let n_r = h.values.len();
    let n_c = h.values[0].len();
    let (step_r, step_c) = (label_step(n_r), label_step(n_c));
    let row_labels = labels(&h.row_labels, n_r);
    let col_labels = labels(&h.col_labels, n_c);
    let fs = if n_r.max(n_c) <= ALL_LABELS_MAX { 15.0 } else { 14.0 };
    let black = RGBColor(0, 0, 0);

    // Title.
    let top = 56;
    p.text(&h.title, (w / 2, 26), bold(21.0), Pos::new(HPos::Center, VPos::Center), black)?;

    // Left margin from the widest shown row label.
    let mut max_rw = 0;
    for l in row_labels.iter().step_by(step_r) {
        max_rw = max_rw.max(p.width(l, regular(fs))?);
    }
    let left = 14 + max_rw + 9;

    // Colour bar on the right: gap, bar, ticks and their labels.
    let (lo, hi) = h.range;
    let bar_ticks = nice_ticks(lo, hi, 6);
    let mut max_tw = p.width("no data", regular(14.0))?;
    for t in &bar_ticks {
        max_tw = max_tw.max(p.width(&fmt_linear(*t), regular(14.0))?);
    }
    let (bar_gap, bar_w) = (22, 24);
    let right = bar_gap + bar_w + 8 + max_tw + 14;
    let avail_w = (w - left - right).max(n_c as i32);

    // Column labels horizontal if they fit between shown ticks, otherwise rotated.
    let mut max_cw = 0;
    for l in col_labels.iter().step_by(step_c) {
        max_cw = max_cw.max(p.width(l, regular(fs))?);
    }
    let text_h = fs as i32 + 4;
    // Cells are square with a fractional side; edges are rounded to whole pixels.
    let cell_for = |bottom: i32| {
        let by_w = f64::from(avail_w) / n_c as f64;
        let by_h = f64::from(hgt - top - bottom - 12) / n_r as f64;
        by_w.min(by_h).max(1.0)
    };
    let horizontal_bottom = text_h + 16;
    let horizontal = f64::from(max_cw + 8) <= cell_for(horizontal_bottom) * step_c as f64;
    let bottom = if horizontal { horizontal_bottom } else { max_cw + 18 };
    let cell = cell_for(bottom);
    let px = |k: usize| (k as f64 * cell).round() as i32;
    let (mat_w, mat_h) = (px(n_c), px(n_r));
    let x0 = left + (avail_w - mat_w) / 2;
    let y0 = top;

    // Cells.
    let annotate = n_r <= ANNOTATE_MAX && n_c <= ANNOTATE_MAX && cell >= 38.0;
    let value_font = (cell / 3.6).min(15.0);
    let mut any_nan = false;
    for (i, row) in h.values.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let c = diverging_colour(v, h.range);
            any_nan |= v.is_nan();
            let (cx, cy) = (x0 + px(j), y0 + px(i));
            p.rect((cx, cy), (x0 + px(j + 1), y0 + px(i + 1)), c.filled())?;
            if annotate && !v.is_nan() {
                let tc = if is_dark(c) { RGBColor(255, 255, 255) } else { black };
                // Normalise "-0.00" to "0.00".
                let s = format!("{:.2}", if v.abs() < 0.005 { 0.0 } else { v });
                let half = (cell / 2.0).round() as i32;
                let centre = (cx + half, cy + half);
                p.text(&s, centre, regular(value_font), Pos::new(HPos::Center, VPos::Center), tc)?;
            }
        }
    }
    p.rect((x0, y0), (x0 + mat_w, y0 + mat_h), black.stroke_width(1))?;
    for &b in &h.group_boundaries {
        let o = px(b);
        let style = black.stroke_width(2);
        p.line((x0 + o, y0), (x0 + o, y0 + mat_h), style)?;
        p.line((x0, y0 + o), (x0 + mat_w, y0 + o), style)?;
    }

    // Axis labels, centred on their cells, with small ticks.
    let tick = RGBColor(60, 60, 60).stroke_width(1);
    for (i, l) in row_labels.iter().enumerate().step_by(step_r) {
        let yc = y0 + ((i as f64 + 0.5) * cell).round() as i32;
        p.line((x0 - 5, yc), (x0, yc), tick)?;
        p.text(l, (x0 - 8, yc), regular(fs), Pos::new(HPos::Right, VPos::Center), black)?;
    }
    for (j, l) in col_labels.iter().enumerate().step_by(step_c) {
        let xc = x0 + ((j as f64 + 0.5) * cell).round() as i32;
        let yb = y0 + mat_h;
        p.line((xc, yb), (xc, yb + 5), tick)?;
        if horizontal {
            p.text(l, (xc, yb + 8), regular(fs), Pos::new(HPos::Center, VPos::Top), black)?;
        } else {
            // Rotated to read bottom-up, its end next to the matrix.
            let font = regular(fs).transform(FontTransform::Rotate270);
            p.text(l, (xc, yb + 8), font, Pos::new(HPos::Right, VPos::Center), black)?;
        }
    }

    // Colour bar: one stripe per pixel row, top = hi.
    let bx = x0 + mat_w + bar_gap;
    for py in 0..mat_h {
        let v = hi - (py as f64 + 0.5) / mat_h as f64 * (hi - lo);
        let c = diverging_colour(v, h.range);
        p.rect((bx, y0 + py), (bx + bar_w, y0 + py + 1), c.filled())?;
    }
    p.rect((bx, y0), (bx + bar_w, y0 + mat_h), black.stroke_width(1))?;
    for t in &bar_ticks {
        let y = y0 + ((hi - t) / (hi - lo) * mat_h as f64).round() as i32;
        p.line((bx + bar_w, y), (bx + bar_w + 5, y), black.stroke_width(1))?;
        let at = (bx + bar_w + 8, y);
        p.text(&fmt_linear(*t), at, regular(14.0), Pos::new(HPos::Left, VPos::Center), black)?;
    }
    if any_nan {
        let y = y0 + mat_h + 14;
        p.rect((bx, y), (bx + bar_w, y + 16), NAN_GREY.filled())?;
        p.rect((bx, y), (bx + bar_w, y + 16), black.stroke_width(1))?;
        let at = (bx + bar_w + 8, y + 8);
        p.text("no data", at, regular(14.0), Pos::new(HPos::Left, VPos::Center), black)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_step_shows_at_most_twenty() {
        assert_eq!(label_step(10), 1);
        assert_eq!(label_step(20), 1);
        assert_eq!(label_step(21), 2);
        // CIFAR-100: every 5th class, one per super-class block.
        assert_eq!(label_step(100), 5);
        assert_eq!(label_step(1000), 50);
    }

    #[test]
    fn long_labels_are_cut_and_missing_ones_are_indices() {
        assert_eq!(labels(&[], 3), ["0", "1", "2"]);
        let l = labels(&["a_very_long_class_name_here".to_string()], 1);
        assert_eq!(l[0].chars().count(), LABEL_MAX_CHARS);
        assert!(l[0].ends_with('\u{2026}'));
    }
}
