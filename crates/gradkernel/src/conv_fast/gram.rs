//! The Gram phase of the conv kernel: tile planning, per-example gradient rows `G` per tile,
//! upper-triangle products, the factorised head.

use rayon::prelude::*;
use stiff_gemm::Parallelism;

use super::{mm, Conv, Net, Real};
use crate::im2col::{im2col, im2row};

/// The `(row, column)` tile sizes of each conv layer's Gram for `n` examples within `budget`
/// bytes (beyond `K`); `None` when the kernel's stored passes and one row of `G` do not fit.
pub(super) fn plan<T>(net: &Net<T>, n: usize, per_layer: bool, budget: usize) -> Option<Vec<(usize, usize)>> {
    let eb = std::mem::size_of::<T>();
    let threads = rayon::current_num_threads().max(1);
    let nl = net.convs.len() + 1;
    let stored: usize =
        net.convs.iter().map(|c| c.in_len() + c.delta_len()).sum::<usize>() + net.head.feat + net.head.classes;
    let idx: usize = net.convs.iter().map(|c| c.pooled_len() * 2).sum();
    let store = n.checked_mul(stored * eb + idx)?;
    // Backward holds two pooled-gradient maps for all examples at once.
    let pass = net.convs.iter().map(|c| n * (c.pooled_len() + c.in_len()) * eb).max().unwrap_or(0);
    let scratch = threads * net.convs.iter().map(|c| (2 * c.f() * c.s() + c.delta_len()) * eb).max().unwrap_or(0);
    let outputs = if per_layer { n.checked_mul(n)?.checked_mul(eb * nl)? } else { 0 };
    let head_tmp = 2 * HEAD_ROWS * n * eb;
    let fixed = store.checked_add(outputs)?.checked_add(scratch)?.checked_add(head_tmp)?;
    let avail = budget.checked_sub(fixed)?;
    if pass > avail {
        return None;
    }
    net.convs
        .iter()
        .map(|c| {
            let row = c.p() * eb;
            if n.checked_mul(row)? <= avail.min(TILE_BYTES) {
                return Some((n, 0));
            }
            // Row tiles `a` as large as fit (each column example is rebuilt once per row tile),
            // up to TILE_BYTES (or a third of N); column tiles `b` smaller and reused warm.
            let tb = (COL_TILE_BYTES / row).min(avail / (2 * row)).clamp(1, n);
            let ta = (avail.checked_sub(tb * row)? / row).min((TILE_BYTES / row).max(n.div_ceil(3))).min(n);
            (ta > 0).then_some((ta, tb))
        })
        .collect()
}

/// Largest row tile of per-example gradient rows `G` (the tile buffers are reused by every layer).
/// Big tiles mean big, efficient products and few rebuilds; measured on cnn5 at N = 500, one
/// whole 590 MB `G` beat 160 MB tiles despite its page faults.
pub(super) const TILE_BYTES: usize = 1 << 30;
/// Size of a column tile of `G` (products of `row tile x column tile` examples: not too thin).
pub(super) const COL_TILE_BYTES: usize = 160 << 20;

/// Rows of the head's `D Dᵀ` / `A Aᵀ` strips.
pub(super) const HEAD_ROWS: usize = 256;

/// Per-example gradient rows of conv `c` for examples `r0..r0+rows` into `g: (rows, P)`:
/// `D_i U_iᵀ` (`c_out x f`, row-major) then the bias gradient `sum_s D_i[:, s]`. `D_i` is zero
/// except at one argmax per live pooling window, so each row of `D_i U_iᵀ` is a sum of a few
/// patch rows (`im2row`): about `1/pool²` of the dense product's multiply-adds.
pub(super) fn build<T: Real>(c: &Conv<T>, acts: &[T], deltas: &[T], r0: usize, rows: usize, g: &mut [T]) {
    let (s, f, p) = (c.s(), c.f(), c.p());
    let zero = T::from_f64(0.0);
    g[..rows * p].par_chunks_mut(p).enumerate().for_each_init(
        || vec![zero; s * f],
        |patches, (r, gi)| {
            let i = r0 + r;
            let a = &acts[i * c.in_len()..(i + 1) * c.in_len()];
            let d = &deltas[i * c.delta_len()..(i + 1) * c.delta_len()];
            let (gw, gb) = gi.split_at_mut(c.c_out * f);
            for (b, dc) in gb.iter_mut().zip(d.chunks_exact(s)) {
                *b = dc.iter().fold(zero, |acc, &v| acc + v);
            }
            if f < SPARSE_MIN_F {
                // Short patches: the dense gemm (SIMD, FMA) beats skipping the zeros.
                im2col(a, c.c_in, c.h, c.wd, c.k, c.pad, patches, s);
                mm((c.c_out, f, s), d, s, patches, s, true, gw, f, false, Parallelism::None);
                return;
            }
            im2row(a, c.c_in, c.h, c.wd, c.k, c.pad, patches);
            for (row, dc) in gw.chunks_exact_mut(f).zip(d.chunks_exact(s)) {
                row.fill(zero);
                for (pos, &dv) in dc.iter().enumerate() {
                    if dv != zero {
                        for (o, &u) in row.iter_mut().zip(&patches[pos * f..(pos + 1) * f]) {
                            *o += dv * u;
                        }
                    }
                }
            }
        },
    );
}

