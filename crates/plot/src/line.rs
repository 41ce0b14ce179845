//! Line figures: a grid of panels with optional log-x, CIs, markers and a right y axis.

use plotters::chart::{ChartContext, SeriesLabelPosition};
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::colour::palette_colour;
use crate::font::{bold, regular};
use crate::ticks::{fmt_linear, fmt_log, log_ticks, nice_ticks, padded_range};
use crate::{grid_shape, LegendPlacement, LineFigure, Panel, PlotError, Series, ERROR_BAR_MAX_POINTS};

/// Pixels per panel.
const PANEL_W: u32 = 800;
const PANEL_H: u32 = 500;
/// Height of the figure title band.
pub(crate) const TITLE_H: u32 = 60;
/// Series with at most this many drawable points also get a dot per point.
const DOT_MAX_POINTS: usize = 40;

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Axis, Axis>>;

/// A linear f64 axis with ticks we choose ourselves (log-x is drawn as linear in log10 space).
#[derive(Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Only bold grid lines, at our ticks.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Checks shapes and ranges before anything is drawn.
pub(crate) fn validate(fig: &LineFigure) -> Result<(), PlotError> {
    if fig.panels.is_empty() {
        return Err(PlotError::EmptyFigure { figure: fig.title.clone() });
    }
    if fig.columns == 0 {
        return Err(PlotError::ZeroColumns { figure: fig.title.clone() });
    }
    for p in &fig.panels {
        let secondary = p.secondary.iter().flat_map(|s| s.series.iter());
        for s in p.series.iter().chain(secondary) {
            validate_series(&p.title, s)?;
        }
        if let Some(r) = p.y_range {
            check_range(&p.title, "y_range", r)?;
        }
        if let Some(r) = p.secondary.as_ref().and_then(|s| s.y_range) {
            check_range(&p.title, "secondary y_range", r)?;
        }
    }
    Ok(())
}

fn validate_series(panel: &str, s: &Series) -> Result<(), PlotError> {
    let mismatch = |what, got| PlotError::LengthMismatch {
        panel: panel.to_string(),
        series: s.label.clone(),
        what,
        got,
        expected: s.y.len(),
    };
    if s.x.len() != s.y.len() {
        return Err(mismatch("x", s.x.len()));
    }
    if let Some(e) = &s.y_err {
        if e.len() != s.y.len() {
            return Err(mismatch("y_err", e.len()));
        }
        if let Some((index, &value)) = e.iter().enumerate().find(|(_, v)| **v < 0.0) {
            return Err(PlotError::NegativeError { panel: panel.to_string(), series: s.label.clone(), index, value });
        }
    }
    Ok(())
}

fn check_range(panel: &str, what: &'static str, (lo, hi): (f64, f64)) -> Result<(), PlotError> {
    if !(lo.is_finite() && hi.is_finite()) || lo >= hi {
        return Err(PlotError::InvalidRange {
            panel: panel.to_string(),
            what,
            lo,
            hi,
            reason: "must be finite with lo < hi",
        });
    }
    Ok(())
}

/// Pixel size of the whole figure.
pub(crate) fn figure_size(fig: &LineFigure) -> (u32, u32) {
    let (rows, cols) = grid_shape(fig.panels.len(), fig.columns);
    let title = if fig.title.is_empty() { 0 } else { TITLE_H };
    (cols as u32 * PANEL_W, rows as u32 * PANEL_H + title)
}

/// Draws the figure title band (if any) and returns the area below it.
pub(crate) fn title_band<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, String> {
    if title.is_empty() {
        return Ok(root.clone());
    }
    let (band, body) = root.split_vertically(TITLE_H);
    let (w, h) = band.dim_in_pixel();
    let style = bold(28.0).into_text_style(&band).pos(Pos::new(HPos::Center, VPos::Center));
    band.draw(&Text::new(title.to_string(), (w as i32 / 2, h as i32 / 2), style)).map_err(|e| e.to_string())?;
    Ok(body)
}

pub(crate) fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &LineFigure) -> Result<(), String> {
    let body = title_band(root, &fig.title)?;
    let (rows, cols) = grid_shape(fig.panels.len(), fig.columns);
    for (panel, area) in fig.panels.iter().zip(body.split_evenly((rows, cols))) {
        draw_panel(&area, panel)?;
    }
    Ok(())
}

