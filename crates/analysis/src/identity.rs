//! The cosine class matrix through the class-sum identity (a cross-check of the pairwise
//! computation; sign stiffness has no such shortcut).
//!
//! With unit gradients `h_i = g_i / |g_i|` and class sums `s_c = sum_{i in c} h_i`:
//! `sum_{i in a, j in b} h_i . h_j = s_a . s_b`, so `C_cos[a,b] = s_a . s_b / (n_a n_b)` for
//! `a != b`; on the diagonal the `n_a` self-pairs each contribute `h_i . h_i = 1`, hence
//! `C_cos[a,a] = (|s_a|^2 - n_a) / (n_a (n_a - 1))`.

use ndarray::{Array2, ArrayView2};

use crate::class::ClassMatrix;
use crate::error::{AnalysisError, Result};
use crate::validate;

/// Tolerance on `|h_i| - 1` for rows of a unit-gradient matrix (f64 normalisation rounds at
/// ~1e-16; 1e-6 also admits gradients normalised in f32).
pub const UNIT_NORM_TOL: f64 = 1e-6;

/// Cosine class matrix from unit gradients.
///
/// * `h`: (N, P) rows `g_i / |g_i|`; a row that is exactly zero marks a zero-norm example and
///   is excluded (not counted in `n_a`). Any other row must have norm 1 within
///   [`UNIT_NORM_TOL`].
/// * `labels`: (N,), `< num_classes`.
///
/// Cells without pairs (a class with fewer than 2 valid examples on the diagonal, or 0 off
/// it) have count 0. Counts are ordered pairs, as in [`crate::class_stiffness`].
pub fn cosine_class_matrix_from_unit_grads(
    h: ArrayView2<f64>,
    labels: &[u32],
    num_classes: usize,
) -> Result<ClassMatrix> {
    let (n, p) = h.dim();
    validate::check_labels("labels", labels, n, num_classes)?;
    validate::check_finite("h", h)?;
    let mut sums = Array2::<f64>::zeros((num_classes, p));
    let mut counts = vec![0usize; num_classes];
    for (i, row) in h.outer_iter().enumerate() {
        let norm = row.dot(&row).sqrt();
        if norm == 0.0 {
            continue;
        }
        if (norm - 1.0).abs() > UNIT_NORM_TOL {
            return Err(AnalysisError::NotUnitNorm { what: "h", row: i, norm, tol: UNIT_NORM_TOL });
        }
        let mut dst = sums.row_mut(labels[i] as usize);
        dst += &row;
        counts[labels[i] as usize] += 1;
    }
    if counts.iter().all(|&c| c == 0) {
        return Err(AnalysisError::AllZeroGradients { what: "h", n });
    }
    cosine_class_matrix_from_class_sums(sums.view(), &counts)
}

/// Cosine class matrix from class sums of unit gradients.
///
/// * `sums`: (num_classes, P) `s_c = sum_{i in c} h_i`.
/// * `counts`: (num_classes,) `n_c`, the number of unit gradients summed into `s_c`.
pub fn cosine_class_matrix_from_class_sums(sums: ArrayView2<f64>, counts: &[usize]) -> Result<ClassMatrix> {
    let c = sums.nrows();
    if counts.len() != c {
        return Err(AnalysisError::LengthMismatch { what: "counts", expected: c, got: counts.len() });
    }
    validate::check_finite("sums", sums)?;
    let gram = sums.dot(&sums.t());
    let mut cell_sums = Array2::<f64>::zeros((c, c));
    let mut pairs = Array2::<u64>::zeros((c, c));
    for a in 0..c {
        for b in 0..c {
            let (na, nb) = (counts[a] as u64, counts[b] as u64);
            if a == b {
                pairs[[a, a]] = na * na.saturating_sub(1);
                // Remove the n_a self-pairs h_i . h_i = 1.
                cell_sums[[a, a]] = gram[[a, a]] - na as f64;
            } else {
                pairs[[a, b]] = na * nb;
                cell_sums[[a, b]] = gram[[a, b]];
            }
        }
    }
    ClassMatrix::from_sums("cosine (class-sum identity)", cell_sums, pairs)
}
