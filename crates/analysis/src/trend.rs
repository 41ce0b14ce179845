//! Trend tests whose units are seeds: does a quantity rise or fall with a setting (learning rate,
//! layer depth) across independent training runs?
//!
//! * [`spearman_permutation`]: Spearman's rank correlation between `x` and `y` over all
//!   (setting, seed) observations, with a two-sided permutation p-value (values shuffled across
//!   settings; seeded Monte Carlo, or exact enumeration when the number of orderings is small).
//! * [`censored_kendall_permutation`]: the same question when some `y` are right-censored (a stiff
//!   domain larger than the largest distance seen: we only know `y > c`). Kendall-type score over
//!   pairs whose order is determined despite censoring (Gehan's rule), permutation p-value.
//!   Censored observations are used, never dropped.
//!
//! A [`Verdict`] reads the sign of the statistic when `p < alpha`, and says "inconclusive"
//! otherwise.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{AnalysisError, Result};

/// Default number of Monte Carlo permutations.
pub const DEFAULT_PERMUTATIONS: usize = 10_000;
/// Up to this many distinct orderings the permutation distribution is enumerated exactly.
const EXACT_LIMIT: usize = 40_320; // 8!

/// Options of a permutation trend test: [`TrendOptions::default`] and the `with_*` setters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TrendOptions {
    /// Monte Carlo permutations when the exact distribution is too large. Default 10,000.
    pub permutations: usize,
    /// Seed of the permutations. Default 0.
    pub seed: u64,
    /// Significance level of the verdict. Default 0.05.
    pub alpha: f64,
}

impl Default for TrendOptions {
    fn default() -> Self {
        Self { permutations: DEFAULT_PERMUTATIONS, seed: 0, alpha: 0.05 }
    }
}

crate::settings::setters!(TrendOptions {
    with_permutations => permutations: usize,
    with_seed => seed: u64,
    with_alpha => alpha: f64,
});

/// Direction of a trend, or none shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// `y` rises with `x` (`p < alpha`).
    Increasing,
    /// `y` falls with `x` (`p < alpha`).
    Decreasing,
    /// No trend at level `alpha`, or too little data.
    Inconclusive,
}

/// Result of a trend test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TrendTest {
    /// `"spearman_permutation"` or `"censored_kendall_permutation"`.
    pub test: String,
    /// Spearman's rho, or the censored Kendall tau (score / comparable pairs).
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Observations used.
    pub n: usize,
    /// Censored observations among them (0 for Spearman).
    pub censored: usize,
    /// Permutations drawn (or enumerated, see `exact`).
    pub permutations: usize,
    /// Whether the permutation distribution was enumerated exactly.
    pub exact: bool,
    /// Level used for the verdict.
    pub alpha: f64,
    /// Direction at level `alpha`.
    pub verdict: Verdict,
}

fn check_xy(x: &[f64], y: &[f64]) -> Result<()> {
    if x.len() != y.len() {
        return Err(AnalysisError::LengthMismatch { what: "y", expected: x.len(), got: y.len() });
    }
    if let Some(v) = x.iter().chain(y).find(|v| !v.is_finite()) {
        return Err(AnalysisError::InvalidSetting { what: "trend data", reason: format!("non-finite value {v}") });
    }
    Ok(())
}

