//! The Gram phase of the conv kernel: tile planning, per-example gradient rows `G` per tile,
//! upper-triangle products, the factorised head.

use rayon::prelude::*;
use stiff_gemm::Parallelism;

use super::ghost;
use super::net::{mm, Conv, Net, Real};
use super::waves::in_waves;
use crate::im2col::{im2col, im2row};

/// How one conv layer's Gram is computed (see [`plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LayerPlan {
    /// Per-example gradient rows `G`, `tile` rows beside column tiles of `tile_b` (0: one tile).
    Rows { tile: usize, tile_b: usize },
    /// The pixel-Gram ghost route ([`super::ghost`]) in blocks of `block` examples.
    Ghost { block: usize },
}

/// How each conv layer's Gram is computed for `n` stored examples (both sets of a cross Gram)
/// with `per_layer_entries` entries in each per-layer Gram (0: none), within `budget` bytes
/// (beyond `K`):
/// the pixel-Gram route where it needs fewer multiply-adds and fits, otherwise per-example
/// gradient rows in row tiles; `None` when the kernel's stored passes and one row of `G` do not
/// fit.
pub(super) fn plan<T>(net: &Net<T>, n: usize, per_layer_entries: usize, budget: usize) -> Option<Vec<LayerPlan>> {
    let eb = std::mem::size_of::<T>();
    let threads = rayon::current_num_threads().max(1);
    let nl = net.convs.len() + 1;
    let stored: usize =
        net.convs.iter().map(|c| c.in_len() + c.delta_len()).sum::<usize>() + net.head.feat + net.head.classes;
    let idx: usize = net.convs.iter().map(|c| c.pooled_len() * 2).sum();
    let store = n.checked_mul(stored * eb + idx)?;
    // Backward holds two pooled-gradient maps for all examples at once.
    let pass = net.convs.iter().map(|c| n * (c.pooled_len() + c.in_len()) * eb).max().unwrap_or(0);
    // Per thread: the forward's patches and outputs of one group of examples, or the backward's
    // and the build's patches of one example (plus the backward's delta).
    let per_thread = |c: &Conv<T>| {
        let cols = super::passes::group(c).min(n.max(1)) * c.s();
        ((c.f() + c.c_out) * cols).max(2 * c.f() * c.s() + c.delta_len()) * eb
    };
    let scratch = threads * net.convs.iter().map(per_thread).max().unwrap_or(0);
    let outputs = per_layer_entries.checked_mul(eb * nl)?;
    let head_tmp = 2 * HEAD_ROWS * n * eb;
    let fixed = store.checked_add(outputs)?.checked_add(scratch)?.checked_add(head_tmp)?;
    let avail = budget.checked_sub(fixed)?;
    if pass > avail {
        return None;
    }
    net.convs
        .iter()
        .map(|c| {
            if ghost::preferred(c) {
                let block = ghost::block(c, n);
                if ghost::bytes(c, n, block, threads).is_some_and(|b| b <= avail) {
                    return Some(LayerPlan::Ghost { block });
                }
            }
            let row = c.p() * eb;
            if n.checked_mul(row)? <= avail.min(TILE_BYTES) {
                return Some(LayerPlan::Rows { tile: n, tile_b: 0 });
            }
            // Row tiles `a` as large as fit (each column example is rebuilt once per row tile),
            // up to TILE_BYTES (or a third of N); column tiles `b` smaller and reused warm.
            let tb = grid_tile((COL_TILE_BYTES / row).min(avail / (2 * row)).clamp(1, n), n);
            let ta = (avail.checked_sub(tb * row)? / row).min((TILE_BYTES / row).max(n.div_ceil(3))).min(n);
            let ta = grid_tile(ta, n);
            (ta > 0).then_some(LayerPlan::Rows { tile: ta, tile_b: tb })
        })
        .collect()
}

/// A tile of `t` examples out of `n` (whole, or cut down to whole [`BLOCK_ROWS`] blocks): tiles
/// then start on the global grid of [`product`]'s blocks, so every block has the same shape
/// whatever the tile size. The tile size follows the budget left after each thread's scratch,
/// i.e. the thread count; the block shapes, which fix gemm's summation order, must not. (Below
/// one block, budgets too small for `BLOCK_ROWS` examples per tile, the blocks are the tiles.)
fn grid_tile(t: usize, n: usize) -> usize {
    if t >= n || t < BLOCK_ROWS {
        t
    } else {
        t / BLOCK_ROWS * BLOCK_ROWS
    }
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
                // Live patch rows two at a time: one load and store of `row` per two products.
                let mut held: Option<(T, &[T])> = None;
                for (pos, &dv) in dc.iter().enumerate() {
                    if dv == zero {
                        continue;
                    }
                    let u = &patches[pos * f..(pos + 1) * f];
                    match held.take() {
                        None => held = Some((dv, u)),
                        Some((d0, u0)) => {
                            for ((o, &a), &b) in row.iter_mut().zip(u0).zip(u) {
                                *o += d0 * a + dv * b;
                            }
                        }
                    }
                }
                if let Some((d0, u0)) = held {
                    for (o, &a) in row.iter_mut().zip(u0) {
                        *o += d0 * a;
                    }
                }
            }
        },
    );
}

/// Patch length from which [`build`] sums the few live patch rows instead of a dense `D Uᵀ`.
/// Measured on cnn5 (N = 200, loaded machine): dense wins at f = 27 (2x) and f = 288 (10-15%),
/// the sparse sums at f = 576 (10-20%) and f = 1152 (10-20%).
pub(super) const SPARSE_MIN_F: usize = 512;

