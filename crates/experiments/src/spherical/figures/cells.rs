//! Stiff domain sizes of the spherical sweep per cell (degree or learning rate, space, method),
//! the power-law fit of domain angle against pi/l, and the learning-rate trend.

use std::f64::consts::PI;

use serde::Serialize;

use super::super::run::{distance_to_angle, SphEnd, SphRunRecord};
use super::Pick;
use crate::measure::crossing_distance;
use crate::stats::{seed_mean, slope, spearman, SeedMean};

/// Stiff domain size of one (degree or lr) cell, space and method over the fitted seeds.
#[derive(Debug, Clone, Serialize)]
pub struct DomainCell {
    /// Harmonic degree `l`.
    pub degree: usize,
    /// Learning rate.
    pub lr: f64,
    /// Representation space (`input`, `layer1`, ...).
    pub space: String,
    /// Domain-size method.
    pub method: String,
    /// `pi / l` and the first zero of `P_l(cos theta)` (radians).
    pub characteristic_angle: f64,
    /// First zero of the target's own angular profile, when it has one (radians).
    pub target_zero_angle: Option<f64>,
    /// Over fitted runs with a crossing: the distance `1 - cos` and the angle (radians).
    pub distance: Option<SeedMean>,
    /// The same as an angle (radians).
    pub angle: Option<SeedMean>,
    /// Runs that fitted their target and count in the means.
    pub fitted_runs: usize,
    /// Runs of this cell that did not fit their target (excluded from the means, listed in the tables).
    pub not_fitted_runs: usize,
    /// Runs that diverged.
    pub diverged_runs: usize,
    /// Fitted runs whose curve has no crossing (see results.csv notes).
    pub no_crossing: usize,
    /// Not-fitted runs' crossings (distance), for reference.
    pub not_fitted_distances: Vec<f64>,
    /// First zero of the label-agreement curve (angle, radians) over the same fitted runs.
    pub label_zero_angle: Option<SeedMean>,
    /// Largest per-bin |input-space sign stiffness - label agreement| up to the first crossing, over
    /// the fitted runs: 0 means the tangent kernel was positive for every such pair, so sign
    /// stiffness there is the labels' agreement.
    pub max_curve_gap: Option<f64>,
}

pub(crate) fn domain_cell(
    runs: &[&SphRunRecord],
    space: &str,
    method: &str,
    pick: Pick,
    degree: usize,
    lr: f64,
    dim: usize,
) -> DomainCell {
    let size = |r: &SphRunRecord| {
        r.measurement
            .as_ref()
            .and_then(|m| m.curves.iter().find(|c| c.space == space))
            .and_then(|c| crossing_distance(pick(c)))
    };
    let fitted: Vec<&&SphRunRecord> = runs.iter().filter(|r| r.fitted()).collect();
    let found: Vec<f64> = fitted.iter().filter_map(|r| size(r)).collect();
    DomainCell {
        degree,
        lr,
        space: space.into(),
        method: method.into(),
        characteristic_angle: PI / degree as f64,
        target_zero_angle: stiff_data::synthetic::profile_first_zero(dim, degree).ok().flatten(),
        distance: seed_mean(&found),
        angle: seed_mean(&found.iter().map(|&d| distance_to_angle(d)).collect::<Vec<_>>()),
        fitted_runs: fitted.len(),
        not_fitted_runs: runs.iter().filter(|r| matches!(r.end, SphEnd::NotFitted { .. })).count(),
        diverged_runs: runs.iter().filter(|r| matches!(r.end, SphEnd::Diverged { .. })).count(),
        no_crossing: fitted.len() - found.len(),
        not_fitted_distances: runs
            .iter()
            .filter(|r| matches!(r.end, SphEnd::NotFitted { .. }))
            .filter_map(|r| size(r))
            .collect(),
        max_curve_gap: fitted
            .iter()
            .filter_map(|r| curve_gap(r))
            .fold(None, |acc: Option<f64>, g| Some(acc.map_or(g, |a| a.max(g)))),
        label_zero_angle: seed_mean(
            &fitted
                .iter()
                .filter_map(|r| crossing_distance(&r.label_crossing))
                .map(distance_to_angle)
                .collect::<Vec<_>>(),
        ),
    }
}

/// Largest per-bin gap between the input-space sign stiffness curve and the label-agreement
/// curve, over the bins up to the later of their two first crossings (the bins that decide the
/// domain size).
fn curve_gap(r: &SphRunRecord) -> Option<f64> {
    let c = r.measurement.as_ref()?.curves.iter().find(|c| c.space == "input")?;
    if c.curve.bins != r.label_curve.bins {
        return None;
    }
    let reach = crossing_distance(&c.sign_first_crossing)?.max(crossing_distance(&r.label_crossing)?);
    c.curve
        .sign_mean
        .iter()
        .zip(&r.label_curve.sign_mean)
        .zip(&c.curve.centres)
        .filter(|(_, &centre)| centre <= reach + c.curve.bins.width())
        .map(|(pair, _)| pair)
        .filter_map(|(a, b)| Some((a.as_ref()? - b.as_ref()?).abs()))
        .fold(None, |acc: Option<f64>, g| Some(acc.map_or(g, |a| a.max(g))))
}

