//! Pairwise and class stiffness from a Gram matrix `K[i,j] = g_i . g_j`.
//!
//! Sign stiffness `sign(K[i,j])`; cosine stiffness `K[i,j] / sqrt(K[i,i] K[j,j])`. The class
//! matrix cell `C[a,b]` is the mean over ordered pairs `(i, j)`, `i` in class `a`, `j` in class
//! `b`, `i != j` (square case; the rectangular case has no self-pairs to exclude). K need not
//! be symmetric bit for bit: every ordered pair is read.

use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{AnalysisError, Result};
use crate::float::Float;
use crate::settings::{StiffnessSettings, SCHEMA_VERSION};
use crate::validate;

/// Which pairwise stiffness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StiffnessKind {
    /// `sign(g_i . g_j)` (v1).
    Sign,
    /// `g_i . g_j / (|g_i| |g_j|)` (v2/v3).
    Cosine,
}

/// A class stiffness matrix (`num_classes x num_classes`) with per-cell pair counts.
///
/// `values[[a, b]]` is the mean stiffness over the `counts[[a, b]]` ordered pairs; cells with
/// `counts == 0` hold `0.0` (never NaN) and serialise as `null`. `within` is the mean of the
/// diagonal cells with pairs, `between` the mean of the off-diagonal cells with pairs
/// (`1/(K(K-1)) sum_{a != b} C[a,b]` when all cells have pairs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "ClassMatrixRepr", try_from = "ClassMatrixRepr")]
pub struct ClassMatrix {
    /// (num_classes, num_classes) cell means; 0.0 where `counts == 0`.
    pub values: Array2<f64>,
    /// (num_classes, num_classes) number of ordered pairs per cell.
    pub counts: Array2<u64>,
    /// Mean of the diagonal cells that have pairs.
    pub within: f64,
    /// Mean of the off-diagonal cells that have pairs.
    pub between: f64,
    /// Number of diagonal cells averaged into `within`.
    pub within_cells: usize,
    /// Number of off-diagonal cells averaged into `between`.
    pub between_cells: usize,
}

impl ClassMatrix {
    /// Number of classes (side of the matrix).
    pub fn num_classes(&self) -> usize {
        self.values.nrows()
    }

    /// Cell value, `None` where the cell has no pairs.
    pub fn get(&self, a: usize, b: usize) -> Option<f64> {
        (self.counts[[a, b]] > 0).then(|| self.values[[a, b]])
    }

    /// Builds the matrix from per-cell sums and counts; `what` names it in errors.
    pub(crate) fn from_sums(what: &str, sums: Array2<f64>, counts: Array2<u64>) -> Result<Self> {
        let c = sums.nrows();
        let mut values = sums;
        let (mut wsum, mut wn, mut bsum, mut bn) = (0.0, 0usize, 0.0, 0usize);
        for a in 0..c {
            for b in 0..c {
                let n = counts[[a, b]];
                let v = if n > 0 { values[[a, b]] / n as f64 } else { 0.0 };
                values[[a, b]] = v;
                if n > 0 {
                    if a == b {
                        wsum += v;
                        wn += 1;
                    } else {
                        bsum += v;
                        bn += 1;
                    }
                }
            }
        }
        if wn == 0 {
            return Err(AnalysisError::NoData { what: format!("within-class {what} stiffness: no class has a pair") });
        }
        if bn == 0 {
            return Err(AnalysisError::NoData {
                what: format!("between-class {what} stiffness: no pair of classes has a pair"),
            });
        }
        Ok(Self {
            values,
            counts,
            within: wsum / wn as f64,
            between: bsum / bn as f64,
            within_cells: wn,
            between_cells: bn,
        })
    }
}

/// Serialised form of [`ClassMatrix`]: nested rows, `null` for cells without pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClassMatrixRepr {
    values: Vec<Vec<Option<f64>>>,
    counts: Vec<Vec<u64>>,
    within: f64,
    between: f64,
    within_cells: usize,
    between_cells: usize,
}