/// Average ranks (1-based), ties sharing the mean of their positions.
pub fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// Spearman's rho (Pearson correlation of average ranks); `None` below 3 points or when either
/// variable is constant.
pub fn spearman_rho(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() < 3 || x.len() != y.len() {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Kendall-type score with right-censored `y` (Gehan's rule): for each pair with `x_a < x_b`,
/// +1 if `y_b > y_a` is certain, -1 if `y_b < y_a` is certain, 0 if tied or undetermined. An
/// observation with `censored[i]` only tells `y_true > y[i]`. Returns (score, comparable pairs).
pub fn censored_kendall_score(x: &[f64], y: &[f64], censored: &[bool]) -> (i64, usize) {
    let mut score = 0i64;
    let mut pairs = 0usize;
    for i in 0..x.len() {
        for j in 0..x.len() {
            if x[i] >= x[j] {
                continue;
            }
            // i has the smaller x.
            pairs += 1;
            score += order_certain(y[i], censored[i], y[j], censored[j]);
        }
    }
    (score, pairs)
}

/// +1 if the true `b` certainly exceeds the true `a`, -1 if certainly below, 0 otherwise.
fn order_certain(a: f64, a_cens: bool, b: f64, b_cens: bool) -> i64 {
    match (a_cens, b_cens) {
        (false, false) => (b > a) as i64 - (b < a) as i64,
        // True a > a; b < a-bound ⇒ b < a for sure. (b == a: true a > b as well.)
        (true, false) => -((b <= a) as i64),
        // True b > b; a <= b-bound ⇒ b > a for sure.
        (false, true) => (a <= b) as i64,
        (true, true) => 0,
    }
}

fn factorial_capped(n: usize) -> usize {
    (1..=n).try_fold(1usize, |acc, k| acc.checked_mul(k).filter(|&v| v <= EXACT_LIMIT)).unwrap_or(usize::MAX)
}

/// Heap's algorithm over all orderings of `items`, calling `f` on each.
fn for_each_permutation<T: Clone>(items: &mut [T], f: &mut dyn FnMut(&[T])) {
    let n = items.len();
    let mut c = vec![0usize; n];
    f(items);
    let mut i = 0;
    while i < n {
        if c[i] < i {
            if i % 2 == 0 {
                items.swap(0, i);
            } else {
                items.swap(c[i], i);
            }
            f(items);
            c[i] += 1;
            i = 0;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
}

/// Two-sided permutation p-value of `stat(perm)` against the observed `obs`: the share of
/// orderings with `|stat| >= |obs|` (exact), or `(1 + hits) / (1 + draws)` (Monte Carlo).
fn permutation_p<T: Clone>(
    items: &[T],
    obs: f64,
    opts: &TrendOptions,
    stat: &dyn Fn(&[T]) -> f64,
) -> (f64, usize, bool) {
    // Tolerance for "as extreme": permutations that tie the observed statistic up to rounding
    // must count as hits.
    let thresh = obs.abs() - 1e-12;
    let total = factorial_capped(items.len());
    if total <= EXACT_LIMIT {
        let mut hits = 0usize;
        let mut seen = 0usize;
        let mut work = items.to_vec();
        for_each_permutation(&mut work, &mut |p| {
            seen += 1;
            if stat(p).abs() >= thresh {
                hits += 1;
            }
        });
        return (hits as f64 / seen as f64, seen, true);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut work = items.to_vec();
    let mut hits = 0usize;
    for _ in 0..opts.permutations {
        work.shuffle(&mut rng);
        if stat(&work).abs() >= thresh {
            hits += 1;
        }
    }
    ((1 + hits) as f64 / (1 + opts.permutations) as f64, opts.permutations, false)
}

fn verdict(statistic: f64, p: f64, alpha: f64) -> Verdict {
    if p < alpha && statistic > 0.0 {
        Verdict::Increasing
    } else if p < alpha && statistic < 0.0 {
        Verdict::Decreasing
    } else {
        Verdict::Inconclusive
    }
}

/// Spearman trend test of `y` against `x` over all observations (e.g. one per (learning rate,
/// seed)). `None` when rho is undefined (fewer than 3 points, or a constant variable).
pub fn spearman_permutation(x: &[f64], y: &[f64], opts: &TrendOptions) -> Result<Option<TrendTest>> {
    check_xy(x, y)?;
    let Some(rho) = spearman_rho(x, y) else { return Ok(None) };
    let rx = average_ranks(x);
    let ry = average_ranks(y);
    let (p, permutations, exact) = permutation_p(&ry, rho, opts, &|perm| pearson(&rx, perm).unwrap_or(0.0));
    Ok(Some(TrendTest {
        test: "spearman_permutation".into(),
        statistic: rho,
        p_value: p,
        n: x.len(),
        censored: 0,
        permutations,
        exact,
        alpha: opts.alpha,
        verdict: verdict(rho, p, opts.alpha),
    }))
}

/// Censored Kendall trend test of `y` against `x`, `censored[i]` marking right-censored `y[i]`
/// (true value `> y[i]`). `None` when no pair of distinct `x` exists or no pair is comparable.
pub fn censored_kendall_permutation(
    x: &[f64],
    y: &[f64],
    censored: &[bool],
    opts: &TrendOptions,
) -> Result<Option<TrendTest>> {
    check_xy(x, y)?;
    if censored.len() != x.len() {
        return Err(AnalysisError::LengthMismatch { what: "censored", expected: x.len(), got: censored.len() });
    }
    let (score, pairs) = censored_kendall_score(x, y, censored);
    if pairs == 0 {
        return Ok(None);
    }
    let tau = score as f64 / pairs as f64;
    let items: Vec<(f64, bool)> = y.iter().copied().zip(censored.iter().copied()).collect();
    let stat = |perm: &[(f64, bool)]| {
        let (yy, cc): (Vec<f64>, Vec<bool>) = perm.iter().copied().unzip();
        censored_kendall_score(x, &yy, &cc).0 as f64 / pairs as f64
    };
    let (p, permutations, exact) = permutation_p(&items, tau, opts, &stat);
    Ok(Some(TrendTest {
        test: "censored_kendall_permutation".into(),
        statistic: tau,
        p_value: p,
        n: x.len(),
        censored: censored.iter().filter(|&&c| c).count(),
        permutations,
        exact,
        alpha: opts.alpha,
        verdict: verdict(tau, p, opts.alpha),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_matches_the_textbook_formula_without_ties() {
        // rho = 1 - 6 sum d^2 / (n (n^2 - 1)), valid without ties (hand formula, independent route).
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let y = [2.0, 1.0, 4.0, 3.0, 6.0, 5.0];
        let d2: f64 = 6.0 * 1.0; // every rank differs by 1
        let want = 1.0 - 6.0 * d2 / (6.0 * 35.0);
        assert!((spearman_rho(&x, &y).unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn exact_p_of_a_perfect_monotone_trend_is_two_over_n_factorial() {
        // Only the identity and the reversal reach |rho| = 1: p = 2 / 5! (hand count).
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [0.1, 0.2, 0.3, 0.4, 0.5];
        let t = spearman_permutation(&x, &y, &TrendOptions::default()).unwrap().unwrap();
        assert!(t.exact);
        assert!((t.p_value - 2.0 / 120.0).abs() < 1e-12, "{}", t.p_value);
        assert_eq!(t.verdict, Verdict::Increasing);
    }

    #[test]
    fn monte_carlo_agrees_with_exact_enumeration() {
        // 8 points (ties in x): the exact distribution (8! = 40,320 orderings) against a direct
        // Monte Carlo estimate drawn here with its own loop.
        let x = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0];
        let y = [0.3, -0.1, 0.2, 0.5, 0.1, 0.6, 0.7, 0.4];
        let exact = spearman_permutation(&x, &y, &TrendOptions::default()).unwrap().unwrap();
        assert!(exact.exact);
        let rx = average_ranks(&x);
        let ry = average_ranks(&y);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut w = ry.clone();
        let draws = 20_000;
        let hits = (0..draws)
            .filter(|_| {
                w.shuffle(&mut rng);
                pearson(&rx, &w).unwrap().abs() >= exact.statistic.abs() - 1e-12
            })
            .count();
        let mc = hits as f64 / draws as f64;
        // Binomial standard error at p ~ 0.1 with 20k draws is ~0.002; allow 5 SE.
        assert!((mc - exact.p_value).abs() < 0.011, "mc {mc} exact {}", exact.p_value);
    }

    #[test]
    fn null_p_values_are_roughly_uniform() {
        // Under independence P(p < 0.05) should be about 0.05: 400 seeded null data sets.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x: Vec<f64> = (0..15).map(|i| (i / 3) as f64).collect(); // 5 settings x 3 seeds
        let mut rejections = 0;
        let opts = TrendOptions { permutations: 400, ..Default::default() };
        for k in 0..400 {
            let mut y: Vec<f64> = (0..15).map(|i| ((i * 7919 + k * 104_729) % 1000) as f64).collect();
            y.shuffle(&mut rng);
            let t = spearman_permutation(&x, &y, &TrendOptions { seed: k as u64, ..opts }).unwrap().unwrap();
            if t.p_value < 0.05 {
                rejections += 1;
            }
        }
        // Binomial(400, 0.05): mean 20, sd 4.4; accept 5..=38.
        assert!((5..=38).contains(&rejections), "{rejections} rejections of 400");
    }

    #[test]
    fn censored_kendall_without_censoring_is_kendall_tau_a() {
        // Naive tau-a over pairs with distinct x, counted directly (independent loop).
        let x = [1.0f64, 2.0, 3.0, 4.0, 5.0];
        let y = [3.0f64, 1.0, 4.0, 5.0, 2.0];
        let mut s = 0i64;
        for i in 0..5 {
            for j in (i + 1)..5 {
                s += ((y[j] - y[i]) * (x[j] - x[i])).signum() as i64;
            }
        }
        let (score, pairs) = censored_kendall_score(&x, &y, &[false; 5]);
        assert_eq!((score, pairs), (s, 10));
    }

    #[test]
    fn censoring_rules_follow_gehan() {
        // a at x=1, b at x=2.
        assert_eq!(order_certain(0.5, true, 0.4, false), -1); // true a > 0.5 > 0.4 = b
        assert_eq!(order_certain(0.5, true, 0.6, false), 0); // a > 0.5, b = 0.6: unknown
        assert_eq!(order_certain(0.3, false, 0.4, true), 1); // b > 0.4 > 0.3 = a
        assert_eq!(order_certain(0.5, false, 0.4, true), 0); // b > 0.4, a = 0.5: unknown
        assert_eq!(order_certain(0.5, true, 0.9, true), 0);
    }

    #[test]
    fn censored_values_count_toward_the_trend() {
        // Domains grow with x; the largest x never cross (censored at the top distance 2.0).
        let x = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0];
        let y = [0.2, 0.3, 0.5, 0.6, 0.9, 1.0, 2.0, 2.0];
        let c = [false, false, false, false, false, false, true, true];
        let t = censored_kendall_permutation(&x, &y, &c, &TrendOptions::default()).unwrap().unwrap();
        assert_eq!(t.censored, 2);
        assert_eq!(t.verdict, Verdict::Increasing, "{t:?}");
        // Dropping the censored points would leave a weaker test (fewer pairs): p larger.
        let dropped =
            censored_kendall_permutation(&x[..6], &y[..6], &c[..6], &TrendOptions::default()).unwrap().unwrap();
        assert!(dropped.p_value > t.p_value);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert!(spearman_permutation(&[1.0, 2.0], &[1.0], &TrendOptions::default()).is_err());
        assert!(spearman_permutation(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0], &TrendOptions::default()).is_err());
        assert!(spearman_permutation(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0], &TrendOptions::default()).unwrap().is_none());
    }
}
