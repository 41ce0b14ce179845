//! The numbers Figs 2-7 compute and their prose reports: values over seeds, the seed-mean
//! curve, the claims of Fig 2 and of the stage figures, Fig 7's block-score trajectory, and the
//! short texts figures and prose share. The figure modules fill them, `summary` writes them up;
//! both import this module and neither imports the other's types.

use serde::Serialize;
use stiff_analysis::StiffnessKind;

use crate::options::RunEnd;

/// Where an [`AcrossSeeds`] interval comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalSource {
    /// 95% Student-t interval across seeds (two or more seeds with a finite value).
    StudentTAcrossSeeds,
    /// 95% class-stratified bootstrap over examples of the one seed.
    BootstrapOverExamples,
    /// No interval (one seed without a bootstrap, or fewer than two finite seed values).
    None,
}

/// One quantity over the seeds of a figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AcrossSeeds {
    /// Mean over the seeds with a finite value (the value itself with one seed).
    pub mean: f64,
    /// 95% interval `(lo, hi)`; see `interval`.
    pub ci: Option<(f64, f64)>,
    /// Where `ci` comes from.
    pub interval: IntervalSource,
    /// Seeds whose value is finite (the units of the interval).
    pub n: usize,
    /// The per-seed values averaged, in seed order.
    pub values: Vec<f64>,
}

impl AcrossSeeds {
    /// Lower bound of the interval.
    pub fn lo(&self) -> Option<f64> {
        self.ci.map(|c| c.0)
    }

    /// Upper bound of the interval.
    pub fn hi(&self) -> Option<f64> {
        self.ci.map(|c| c.1)
    }

    /// Half of the interval's width (NaN without one), for plotting a symmetric band.
    pub fn half_width(&self) -> f64 {
        self.ci.map_or(f64::NAN, |(lo, hi)| (hi - lo) / 2.0)
    }
}

/// One measured step of the seed-mean curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurvePoint {
    /// The measured step (the same schedule for every seed).
    pub step: u64,
    /// Training examples seen at that step.
    pub images_seen: u64,
    /// Seeds measured at this step (a diverged run stops early).
    pub seeds: usize,
    /// Training loss (mean over the seeds).
    pub train_loss: AcrossSeeds,
    /// Validation loss, when logged.
    pub val_loss: Option<AcrossSeeds>,
    /// Within- and between-class sign stiffness.
    pub sign_within: Option<AcrossSeeds>,
    /// Between-class sign stiffness.
    pub sign_between: Option<AcrossSeeds>,
    /// Within-class cosine stiffness.
    pub cosine_within: Option<AcrossSeeds>,
    /// Between-class cosine stiffness.
    pub cosine_between: Option<AcrossSeeds>,
}

impl CurvePoint {
    /// The stiffness of `kind`, within or between classes.
    pub fn get(&self, kind: StiffnessKind, within: bool) -> Option<&AcrossSeeds> {
        match (kind, within) {
            (StiffnessKind::Sign, true) => self.sign_within.as_ref(),
            (StiffnessKind::Sign, false) => self.sign_between.as_ref(),
            (StiffnessKind::Cosine, true) => self.cosine_within.as_ref(),
            (StiffnessKind::Cosine, false) => self.cosine_between.as_ref(),
        }
    }
}

/// How the intervals of a figure with `n` seeds were made, for its prose.
pub fn interval_text(n: usize, bootstrap_reps: usize) -> String {
    if n >= 2 {
        format!("values are means over {n} seeds with 95% Student-t intervals across seeds (the seed is the unit)")
    } else {
        format!("one seed: 95% intervals are class-stratified bootstraps over examples ({bootstrap_reps} reps)")
    }
}

/// The Fig 2 claim for one quantity over the seeds: its value at each seed's own onset vs at
/// the end of the run (seed mean with a Student-t interval across seeds, or with one seed its
/// bootstrap interval over examples).
#[derive(Debug, Clone, Serialize)]
pub struct FallBack {
    /// Stiffness kind: `sign` or `cosine`.
    pub kind: String,
    /// "within" or "between".
    pub which: String,
    /// The measured step nearest each seed's onset (seeds without an onset are left out).
    pub onset_steps: Vec<u64>,
    /// Value at the onset.
    pub at_onset: AcrossSeeds,
    /// Largest value over the measured steps up to the onset (seed mean).
    pub peak_before_onset: f64,
    /// Last measured step of each seed.
    pub final_steps: Vec<u64>,
    /// Value at the last measured step.
    pub at_end: AcrossSeeds,
    /// |end| - |onset| per seed (paired by seed).
    pub change: AcrossSeeds,
    /// `at_end.mean / at_onset.mean`.
    pub ratio: f64,
    /// Falls back toward 0: several seeds, the upper bound of `change` is below 0; one seed,
    /// |end| < |onset| with disjoint bootstrap intervals.
    pub supported: bool,
}

