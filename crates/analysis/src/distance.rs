//! Stiffness as a function of dot-product distance, and the stiff domain size.
//!
//! For a representation matrix `X: (N, D)` (input pixels or one layer's activations) the
//! distance of a pair is `d = 1 - cos(x_i, x_j)`, in `[0, 2]`; v1 plots against `cos = 1 - d`,
//! which [`DistanceCurve::cos_centres`] provides. Pairs `i < j` are binned by `d` and the sign
//! and cosine stiffness read from K are averaged per bin.
//!
//! Cosines of the representation come from the Gram of L2-normalised rows, computed in f32 by
//! `ndarray::dot` (matrixmultiply) over blocks of rows in parallel (rayon); each block is
//! binned as soon as it is computed, so memory is O(block N), never N x N. f32 rounding can
//! push a cosine a few ulps outside `[-1, 1]`; it is clamped (a distance error ~1e-7, far
//! below any bin width). Stiffness itself is accumulated in f64.

use ndarray::{s, Array2, ArrayView2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::class::StiffnessKind;
use crate::error::{AnalysisError, Result};
use crate::float::Float;
use crate::settings::{StiffnessSettings, SCHEMA_VERSION};
use crate::validate;

/// Rows per block of the representation Gram.
const ROW_BLOCK: usize = 64;

/// Distance bins: `bins` equal-width bins over `[lo, hi]` (the last bin includes `hi`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BinSpec {
    /// Number of bins. Default 40.
    pub bins: usize,
    /// Lower edge. Default 0.0.
    pub lo: f64,
    /// Upper edge. Default 2.0 (the largest dot-product distance).
    pub hi: f64,
}

impl Default for BinSpec {
    fn default() -> Self {
        Self { bins: 40, lo: 0.0, hi: 2.0 }
    }
}

impl BinSpec {
    fn validate(&self) -> Result<()> {
        if self.bins == 0 || !(self.lo.is_finite() && self.hi.is_finite() && self.lo < self.hi) {
            return Err(AnalysisError::InvalidSetting {
                what: "bins",
                reason: format!(
                    "need bins >= 1 and finite lo < hi, got {} bins over [{}, {}]",
                    self.bins, self.lo, self.hi
                ),
            });
        }
        Ok(())
    }

    /// Bin width `(hi - lo) / bins`.
    pub fn width(&self) -> f64 {
        (self.hi - self.lo) / self.bins as f64
    }

    /// The `bins + 1` edges.
    pub fn edges(&self) -> Vec<f64> {
        (0..=self.bins).map(|b| self.lo + b as f64 * self.width()).collect()
    }

    /// The `bins` centres.
    pub fn centres(&self) -> Vec<f64> {
        (0..self.bins).map(|b| self.lo + (b as f64 + 0.5) * self.width()).collect()
    }

    /// Bin of distance `d`, `None` outside `[lo, hi]`.
    #[inline(always)]
    pub fn index(&self, d: f64) -> Option<usize> {
        if !(d >= self.lo && d <= self.hi) {
            return None;
        }
        let b = ((d - self.lo) * (self.bins as f64 / (self.hi - self.lo))) as usize;
        Some(b.min(self.bins - 1))
    }
}

/// Which pairs enter a distance curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairFilter {
    /// Every pair `i < j`.
    All,
    /// Pairs with the same label (v3 reads xi from these).
    WithinClass,
    /// Pairs with different labels.
    BetweenClass,
}

impl PairFilter {
    #[inline(always)]
    fn keep(self, a: u32, b: u32) -> bool {
        match self {
            PairFilter::All => true,
            PairFilter::WithinClass => a == b,
            PairFilter::BetweenClass => a != b,
        }
    }
}

/// Sufficient statistics of the pairs in one bin: `x` = distance, `y` = stiffness. They give
/// the bin mean and standard error, and an exact least-squares fit over pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BinMoments {
    /// Number of pairs.
    pub count: u64,
    /// Sum of distances.
    pub sum_x: f64,
    /// Sum of squared distances.
    pub sum_xx: f64,
    /// Sum of stiffness values.
    pub sum_y: f64,
    /// Sum of squared stiffness values.
    pub sum_yy: f64,
    /// Sum of distance times stiffness.
    pub sum_xy: f64,
}