/// `dst[r0.., c0..] += ga gbᵀ` for `ga: (ra, p)`, `gb: (rb, p)` into a row-major matrix with row
/// stride `ld`;
/// with `diag` (`ga` and `gb` the same rows, `r0 == c0`) only the blocks on or above the diagonal
/// are multiplied (their lower part is overwritten by the final mirror).
///
/// The product is cut into blocks on a global grid of [`BLOCK_ROWS`] examples (boundaries at
/// multiples of `BLOCK_ROWS` of the example index, so a block's shape does not depend on the
/// tiling), each multiplied by a single-threaded gemm, the blocks spread over rayon's threads,
/// then added into `dst` in a fixed order (deterministic). With `p` in the hundreds of thousands (cnn5's last conv), two
/// single-threaded gemms on separate blocks run near each core's peak, whereas one gemm split
/// over both threads, or a recursion down to small diagonal squares, reached about 40% of it.
#[allow(clippy::too_many_arguments)]
pub(super) fn product<T: Real>(
    ga: &[T],
    ra: usize,
    gb: &[T],
    rb: usize,
    p: usize,
    diag: bool,
    dst: &mut [T],
    ld: usize,
    (r0, c0): (usize, usize),
) {
    // Blocks `[a, b)` relative to the tile starting at example `start`.
    let cut = |start: usize, len: usize| -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        let mut a = 0;
        while a < len {
            let b = ((start + a) / BLOCK_ROWS + 1) * BLOCK_ROWS - start;
            v.push((a, b.min(len)));
            a = b.min(len);
        }
        v
    };
    let (rows, cols) = (cut(r0, ra), cut(c0, rb));
    let tasks: Vec<((usize, usize), (usize, usize))> = rows
        .iter()
        .enumerate()
        .flat_map(|(i, &r)| cols.iter().enumerate().filter(move |(j, _)| !diag || *j >= i).map(move |(_, &c)| (r, c)))
        .collect();
    let zero = T::from_f64(0.0);
    in_waves(
        &tasks,
        || (),
        |_, &((a0, a1), (b0, b1))| {
            let mut buf = vec![zero; (a1 - a0) * (b1 - b0)];
            let (ra, rb) = (&ga[a0 * p..a1 * p], &gb[b0 * p..b1 * p]);
            mm((a1 - a0, b1 - b0, p), ra, p, rb, p, true, &mut buf, b1 - b0, false, Parallelism::None);
            buf
        },
        |&((a0, a1), (b0, b1)), buf| {
            let w = b1 - b0;
            for (i, src) in (a0..a1).zip(buf.chunks_exact(w)) {
                let row = &mut dst[(r0 + i) * ld + c0 + b0..(r0 + i) * ld + c0 + b0 + w];
                for (d, &v) in row.iter_mut().zip(src) {
                    *d += v;
                }
            }
        },
    );
}

/// Rows (and columns) of one block of [`product`]: large enough for gemm to run near peak
/// (measured: 125 x 125 blocks of a `p = 295,168` product at 85 GFLOP/s on one core), small
/// enough that a 500-row diagonal tile gives ten blocks to share out (128, 128, 128, 116 rows).
pub(super) const BLOCK_ROWS: usize = 128;

/// The head's factorised Gram `(D Dᵀ) o (A Aᵀ + 1)` added into `dst: (n, m)` in strips of
/// [`HEAD_ROWS`] rows: rows `(a, d)` (`n` examples) against columns `other` (`m` examples), or,
/// without `other`, against themselves (`m = n`, upper triangle only).
pub(super) fn head_gram<T: Real>(
    (a, d): (&[T], &[T]),
    other: Option<(&[T], &[T])>,
    (feat, classes): (usize, usize),
    (n, m): (usize, usize),
    dst: &mut [T],
) {
    let zero = T::from_f64(0.0);
    let one = T::from_f64(1.0);
    let upper = other.is_none();
    let (ab, db) = other.unwrap_or((a, d));
    let mut dd = vec![zero; HEAD_ROWS * m];
    let mut aa = vec![zero; HEAD_ROWS * m];
    let par = Parallelism::Rayon(0);
    for r0 in (0..n).step_by(HEAD_ROWS) {
        let rows = HEAD_ROWS.min(n - r0);
        let c0 = if upper { r0 } else { 0 };
        let cols = m - c0;
        mm(
            (rows, cols, classes),
            &d[r0 * classes..],
            classes,
            &db[c0 * classes..],
            classes,
            true,
            &mut dd,
            cols,
            false,
            par,
        );
        mm((rows, cols, feat), &a[r0 * feat..], feat, &ab[c0 * feat..], feat, true, &mut aa, cols, false, par);
        for r in 0..rows {
            let out = &mut dst[(r0 + r) * m + c0..(r0 + r + 1) * m];
            for c in if upper { r } else { 0 }..cols {
                out[c] += dd[r * cols + c] * (aa[r * cols + c] + one);
            }
        }
    }
}

/// Each example's squared head-gradient norm `|d|² (|a|² + 1)`, added into `sq`.
pub(super) fn head_sq_norms<T: Real>(a: &[T], d: &[T], (feat, classes): (usize, usize), sq: &mut [f64]) {
    for ((q, ai), di) in sq.iter_mut().zip(a.chunks_exact(feat)).zip(d.chunks_exact(classes)) {
        let norm2 = |v: &[T]| v.iter().map(|x| x.to_f64() * x.to_f64()).sum::<f64>();
        *q += norm2(di) * (norm2(ai) + 1.0);
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