/// A series mapped into plot coordinates (log10 x if needed; right-axis y mapped onto the
/// left axis), split into runs of drawable points.
struct Prepared {
    label: String,
    colour: RGBColor,
    /// Runs of consecutive drawable points `(x, y, half-width)`.
    runs: Vec<Vec<(f64, f64, Option<f64>)>>,
    n_points: usize,
    markers: Vec<(f64, String)>,
}

/// Maps a raw x to plot space; `None` if it cannot be drawn.
fn map_x(x: f64, log_x: bool) -> Option<f64> {
    let v = if log_x {
        if x > 0.0 {
            x.log10()
        } else {
            return None;
        }
    } else {
        x
    };
    v.is_finite().then_some(v)
}

fn prepare(s: &Series, colour: RGBColor, log_x: bool, suffix: &str) -> Prepared {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for (i, (&x, &y)) in s.x.iter().zip(&s.y).enumerate() {
        match (map_x(x, log_x), y.is_finite()) {
            (Some(px), true) => {
                let e = s.y_err.as_ref().map(|e| e[i]).filter(|e| e.is_finite());
                run.push((px, y, e));
            }
            _ => {
                if !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
            }
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    let markers = s.markers.iter().filter_map(|(x, l)| map_x(*x, log_x).map(|px| (px, l.clone()))).collect();
    let label = if s.label.is_empty() { String::new() } else { format!("{}{suffix}", s.label) };
    Prepared { label, colour, n_points: runs.iter().map(Vec::len).sum(), runs, markers }
}

/// y extent of the points and their CIs.
fn y_values(ps: &[Prepared]) -> impl Iterator<Item = f64> + '_ {
    ps.iter().flat_map(|p| p.runs.iter().flatten()).flat_map(|&(_, y, e)| {
        let e = e.unwrap_or(0.0);
        [y - e, y + e]
    })
}

/// Rescales the y values (and half-widths) of `ps` from `from` to `to`.
fn rescale(ps: &mut [Prepared], from: (f64, f64), to: (f64, f64)) {
    let k = (to.1 - to.0) / (from.1 - from.0);
    for p in ps {
        for pt in p.runs.iter_mut().flatten() {
            pt.1 = to.0 + (pt.1 - from.0) * k;
            pt.2 = pt.2.map(|e| e * k);
        }
    }
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> Result<(), String> {
    let mut primary: Vec<Prepared> =
        panel.series.iter().enumerate().map(|(i, s)| prepare(s, palette_colour(i), panel.log_x, "")).collect();
    let n_primary = primary.len();
    let mut secondary: Vec<Prepared> = panel
        .secondary
        .iter()
        .flat_map(|a| a.series.iter())
        .enumerate()
        .map(|(i, s)| prepare(s, palette_colour(n_primary + i), panel.log_x, " (right)"))
        .collect();

    // x range covers all points and markers of both axes.
    let xs = primary
        .iter()
        .chain(&secondary)
        .flat_map(|p| {
            let pts = p.runs.iter().flatten().map(|t| t.0);
            pts.chain(p.markers.iter().map(|m| m.0))
        })
        .collect::<Vec<_>>();
    let (x_lo, x_hi) = if xs.is_empty() && panel.log_x {
        (-3.0, 0.0) // 1e-3 .. 1, the usual learning-rate sweep
    } else {
        padded_range(xs.into_iter())
    };
    let hline = panel.hline.filter(|h| h.is_finite());
    let (y_lo, y_hi) = panel.y_range.unwrap_or_else(|| padded_range(y_values(&primary).chain(hline)));

    let x_ticks = if panel.log_x { log_ticks(x_lo, x_hi) } else { nice_ticks(x_lo, x_hi, 7) };
    let x_spec = || Axis { lo: x_lo, hi: x_hi, ticks: x_ticks.clone() };
    let y_spec = Axis { lo: y_lo, hi: y_hi, ticks: nice_ticks(y_lo, y_hi, 6) };
    let log_x = panel.log_x;
    let x_fmt = move |v: &f64| if log_x { fmt_log(*v) } else { fmt_linear(*v) };
    let y_fmt = |v: &f64| fmt_linear(*v);

    let mut builder = ChartBuilder::on(area);
    if !panel.title.is_empty() {
        builder.caption(&panel.title, bold(21.0));
    }
    builder.margin(12).x_label_area_size(52).y_label_area_size(78);
    if panel.secondary.is_some() {
        builder.right_y_label_area_size(78);
    }
    let mut chart = builder.build_cartesian_2d(x_spec(), y_spec).map_err(|e| e.to_string())?;
    // The primary mesh is drawn after `set_secondary_coord`, which takes the right label
    // area away from it; drawn before, the left-axis labels would repeat on the right.
    let mesh = |chart: &mut Chart<'_, DB>| {
        chart
            .configure_mesh()
            .x_desc(panel.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(regular(15.0))
            .axis_desc_style(regular(17.0))
            .bold_line_style(RGBColor(222, 222, 222))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(|e| e.to_string())
    };

    let ranges = Ranges { x: (x_lo, x_hi), y: (y_lo, y_hi) };
    let mut hlines: Vec<f64> = hline.into_iter().collect();
    match &panel.secondary {
        None => {
            mesh(&mut chart)?;
            draw_content(&mut chart, &primary, &hlines, ranges, panel.legend)
        }
        Some(sec) => {
            let (s_lo, s_hi) = sec.y_range.unwrap_or_else(|| padded_range(y_values(&secondary)));
            let (from, to) = ((s_lo, s_hi), (y_lo, y_hi));
            rescale(&mut secondary, from, to);
            // The right-axis reference line, mapped onto the left axis like its series.
            if let Some(h) = sec.hline.filter(|h| h.is_finite()) {
                hlines.push(to.0 + (h - from.0) * (to.1 - to.0) / (from.1 - from.0));
            }
            let s_spec = Axis { lo: s_lo, hi: s_hi, ticks: nice_ticks(s_lo, s_hi, 6) };
            let mut dual = chart.set_secondary_coord(x_spec(), s_spec);
            mesh(&mut dual)?;
            dual.configure_secondary_axes()
                .y_desc(sec.label.as_str())
                .y_label_formatter(&y_fmt)
                .label_style(regular(15.0))
                .axis_desc_style(regular(17.0))
                .draw()
                .map_err(|e| e.to_string())?;
            primary.append(&mut secondary);
            draw_content(&mut dual, &primary, &hlines, ranges, panel.legend)
        }
    }
}

#[derive(Clone, Copy)]
struct Ranges {
    x: (f64, f64),
    y: (f64, f64),
}

impl Ranges {
    fn contains(&self, (x, y): (f64, f64)) -> bool {
        x >= self.x.0 && x <= self.x.1 && y >= self.y.0 && y <= self.y.1
    }

    fn clamp_y(&self, y: f64) -> f64 {
        y.clamp(self.y.0, self.y.1)
    }
}

/// Liang-Barsky: the part of segment `a -> b` inside the plot rectangle, if any.
fn clip_segment(a: (f64, f64), b: (f64, f64), r: &Ranges) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [(-dx, a.0 - r.x.0), (dx, r.x.1 - a.0), (-dy, a.1 - r.y.0), (dy, r.y.1 - a.1)] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    (t0 <= t1).then_some(((a.0 + t0 * dx, a.1 + t0 * dy), (a.0 + t1 * dx, a.1 + t1 * dy)))
}

/// Polylines of `run` clipped to the plot rectangle (plotters does not clip paths itself
/// when a fixed `y_range` cuts the data).
fn clip_polyline(run: &[(f64, f64)], r: &Ranges) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for w in run.windows(2) {
        match clip_segment(w[0], w[1], r) {
            Some((a, b)) => {
                if cur.last() != Some(&a) {
                    if cur.len() > 1 {
                        out.push(std::mem::take(&mut cur));
                    }
                    cur.clear();
                    cur.push(a);
                }
                cur.push(b);
            }
            None => {
                if cur.len() > 1 {
                    out.push(std::mem::take(&mut cur));
                }
                cur.clear();
            }
        }
    }
    if cur.len() > 1 {
        out.push(cur);
    }
    out
}