impl From<ClassMatrix> for ClassMatrixRepr {
    fn from(m: ClassMatrix) -> Self {
        let values = m
            .values
            .outer_iter()
            .zip(m.counts.outer_iter())
            .map(|(v, c)| v.iter().zip(c.iter()).map(|(&v, &c)| (c > 0).then_some(v)).collect())
            .collect();
        let counts = m.counts.outer_iter().map(|r| r.to_vec()).collect();
        Self {
            values,
            counts,
            within: m.within,
            between: m.between,
            within_cells: m.within_cells,
            between_cells: m.between_cells,
        }
    }
}

impl TryFrom<ClassMatrixRepr> for ClassMatrix {
    type Error = String;
    fn try_from(r: ClassMatrixRepr) -> std::result::Result<Self, String> {
        let c = r.values.len();
        if r.counts.len() != c || r.values.iter().any(|row| row.len() != c) || r.counts.iter().any(|row| row.len() != c)
        {
            return Err(format!("class matrix must be {c} x {c} in values and counts"));
        }
        let values = Array2::from_shape_fn((c, c), |(a, b)| r.values[a][b].unwrap_or(0.0));
        let counts = Array2::from_shape_fn((c, c), |(a, b)| r.counts[a][b]);
        Ok(Self {
            values,
            counts,
            within: r.within,
            between: r.between,
            within_cells: r.within_cells,
            between_cells: r.between_cells,
        })
    }
}

/// Sign and cosine class matrices of one set of examples (square K).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClassStiffness {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Settings that produced this result.
    pub settings: StiffnessSettings,
    /// Number of examples N.
    pub n: usize,
    /// Number of classes (side of the matrices).
    pub num_classes: usize,
    /// Examples per class.
    pub class_sizes: Vec<usize>,
    /// Classes with no example (only possible with `allow_empty_classes`).
    pub empty_classes: Vec<usize>,
    /// Examples with `K[i,i] == 0`: kept in sign stiffness (`sign(0) = 0`), excluded from
    /// every cosine pair.
    pub zero_norm_examples: Vec<usize>,
    /// Sign class matrix.
    pub sign: ClassMatrix,
    /// Cosine class matrix.
    pub cosine: ClassMatrix,
}

impl ClassStiffness {
    /// The matrix of one kind.
    pub fn matrix(&self, kind: StiffnessKind) -> &ClassMatrix {
        match kind {
            StiffnessKind::Sign => &self.sign,
            StiffnessKind::Cosine => &self.cosine,
        }
    }
}

/// Class matrices between two sets (rectangular K, e.g. validation x train).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RectangularClassStiffness {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Settings that produced this result.
    pub settings: StiffnessSettings,
    /// Number of row examples (first set).
    pub n_rows: usize,
    /// Number of column examples (second set).
    pub n_cols: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Row examples per class.
    pub row_class_sizes: Vec<usize>,
    /// Column examples per class.
    pub col_class_sizes: Vec<usize>,
    /// Classes absent from the rows or the columns (only with `allow_empty_classes`).
    pub empty_classes: Vec<usize>,
    /// Row examples with zero gradient norm (excluded from cosine pairs).
    pub zero_norm_rows: Vec<usize>,
    /// Column examples with zero gradient norm (excluded from cosine pairs).
    pub zero_norm_cols: Vec<usize>,
    /// Sign class matrix: `C[a,b]` averages rows of class a against columns of class b.
    pub sign: ClassMatrix,
    /// Cosine class matrix.
    pub cosine: ClassMatrix,
}