impl BinMoments {
    /// Adds one pair.
    #[inline(always)]
    pub fn push(&mut self, x: f64, y: f64) {
        self.count += 1;
        self.sum_x += x;
        self.sum_xx += x * x;
        self.sum_y += y;
        self.sum_yy += y * y;
        self.sum_xy += x * y;
    }

    /// Adds another bin's pairs.
    pub fn merge(&mut self, o: &BinMoments) {
        self.count += o.count;
        self.sum_x += o.sum_x;
        self.sum_xx += o.sum_xx;
        self.sum_y += o.sum_y;
        self.sum_yy += o.sum_yy;
        self.sum_xy += o.sum_xy;
    }

    /// Mean stiffness, `None` for an empty bin.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_y / self.count as f64)
    }

    /// Standard error of the mean, `sqrt(s^2 / n)` with the sample variance; `None` below 2
    /// pairs. Pairs sharing an example are not independent, so this is a nominal SE.
    pub fn se(&self) -> Option<f64> {
        if self.count < 2 {
            return None;
        }
        let n = self.count as f64;
        let mean = self.sum_y / n;
        let var = ((self.sum_yy - n * mean * mean) / (n - 1.0)).max(0.0);
        Some((var / n).sqrt())
    }
}

/// Default number of pairs a bin needs before a zero crossing reads it (`min_pairs` of
/// [`DistanceCurve::first_zero_crossing_min`] and [`DistanceCurve::linear_fit_crossing_min`]):
/// a bin of a handful of pairs has a mean too noisy to decide where stiffness changes sign.
pub const DEFAULT_MIN_PAIRS: u64 = 30;

/// Pairs a bin needs to count as the minimum of a curve in [`FitOver::PairsToMinimum`].
fn min_count_for_minimum(m: &[BinMoments]) -> u64 {
    let total: u64 = m.iter().map(|b| b.count).sum();
    (total / 1000).max(10)
}

/// How the v3 linear fit is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitOver {
    /// Ordinary least squares over every pair (exact, from the bin moments).
    Pairs,
    /// Least squares over bin (centre, mean), weighted by the bin's pair count; empty bins
    /// skipped.
    Bins,
    /// Least squares over the pairs of the initial decline only: the bins from distance 0 up
    /// to (and including) the bin with the lowest mean among bins holding at least 0.1% of the
    /// pairs (and at least 10). Curves that turn up again at large
    /// distances (common in hidden layers) otherwise tilt a whole-range line and hide the zero.
    PairsToMinimum,
}

/// A fitted line `stiffness = intercept + slope * distance`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LinearFit {
    /// Slope per unit distance.
    pub slope: f64,
    /// Value at distance 0.
    pub intercept: f64,
    /// Total weight (pairs) in the fit.
    pub weight: u64,
}

/// Where stiffness crosses zero. Never a made-up number: when there is no crossing the reason
/// is given instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Crossing {
    /// Stiffness reaches 0 at this distance.
    Found {
        /// Distance `d` of the crossing (the cosine view is `1 - d`).
        distance: f64,
    },
    /// Stiffness is already negative at the smallest distance.
    StartsNegative {
        /// Distance of the first non-empty bin centre (or `lo` for a fit).
        distance: f64,
        /// Stiffness there.
        value: f64,
    },
    /// Stiffness stays positive over the data: a right-censored domain size.
    NeverCrosses {
        /// Why, with the numbers.
        reason: String,
        /// The domain is larger than this distance (the last bin centre read, or the end of the
        /// binned range for a fit). `None` in records written before it was recorded.
        #[serde(default)]
        beyond: Option<f64>,
    },
    /// Not enough data (no non-empty bin, or a fit with a single distinct distance).
    NoData {
        /// What was missing.
        reason: String,
    },
}