fn legend_position(placement: LegendPlacement, ps: &[Prepared], r: &Ranges) -> Option<SeriesLabelPosition> {
    use SeriesLabelPosition::*;
    match placement {
        LegendPlacement::Hidden => None,
        LegendPlacement::UpperLeft => Some(UpperLeft),
        LegendPlacement::UpperRight => Some(UpperRight),
        LegendPlacement::LowerLeft => Some(LowerLeft),
        LegendPlacement::LowerRight => Some(LowerRight),
        LegendPlacement::Auto => {
            // Count points in each corner (in axis fractions) and take the emptiest,
            // preferring the upper right on ties.
            let mut counts = [(UpperRight, 0usize), (UpperLeft, 0), (LowerRight, 0), (LowerLeft, 0)];
            for &(x, y, _) in ps.iter().flat_map(|p| p.runs.iter().flatten()) {
                let u = (x - r.x.0) / (r.x.1 - r.x.0);
                let v = (y - r.y.0) / (r.y.1 - r.y.0);
                let idx = match (u < 0.45, u > 0.55, v > 0.6, v < 0.4) {
                    (_, true, true, _) => 0,
                    (true, _, true, _) => 1,
                    (_, true, _, true) => 2,
                    (true, _, _, true) => 3,
                    _ => continue,
                };
                counts[idx].1 += 1;
            }
            counts.iter().min_by_key(|c| c.1).map(|c| c.0.clone())
        }
    }
}

