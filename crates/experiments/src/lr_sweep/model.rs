//! The numbers Figs 8-10 compute and their prose reports: cells and trends of the sweep, the
//! stiffness kinds, and how a test is written. The figure modules fill them, `summary` writes
//! them up; both import this module and neither imports the other's types.

use serde::Serialize;
use stiff_analysis::{StiffnessKind, TrendTest};

use crate::stats::SeedMean;

pub(crate) const KINDS: [(StiffnessKind, &str); 2] = [(StiffnessKind::Sign, "sign"), (StiffnessKind::Cosine, "cosine")];

pub(crate) fn kind_label(kind: StiffnessKind) -> &'static str {
    match kind {
        StiffnessKind::Sign => "sign",
        StiffnessKind::Cosine => "cosine",
    }
}

/// `rho = 0.53, p = 0.004 (n = 10)` or the reason there is no test.
pub(crate) fn test_text(test: Option<&TrendTest>) -> String {
    match test {
        Some(t) if t.censored > 0 => {
            format!("{} {:.2}, p = {:.3} (n = {}, {} censored)", stat_name(t), t.statistic, t.p_value, t.n, t.censored)
        }
        Some(t) => format!("{} {:.2}, p = {:.3} (n = {})", stat_name(t), t.statistic, t.p_value, t.n),
        None => "no test (too few observations or no variation)".into(),
    }
}

fn stat_name(t: &TrendTest) -> &'static str {
    if t.test.starts_with("spearman") {
        "rho ="
    } else {
        "tau ="
    }
}

/// Aggregate of one (dataset, threshold, lr) cell over seeds. A seed's value is the mean over
/// its window of snapshots after the crossing.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Dataset name.
    pub dataset: String,
    /// Training-loss threshold.
    pub threshold: f64,
    /// Learning rate.
    pub lr: f64,
    /// Stiffness kind: `sign` or `cosine`.
    pub kind: String,
    /// Seed means of the between-class window means, with a 95% t-interval over seeds.
    pub between: Option<SeedMean>,
    /// The same for within-class stiffness.
    pub within: Option<SeedMean>,
    /// Standard deviation of the between-class value across seeds.
    pub between_seed_sd: Option<f64>,
    /// Mean over seeds of the between-class standard deviation within each window.
    pub between_window_sd: Option<f64>,
    /// Seeds that did not reach this threshold (diverged or out of steps).
    pub missing_seeds: Vec<u64>,
    /// With a single seed: the bootstrap interval over examples at the crossing.
    pub between_bootstrap: Option<(f64, f64)>,
}

/// Half-width of the interval drawn for a cell: across seeds, or the bootstrap with one seed.
pub(crate) fn cell_err(c: &Cell) -> f64 {
    match (&c.between, c.between_bootstrap) {
        (Some(m), _) if m.half_width.is_some() => m.half_width.unwrap_or(f64::NAN),
        (Some(_), Some((lo, hi))) => (hi - lo) / 2.0,
        _ => f64::NAN,
    }
}

/// The learning-rate trend of between-class stiffness for one (dataset, kind, threshold):
/// a permutation test of Spearman's rho between log10(lr) and the value over every (lr, seed)
/// observation; seeds are the units.
#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    /// Dataset name.
    pub dataset: String,
    /// Stiffness kind: `sign` or `cosine`.
    pub kind: String,
    /// Training-loss threshold.
    pub threshold: f64,
    /// Observations: (learning rate, seed value).
    pub observations: Vec<(f64, f64)>,
    /// Least-squares slope of the seed values against log10(lr) (descriptive only).
    pub slope_per_decade: Option<f64>,
    /// Spearman permutation test over the observations (`None`: too few).
    pub test: Option<TrendTest>,
    /// "supports v1", "supports v2/v3" or "inconclusive".
    pub verdict: &'static str,
}

/// Stiff domain size of one (dataset, method, space, lr) over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct DomainCell {
    /// Dataset name.
    pub dataset: String,
    /// Training-loss threshold.
    pub threshold: f64,
    /// Domain-size method (`v1` or `v3`).
    pub method: &'static str,
    /// Representation space (`input`, `layer1`, ...).
    pub space: String,
    /// Learning rate.
    pub lr: f64,
    /// Observations `(size, censored)`, one per seed that reached the threshold and had data.
    pub observations: Vec<(f64, bool)>,
    /// Mean with a t-interval, only when no observation is censored.
    pub mean: Option<SeedMean>,
    /// Median of the observations and whether it is only a lower bound (censoring).
    pub median: Option<(f64, bool)>,
    /// Censored observations (curves that never cross zero: lower bounds).
    pub censored: usize,
    /// Seeds whose curve had no bin with enough pairs (no observation).
    pub no_data: usize,
    /// Seeds that did not reach the threshold.
    pub not_reached: usize,
}

/// The learning-rate trend of one (dataset, method, space) over every (lr, seed) observation.
#[derive(Debug, Clone, Serialize)]
pub struct DomainTrend {
    /// Dataset name.
    pub dataset: String,
    /// Domain-size method (`v1` or `v3`).
    pub method: &'static str,
    /// Representation space.
    pub space: String,
    /// Censored Kendall permutation test of size against learning rate (`None`: too few observations).
    pub test: Option<TrendTest>,
    /// "supports v1" (larger domains at higher learning rates), "supports v2/v3", "inconclusive".
    pub verdict: &'static str,
}

/// Domain sizes of one (dataset, method, layer) over the seeds at Fig 9's learning rate.
#[derive(Debug, Clone, Serialize)]
pub struct LayerCell {
    /// Dataset name.
    pub dataset: String,
    /// Domain-size method (`v1` or `v3`).
    pub method: &'static str,
    /// Representation space (`layer1`, ...).
    pub space: String,
    /// Hidden-layer depth (1-based).
    pub depth: usize,
    /// Observations `(size, censored)`, one per seed with data.
    pub observations: Vec<(f64, bool)>,
    /// Median and whether it is only a lower bound.
    pub median: Option<(f64, bool)>,
    /// Censored observations.
    pub censored: usize,
    /// Seeds whose curve had no bin with enough pairs.
    pub no_data: usize,
}

/// The depth trend of stiff domain size over hidden layers and seeds (censored Kendall).
#[derive(Debug, Clone, Serialize)]
pub struct DepthTrend {
    /// A dataset, or "all" (both datasets pooled).
    pub scope: String,
    /// Domain-size method (`v1` or `v3`).
    pub method: &'static str,
    /// Censored Kendall permutation test of size against depth (`None`: too few observations).
    pub test: Option<TrendTest>,
    /// "supports the paper" (smaller with depth), "contradicts the paper", "inconclusive".
    pub verdict: &'static str,
}
