//! Streaming class stiffness over tiles of a cross Gram matrix that is never held whole.
//!
//! A tile is a block `K[r0..r0+R, c0..c0+C]` of `K[i,j] = g^rows_i . g^cols_j`. [`reduce_tile`]
//! turns it into [`TileSums`]: per class pair (row class `a`, column class `b`) the sums of
//! sign and cosine stiffness with their pair counts, and per column `j` the sums over the
//! tile's rows of each class. [`CrossAccumulator`] adds tile sums; [`CrossAccumulator::finish`]
//! turns them into class matrices and per-column summaries.
//!
//! Same answer however the work is split: all sums are f64, counts are integers, a tile is
//! reduced in fixed row groups ([`ROW_GROUP`] rows, combined in order, independent of the thread
//! count), and the caller adds tiles in a fixed order (tile index). Tile geometry is part of the
//! job: the same tile grid gives bit-identical sums whatever the order, shard split or resume.
//!
//! Conventions as in [`crate::class_stiffness`]: `sign(0) = 0` (with `zero_tol`), cosines
//! clamped into `[-1, 1]` within `cos_tol` (an error beyond it), zero-norm examples kept for
//! sign and left out of every cosine pair, and, when rows and columns are the same set,
//! self-pairs (global `i == j`) excluded.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::class::ClassMatrix;
use crate::error::{AnalysisError, Result};
use crate::float::Float;
use crate::settings::{StiffnessSettings, SCHEMA_VERSION};

/// Rows reduced together before their partial sums are added (in order) to the tile's.
pub const ROW_GROUP: usize = 64;

/// Where a tile sits in the whole cross Gram matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlace {
    /// Global index of the tile's first row.
    pub row0: usize,
    /// Global index of the tile's first column.
    pub col0: usize,
    /// Rows and columns are the same example set: skip pairs with global `i == j`.
    pub exclude_self: bool,
}

/// Reduced sums of one tile (or of several tiles added together).
#[derive(Debug, Clone, PartialEq)]
pub struct TileSums {
    /// Classes C.
    pub num_classes: usize,
    /// (C, C) sum of `sign(K_ij)` over pairs, row class x column class.
    pub sign_sum: Array2<f64>,
    /// (C, C) sum of clamped cosines over pairs with both norms non-zero.
    pub cos_sum: Array2<f64>,
    /// (C, C) pairs counted in `sign_sum`.
    pub sign_count: Array2<u64>,
    /// (C, C) pairs counted in `cos_sum`.
    pub cos_count: Array2<u64>,
    /// (cols, C): for each column of the tile, sum of `sign` over the tile's rows of class a.
    pub col_sign_sum: Array2<f64>,
    /// (cols, C): same for cosines.
    pub col_cos_sum: Array2<f64>,
    /// (cols, C) pairs in `col_sign_sum`.
    pub col_sign_count: Array2<u64>,
    /// (cols, C) pairs in `col_cos_sum`.
    pub col_cos_count: Array2<u64>,
}

impl TileSums {
    /// All-zero sums for `cols` columns and `num_classes` classes.
    pub fn zeros(cols: usize, num_classes: usize) -> Self {
        let c = num_classes;
        Self {
            num_classes,
            sign_sum: Array2::zeros((c, c)),
            cos_sum: Array2::zeros((c, c)),
            sign_count: Array2::zeros((c, c)),
            cos_count: Array2::zeros((c, c)),
            col_sign_sum: Array2::zeros((cols, c)),
            col_cos_sum: Array2::zeros((cols, c)),
            col_sign_count: Array2::zeros((cols, c)),
            col_cos_count: Array2::zeros((cols, c)),
        }
    }

