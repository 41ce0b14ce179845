//! Bootstrap confidence intervals for within- and between-class stiffness.
//!
//! Resampling is **stratified by class**: each replicate draws `n_a` examples with
//! replacement from class `a`, for every class, so class sizes (and so the set of cells) stay
//! fixed. A replicate is a weight vector `w` (multiplicities). Its class matrix is
//! `C_w[a,b] = sum_{i in a, j in b, i != j} w_i w_j S_ij / sum_{i in a, j in b, i != j} w_i w_j`:
//! pairs of draws of the *same* example are left out, just as self-pairs are in the point
//! estimate (their stiffness is trivially 1). Cosine uses only non-zero-norm examples.
//!
//! All replicates are evaluated together. Only the means of the diagonal and of the
//! off-diagonal are needed, so with scaled weights `w'_j = w_j / W_class(j)` (W = a class's
//! total weight) the whole off-diagonal sum for a block of rows of class `a` is one tall
//! product `S_block (m, N) x W' (N, R)`, minus the class-`a` columns, which a small product
//! `S_block[:, a] (m, n_a) x W_a (n_a, R)` gives along with the diagonal numerator. Cost
//! O(R N^2) in efficient matrix products, memory O(R N + block N); no N x N matrix.

use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::class::{check_square_inputs, class_stiffness_checked, ClassStiffness};
use crate::error::{AnalysisError, Result};
use crate::float::Float;
use crate::settings::{StiffnessSettings, SCHEMA_VERSION};

/// Rows of one class handled per task (bounds the `(rows, N)` scratch blocks).
const ROW_BLOCK: usize = 128;

/// A bootstrap percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Ci {
    /// Point estimate on the full data.
    pub estimate: f64,
    /// Lower percentile bound, quantile `(1 - level) / 2` of the replicates.
    pub lo: f64,
    /// Upper percentile bound, quantile `(1 + level) / 2`.
    pub hi: f64,
    /// Standard deviation of the replicates (bootstrap standard error).
    pub se: f64,
    /// Replicates in which the quantity was defined (had at least one cell with pairs).
    pub n_valid: usize,
}

/// Intervals for within, between and their difference (within - between).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WithinBetweenCi {
    /// Mean of the diagonal of the class matrix.
    pub within: Ci,
    /// Mean of the off-diagonal.
    pub between: Ci,
    /// `within - between`, per replicate.
    pub difference: Ci,
}

/// Bootstrap result for sign and cosine stiffness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BootstrapCi {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Settings that produced the stiffness values.
    pub settings: StiffnessSettings,
    /// Number of bootstrap replicates.
    pub reps: usize,
    /// Seed of the `ChaCha8Rng` drawing the resamples.
    pub seed: u64,
    /// Two-sided coverage, e.g. 0.95.
    pub level: f64,
    /// How examples were resampled.
    pub resampling: String,
    /// Sign stiffness intervals.
    pub sign: WithinBetweenCi,
    /// Cosine stiffness intervals.
    pub cosine: WithinBetweenCi,
}

/// Within/between of one replicate; `None` when no cell had pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RepStats {
    pub sign: (Option<f64>, Option<f64>),
    pub cos: (Option<f64>, Option<f64>),
}

/// How [`bootstrap_within_between`] resamples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BootstrapOptions {
    /// Replicates, at least 2 (100-1000 typical). Default 200.
    pub reps: usize,
    /// RNG seed: same seed, same result bit for bit. Default 0.
    pub seed: u64,
    /// Coverage of the percentile intervals, in (0, 1). Default 0.95.
    pub level: f64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self { reps: 200, seed: 0, level: 0.95 }
    }
}

impl BootstrapOptions {
    /// `reps` replicates from `seed` with coverage `level`.
    pub fn new(reps: usize, seed: u64, level: f64) -> Self {
        Self { reps, seed, level }
    }
}