fn draw_content<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    ps: &[Prepared],
    hlines: &[f64],
    r: Ranges,
    legend: LegendPlacement,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();

    for &h in hlines.iter().filter(|h| **h >= r.y.0 && **h <= r.y.1) {
        let style = BLACK.mix(0.7).stroke_width(1);
        chart.draw_series(DashedLineSeries::new(vec![(r.x.0, h), (r.x.1, h)], 8, 5, style)).map_err(err)?;
    }

    // CIs first so lines stay on top.
    for p in ps {
        if p.n_points <= ERROR_BAR_MAX_POINTS {
            draw_error_bars(chart, p, &r)?;
        } else {
            for run in &p.runs {
                draw_band(chart, p.colour, run, &r)?;
            }
        }
    }

    for p in ps {
        let style = p.colour.stroke_width(2);
        let dots = p.n_points <= DOT_MAX_POINTS;
        // The labelled (empty) draw gives every series one legend entry, even an empty one.
        let anno = chart.draw_series(std::iter::empty::<PathElement<(f64, f64)>>()).map_err(err)?;
        if !p.label.is_empty() {
            let c = p.colour;
            // Radius 0 (a dot hidden under the line) keeps one element type for both cases.
            let radius = if dots { 3 } else { 0 };
            anno.label(p.label.as_str()).legend(move |(x, y)| {
                EmptyElement::at((x + 12, y))
                    + PathElement::new(vec![(-12, 0), (12, 0)], c.stroke_width(2))
                    + Circle::new((0, 0), radius, c.filled())
            });
        }
        for run in &p.runs {
            let pts: Vec<(f64, f64)> = run.iter().map(|t| (t.0, t.1)).collect();
            for line in clip_polyline(&pts, &r) {
                chart.draw_series(LineSeries::new(line, style)).map_err(err)?;
            }
            if dots {
                let inside = pts.into_iter().filter(|q| r.contains(*q));
                chart.draw_series(inside.map(|q| Circle::new(q, 3, p.colour.filled()))).map_err(err)?;
            }
        }
    }

    draw_markers(chart, ps, &r)?;

    if let Some(pos) = legend_position(legend, ps, &r) {
        if ps.iter().any(|p| !p.label.is_empty()) {
            chart
                .configure_series_labels()
                .position(pos)
                .margin(12)
                .legend_area_size(30)
                .label_font(regular(15.0))
                .background_style(WHITE.mix(0.88))
                .border_style(RGBColor(120, 120, 120))
                .draw()
                .map_err(err)?;
        }
    }
    Ok(())
}

fn draw_band<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    colour: RGBColor,
    run: &[(f64, f64, Option<f64>)],
    r: &Ranges,
) -> Result<(), String> {
    // A band needs consecutive points that all have a half-width; split where one is missing.
    for part in run.split(|t| t.2.is_none()) {
        if part.len() < 2 {
            continue;
        }
        let upper = part.iter().map(|&(x, y, e)| (x, r.clamp_y(y + e.unwrap_or(0.0))));
        let lower = part.iter().rev().map(|&(x, y, e)| (x, r.clamp_y(y - e.unwrap_or(0.0))));
        let poly: Vec<(f64, f64)> = upper.chain(lower).filter(|q| q.0 >= r.x.0 && q.0 <= r.x.1).collect();
        chart.draw_series(std::iter::once(Polygon::new(poly, colour.mix(0.22).filled()))).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn draw_error_bars<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    p: &Prepared,
    r: &Ranges,
) -> Result<(), String> {
    let style = p.colour.mix(0.85).stroke_width(2);
    let bars: Vec<(f64, f64, f64)> = p
        .runs
        .iter()
        .flatten()
        .filter(|t| t.0 >= r.x.0 && t.0 <= r.x.1)
        .filter_map(|&(x, y, e)| e.map(|e| (x, y - e, y + e)))
        .filter(|&(_, lo, hi)| hi >= r.y.0 && lo <= r.y.1)
        .collect();
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    chart
        .draw_series(
            bars.iter().map(|&(x, lo, hi)| PathElement::new(vec![(x, r.clamp_y(lo)), (x, r.clamp_y(hi))], style)),
        )
        .map_err(err)?;
    // Caps only where the bar end is inside the plot (a clamped end has no cap).
    let caps = bars
        .iter()
        .flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)])
        .filter(|q| r.contains(*q))
        .map(|q| EmptyElement::at(q) + PathElement::new(vec![(-5, 0), (5, 0)], style));
    chart.draw_series(caps).map_err(err)?;
    Ok(())
}