    /// Adds `other` into `self`; `other`'s columns go to `self`'s rows `col_offset..`.
    fn add(&mut self, other: &TileSums, col_offset: usize) {
        self.sign_sum += &other.sign_sum;
        self.cos_sum += &other.cos_sum;
        self.sign_count += &other.sign_count;
        self.cos_count += &other.cos_count;
        let n = other.col_sign_sum.nrows();
        let s = ndarray::s![col_offset..col_offset + n, ..];
        let mut v = self.col_sign_sum.slice_mut(s);
        v += &other.col_sign_sum;
        let mut v = self.col_cos_sum.slice_mut(s);
        v += &other.col_cos_sum;
        let mut v = self.col_sign_count.slice_mut(s);
        v += &other.col_sign_count;
        let mut v = self.col_cos_count.slice_mut(s);
        v += &other.col_cos_count;
    }
}

fn check_norms(what: &'static str, norms: &[f64], offset: usize) -> Result<Vec<f64>> {
    norms
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if !v.is_finite() {
                Err(AnalysisError::NonFinite { what, row: offset + i, col: offset + i, value: v })
            } else if v < 0.0 {
                Err(AnalysisError::NegativeDiagonal { what, index: offset + i, value: v })
            } else if v == 0.0 {
                Ok(0.0)
            } else {
                Ok(1.0 / v)
            }
        })
        .collect()
}

fn check_labels(what: &'static str, labels: &[u32], n: usize, offset: usize, num_classes: usize) -> Result<()> {
    if labels.len() != n {
        return Err(AnalysisError::LengthMismatch { what, expected: n, got: labels.len() });
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= num_classes) {
        return Err(AnalysisError::LabelOutOfRange { what, index: offset + i, label: l, num_classes });
    }
    Ok(())
}

/// Reduces one tile of the cross Gram matrix.
///
/// * `k`: (R, C) tile `K[row0.., col0..]`, f32 or f64.
/// * `row_labels` (R), `col_labels` (C): classes `< num_classes`.
/// * `row_norms` (R), `col_norms` (C): gradient norms `|g|` (not squared), `>= 0`.
///
/// Errors (with global indices): non-finite `k` or norms, negative norms, labels out of range,
/// length mismatches, a cosine beyond `1 + cos_tol`.
#[allow(clippy::too_many_arguments)]
pub fn reduce_tile<F: Float>(
    k: ArrayView2<F>,
    place: TilePlace,
    row_labels: &[u32],
    col_labels: &[u32],
    row_norms: &[f64],
    col_norms: &[f64],
    num_classes: usize,
    s: &StiffnessSettings,
) -> Result<TileSums> {
    s.validate()?;
    if num_classes == 0 {
        return Err(AnalysisError::NoClasses);
    }
    let (r, c) = k.dim();
    check_labels("row_labels", row_labels, r, place.row0, num_classes)?;
    check_labels("col_labels", col_labels, c, place.col0, num_classes)?;
    if row_norms.len() != r {
        return Err(AnalysisError::LengthMismatch { what: "row_norms", expected: r, got: row_norms.len() });
    }
    if col_norms.len() != c {
        return Err(AnalysisError::LengthMismatch { what: "col_norms", expected: c, got: col_norms.len() });
    }
    let row_inv = check_norms("row_norms", row_norms, place.row0)?;
    let col_inv = check_norms("col_norms", col_norms, place.col0)?;
    let groups: Vec<usize> = (0..r.div_ceil(ROW_GROUP)).collect();
    let mut total = TileSums::zeros(c, num_classes);
    // Reduce a bounded number of row groups in parallel, then add them in group order: the
    // result does not depend on the thread count, and memory stays at `BATCH` partials.
    const BATCH: usize = 8;
    for batch in groups.chunks(BATCH) {
        let parts: Vec<Result<TileSums>> = batch
            .par_iter()
            .map(|&g| {
                let lo = g * ROW_GROUP;
                let hi = (lo + ROW_GROUP).min(r);
                reduce_rows(k, lo, hi, place, row_labels, col_labels, &row_inv, &col_inv, num_classes, s)
            })
            .collect();
        for p in parts {
            total.add(&p?, 0);
        }
    }
    Ok(total)
}