/// Patch length from which [`build`] sums the few live patch rows instead of a dense `D Uᵀ`.
pub(super) const SPARSE_MIN_F: usize = 512;

/// `dst[r0.., c0..] += ga (ra x p) · gb (rb x p)ᵀ` into an `n x n` row-major matrix.
#[allow(clippy::too_many_arguments)]
pub(super) fn product<T: Real>(
    ga: &[T],
    ra: usize,
    gb: &[T],
    rb: usize,
    p: usize,
    dst: &mut [T],
    n: usize,
    r0: usize,
    c0: usize,
) {
    mm((ra, rb, p), ga, p, gb, p, true, &mut dst[r0 * n + c0..], n, true, Parallelism::Rayon(0));
}

/// The upper triangle of `g gᵀ` for the `len` rows of `g: (len, p)`, added at `(r0, r0)` of an
/// `n x n` matrix: split in halves, the off-diagonal rectangle in one gemm, both halves
/// recursively; squares of at most [`TRI_BASE`] rows are multiplied whole (their lower part is
/// overwritten by the final mirror).
pub(super) fn upper<T: Real>(g: &[T], len: usize, p: usize, dst: &mut [T], n: usize, r0: usize) {
    if len <= TRI_BASE {
        product(g, len, g, len, p, dst, n, r0, r0);
        return;
    }
    let h = len / 2;
    product(g, h, &g[h * p..], len - h, p, dst, n, r0, r0 + h);
    upper(g, h, p, dst, n, r0);
    upper(&g[h * p..], len - h, p, dst, n, r0 + h);
}

/// Largest diagonal square of [`upper`] multiplied whole: about `TRI_BASE / N` extra work
/// against the efficiency of small gemms.
pub(super) const TRI_BASE: usize = 48;

/// The head's factorised Gram `(D Dᵀ) o (A Aᵀ + 1)`, upper triangle, added into `dst`.
pub(super) fn head_gram<T: Real>(a: &[T], feat: usize, d: &[T], classes: usize, n: usize, dst: &mut [T]) {
    let zero = T::from_f64(0.0);
    let one = T::from_f64(1.0);
    let mut dd = vec![zero; HEAD_ROWS * n];
    let mut aa = vec![zero; HEAD_ROWS * n];
    let par = Parallelism::Rayon(0);
    for r0 in (0..n).step_by(HEAD_ROWS) {
        let rows = HEAD_ROWS.min(n - r0);
        let cols = n - r0;
        mm(
            (rows, cols, classes),
            &d[r0 * classes..],
            classes,
            &d[r0 * classes..],
            classes,
            true,
            &mut dd,
            cols,
            false,
            par,
        );
        mm((rows, cols, feat), &a[r0 * feat..], feat, &a[r0 * feat..], feat, true, &mut aa, cols, false, par);
        for r in 0..rows {
            let out = &mut dst[(r0 + r) * n + r0..(r0 + r) * n + n];
            for c in r..cols {
                out[c] += dd[r * cols + c] * (aa[r * cols + c] + one);
            }
        }
    }
}

/// Copies the upper triangle onto the lower one.
pub(super) fn mirror<T: Copy>(k: &mut [T], n: usize) {
    for i in 0..n {
        for j in i + 1..n {
            k[j * n + i] = k[i * n + j];
        }
    }
}