fn draw_markers<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    ps: &[Prepared],
    r: &Ranges,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut k = 0usize;
    for p in ps {
        for (x, label) in &p.markers {
            let x = *x;
            if x < r.x.0 || x > r.x.1 {
                continue;
            }
            let style = p.colour.stroke_width(2);
            chart.draw_series(DashedLineSeries::new(vec![(x, r.y.0), (x, r.y.1)], 6, 4, style)).map_err(err)?;
            if label.is_empty() {
                continue;
            }
            // Stagger labels down from the top so neighbouring markers do not collide; put
            // the text on the inner side of the line near the right edge.
            let y = r.y.1 - (0.05 + 0.07 * (k % 5) as f64) * (r.y.1 - r.y.0);
            k += 1;
            let right_side = (x - r.x.0) / (r.x.1 - r.x.0) < 0.7;
            let (h, dx) = if right_side { (HPos::Left, 6) } else { (HPos::Right, -6) };
            let text = regular(14.0).color(&p.colour).pos(Pos::new(h, VPos::Center));
            chart
                .draw_series(std::iter::once(EmptyElement::at((x, y)) + Text::new(label.clone(), (dx, 0), text)))
                .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Ranges = Ranges { x: (0.0, 10.0), y: (0.0, 1.0) };

    #[test]
    fn clipping_keeps_inside_and_cuts_at_the_border() {
        // Fully inside: unchanged.
        assert_eq!(clip_segment((1.0, 0.2), (2.0, 0.4), &R), Some(((1.0, 0.2), (2.0, 0.4))));
        // Crosses y = 1 at x = 1.5 (line from (1, 0.5) to (2, 1.5)).
        let (a, b) = clip_segment((1.0, 0.5), (2.0, 1.5), &R).unwrap();
        assert_eq!(a, (1.0, 0.5));
        assert!((b.0 - 1.5).abs() < 1e-12 && (b.1 - 1.0).abs() < 1e-12);
        // Entirely above.
        assert_eq!(clip_segment((1.0, 2.0), (2.0, 3.0), &R), None);
    }

    #[test]
    fn polyline_breaks_where_it_leaves_the_plot() {
        let run = [(1.0, 0.5), (2.0, 2.0), (3.0, 0.5), (4.0, 0.6)];
        let lines = clip_polyline(&run, &R);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0][0], (1.0, 0.5));
        assert_eq!(*lines[1].last().unwrap(), (4.0, 0.6));
    }

    #[test]
    fn non_finite_points_split_runs_and_log_drops_non_positive_x() {
        let s = Series::new("s", vec![0.0, 0.1, 0.2, 0.3, 1.0], vec![1.0, 2.0, f64::NAN, 3.0, 4.0]);
        let p = prepare(&s, palette_colour(0), true, "");
        // x = 0 cannot be drawn on log x; NaN y splits the rest into [0.1] and [0.3, 1.0].
        assert_eq!(p.runs.len(), 2);
        assert_eq!(p.n_points, 3);
        assert!((p.runs[1][1].0 - 0.0).abs() < 1e-12); // log10(1) = 0
    }

    #[test]
    fn auto_legend_avoids_the_crowded_corner() {
        // All points in the upper right: the legend must go elsewhere (upper left on ties).
        let s = Series::new("s", vec![8.0, 9.0, 9.5], vec![0.9, 0.95, 0.8]);
        let p = prepare(&s, palette_colour(0), false, "");
        let pos = legend_position(LegendPlacement::Auto, &[p], &R).unwrap();
        assert!(matches!(pos, SeriesLabelPosition::UpperLeft));
    }
}