#[allow(clippy::too_many_arguments)]
fn reduce_rows<F: Float>(
    k: ArrayView2<F>,
    lo: usize,
    hi: usize,
    place: TilePlace,
    row_labels: &[u32],
    col_labels: &[u32],
    row_inv: &[f64],
    col_inv: &[f64],
    nc: usize,
    s: &StiffnessSettings,
) -> Result<TileSums> {
    let cols = k.ncols();
    let mut out = TileSums::zeros(cols, nc);
    let tol = s.zero_tol;
    let mut srow = vec![0.0f64; nc];
    let mut crow = vec![0.0f64; nc];
    let mut sn = vec![0u64; nc];
    let mut cn = vec![0u64; nc];
    let col_sign = out.col_sign_sum.as_slice_mut().expect("fresh array is contiguous");
    let col_cos = out.col_cos_sum.as_slice_mut().expect("fresh array is contiguous");
    let col_sn = out.col_sign_count.as_slice_mut().expect("fresh array is contiguous");
    let col_cn = out.col_cos_count.as_slice_mut().expect("fresh array is contiguous");
    for i in lo..hi {
        let a = row_labels[i] as usize;
        let inv_i = row_inv[i];
        let gi = place.row0 + i;
        srow.iter_mut().for_each(|v| *v = 0.0);
        crow.iter_mut().for_each(|v| *v = 0.0);
        sn.iter_mut().for_each(|v| *v = 0);
        cn.iter_mut().for_each(|v| *v = 0);
        let krow = k.row(i);
        for (j, kv) in krow.iter().enumerate() {
            if place.exclude_self && place.col0 + j == gi {
                continue;
            }
            let v = kv.to_f64();
            if !v.is_finite() {
                return Err(AnalysisError::NonFinite { what: "k", row: gi, col: place.col0 + j, value: v });
            }
            let b = col_labels[j] as usize;
            let sg = f64::from(i8::from(v > tol) - i8::from(v < -tol));
            srow[b] += sg;
            sn[b] += 1;
            let cj = j * nc + a;
            col_sign[cj] += sg;
            col_sn[cj] += 1;
            let inv_j = col_inv[j];
            if inv_i > 0.0 && inv_j > 0.0 {
                let cs = v * inv_i * inv_j;
                if cs.abs() > 1.0 + s.cos_tol {
                    return Err(AnalysisError::CosineOutOfBounds {
                        what: "k",
                        row: gi,
                        col: place.col0 + j,
                        value: cs,
                        tol: s.cos_tol,
                    });
                }
                let cs = cs.clamp(-1.0, 1.0);
                crow[b] += cs;
                cn[b] += 1;
                col_cos[cj] += cs;
                col_cn[cj] += 1;
            }
        }
        for b in 0..nc {
            out.sign_sum[[a, b]] += srow[b];
            out.cos_sum[[a, b]] += crow[b];
            out.sign_count[[a, b]] += sn[b];
            out.cos_count[[a, b]] += cn[b];
        }
    }
    Ok(out)
}

/// Sums of a whole job, built by adding tiles in a fixed order.
#[derive(Debug, Clone)]
pub struct CrossAccumulator {
    sums: TileSums,
    n_cols: usize,
}

impl CrossAccumulator {
    /// Empty sums for `n_cols` column examples and `num_classes` classes.
    pub fn new(n_cols: usize, num_classes: usize) -> Self {
        Self { sums: TileSums::zeros(n_cols, num_classes), n_cols }
    }

    /// Adds a tile whose first column is global column `col0`. Add tiles in a fixed order (the
    /// tile index) for bit-identical results.
    pub fn add(&mut self, tile: &TileSums, col0: usize) -> Result<()> {
        if tile.num_classes != self.sums.num_classes {
            return Err(AnalysisError::LengthMismatch {
                what: "tile num_classes",
                expected: self.sums.num_classes,
                got: tile.num_classes,
            });
        }
        let cols = tile.col_sign_sum.nrows();
        if col0 + cols > self.n_cols {
            return Err(AnalysisError::LengthMismatch {
                what: "tile columns",
                expected: self.n_cols,
                got: col0 + cols,
            });
        }
        self.sums.add(tile, col0);
        Ok(())
    }

