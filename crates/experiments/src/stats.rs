//! Small statistics for summaries across seeds.

use serde::{Deserialize, Serialize};

/// Mean of a few values with a 95% Student-t half-width (`None` below two values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedMean {
    pub mean: f64,
    pub half_width: Option<f64>,
    pub n: usize,
    pub values: Vec<f64>,
}

/// Two-sided 97.5% quantiles of Student's t for 1..=30 degrees of freedom (standard tables).
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

pub fn t975(df: usize) -> f64 {
    if df == 0 {
        f64::NAN
    } else if df <= 30 {
        T975[df - 1]
    } else {
        1.96
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
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() < 3 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = rx.len() as f64;
    let m = (n + 1.0) / 2.0;
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - m) * (b - m)).sum();
    let vx: f64 = rx.iter().map(|a| (a - m).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - m).powi(2)).sum();
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

fn ranks(v: &[f64]) -> Vec<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_statistics() {
        // mean 2, sample sd 1, n 3: half width = t(2) * 1/sqrt(3) = 4.303 / 1.7320508.
        let m = seed_mean(&[1.0, 2.0, 3.0, f64::NAN]).unwrap();
        assert_eq!(m.n, 3);
        assert!((m.mean - 2.0).abs() < 1e-12);
        assert!((m.half_width.unwrap() - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!(seed_mean(&[f64::NAN]).is_none());
        // y = 3x + 1 exactly.
        assert!((slope(&[0.0, 1.0, 2.0], &[1.0, 4.0, 7.0]).unwrap() - 3.0).abs() < 1e-12);
        // Ranks (1,3,2,4) vs (1,2,3,4): rho = 1 - 6*2/(4*15) = 0.8.
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 15.0, 40.0]).unwrap() - 0.8).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
    }
}
