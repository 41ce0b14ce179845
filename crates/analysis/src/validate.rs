//! Input checks shared by all entry points. All run before any arithmetic so errors are
//! reported instead of wrong numbers.

use ndarray::{ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;

use crate::error::{AnalysisError, Result};
use crate::float::Float;
use crate::settings::StiffnessSettings;

/// No NaN/inf anywhere in `m`; checked in parallel over rows.
pub(crate) fn check_finite<F: Float>(what: &'static str, m: ArrayView2<F>) -> Result<()> {
    let bad =
        m.axis_iter(Axis(0)).into_par_iter().enumerate().find_map_first(|(i, row)| {
            row.iter().position(|v| !v.to_f64().is_finite()).map(|j| (i, j, row[j].to_f64()))
        });
    match bad {
        Some((row, col, value)) => Err(AnalysisError::NonFinite { what, row, col, value }),
        None => Ok(()),
    }
}

/// Labels: right length, in range.
pub(crate) fn check_labels(what: &'static str, labels: &[u32], n: usize, num_classes: usize) -> Result<()> {
    if num_classes == 0 {
        return Err(AnalysisError::NoClasses);
    }
    if labels.len() != n {
        return Err(AnalysisError::LengthMismatch { what, expected: n, got: labels.len() });
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= num_classes) {
        return Err(AnalysisError::LabelOutOfRange { what, index, label, num_classes });
    }
    Ok(())
}

/// Class sizes; errors on a single present class, and on empty classes unless allowed.
/// Returns `(sizes, empty_classes)`.
pub(crate) fn class_sizes(
    what: &'static str,
    labels: &[u32],
    num_classes: usize,
    s: &StiffnessSettings,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut sizes = vec![0usize; num_classes];
    for &l in labels {
        sizes[l as usize] += 1;
    }
    let present: Vec<usize> = (0..num_classes).filter(|&c| sizes[c] > 0).collect();
    if present.len() == 1 {
        return Err(AnalysisError::SingleClass { what, class: present[0] });
    }
    let empty: Vec<usize> = (0..num_classes).filter(|&c| sizes[c] == 0).collect();
    if !empty.is_empty() && !s.allow_empty_classes {
        return Err(AnalysisError::EmptyClass { what, classes: empty });
    }
    Ok((sizes, empty))
}

/// Reciprocal norms from squared norms; zero-norm examples get `None` (reported, never divided
/// by). Errors on negative squared norms and when all are zero.
pub(crate) fn inv_norms<F: Float>(what: &'static str, diag: ArrayView1<F>) -> Result<(Vec<Option<f64>>, Vec<usize>)> {
    let mut inv = Vec::with_capacity(diag.len());
    let mut zero = Vec::new();
    for (i, v) in diag.iter().enumerate() {
        let v = v.to_f64();
        if !v.is_finite() {
            return Err(AnalysisError::NonFinite { what, row: i, col: i, value: v });
        }
        if v < 0.0 {
            return Err(AnalysisError::NegativeDiagonal { what, index: i, value: v });
        }
        if v == 0.0 {
            zero.push(i);
            inv.push(None);
        } else {
            inv.push(Some(1.0 / v.sqrt()));
        }
    }
    if !inv.is_empty() && zero.len() == inv.len() {
        return Err(AnalysisError::AllZeroGradients { what, n: inv.len() });
    }
    Ok((inv, zero))
}

/// Square, N >= 2, finite.
pub(crate) fn check_square<F: Float>(k: ArrayView2<F>) -> Result<usize> {
    let (rows, cols) = k.dim();
    if rows != cols {
        return Err(AnalysisError::NotSquare { rows, cols });
    }
    if rows < 2 {
        return Err(AnalysisError::TooFewExamples { what: "k", n: rows });
    }
    check_finite("k", k)?;
    Ok(rows)
}

/// Symmetry within `sym_tol * |g_i||g_j|` (a tolerance in cosine units), scanned in tiles so
/// the transposed reads stay in cache. Zero-norm rows must match exactly.
pub(crate) fn check_symmetric<F: Float>(k: ArrayView2<F>, inv: &[Option<f64>], sym_tol: f64) -> Result<()> {
    const TILE: usize = 64;
    let n = k.nrows();
    let tiles = n.div_ceil(TILE);
    let bad = (0..tiles).into_par_iter().find_map_first(|ti| {
        let r0 = ti * TILE;
        let r1 = (r0 + TILE).min(n);
        for c0 in (r0..n).step_by(TILE) {
            let c1 = (c0 + TILE).min(n);
            for i in r0..r1 {
                for j in c0.max(i + 1)..c1 {
                    let a = k[[i, j]].to_f64();
                    let b = k[[j, i]].to_f64();
                    let scale = match (inv[i], inv[j]) {
                        (Some(x), Some(y)) => 1.0 / (x * y),
                        _ => 0.0,
                    };
                    if (a - b).abs() > sym_tol * scale {
                        return Some((i, j, a, b));
                    }
                }
            }
        }
        None
    });
    match bad {
        Some((row, col, a, b)) => Err(AnalysisError::NotSymmetric { row, col, a, b }),
        None => Ok(()),
    }
}