/// Stiffness averaged per distance bin, for one representation space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DistanceCurve {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Stiffness settings used.
    pub settings: StiffnessSettings,
    /// Bin specification used.
    pub bins: BinSpec,
    /// Which pairs were used.
    pub filter: PairFilter,
    /// Name of the representation space (e.g. "input", "layer1"), if given.
    pub space: Option<String>,
    /// Number of examples.
    pub n: usize,
    /// `bins + 1` distance edges.
    pub edges: Vec<f64>,
    /// Distance bin centres.
    pub centres: Vec<f64>,
    /// Cosine-similarity view of the centres, `1 - centre` (v1's x axis).
    pub cos_centres: Vec<f64>,
    /// Mean sign stiffness per bin, `None` for empty bins.
    pub sign_mean: Vec<Option<f64>>,
    /// Its standard error (`None` below 2 pairs).
    pub sign_se: Vec<Option<f64>>,
    /// Pairs per bin for sign stiffness.
    pub sign_counts: Vec<u64>,
    /// Mean cosine stiffness per bin.
    pub cos_mean: Vec<Option<f64>>,
    /// Its standard error.
    pub cos_se: Vec<Option<f64>>,
    /// Pairs per bin for cosine stiffness (excludes zero-norm gradients).
    pub cos_counts: Vec<u64>,
    /// Sufficient statistics per bin, sign stiffness.
    pub sign_moments: Vec<BinMoments>,
    /// Sufficient statistics per bin, cosine stiffness.
    pub cos_moments: Vec<BinMoments>,
    /// Kept pairs whose distance fell outside `[lo, hi]` (not binned).
    pub out_of_range_pairs: u64,
    /// Examples with zero gradient norm (in sign pairs, not in cosine pairs).
    pub zero_norm_examples: Vec<usize>,
    /// Examples whose representation is the zero vector: distance undefined, all their pairs
    /// excluded.
    pub zero_norm_representations: Vec<usize>,
}

impl DistanceCurve {
    /// Builds a curve from per-bin moments (derives means, SEs and counts).
    pub fn from_moments(
        bins: BinSpec,
        filter: PairFilter,
        settings: StiffnessSettings,
        sign_moments: Vec<BinMoments>,
        cos_moments: Vec<BinMoments>,
    ) -> Result<Self> {
        bins.validate()?;
        for (what, m) in [("sign_moments", &sign_moments), ("cos_moments", &cos_moments)] {
            if m.len() != bins.bins {
                return Err(AnalysisError::LengthMismatch { what, expected: bins.bins, got: m.len() });
            }
        }
        let centres = bins.centres();
        Ok(Self {
            schema_version: SCHEMA_VERSION,
            settings,
            bins,
            filter,
            space: None,
            n: 0,
            edges: bins.edges(),
            cos_centres: centres.iter().map(|c| 1.0 - c).collect(),
            centres,
            sign_mean: sign_moments.iter().map(BinMoments::mean).collect(),
            sign_se: sign_moments.iter().map(BinMoments::se).collect(),
            sign_counts: sign_moments.iter().map(|m| m.count).collect(),
            cos_mean: cos_moments.iter().map(BinMoments::mean).collect(),
            cos_se: cos_moments.iter().map(BinMoments::se).collect(),
            cos_counts: cos_moments.iter().map(|m| m.count).collect(),
            sign_moments,
            cos_moments,
            out_of_range_pairs: 0,
            zero_norm_examples: Vec::new(),
            zero_norm_representations: Vec::new(),
        })
    }

    /// Sets the space label.
    pub fn with_space(mut self, space: impl Into<String>) -> Self {
        self.space = Some(space.into());
        self
    }

    fn moments(&self, kind: StiffnessKind) -> &[BinMoments] {
        match kind {
            StiffnessKind::Sign => &self.sign_moments,
            StiffnessKind::Cosine => &self.cos_moments,
        }
    }

    /// v1 stiff domain size over every non-empty bin; see [`Self::first_zero_crossing_min`].
    pub fn first_zero_crossing(&self, kind: StiffnessKind) -> Crossing {
        self.first_zero_crossing_min(kind, 1)
    }

    /// v1 stiff domain size: walking outwards from the smallest distance over the bins holding at
    /// least `min_pairs` pairs, the first bin whose mean is `<= 0`; the crossing is linearly
    /// interpolated between its centre and the previous qualifying bin's centre. No qualifying
    /// bin gives [`Crossing::NoData`]; a curve that stays positive is censored at the last centre
    /// read ([`Crossing::NeverCrosses`] with `beyond`).
    pub fn first_zero_crossing_min(&self, kind: StiffnessKind, min_pairs: u64) -> Crossing {
        let centres = self.bins.centres();
        let mut pts = self
            .moments(kind)
            .iter()
            .zip(&centres)
            .filter(|(m, _)| m.count >= min_pairs.max(1))
            .filter_map(|(m, &c)| m.mean().map(|y| (c, y)));
        let Some((c0, y0)) = pts.next() else {
            return Crossing::NoData { reason: format!("no bin holds at least {} pairs", min_pairs.max(1)) };
        };
        if y0 < 0.0 {
            return Crossing::StartsNegative { distance: c0, value: y0 };
        }
        if y0 == 0.0 {
            return Crossing::Found { distance: c0 };
        }
        let (mut cp, mut yp, mut seen) = (c0, y0, 1usize);
        for (c, y) in pts {
            seen += 1;
            if y <= 0.0 {
                return Crossing::Found { distance: cp + (c - cp) * yp / (yp - y) };
            }
            (cp, yp) = (c, y);
        }
        Crossing::NeverCrosses {
            reason: format!(
                "mean stiffness stays > 0 over all {seen} bins with >= {} pairs (last centre d = {cp}, value {yp})",
                min_pairs.max(1)
            ),
            beyond: Some(cp),
        }
    }