/// Bootstrap CIs for within- and between-class sign and cosine stiffness.
///
/// * `k`: (N, N) Gram matrix; `labels`: (N,).
/// * `opts`: replicates, seed and coverage ([`BootstrapOptions`]).
///
/// Resampling is stratified by class (see the module docs).
pub fn bootstrap_within_between<F: Float>(
    k: ArrayView2<F>,
    labels: &[u32],
    num_classes: usize,
    s: &StiffnessSettings,
    opts: &BootstrapOptions,
) -> Result<BootstrapCi> {
    let BootstrapOptions { reps, seed, level } = *opts;
    if reps < 2 {
        return Err(AnalysisError::InvalidSetting {
            what: "reps",
            reason: format!("need at least 2 bootstrap replicates, got {reps}"),
        });
    }
    if !(level > 0.0 && level < 1.0) {
        return Err(AnalysisError::InvalidSetting { what: "level", reason: format!("must be in (0, 1), got {level}") });
    }
    let inp = check_square_inputs(k, labels, num_classes, s)?;
    let inv = inp.inv.clone();
    // The point estimate also rejects cosines beyond cos_tol before any replicate.
    let point = class_stiffness_checked(k, labels, num_classes, s, inp)?;
    let wt = stratified_weights(labels, num_classes, reps, seed);
    let stats = weighted_stats_checked(k, labels, num_classes, s, &inv, &wt);
    Ok(summarise(&point, &stats, reps, seed, level, s))
}

/// Replicate weights `(reps, N)`: per class, `n_a` draws with replacement among its members.
pub(crate) fn stratified_weights(labels: &[u32], num_classes: usize, reps: usize, seed: u64) -> Array2<f64> {
    let mut members = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        members[l as usize].push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut wt = Array2::<f64>::zeros((reps, labels.len()));
    for r in 0..reps {
        for m in members.iter().filter(|m| !m.is_empty()) {
            for _ in 0..m.len() {
                wt[[r, m[rng.random_range(0..m.len())]]] += 1.0;
            }
        }
    }
    wt
}

/// Within/between of every replicate given weights `wt: (R, N)` (checks the inputs).
#[cfg(test)]
pub(crate) fn weighted_stats<F: Float>(
    k: ArrayView2<F>,
    labels: &[u32],
    num_classes: usize,
    s: &StiffnessSettings,
    wt: &Array2<f64>,
) -> Result<Vec<RepStats>> {
    let inp = check_square_inputs(k, labels, num_classes, s)?;
    Ok(weighted_stats_checked(k, labels, num_classes, s, &inp.inv, wt))
}