/// Block scores at one measured step (a trajectory, fewer permutations than the test).
#[derive(Serialize)]
pub struct Traj {
    /// Measured step.
    pub step: u64,
    /// Training examples seen at that step.
    pub images_seen: u64,
    /// Training loss at that step.
    pub train_loss: f64,
    /// Super-class block score of the sign matrix.
    pub sign: f64,
    /// Its permutation p-value.
    pub sign_p: f64,
    /// Super-class block score of the cosine matrix.
    pub cosine: f64,
    /// Its permutation p-value.
    pub cosine_p: f64,
}

/// The claims of the stage figures, as numbers, over the seeds of the figure: seed mean with a
/// 95% Student-t interval across seeds, or with one seed its bootstrap interval over examples.
#[derive(Debug, Clone, Serialize)]
pub struct StageClaims {
    /// Run ids aggregated (one per seed).
    pub runs: Vec<String>,
    /// Stiffness kind: `sign` or `cosine`.
    pub kind: String,
    /// Within-class stiffness at initialisation.
    pub within_at_init: AcrossSeeds,
    /// Whether its 95% lower bound is above 0 (`None`: no interval).
    pub within_positive_at_init: Option<bool>,
    /// Between-class stiffness at late 1 minus at init, per seed (paired by seed).
    pub between_growth: AcrossSeeds,
    /// Whether between-class stiffness grows from init to late 1: several seeds, the growth's
    /// lower bound is above 0; one seed, positive growth with disjoint bootstrap intervals
    /// (`None`: no interval to decide on).
    pub between_grows: Option<bool>,
    /// |within| at late 2 minus |within| at late 1, per seed.
    pub within_change: AcrossSeeds,
    /// Whether within-class stiffness regresses toward 0 from late 1 to late 2: several seeds, the
    /// change's upper bound is below 0; one seed, the change is negative.
    pub within_regresses: Option<bool>,
    /// |between| at late 2 minus |between| at late 1, per seed.
    pub between_change: AcrossSeeds,
    /// Same rule as `within_regresses`.
    pub between_regresses: Option<bool>,
    /// Permuted labels (Fig 4): the measured step after initialisation with the largest
    /// seed-mean between-class value.
    pub max_between_step: u64,
    /// That largest seed-mean value.
    pub max_between_after_init: f64,
    /// Its 95% lower bound.
    pub max_between_ci_lo: Option<f64>,
    /// Whether any measured step after initialisation has a between-class 95% lower bound above 0
    /// (`None`: some step has no interval).
    pub positive_between_develops: Option<bool>,
    /// Between-class stiffness at each seed's last measured step.
    pub between_at_end: AcrossSeeds,
}

/// One stage over the seeds: the steps picked per seed and the within/between values.
#[derive(Debug, Clone, Serialize)]
pub struct StageMean {
    /// "init", "early", "late 1", "late 2".
    pub stage: String,
    /// The measured step of each seed.
    pub steps: Vec<u64>,
    /// Training loss.
    pub train_loss: Option<AcrossSeeds>,
    /// Validation loss.
    pub val_loss: Option<AcrossSeeds>,
    /// Within-class sign stiffness.
    pub sign_within: Option<AcrossSeeds>,
    /// Between-class sign stiffness.
    pub sign_between: Option<AcrossSeeds>,
    /// Within-class cosine stiffness.
    pub cosine_within: Option<AcrossSeeds>,
    /// Between-class cosine stiffness.
    pub cosine_between: Option<AcrossSeeds>,
    /// Cell-wise seed mean of the class sign-stiffness matrices.
    pub class_sign: Vec<Vec<Option<f64>>>,
    /// Same for cosine stiffness.
    pub class_cosine: Vec<Vec<Option<f64>>>,
}

/// "mean of N seeds, 95% t band" or "1 seed, 95% bootstrap band" (figure titles are short).
pub(crate) fn seeds_title(n: usize) -> String {
    if n >= 2 {
        format!("mean of {n} seeds, 95% t band")
    } else {
        "1 seed, 95% bootstrap band".into()
    }
}

/// `100` when every seed shares the step, else `46/100/215`.
pub(crate) fn steps_text(steps: &[u64]) -> String {
    if steps.windows(2).all(|w| w[0] == w[1]) {
        steps.first().map_or("–".into(), |s| s.to_string())
    } else {
        steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("/")
    }
}

pub(crate) fn end_note(end: &RunEnd) -> String {
    match end {
        RunEnd::Completed => "completed".into(),
        RunEnd::StepBudget { steps } => format!("stopped at {steps} steps"),
        RunEnd::Diverged { step, reason } => format!("diverged at step {step}: {reason}"),
    }
}