    /// The raw sums so far.
    pub fn sums(&self) -> &TileSums {
        &self.sums
    }

    /// Class matrices and per-column means. Errors like [`crate::class_stiffness`] when no
    /// within- or between-class pair exists.
    pub fn finish(self, settings: &StiffnessSettings) -> Result<CrossStiffness> {
        let t = self.sums;
        let sign = ClassMatrix::from_sums("sign", t.sign_sum, t.sign_count)?;
        let cosine = ClassMatrix::from_sums("cosine", t.cos_sum, t.cos_count)?;
        let mean = |s: &Array2<f64>, n: &Array2<u64>| {
            Array2::from_shape_fn(s.dim(), |ij| if n[ij] > 0 { s[ij] / n[ij] as f64 } else { f64::NAN })
        };
        Ok(CrossStiffness {
            schema_version: SCHEMA_VERSION,
            settings: *settings,
            sign,
            cosine,
            col_sign_mean: mean(&t.col_sign_sum, &t.col_sign_count),
            col_cos_mean: mean(&t.col_cos_sum, &t.col_cos_count),
            col_sign_sum: t.col_sign_sum,
            col_cos_sum: t.col_cos_sum,
            col_sign_count: t.col_sign_count,
            col_cos_count: t.col_cos_count,
        })
    }
}

/// Class matrices of a streamed cross Gram (rows' class x columns' class) and, per column
/// example, its mean stiffness to the rows of each class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CrossStiffness {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Settings that produced this result.
    pub settings: StiffnessSettings,
    /// Sign class matrix.
    pub sign: ClassMatrix,
    /// Cosine class matrix.
    pub cosine: ClassMatrix,
    /// (cols, C) mean sign stiffness of each column example to rows of class a; NaN = no pair.
    #[serde(skip)]
    pub col_sign_mean: Array2<f64>,
    /// (cols, C) mean cosine stiffness; NaN = no pair.
    #[serde(skip)]
    pub col_cos_mean: Array2<f64>,
    /// (cols, C) raw sums and counts behind the means (for pooling classes exactly).
    #[serde(skip)]
    pub col_sign_sum: Array2<f64>,
    /// (cols, C) cosine sums.
    #[serde(skip)]
    pub col_cos_sum: Array2<f64>,
    /// (cols, C) sign pair counts.
    #[serde(skip)]
    pub col_sign_count: Array2<u64>,
    /// (cols, C) cosine pair counts.
    #[serde(skip)]
    pub col_cos_count: Array2<u64>,
}

/// One column example's stiffness to rows of its own class and of all other classes (pooled
/// over pairs). NaN where no such pair exists.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ColumnSummary {
    /// Mean sign stiffness to rows of the example's own class.
    pub own_sign: f64,
    /// Mean cosine stiffness to rows of its own class.
    pub own_cosine: f64,
    /// Mean sign stiffness to rows of every other class (pooled).
    pub other_sign: f64,
    /// Mean cosine stiffness to rows of every other class (pooled).
    pub other_cosine: f64,
}

impl CrossStiffness {
    /// Own-class and other-class summaries of column `j` with label `label`.
    pub fn column_summary(&self, j: usize, label: u32) -> ColumnSummary {
        let a = label as usize;
        let ratio = |s: f64, n: u64| if n > 0 { s / n as f64 } else { f64::NAN };
        let pool = |s: &Array2<f64>, n: &Array2<u64>| {
            let (mut ss, mut nn) = (0.0, 0u64);
            for b in 0..s.ncols() {
                if b != a {
                    ss += s[[j, b]];
                    nn += n[[j, b]];
                }
            }
            ratio(ss, nn)
        };
        ColumnSummary {
            own_sign: ratio(self.col_sign_sum[[j, a]], self.col_sign_count[[j, a]]),
            own_cosine: ratio(self.col_cos_sum[[j, a]], self.col_cos_count[[j, a]]),
            other_sign: pool(&self.col_sign_sum, &self.col_sign_count),
            other_cosine: pool(&self.col_cos_sum, &self.col_cos_count),
        }
    }
}