    /// Least-squares line of stiffness vs distance (see [`FitOver`]); `None` without two
    /// distinct distances.
    pub fn linear_fit(&self, kind: StiffnessKind, over: FitOver) -> Option<LinearFit> {
        self.linear_fit_min(kind, over, 1)
    }

    /// [`Self::linear_fit`] over the bins holding at least `min_pairs` pairs only.
    pub fn linear_fit_min(&self, kind: StiffnessKind, over: FitOver, min_pairs: u64) -> Option<LinearFit> {
        let min_pairs = min_pairs.max(1);
        let (mut w, mut sx, mut sxx, mut sy, mut sxy) = (0u64, 0.0, 0.0, 0.0, 0.0);
        let centres = self.bins.centres();
        let last = match over {
            FitOver::PairsToMinimum => self
                .moments(kind)
                .iter()
                .enumerate()
                // A sparse tail bin (a handful of far pairs) must not define the minimum.
                .filter(|(_, m)| m.count >= min_count_for_minimum(self.moments(kind)).max(min_pairs))
                .filter_map(|(i, m)| m.mean().map(|v| (i, v)))
                .fold(None, |best: Option<(usize, f64)>, (i, v)| match best {
                    Some((_, bv)) if bv <= v => best,
                    _ => Some((i, v)),
                })
                .map_or(0, |(i, _)| i),
            _ => usize::MAX,
        };
        for (i, (m, &c)) in self.moments(kind).iter().zip(&centres).enumerate() {
            if m.count < min_pairs || i > last {
                continue;
            }
            w += m.count;
            match over {
                FitOver::Pairs | FitOver::PairsToMinimum => {
                    sx += m.sum_x;
                    sxx += m.sum_xx;
                    sy += m.sum_y;
                    sxy += m.sum_xy;
                }
                FitOver::Bins => {
                    // Weight count, point (centre, mean): count * mean = sum_y.
                    let n = m.count as f64;
                    sx += n * c;
                    sxx += n * c * c;
                    sy += m.sum_y;
                    sxy += c * m.sum_y;
                }
            }
        }
        if w == 0 {
            return None;
        }
        let n = w as f64;
        let (mx, my) = (sx / n, sy / n);
        let vxx = sxx / n - mx * mx;
        // Relative guard: a single distinct x leaves only rounding in vxx.
        if vxx <= 1e-12 * (sxx / n).max(f64::MIN_POSITIVE) {
            return None;
        }
        let slope = (sxy / n - mx * my) / vxx;
        Some(LinearFit { slope, intercept: my - slope * mx, weight: w })
    }

    /// v3 stiff domain size over every non-empty bin; see [`Self::linear_fit_crossing_min`].
    pub fn linear_fit_crossing(&self, kind: StiffnessKind, over: FitOver) -> Crossing {
        self.linear_fit_crossing_min(kind, over, 1)
    }

