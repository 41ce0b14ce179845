//! Shared test helpers: an independent naive oracle computed from the gradients themselves.
#![allow(dead_code)]

use ndarray::Array2;

/// Values computed independently in f64 from the same integers agree to rounding.
pub const TOL: f64 = 1e-12;

/// K = G G^T by explicit loops (the oracle never calls the crate or ndarray's dot).
pub fn gram(g: &Array2<f64>) -> Array2<f64> {
    let n = g.nrows();
    Array2::from_shape_fn((n, n), |(i, j)| g.row(i).iter().zip(g.row(j).iter()).map(|(a, b)| a * b).sum())
}

/// Naive class matrices (sums and counts) from gradients: every ordered pair i != j.
/// Returns (sign_mean, sign_count, cos_mean, cos_count); cells without pairs are None.
#[allow(clippy::type_complexity)]
pub fn naive_class(
    g: &Array2<f64>,
    labels: &[u32],
    c: usize,
) -> (Vec<Vec<Option<f64>>>, Vec<Vec<u64>>, Vec<Vec<Option<f64>>>, Vec<Vec<u64>>) {
    let n = g.nrows();
    let dot = |i: usize, j: usize| -> f64 { g.row(i).iter().zip(g.row(j).iter()).map(|(a, b)| a * b).sum() };
    let mut ss = vec![vec![0.0; c]; c];
    let mut sn = vec![vec![0u64; c]; c];
    let mut cs = vec![vec![0.0; c]; c];
    let mut cn = vec![vec![0u64; c]; c];
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            let (a, b) = (labels[i] as usize, labels[j] as usize);
            let d = dot(i, j);
            ss[a][b] += if d > 0.0 {
                1.0
            } else if d < 0.0 {
                -1.0
            } else {
                0.0
            };
            sn[a][b] += 1;
            let (ni, nj) = (dot(i, i).sqrt(), dot(j, j).sqrt());
            if ni > 0.0 && nj > 0.0 {
                cs[a][b] += d / (ni * nj);
                cn[a][b] += 1;
            }
        }
    }
    let mean = |s: &Vec<Vec<f64>>, n: &Vec<Vec<u64>>| {
        (0..c).map(|a| (0..c).map(|b| (n[a][b] > 0).then(|| s[a][b] / n[a][b] as f64)).collect()).collect()
    };
    (mean(&ss, &sn), sn, mean(&cs, &cn), cn)
}