/// Power law `theta = prefactor * (pi / l)^exponent` fitted by least squares in log-log over the
/// degrees with a mean domain angle (fitted runs), with the Spearman correlation of degree and
/// angle (negative: the domain shrinks as l grows).
#[derive(Debug, Clone, Serialize)]
pub struct LengthScaleFit {
    /// Representation space.
    pub space: String,
    /// Domain-size method.
    pub method: String,
    /// Degrees with a mean domain angle.
    pub degrees: Vec<usize>,
    /// Their mean angles (radians).
    pub angles: Vec<f64>,
    /// Exponent `b` of the log-log fit `theta = a (pi / l)^b` (`None` below two degrees).
    pub exponent: Option<f64>,
    /// Prefactor `a` of that fit.
    pub prefactor: Option<f64>,
    /// `R^2` of the log-log fit.
    pub r_squared: Option<f64>,
    /// Spearman correlation of degree and angle.
    pub spearman_degree_angle: Option<f64>,
    /// `theta / (pi / l)` per degree.
    pub ratio_to_pi_over_l: Vec<f64>,
    /// `theta / (first zero of P_l)` per degree.
    pub ratio_to_target_zero: Vec<f64>,
    /// `theta / (first zero of the label-agreement curve)` per degree.
    pub ratio_to_label_zero: Vec<f64>,
    /// The same log-log fit for the first zero of `P_l(cos theta)` over the same degrees: the
    /// exponent a domain equal to the target's correlation zero would show.
    pub reference_exponent: Option<f64>,
}

pub(crate) fn length_scale_fit(cells: &[&DomainCell]) -> Option<LengthScaleFit> {
    let first = cells.first()?;
    let pts: Vec<&&DomainCell> = cells.iter().filter(|c| c.angle.is_some()).collect();
    let degrees: Vec<usize> = pts.iter().map(|c| c.degree).collect();
    let angles: Vec<f64> = pts.iter().map(|c| c.angle.as_ref().map_or(f64::NAN, |m| m.mean)).collect();
    let lx: Vec<f64> = pts.iter().map(|c| c.characteristic_angle.ln()).collect();
    let ly: Vec<f64> = angles.iter().map(|a| a.ln()).collect();
    let exponent = slope(&lx, &ly).filter(|b| b.is_finite());
    let (prefactor, r_squared) = match exponent {
        Some(b) => {
            let n = lx.len() as f64;
            let (mx, my) = (lx.iter().sum::<f64>() / n, ly.iter().sum::<f64>() / n);
            let a = my - b * mx;
            let ss_res: f64 = lx.iter().zip(&ly).map(|(x, y)| (y - a - b * x).powi(2)).sum();
            let ss_tot: f64 = ly.iter().map(|y| (y - my).powi(2)).sum();
            (Some(a.exp()), (ss_tot > 0.0).then(|| 1.0 - ss_res / ss_tot))
        }
        None => (None, None),
    };
    let dl: Vec<f64> = degrees.iter().map(|&l| l as f64).collect();
    let ref_pts: Vec<(f64, f64)> =
        pts.iter().filter_map(|c| c.target_zero_angle.map(|z| (c.characteristic_angle.ln(), z.ln()))).collect();
    let (rx, ry): (Vec<f64>, Vec<f64>) = ref_pts.into_iter().unzip();
    Some(LengthScaleFit {
        reference_exponent: slope(&rx, &ry),
        ratio_to_label_zero: pts
            .iter()
            .zip(&angles)
            .map(|(c, a)| c.label_zero_angle.as_ref().map_or(f64::NAN, |z| a / z.mean))
            .collect(),
        space: first.space.clone(),
        method: first.method.clone(),
        spearman_degree_angle: spearman(&dl, &angles),
        ratio_to_pi_over_l: pts.iter().zip(&angles).map(|(c, a)| a / c.characteristic_angle).collect(),
        ratio_to_target_zero: pts
            .iter()
            .zip(&angles)
            .map(|(c, a)| c.target_zero_angle.map_or(f64::NAN, |z| a / z))
            .collect(),
        degrees,
        angles,
        exponent,
        prefactor,
        r_squared,
    })
}

/// Learning-rate trend of the domain size (distance) of one space and method.
#[derive(Debug, Clone, Serialize)]
pub struct LrTrend {
    /// Representation space.
    pub space: String,
    /// Domain-size method.
    pub method: String,
    /// Learning rates with a mean distance.
    pub lrs: Vec<f64>,
    /// Their mean domain distances `1 - cos`.
    pub distances: Vec<f64>,
    /// Least-squares slope of distance against `log10(lr)`.
    pub slope_per_decade: Option<f64>,
    /// Spearman correlation of learning rate and distance.
    pub spearman: Option<f64>,
}

/// The cells of one space and method.
pub(crate) fn cells_of(cells: &[DomainCell], space: &str, method: &str) -> Vec<DomainCell> {
    cells.iter().filter(|c| c.space == space && c.method == method).cloned().collect()
}