/// Within/between of every replicate; `inv`: (N,) `1/|g_i|`, 0 for zero-norm examples.
fn weighted_stats_checked<F: Float>(
    k: ArrayView2<F>,
    labels: &[u32],
    num_classes: usize,
    s: &StiffnessSettings,
    inv: &[f64],
    wt: &Array2<f64>,
) -> Vec<RepStats> {
    let (n, c, r) = (labels.len(), num_classes, wt.nrows());
    let mut members = vec![Vec::new(); c];
    for (i, &l) in labels.iter().enumerate() {
        members[l as usize].push(i);
    }
    let valid: Vec<f64> = inv.iter().map(|&x| f64::from(u8::from(x > 0.0))).collect();
    // Per replicate and class: total weight W_ra and sum of squared weights, for all examples
    // (sign) and for non-zero-norm ones (cosine).
    let mut tot = Array2::<f64>::zeros((r, c));
    let mut sq = Array2::<f64>::zeros((r, c));
    let mut tot_v = Array2::<f64>::zeros((r, c));
    let mut sq_v = Array2::<f64>::zeros((r, c));
    for q in 0..r {
        for i in 0..n {
            let (l, w) = (labels[i] as usize, wt[[q, i]]);
            tot[[q, l]] += w;
            sq[[q, l]] += w * w;
            tot_v[[q, l]] += w * valid[i];
            sq_v[[q, l]] += w * w * valid[i];
        }
    }
    // Scaled weights w'_rj = w_rj / W_{r, class(j)} (0 where W = 0), as (N, R) so that one
    // tall product S_block W' gives sum_b num[a,b] / W_rb for every replicate at once.
    let scaled = |tot: &Array2<f64>| {
        Array2::from_shape_fn((n, r), |(j, q)| {
            let t = tot[[q, labels[j] as usize]];
            if t > 0.0 {
                wt[[q, j]] / t
            } else {
                0.0
            }
        })
    };
    let (ws, wc) = (scaled(&tot), scaled(&tot_v));
    let tasks: Vec<(usize, &[usize])> =
        members.iter().enumerate().flat_map(|(a, m)| m.chunks(ROW_BLOCK).map(move |ch| (a, ch))).collect();
    // Per task, per replicate: (sum_i w_i (T_i - U_i / W_a), sum_i w_i U_i) for sign and cosine,
    // where T_i = sum_j S_ij w'_j over all j and U_i = sum_{j in a} S_ij w_j.
    type Part = (usize, [Vec<f64>; 4]);
    let partials: Vec<Part> = tasks
        .par_iter()
        .map(|&(a, rows)| {
            let m = rows.len();
            let mut ss = Array2::<f64>::zeros((m, n));
            let mut sc = Array2::<f64>::zeros((m, n));
            for (t, &i) in rows.iter().enumerate() {
                let inv_i = inv[i];
                let mut srow = ss.row_mut(t);
                let mut crow = sc.row_mut(t);
                for (j, kv) in k.row(i).iter().enumerate() {
                    if j == i {
                        continue; // self-pairs excluded
                    }
                    let v = kv.to_f64();
                    srow[j] = s.sign(v);
                    // Overshoot beyond cos_tol was rejected by the point estimate.
                    crow[j] = (v * inv_i * inv[j]).clamp(-1.0, 1.0);
                }
            }
            let ts = ss.dot(&ws); // (m, R)
            let tc = sc.dot(&wc);
            let own = &members[a];
            let wa = Array2::from_shape_fn((own.len(), r), |(t, q)| wt[[q, own[t]]]);
            let cols_a = |sm: &Array2<f64>| Array2::from_shape_fn((m, own.len()), |(t, u)| sm[[t, own[u]]]);
            let us = cols_a(&ss).dot(&wa); // (m, R)
            let uc = cols_a(&sc).dot(&wa);
            let mut out = [vec![0.0; r], vec![0.0; r], vec![0.0; r], vec![0.0; r]];
            for q in 0..r {
                let (wa_s, wa_c) = (tot[[q, a]], tot_v[[q, a]]);
                for (t, &i) in rows.iter().enumerate() {
                    let w = wt[[q, i]];
                    if wa_s > 0.0 {
                        out[0][q] += w * (ts[[t, q]] - us[[t, q]] / wa_s);
                    }
                    out[1][q] += w * us[[t, q]];
                    if wa_c > 0.0 {
                        out[2][q] += w * (tc[[t, q]] - uc[[t, q]] / wa_c);
                    }
                    out[3][q] += w * uc[[t, q]];
                }
            }
            (a, out)
        })
        .collect();
    // Combine in task order so results do not depend on thread scheduling.
    let mut between_num = [Array2::<f64>::zeros((r, c)), Array2::<f64>::zeros((r, c))];
    let mut within_num = [Array2::<f64>::zeros((r, c)), Array2::<f64>::zeros((r, c))];
    for (a, out) in &partials {
        for q in 0..r {
            between_num[0][[q, *a]] += out[0][q];
            within_num[0][[q, *a]] += out[1][q];
            between_num[1][[q, *a]] += out[2][q];
            within_num[1][[q, *a]] += out[3][q];
        }
    }
    let summarise = |q: usize, kind: usize, tot: &Array2<f64>, sq: &Array2<f64>| {
        let (mut ws, mut wn, mut bs, mut kr) = (0.0, 0usize, 0.0, 0usize);
        for a in 0..c {
            let w = tot[[q, a]];
            if w <= 0.0 {
                continue;
            }
            kr += 1;
            // sum_{b != a} C[a,b] = (1 / W_a) sum_i w_i (T_i - U_i / W_a).
            bs += between_num[kind][[q, a]] / w;
            let den = w * w - sq[[q, a]];
            if den > 0.0 {
                ws += within_num[kind][[q, a]] / den;
                wn += 1;
            }
        }
        ((wn > 0).then(|| ws / wn as f64), (kr > 1).then(|| bs / (kr * (kr - 1)) as f64))
    };
    (0..r).map(|q| RepStats { sign: summarise(q, 0, &tot, &sq), cos: summarise(q, 1, &tot_v, &sq_v) }).collect()
}

/// Quantile (linear interpolation between order statistics, "type 7") of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

