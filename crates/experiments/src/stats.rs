//! The statistics every pipeline's figures use: seed means with Student-t intervals, interval
//! comparisons, trend tests (least-squares slope, Spearman rank correlation, direction votes).
//! Censored values (runs that never reached a threshold, curves without a crossing) are left
//! out by the callers and counted beside the statistic; `seed_mean` drops non-finite values.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean of a few values with a 95% Student-t half-width (`None` below two values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedMean {
    /// Mean of `values`.
    pub mean: f64,
    /// Half-width of the 95% Student-t interval (`None` below two values).
    pub half_width: Option<f64>,
    /// Number of values.
    pub n: usize,
    /// The values averaged.
    pub values: Vec<f64>,
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom (NaN for `df = 0`).
pub fn t975(df: usize) -> f64 {
    if df == 0 {
        return f64::NAN;
    }
    match StudentsT::new(0.0, 1.0, df as f64) {
        Ok(t) => t.inverse_cdf(0.975),
        Err(_) => f64::NAN,
    }
}

/// Mean and 95% interval half-width of the finite `values`; `None` when there are none.
pub fn seed_mean(values: &[f64]) -> Option<SeedMean> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let half_width = (n >= 2).then(|| {
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        t975(n - 1) * (var / n as f64).sqrt()
    });
    Some(SeedMean { mean, half_width, n, values: v })
}

/// Whether two intervals given as `(mean, half-width)` do not overlap; `false` when either
/// half-width is not finite.
pub fn intervals_separated(a: (f64, f64), b: (f64, f64)) -> bool {
    let ((ma, ea), (mb, eb)) = (a, b);
    ea.is_finite() && eb.is_finite() && ((ma + ea) < (mb - eb) || (mb + eb) < (ma - ea))
}

/// Whether two intervals given as `(lo, hi)` are disjoint; `None` when either is missing.
pub fn intervals_disjoint(a: Option<(f64, f64)>, b: Option<(f64, f64)>) -> Option<bool> {
    let ((alo, ahi), (blo, bhi)) = (a?, b?);
    Some(ahi < blo || bhi < alo)
}

/// Direction votes of trend slopes: `(positive, negative)`; missing and zero slopes abstain.
pub fn direction_votes(slopes: impl IntoIterator<Item = Option<f64>>) -> (usize, usize) {
    let (mut up, mut down) = (0, 0);
    for s in slopes.into_iter().flatten() {
        if s > 0.0 {
            up += 1;
        } else if s < 0.0 {
            down += 1;
        }
    }
    (up, down)
}

/// Least-squares slope of `y` against `x` (`None` with fewer than two distinct x).
pub fn slope(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    if x.len() < 2 {
        return None;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Spearman rank correlation (average ranks for ties); `None` below 3 points or with constant data.
/// The one implementation lives in `stiff_analysis::trend`, next to its permutation test.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    stiff_analysis::trend::spearman_rho(x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_statistics() {
        // mean 2, sample sd 1, n 3: half width = t(2) / sqrt(3). For 2 dof the quantile has the
        // closed form (2p - 1) / sqrt(2 p (1 - p)) = 0.95 / sqrt(0.04875) = 4.3026527 at p = 0.975.
        let m = seed_mean(&[1.0, 2.0, 3.0, f64::NAN]).unwrap();
        assert_eq!(m.n, 3);
        assert!((m.mean - 2.0).abs() < 1e-12);
        assert!((m.half_width.unwrap() - 0.95 / 0.04875f64.sqrt() / 3f64.sqrt()).abs() < 1e-9);
        // df 1: tan(0.475 pi) = 12.706205 (closed form); df 10, 30, 10^4: standard tables.
        for (df, t) in [(1, 12.706_205), (10, 2.228_139), (30, 2.042_272), (10_000, 1.960_201)] {
            assert!((t975(df) - t).abs() < 2e-6, "df {df}: {}", t975(df));
        }
        assert!(t975(0).is_nan());
        assert!(intervals_separated((0.0, 1.0), (2.5, 1.0)) && !intervals_separated((0.0, 1.0), (1.5, 1.0)));
        assert!(!intervals_separated((0.0, f64::NAN), (5.0, 1.0)));
        assert_eq!(intervals_disjoint(Some((0.0, 1.0)), Some((1.5, 2.0))), Some(true));
        assert_eq!(intervals_disjoint(Some((0.0, 1.0)), None), None);
        assert_eq!(direction_votes([Some(1.0), Some(-2.0), Some(0.5), None, Some(0.0)]), (2, 1));
        assert!(seed_mean(&[f64::NAN]).is_none());
        // y = 3x + 1 exactly.
        assert!((slope(&[0.0, 1.0, 2.0], &[1.0, 4.0, 7.0]).unwrap() - 3.0).abs() < 1e-12);
        // Ranks (1,3,2,4) vs (1,2,3,4): rho = 1 - 6*2/(4*15) = 0.8.
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 15.0, 40.0]).unwrap() - 0.8).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
    }
}
