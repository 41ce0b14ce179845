//! The numbers the spherical figure computes and its prose reports: domain cells, the
//! length-scale fit, the learning-rate trend, and the extraction methods. The figure modules
//! fill them, `summary` writes them up; both import this module and neither imports the other.

use serde::Serialize;
use stiff_analysis::Crossing;

use crate::measure::SpaceCurve;
use crate::stats::SeedMean;

pub(crate) type Pick = fn(&SpaceCurve) -> &Crossing;

/// The two extraction methods on sign stiffness (the paper's v1 quantity), plus cosine stiffness.
/// The last entry (cosine stiffness, first crossing) weights pairs by gradient magnitudes, so
/// unlike sign stiffness it is not fixed by the labels alone.
pub(crate) const METHODS: [(&str, Pick); 3] = [
    ("first crossing (v1)", |c| &c.sign_first_crossing),
    ("line-fit zero (v3)", |c| &c.sign_fit_crossing),
    ("cosine, first crossing", |c| &c.cos_first_crossing),
];

pub(crate) fn deg(rad: f64) -> f64 {
    rad.to_degrees()
}

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