fn ci(estimate: f64, mut vals: Vec<f64>, level: f64) -> Ci {
    if vals.is_empty() {
        // No defined replicate: the interval degenerates to the estimate, flagged by n_valid.
        return Ci { estimate, lo: estimate, hi: estimate, se: 0.0, n_valid: 0 };
    }
    vals.sort_by(f64::total_cmp);
    let n = vals.len() as f64;
    let mean = vals.iter().sum::<f64>() / n;
    let var = if vals.len() > 1 { vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    Ci {
        estimate,
        lo: quantile(&vals, (1.0 - level) / 2.0),
        hi: quantile(&vals, (1.0 + level) / 2.0),
        se: var.sqrt(),
        n_valid: vals.len(),
    }
}

fn wb_ci(
    within: f64,
    between: f64,
    reps: impl Iterator<Item = (Option<f64>, Option<f64>)> + Clone,
    level: f64,
) -> WithinBetweenCi {
    WithinBetweenCi {
        within: ci(within, reps.clone().filter_map(|x| x.0).collect(), level),
        between: ci(between, reps.clone().filter_map(|x| x.1).collect(), level),
        difference: ci(within - between, reps.filter_map(|(w, b)| Some(w? - b?)).collect(), level),
    }
}

fn summarise(
    point: &ClassStiffness,
    stats: &[RepStats],
    reps: usize,
    seed: u64,
    level: f64,
    s: &StiffnessSettings,
) -> BootstrapCi {
    BootstrapCi {
        schema_version: SCHEMA_VERSION,
        settings: *s,
        reps,
        seed,
        level,
        resampling: "stratified by class: n_a draws with replacement per class; pairs of \
                     draws of the same example excluded"
            .to_string(),
        sign: wb_ci(point.sign.within, point.sign.between, stats.iter().map(|x| x.sign), level),
        cosine: wb_ci(point.cosine.within, point.cosine.between, stats.iter().map(|x| x.cos), level),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::class_stiffness;
    use rand::Rng;

    /// Sums of a few hundred f64 terms in different orders: rounding ~1e-14.
    const ORACLE_TOL: f64 = 1e-10;

    fn data(n: usize, c: usize, seed: u64) -> (Array2<f64>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut g = Array2::from_shape_fn((n, 3), |_| rng.random_range(-1.0..1.0));
        g.row_mut(1).fill(0.0); // one zero-norm gradient
        let k = g.dot(&g.t());
        let labels = (0..n).map(|i| (i % c) as u32).collect();
        (k, labels)
    }

    /// Oracle: expand each replicate into its list of draws and average over pairs of draws
    /// of distinct examples, cell by cell, straight from the definition.
    fn naive(k: &Array2<f64>, labels: &[u32], c: usize, w: ndarray::ArrayView1<f64>) -> RepStats {
        let draws: Vec<usize> = (0..w.len()).flat_map(|i| std::iter::repeat_n(i, w[i] as usize)).collect();
        let cell = |cos: bool| {
            let mut sum = vec![vec![0.0; c]; c];
            let mut cnt = vec![vec![0.0; c]; c];
            for &i in &draws {
                for &j in &draws {
                    if i == j || (cos && (k[[i, i]] == 0.0 || k[[j, j]] == 0.0)) {
                        continue;
                    }
                    let (a, b) = (labels[i] as usize, labels[j] as usize);
                    sum[a][b] += if cos {
                        k[[i, j]] / (k[[i, i]] * k[[j, j]]).sqrt()
                    } else {
                        k[[i, j]].signum() * f64::from(u8::from(k[[i, j]] != 0.0))
                    };
                    cnt[a][b] += 1.0;
                }
            }
            let (mut w, mut wn, mut b, mut bn) = (0.0, 0, 0.0, 0);
            for x in 0..c {
                for y in 0..c {
                    if cnt[x][y] > 0.0 {
                        if x == y {
                            w += sum[x][y] / cnt[x][y];
                            wn += 1;
                        } else {
                            b += sum[x][y] / cnt[x][y];
                            bn += 1;
                        }
                    }
                }
            }
            ((wn > 0).then(|| w / wn as f64), (bn > 0).then(|| b / bn as f64))
        };
        RepStats { sign: cell(false), cos: cell(true) }
    }

    fn close(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= ORACLE_TOL,
            (None, None) => true,
            _ => false,
        }
    }

    #[test]
    fn replicates_match_naive_oracle() {
        let (k, labels) = data(23, 3, 11);
        let s = StiffnessSettings::default();
        let wt = stratified_weights(&labels, 3, 12, 5);
        let stats = weighted_stats(k.view(), &labels, 3, &s, &wt).unwrap();
        for (q, st) in stats.iter().enumerate() {
            let o = naive(&k, &labels, 3, wt.row(q));
            assert!(close(st.sign.0, o.sign.0) && close(st.sign.1, o.sign.1), "{st:?} {o:?}");
            assert!(close(st.cos.0, o.cos.0) && close(st.cos.1, o.cos.1), "{st:?} {o:?}");
        }
    }

    #[test]
    fn unit_weights_reproduce_point_estimate() {
        let (k, labels) = data(30, 4, 2);
        let s = StiffnessSettings::default();
        let point = class_stiffness(k.view(), &labels, 4, &s).unwrap();
        let wt = Array2::<f64>::ones((1, 30));
        let st = weighted_stats(k.view(), &labels, 4, &s, &wt).unwrap()[0];
        assert!(close(st.sign.0, Some(point.sign.within)));
        assert!(close(st.sign.1, Some(point.sign.between)));
        assert!(close(st.cos.0, Some(point.cosine.within)));
        assert!(close(st.cos.1, Some(point.cosine.between)));
    }

    #[test]
    fn stratified_weights_keep_class_sizes() {
        let labels: Vec<u32> = (0..17).map(|i| (i % 3) as u32).collect();
        let wt = stratified_weights(&labels, 3, 20, 9);
        for row in wt.outer_iter() {
            for a in 0..3u32 {
                let tot: f64 = (0..17).filter(|&i| labels[i] == a).map(|i| row[i]).sum();
                let n_a = labels.iter().filter(|&&l| l == a).count() as f64;
                assert_eq!(tot, n_a);
            }
        }
    }

    #[test]
    fn seeded_and_sensible() {
        let (k, labels) = data(40, 4, 3);
        let s = StiffnessSettings::default();
        let a = bootstrap_within_between(k.view(), &labels, 4, &s, &BootstrapOptions::new(50, 7, 0.9)).unwrap();
        let b = bootstrap_within_between(k.view(), &labels, 4, &s, &BootstrapOptions::new(50, 7, 0.9)).unwrap();
        assert_eq!(a, b); // bit-identical with the same seed
        let c = bootstrap_within_between(k.view(), &labels, 4, &s, &BootstrapOptions::new(50, 8, 0.9)).unwrap();
        assert_ne!(a.sign.within.lo, c.sign.within.lo);
        for ci in [a.sign.within, a.sign.between, a.cosine.within, a.cosine.difference] {
            assert!(ci.lo <= ci.hi && ci.se > 0.0 && ci.n_valid == 50, "{ci:?}");
        }
    }

    #[test]
    fn identical_gradients_per_class_give_degenerate_interval() {
        // Class 0 gradients all (1,0), class 1 all (0,1): every within pair has sign and cosine
        // 1, every between pair 0, in every replicate, so each interval is a point.
        let g = Array2::from_shape_fn((10, 2), |(i, d)| f64::from(u8::from(i % 2 == d)));
        let k = g.dot(&g.t());
        let labels: Vec<u32> = (0..10).map(|i| (i % 2) as u32).collect();
        let r = bootstrap_within_between(
            k.view(),
            &labels,
            2,
            &StiffnessSettings::default(),
            &BootstrapOptions::new(20, 1, 0.95),
        )
        .unwrap();
        // The between sum is formed as (all columns) - (own class): exact 0 up to rounding.
        const DEGENERATE_TOL: f64 = 1e-12;
        for ci in [r.sign.within, r.cosine.within] {
            assert!((ci.lo - 1.0).abs() <= DEGENERATE_TOL && (ci.hi - 1.0).abs() <= DEGENERATE_TOL);
        }
        for ci in [r.sign.between, r.cosine.between] {
            assert!(ci.lo.abs() <= DEGENERATE_TOL && ci.hi.abs() <= DEGENERATE_TOL, "{ci:?}");
        }
    }
}