/// Per-row class sums of sign and cosine stiffness, `(rows, num_classes)` each, and the worst
/// cosine overshoot `(excess over 1, i, j, cos)`. `inv` hold `1/|g|` or 0 for zero-norm
/// examples, so their cosine terms add exactly 0 (their pair counts are left out separately).
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_class_sums<F: Float>(
    k: ArrayView2<F>,
    row_inv: &[f64],
    col_inv: &[f64],
    col_labels: &[u32],
    num_classes: usize,
    exclude_diag: bool,
    s: &StiffnessSettings,
) -> (Array2<f64>, Array2<f64>, (f64, usize, usize, f64)) {
    let n = k.nrows();
    let mut sign = Array2::<f64>::zeros((n, num_classes));
    let mut cos = Array2::<f64>::zeros((n, num_classes));
    let tol = s.zero_tol;
    let worst = sign
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(cos.axis_iter_mut(Axis(0)))
        .enumerate()
        .map(|(i, (mut srow, mut crow))| {
            let srow = srow.as_slice_mut().expect("fresh array is contiguous");
            let crow = crow.as_slice_mut().expect("fresh array is contiguous");
            let inv_i = row_inv[i];
            let mut worst = (0.0f64, i, i, 0.0f64);
            for (j, kv) in k.row(i).iter().enumerate() {
                if exclude_diag && j == i {
                    continue;
                }
                let v = kv.to_f64();
                let l = col_labels[j] as usize;
                srow[l] += f64::from(i8::from(v > tol) - i8::from(v < -tol));
                let c = v * inv_i * col_inv[j];
                let excess = c.abs() - 1.0;
                if excess > worst.0 {
                    worst = (excess, i, j, c);
                }
                crow[l] += c.clamp(-1.0, 1.0);
            }
            worst
        })
        .reduce(|| (0.0, 0, 0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
    (sign, cos, worst)
}

/// Sums rows of `t` (rows, C) by the class of each row into a (C, C) matrix.
fn sum_rows_by_class(t: &Array2<f64>, row_labels: &[u32], num_classes: usize) -> Array2<f64> {
    let mut out = Array2::<f64>::zeros((num_classes, num_classes));
    for (row, &l) in t.outer_iter().zip(row_labels) {
        let mut dst = out.row_mut(l as usize);
        dst += &row;
    }
    out
}

fn inv_vec(inv: &[Option<f64>]) -> Vec<f64> {
    inv.iter().map(|x| x.unwrap_or(0.0)).collect()
}

fn check_cos_excess(what: &'static str, worst: (f64, usize, usize, f64), tol: f64) -> Result<()> {
    if worst.0 > tol {
        return Err(AnalysisError::CosineOutOfBounds { what, row: worst.1, col: worst.2, value: worst.3, tol });
    }
    Ok(())
}

/// Checked inputs of a square analysis: `(n, class sizes, empty classes, 1/|g| or 0,
/// zero-norm examples, valid-per-class counts)`.
#[derive(Clone)]
pub(crate) struct SquareInputs {
    pub n: usize,
    pub sizes: Vec<usize>,
    pub empty: Vec<usize>,
    pub inv: Vec<f64>,
    pub zero_norm: Vec<usize>,
    pub valid_sizes: Vec<usize>,
}

pub(crate) fn check_square_inputs<F: Float>(
    k: ArrayView2<F>,
    labels: &[u32],
    num_classes: usize,
    s: &StiffnessSettings,
) -> Result<SquareInputs> {
    s.validate()?;
    let n = validate::check_square(k)?;
    validate::check_labels("labels", labels, n, num_classes)?;
    let (sizes, empty) = validate::class_sizes("labels", labels, num_classes, s)?;
    let (inv, zero_norm) = validate::inv_norms("diagonal of k", k.diag())?;
    validate::check_symmetric(k, &inv, s.sym_tol)?;
    let mut valid_sizes = sizes.clone();
    for &i in &zero_norm {
        valid_sizes[labels[i] as usize] -= 1;
    }
    Ok(SquareInputs { n, sizes, empty, inv: inv_vec(&inv), zero_norm, valid_sizes })
}

/// Ordered-pair counts per cell: `n_a n_b`, or `n_a (n_a - 1)` on the diagonal when self-pairs
/// are excluded.
fn pair_counts(row_sizes: &[usize], col_sizes: &[usize], exclude_diag: bool) -> Array2<u64> {
    let c = row_sizes.len();
    Array2::from_shape_fn((c, c), |(a, b)| {
        let (na, nb) = (row_sizes[a] as u64, col_sizes[b] as u64);
        if exclude_diag && a == b {
            na * na.saturating_sub(1)
        } else {
            na * nb
        }
    })
}

/// Sign and cosine class stiffness matrices of a square Gram matrix.
///
/// * `k`: (N, N) Gram matrix `g_i . g_j` (f32 or f64, any layout, read without copying).
/// * `labels`: (N,) class of each example, `< num_classes`.
///
/// Self-pairs `i == j` are excluded. Zero-norm examples are kept for sign stiffness and
/// excluded from cosine pairs (listed in `zero_norm_examples`). Cost O(N^2), memory O(N C).
pub fn class_stiffness<F: Float>(
    k: ArrayView2<F>,
    labels: &[u32],
    num_classes: usize,
    s: &StiffnessSettings,
) -> Result<ClassStiffness> {
    let inp = check_square_inputs(k, labels, num_classes, s)?;
    class_stiffness_checked(k, labels, num_classes, s, inp)
}

/// [`class_stiffness`] on inputs already checked by [`check_square_inputs`].
pub(crate) fn class_stiffness_checked<F: Float>(
    k: ArrayView2<F>,
    labels: &[u32],
    num_classes: usize,
    s: &StiffnessSettings,
    inp: SquareInputs,
) -> Result<ClassStiffness> {
    let (ts, tc, worst) = row_class_sums(k, &inp.inv, &inp.inv, labels, num_classes, true, s);
    check_cos_excess("k", worst, s.cos_tol)?;
    let sign_sums = sum_rows_by_class(&ts, labels, num_classes);
    let cos_sums = sum_rows_by_class(&tc, labels, num_classes);
    let sign = ClassMatrix::from_sums("sign", sign_sums, pair_counts(&inp.sizes, &inp.sizes, true))?;
    let cosine = ClassMatrix::from_sums("cosine", cos_sums, pair_counts(&inp.valid_sizes, &inp.valid_sizes, true))?;
    Ok(ClassStiffness {
        schema_version: SCHEMA_VERSION,
        settings: *s,
        n: inp.n,
        num_classes,
        class_sizes: inp.sizes,
        empty_classes: inp.empty,
        zero_norm_examples: inp.zero_norm,
        sign,
        cosine,
    })
}

/// Class stiffness between two sets of examples (rows A, columns B), e.g. validation x train.
///
/// * `k`: (M, N) cross Gram matrix `g^A_i . g^B_j`.
/// * `row_norms`: (M,) gradient norms `|g^A_i|`; `col_norms`: (N,) `|g^B_j|` (what
///   `stiff_gradkernel::cross_gram` returns as `norms_a`, `norms_b`).
/// * `row_labels`: (M,), `col_labels`: (N,).
///
/// No self-pair exclusion: the sets are treated as disjoint. A class missing from either set
/// is an `EmptyClass` error unless `allow_empty_classes`.
#[allow(clippy::too_many_arguments)]
pub fn rectangular_class_stiffness<F: Float>(
    k: ArrayView2<F>,
    row_norms: ArrayView1<F>,
    col_norms: ArrayView1<F>,
    row_labels: &[u32],
    col_labels: &[u32],
    num_classes: usize,
    s: &StiffnessSettings,
) -> Result<RectangularClassStiffness> {
    s.validate()?;
    let (m, n) = k.dim();
    if m == 0 || n == 0 {
        return Err(AnalysisError::TooFewExamples { what: "k (rectangular: rows and columns)", n: m.min(n) });
    }
    validate::check_finite("k", k)?;
    if row_norms.len() != m {
        return Err(AnalysisError::LengthMismatch { what: "row_norms", expected: m, got: row_norms.len() });
    }
    if col_norms.len() != n {
        return Err(AnalysisError::LengthMismatch { what: "col_norms", expected: n, got: col_norms.len() });
    }
    // Squared in f64: the norms' own precision is what the cosines get.
    let (row_sq_norms, col_sq_norms) = (row_norms.mapv(|v| v.to_f64().powi(2)), col_norms.mapv(|v| v.to_f64().powi(2)));
    validate::check_labels("row_labels", row_labels, m, num_classes)?;
    validate::check_labels("col_labels", col_labels, n, num_classes)?;
    let mut row_sizes = vec![0usize; num_classes];
    row_labels.iter().for_each(|&l| row_sizes[l as usize] += 1);
    let mut col_sizes = vec![0usize; num_classes];
    col_labels.iter().for_each(|&l| col_sizes[l as usize] += 1);
    let empty: Vec<usize> = (0..num_classes).filter(|&c| row_sizes[c] == 0 || col_sizes[c] == 0).collect();
    if !empty.is_empty() && !s.allow_empty_classes {
        return Err(AnalysisError::EmptyClass { what: "row_labels/col_labels", classes: empty });
    }
    let (rinv, zr) = validate::inv_norms("row_norms", row_sq_norms.view())?;
    let (cinv, zc) = validate::inv_norms("col_norms", col_sq_norms.view())?;
    let (rinv, cinv) = (inv_vec(&rinv), inv_vec(&cinv));
    let (ts, tc, worst) = row_class_sums(k, &rinv, &cinv, col_labels, num_classes, false, s);
    check_cos_excess("k", worst, s.cos_tol)?;
    let mut rvalid = row_sizes.clone();
    zr.iter().for_each(|&i| rvalid[row_labels[i] as usize] -= 1);
    let mut cvalid = col_sizes.clone();
    zc.iter().for_each(|&j| cvalid[col_labels[j] as usize] -= 1);
    let sign = ClassMatrix::from_sums(
        "sign",
        sum_rows_by_class(&ts, row_labels, num_classes),
        pair_counts(&row_sizes, &col_sizes, false),
    )?;
    let cosine = ClassMatrix::from_sums(
        "cosine",
        sum_rows_by_class(&tc, row_labels, num_classes),
        pair_counts(&rvalid, &cvalid, false),
    )?;
    Ok(RectangularClassStiffness {
        schema_version: SCHEMA_VERSION,
        settings: *s,
        n_rows: m,
        n_cols: n,
        num_classes,
        row_class_sizes: row_sizes,
        col_class_sizes: col_sizes,
        empty_classes: empty,
        zero_norm_rows: zr,
        zero_norm_cols: zc,
        sign,
        cosine,
    })
}

/// All pairwise sign stiffnesses `sign(K[i,j])` as an (N, N) matrix with values in
/// {-1, 0, 1} (diagonal included). Allocates N^2 f64: meant for small N and inspection.
pub fn pairwise_sign<F: Float>(k: ArrayView2<F>, s: &StiffnessSettings) -> Result<Array2<f64>> {
    s.validate()?;
    validate::check_square(k)?;
    Ok(k.mapv(|v| s.sign(v.to_f64())))
}

/// Pairwise cosine stiffness of a square K.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PairwiseCosine {
    /// (N, N) cosines, clamped into [-1, 1]; rows and columns of zero-norm examples hold 0.0
    /// and mean "undefined".
    pub values: Array2<f64>,
    /// Examples with `K[i,i] == 0`.
    pub zero_norm_examples: Vec<usize>,
}

/// All pairwise cosine stiffnesses `K[i,j] / sqrt(K[i,i] K[j,j])`. Allocates N^2 f64: meant
/// for small N and inspection.
pub fn pairwise_cosine<F: Float>(k: ArrayView2<F>, s: &StiffnessSettings) -> Result<PairwiseCosine> {
    s.validate()?;
    validate::check_square(k)?;
    let (inv, zero) = validate::inv_norms("diagonal of k", k.diag())?;
    let inv = inv_vec(&inv);
    let mut values = Array2::<f64>::zeros(k.dim());
    let mut worst = (0.0, 0, 0, 0.0);
    for ((i, j), v) in values.indexed_iter_mut() {
        let c = k[[i, j]].to_f64() * inv[i] * inv[j];
        if c.abs() - 1.0 > worst.0 {
            worst = (c.abs() - 1.0, i, j, c);
        }
        *v = c.clamp(-1.0, 1.0);
    }
    check_cos_excess("k", worst, s.cos_tol)?;
    Ok(PairwiseCosine { values, zero_norm_examples: zero })
}