    /// v3 stiff domain size / critical length: the zero of the least-squares line through the
    /// bins holding at least `min_pairs` pairs. Fewer than two such bins is
    /// [`Crossing::NoData`] (a line inside one bin says nothing about where the curve crosses).
    /// Reported as `StartsNegative` when the line is `<= 0` already at `bins.lo`, and
    /// `NeverCrosses` (censored at `bins.hi`) when its slope is `>= 0` or its zero lies beyond
    /// `bins.hi` (extrapolated zero given in the reason, not as a number).
    pub fn linear_fit_crossing_min(&self, kind: StiffnessKind, over: FitOver, min_pairs: u64) -> Crossing {
        let qualifying = self.moments(kind).iter().filter(|m| m.count >= min_pairs.max(1)).count();
        if min_pairs > 1 && qualifying < 2 {
            return Crossing::NoData {
                reason: format!("{qualifying} bin(s) hold at least {min_pairs} pairs; a fit needs two"),
            };
        }
        let Some(f) = self.linear_fit_min(kind, over, min_pairs) else {
            return Crossing::NoData { reason: "fewer than two distinct distances with pairs".to_string() };
        };
        let at_lo = f.intercept + f.slope * self.bins.lo;
        if at_lo <= 0.0 {
            return Crossing::StartsNegative { distance: self.bins.lo, value: at_lo };
        }
        if f.slope >= 0.0 {
            return Crossing::NeverCrosses {
                reason: format!("fitted slope {} >= 0 with value {at_lo} > 0 at d = {}", f.slope, self.bins.lo),
                beyond: Some(self.bins.hi),
            };
        }
        let x0 = -f.intercept / f.slope;
        if x0 > self.bins.hi {
            return Crossing::NeverCrosses {
                reason: format!(
                    "fitted line reaches 0 only at d = {x0}, beyond the binned range ending at {}",
                    self.bins.hi
                ),
                beyond: Some(self.bins.hi),
            };
        }
        Crossing::Found { distance: x0 }
    }
}

impl Crossing {
    /// The stiff domain as a possibly right-censored observation: `(value, censored)`.
    /// `Found` is exact; `StartsNegative` is a domain of size 0 (the curve is negative at the
    /// smallest distance read); `NeverCrosses` is censored at `beyond`; `NoData` (and old records
    /// without `beyond`) give `None`.
    pub fn as_observation(&self) -> Option<(f64, bool)> {
        match self {
            Crossing::Found { distance } => Some((*distance, false)),
            Crossing::StartsNegative { .. } => Some((0.0, false)),
            Crossing::NeverCrosses { beyond, .. } => beyond.map(|b| (b, true)),
            Crossing::NoData { .. } => None,
        }
    }
}

/// Checked K-side inputs shared by all spaces.
struct KInputs {
    n: usize,
    inv: Vec<f64>,
    zero_norm: Vec<usize>,
}

fn check_k<F: Float>(k: ArrayView2<F>, labels: &[u32], s: &StiffnessSettings) -> Result<KInputs> {
    s.validate()?;
    let n = validate::check_square(k)?;
    if labels.len() != n {
        return Err(AnalysisError::LengthMismatch { what: "labels", expected: n, got: labels.len() });
    }
    let (inv, zero_norm) = validate::inv_norms("diagonal of k", k.diag())?;
    validate::check_symmetric(k, &inv, s.sym_tol)?;
    Ok(KInputs { n, inv: inv.iter().map(|x| x.unwrap_or(0.0)).collect(), zero_norm })
}

/// Row-normalised copy of `reps` in f32 (norms in f64); zero rows stay zero and are listed.
fn normalise_rows(reps: ArrayView2<f32>) -> (Array2<f32>, Vec<bool>, Vec<usize>) {
    let mut xn = reps.to_owned();
    let mut valid = vec![true; reps.nrows()];
    let mut zero = Vec::new();
    for (i, mut row) in xn.outer_iter_mut().enumerate() {
        let norm = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        if norm == 0.0 {
            valid[i] = false;
            zero.push(i);
        } else {
            let inv = (1.0 / norm) as f32;
            row.mapv_inplace(|v| v * inv);
        }
    }
    (xn, valid, zero)
}

type BlockOut = (Vec<BinMoments>, Vec<BinMoments>, u64, (f64, usize, usize, f64));

#[allow(clippy::too_many_arguments)]
fn curve_for_space<F: Float>(
    k: ArrayView2<F>,
    ki: &KInputs,
    reps: ArrayView2<f32>,
    space: Option<&str>,
    labels: &[u32],
    filter: PairFilter,
    bins: &BinSpec,
    s: &StiffnessSettings,
) -> Result<DistanceCurve> {
    let n = ki.n;
    if reps.nrows() != n {
        return Err(AnalysisError::LengthMismatch { what: "rows of reps", expected: n, got: reps.nrows() });
    }
    validate::check_finite("reps", reps)?;
    let (xn, valid, zero_reps) = normalise_rows(reps);
    let inv = &ki.inv;
    let nb = bins.bins;
    let blocks: Vec<usize> = (0..n).step_by(ROW_BLOCK).collect();
    let outs: Vec<BlockOut> = blocks
        .par_iter()
        .map(|&r0| {
            let r1 = (r0 + ROW_BLOCK).min(n);
            // Cosines of rows r0..r1 against columns r0..n (only j > i is used).
            let g = xn.slice(s![r0..r1, ..]).dot(&xn.slice(s![r0.., ..]).t());
            let mut sm = vec![BinMoments::default(); nb];
            let mut cm = vec![BinMoments::default(); nb];
            let mut oor = 0u64;
            let mut worst = (0.0f64, 0usize, 0usize, 0.0f64);
            for i in r0..r1 {
                if !valid[i] {
                    continue;
                }
                let grow = g.row(i - r0);
                let krow = k.row(i);
                let (li, inv_i) = (labels[i], inv[i]);
                for j in (i + 1)..n {
                    if !valid[j] || !filter.keep(li, labels[j]) {
                        continue;
                    }
                    let d = 1.0 - f64::from(grow[j - r0]).clamp(-1.0, 1.0);
                    let Some(b) = bins.index(d) else {
                        oor += 1;
                        continue;
                    };
                    let v = krow[j].to_f64();
                    sm[b].push(d, s.sign(v));
                    let inv_j = inv[j];
                    if inv_i > 0.0 && inv_j > 0.0 {
                        let c = v * inv_i * inv_j;
                        if c.abs() - 1.0 > worst.0 {
                            worst = (c.abs() - 1.0, i, j, c);
                        }
                        cm[b].push(d, c.clamp(-1.0, 1.0));
                    }
                }
            }
            (sm, cm, oor, worst)
        })
        .collect();
    // Merge in block order: identical results whatever the thread count.
    let mut sm = vec![BinMoments::default(); nb];
    let mut cm = vec![BinMoments::default(); nb];
    let mut oor = 0u64;
    let mut worst = (0.0f64, 0usize, 0usize, 0.0f64);
    for (bs, bc, o, w) in &outs {
        for b in 0..nb {
            sm[b].merge(&bs[b]);
            cm[b].merge(&bc[b]);
        }
        oor += o;
        if w.0 > worst.0 {
            worst = *w;
        }
    }
    if worst.0 > s.cos_tol {
        return Err(AnalysisError::CosineOutOfBounds {
            what: "k",
            row: worst.1,
            col: worst.2,
            value: worst.3,
            tol: s.cos_tol,
        });
    }
    let mut curve = DistanceCurve::from_moments(*bins, filter, *s, sm, cm)?;
    curve.space = space.map(str::to_string);
    curve.n = n;
    curve.out_of_range_pairs = oor;
    curve.zero_norm_examples = ki.zero_norm.clone();
    curve.zero_norm_representations = zero_reps;
    Ok(curve)
}

/// Stiffness vs dot-product distance in one representation space.
///
/// * `k`: (N, N) gradient Gram matrix (f32 or f64); only its upper triangle is read for pairs
///   (symmetry is checked within `sym_tol`).
/// * `reps`: (N, D) representation of the same examples, f32.
/// * `labels`: (N,), used by `filter` only.
/// * `bins`: distance bins (default 40 over [0, 2]).
///
/// Cost O(N^2 D / 2) for the cosines (f32 matrixmultiply) + O(N^2 / 2) binning.
pub fn distance_curve<F: Float>(
    k: ArrayView2<F>,
    reps: ArrayView2<f32>,
    labels: &[u32],
    filter: PairFilter,
    bins: &BinSpec,
    s: &StiffnessSettings,
) -> Result<DistanceCurve> {
    bins.validate()?;
    let ki = check_k(k, labels, s)?;
    curve_for_space(k, &ki, reps, None, labels, filter, bins, s)
}

/// [`distance_curve`] for several named spaces at once (K is validated once).
///
/// * `spaces`: `(name, reps)` pairs, each reps (N, D_space).
pub fn distance_curves<F: Float>(
    k: ArrayView2<F>,
    spaces: &[(&str, ArrayView2<f32>)],
    labels: &[u32],
    filter: PairFilter,
    bins: &BinSpec,
    s: &StiffnessSettings,
) -> Result<Vec<DistanceCurve>> {
    bins.validate()?;
    let ki = check_k(k, labels, s)?;
    spaces.iter().map(|(name, reps)| curve_for_space(k, &ki, *reps, Some(name), labels, filter, bins, s)).collect()
}
