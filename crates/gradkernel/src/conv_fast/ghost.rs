//! The pixel-Gram ghost route of one conv layer: its Gram without per-example gradient rows.
//!
//! For conv `c` (stride 1, "same" padding) the weight gradient of example `i` is
//! `G_i = D_i U_i` with `D_i: (c_out, S)` the deltas and `U_i: (S, c_in k²)` the patches, so
//!
//! `K_ij = sum_{s,t} (D_iᵀ D_j)[s,t] · (1 + sum_o X_i[s+o] · X_j[t+o])`
//!
//! where `X_i[q]` is the `c_in`-vector of input pixel `q`, `o` runs over the `k²` kernel offsets
//! and only offsets inside the map for both `s` and `t` count (zero padding); the `1` is the bias.
//! The patch Gram `U_i U_jᵀ` is never formed: it is a sum of shifted entries of the pixel Gram
//! `X_i X_jᵀ`. Per pair that costs `S²·c_out + S²·c_in` multiply-adds in two gemms plus about
//! `S²·k²` adds, against `c_out·c_in·k²` for the per-example gradient rows; on cnn5's last conv
//! (`S = 16`, 128 -> 256 channels) about 100k against 295k, and no `G` to build.
//!
//! Examples are cut into blocks of about [`BLOCK_POSITIONS`] / `S`; each upper block pair is one
//! task on rayon's threads: two single-threaded gemms (`Dg = D_I D_Jᵀ`, `Xg = X_I X_Jᵀ`) and the
//! combination. Rows are laid out position-major within a block (`s·B + i`), so for fixed
//! `(i, s, t)` the entries of every example `j` of the other block are contiguous and the
//! combination runs as long vector loops. Block results are added into `K` in a fixed order.

use rayon::prelude::*;
use stiff_gemm::Parallelism;

use super::net::{mm, Conv, Real};
use super::waves::{in_waves, WAVE_PER_THREAD};

/// Rows (examples x positions) of one block of the pixel and delta Grams.
pub(super) const BLOCK_POSITIONS: usize = 1024;

/// Weight of one combination add against one gemm multiply-add when choosing the route (the
/// combination streams memory instead of running in registers).
const COMBINE_WEIGHT: usize = 4;

/// Whether the pixel-Gram route is cheaper than per-example gradient rows for conv `c`,
/// comparing multiply-adds per pair of examples.
pub(super) fn preferred<T>(c: &Conv<T>) -> bool {
    let s = c.s();
    let ghost = s * s * (c.c_out + c.c_in + COMBINE_WEIGHT * c.k * c.k);
    ghost < c.p()
}

/// Examples per block for conv `c`.
pub(super) fn block<T>(c: &Conv<T>, n: usize) -> usize {
    (BLOCK_POSITIONS / c.s()).clamp(1, n.max(1))
}

/// Working bytes of [`gram`] with blocks of `b` examples: the position-major copies of all
/// deltas and inputs, each thread's two block Grams, and one wave of block results.
pub(super) fn bytes<T>(c: &Conv<T>, n: usize, b: usize, threads: usize) -> Option<usize> {
    let eb = std::mem::size_of::<T>();
    let s = c.s();
    let copies = n.checked_mul(s * (c.c_out + c.c_in))?;
    let scratch = threads.checked_mul(2 * (b * s) * (b * s) + (WAVE_PER_THREAD + 1) * b * b)?;
    copies.checked_add(scratch)?.checked_mul(eb)
}

/// For every pair of output positions `(s, t)`, the input pixel pairs `(s+o, t+o)` over the
/// kernel offsets `o` that fall inside the map for both: `pairs[start[s·S+t]..start[s·S+t+1]]`.
struct Shifts {
    start: Vec<usize>,
    pairs: Vec<(u32, u32)>,
}

fn shifts<T>(c: &Conv<T>) -> Shifts {
    let (h, w, k, pad) = (c.h as isize, c.wd as isize, c.k as isize, c.pad as isize);
    let inside = |q: isize, o: isize, len: isize| (0..len).contains(&(q + o - pad));
    let mut start = vec![0];
    let mut pairs = Vec::new();
    for s in 0..c.s() as isize {
        let (sy, sx) = (s / w, s % w);
        for t in 0..c.s() as isize {
            let (ty, tx) = (t / w, t % w);
            for dy in 0..k {
                for dx in 0..k {
                    if inside(sy, dy, h) && inside(sx, dx, w) && inside(ty, dy, h) && inside(tx, dx, w) {
                        let a = (sy + dy - pad) * w + sx + dx - pad;
                        let b = (ty + dy - pad) * w + tx + dx - pad;
                        pairs.push((a as u32, b as u32));
                    }
                }
            }
            start.push(pairs.len());
        }
    }
    Shifts { start, pairs }
}

/// Rows `b0·S .. b0·S + rows` of a position-major matrix with `ch` columns.
fn block_of<T>(m: &[T], ch: usize, s: usize, b0: usize, rows: usize) -> &[T] {
    &m[b0 * s * ch..(b0 * s + rows) * ch]
}

/// `src: (n, ch, S)` (channel-major per example) to position-major blocks of `b` examples:
/// row `b0·S + s·nb + i` holds example `b0 + i` at position `s`, `ch` columns.
fn position_major<T: Real>(src: &[T], n: usize, ch: usize, s: usize, b: usize) -> Vec<T> {
    let mut out = vec![T::from_f64(0.0); n * s * ch];
    out.par_chunks_mut(b * s * ch).enumerate().for_each(|(bi, dst)| {
        let b0 = bi * b;
        let nb = dst.len() / (s * ch);
        for i in 0..nb {
            let e = &src[(b0 + i) * ch * s..(b0 + i + 1) * ch * s];
            for (c, row) in e.chunks_exact(s).enumerate() {
                for (pos, &v) in row.iter().enumerate() {
                    dst[(pos * nb + i) * ch + c] = v;
                }
            }
        }
    });
    out
}

/// One example set's stored input and deltas of a conv layer: `acts: (n, c_in, S)`,
/// `deltas: (n, c_out, S)`.
#[derive(Clone, Copy)]
pub(super) struct Side<'a, T> {
    pub(super) acts: &'a [T],
    pub(super) deltas: &'a [T],
    pub(super) n: usize,
}

/// Adds conv `c`'s Gram between the examples of `a` (rows) and `b` (columns) into
/// `dst: (a.n, ld)`; without `b`, the Gram of `a` with itself, upper triangle (at least), `ld =
/// a.n`. Blocks of `block` examples. Returns the seconds spent on the position-major copies and
/// on the rest.
pub(super) fn gram<T: Real>(
    c: &Conv<T>,
    a: Side<T>,
    b: Option<Side<T>>,
    block: usize,
    dst: &mut [T],
    ld: usize,
) -> (f64, f64) {
    let t = std::time::Instant::now();
    let s = c.s();
    let copy = |side: Side<T>| {
        let d = position_major(side.deltas, side.n, c.c_out, s, block);
        let x = position_major(side.acts, side.n, c.c_in, s, block);
        (d, x)
    };
    let (dm_a, xm_a) = copy(a);
    let cross = b.map(copy);
    let (dm_b, xm_b) = cross.as_ref().map_or((&dm_a, &xm_a), |(d, x)| (d, x));
    let copies = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let sh = shifts(c);
    let cut = |n: usize| -> Vec<(usize, usize)> { (0..n).step_by(block).map(|b0| (b0, block.min(n - b0))).collect() };
    let rows = cut(a.n);
    let cols = b.map_or_else(|| rows.clone(), |b| cut(b.n));
    let upper = b.is_none();
    let tasks: Vec<(usize, usize)> =
        (0..rows.len()).flat_map(|bi| (if upper { bi } else { 0 }..cols.len()).map(move |bj| (bi, bj))).collect();
    let zero = T::from_f64(0.0);
    in_waves(
        &tasks,
        || (Vec::new(), Vec::new(), Vec::new()),
        |(dg, xg, acc), &(bi, bj)| {
            let ((i0, ni), (j0, nj)) = (rows[bi], cols[bj]);
            let (ri, rj) = (ni * s, nj * s);
            dg.resize(ri * rj, zero);
            xg.resize(ri * rj, zero);
            let (co, ci) = (c.c_out, c.c_in);
            let (di, dj) = (block_of(&dm_a, co, s, i0, ri), block_of(dm_b, co, s, j0, rj));
            mm((ri, rj, co), di, co, dj, co, true, dg, rj, false, Parallelism::None);
            let (xi, xj) = (block_of(&xm_a, ci, s, i0, ri), block_of(xm_b, ci, s, j0, rj));
            mm((ri, rj, ci), xi, ci, xj, ci, true, xg, rj, false, Parallelism::None);
            let mut out = vec![zero; ni * nj];
            acc.resize(nj, zero);
            combine(&sh, s, ni, nj, dg, xg, acc, &mut out);
            out
        },
        |&(bi, bj), out| {
            let ((i0, ni), (j0, nj)) = (rows[bi], cols[bj]);
            for i in 0..ni {
                let row = &mut dst[(i0 + i) * ld + j0..(i0 + i) * ld + j0 + nj];
                for (d, &v) in row.iter_mut().zip(&out[i * nj..(i + 1) * nj]) {
                    *d += v;
                }
            }
        },
    );
    (copies, t.elapsed().as_secs_f64())
}

/// Each example's squared gradient norm for conv `c` (its own 1 x 1 block of the pixel-Gram
/// route), added into `sq`.
pub(super) fn sq_norms<T: Real>(c: &Conv<T>, side: Side<T>, sq: &mut [f64]) {
    let (il, dl) = (c.in_len(), c.delta_len());
    let sh = shifts(c);
    let own: Vec<T> = (0..side.n)
        .into_par_iter()
        .map(|i| {
            let one = Side { acts: &side.acts[i * il..(i + 1) * il], deltas: &side.deltas[i * dl..(i + 1) * dl], n: 1 };
            let mut k = [T::from_f64(0.0)];
            gram_serial(c, &sh, one, &mut k);
            k[0]
        })
        .collect();
    for (q, v) in sq.iter_mut().zip(own) {
        *q += v.to_f64();
    }
}

/// [`gram`] of one example with itself, on the calling thread.
fn gram_serial<T: Real>(c: &Conv<T>, sh: &Shifts, one: Side<T>, k: &mut [T; 1]) {
    let s = c.s();
    let zero = T::from_f64(0.0);
    let dm = position_major(one.deltas, 1, c.c_out, s, 1);
    let xm = position_major(one.acts, 1, c.c_in, s, 1);
    let (mut dg, mut xg, mut acc) = (vec![zero; s * s], vec![zero; s * s], vec![zero; 1]);
    mm((s, s, c.c_out), &dm, c.c_out, &dm, c.c_out, true, &mut dg, s, false, Parallelism::None);
    mm((s, s, c.c_in), &xm, c.c_in, &xm, c.c_in, true, &mut xg, s, false, Parallelism::None);
    combine(sh, s, 1, 1, &dg, &xg, &mut acc, k);
}

/// `out[i][j] = sum_{s,t} dg[s·ni+i][t·nj+j] · (1 + sum_{(a,b) in shifts(s,t)} xg[a·ni+i][b·nj+j])`
/// for one block pair; `acc` is a scratch row of `nj`. Compiled for the widest SIMD the CPU has
/// (`pulp` dispatch; the workspace itself targets baseline x86-64). The loops are elementwise
/// over `j` with a fixed order over `(s, t)` and shifts, so every copy gives the same bits.
#[allow(clippy::too_many_arguments)]
fn combine<T: Real>(sh: &Shifts, s: usize, ni: usize, nj: usize, dg: &[T], xg: &[T], acc: &mut [T], out: &mut [T]) {
    struct Op<'a, T> {
        sh: &'a Shifts,
        s: usize,
        ni: usize,
        nj: usize,
        dg: &'a [T],
        xg: &'a [T],
        acc: &'a mut [T],
        out: &'a mut [T],
    }
    impl<T: Real> pulp::WithSimd for Op<'_, T> {
        type Output = ();
        // Inlined into pulp's `#[target_feature]` entry point, so the loops get its SIMD width.
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            combine_body(self.sh, self.s, self.ni, self.nj, self.dg, self.xg, self.acc, self.out);
        }
    }
    pulp::Arch::new().dispatch(Op { sh, s, ni, nj, dg, xg, acc, out });
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn combine_body<T: Real>(
    sh: &Shifts,
    s: usize,
    ni: usize,
    nj: usize,
    dg: &[T],
    xg: &[T],
    acc: &mut [T],
    out: &mut [T],
) {
    let zero = T::from_f64(0.0);
    let ld = s * nj;
    for i in 0..ni {
        acc.fill(zero);
        for si in 0..s {
            let drow = &dg[(si * ni + i) * ld..][..ld];
            for ti in 0..s {
                let d = &drow[ti * nj..(ti + 1) * nj];
                // The bias term, then one multiply-add per shifted pixel pair.
                for (av, &dv) in acc.iter_mut().zip(d) {
                    *av += dv;
                }
                let k = si * s + ti;
                for &(a, b) in &sh.pairs[sh.start[k]..sh.start[k + 1]] {
                    let x = &xg[(a as usize * ni + i) * ld + b as usize * nj..][..nj];
                    for ((av, &dv), &xv) in acc.iter_mut().zip(d).zip(x) {
                        *av += dv * xv;
                    }
                }
            }
        }
        out[i * nj..(i + 1) * nj].copy_from_slice(acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A conv with the given geometry (weights are not used by [`gram`]).
    fn conv(c_in: usize, c_out: usize, h: usize, wd: usize, k: usize) -> Conv<f64> {
        Conv { w: vec![], b: vec![], c_in, h, wd, c_out, k, pad: k / 2, pool: 1, ho: h, wo: wd }
    }

    /// A deterministic pseudo-random value in [-1, 1), with exact zeros now and then (dead ReLUs).
    fn value(seed: u64) -> f64 {
        let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        z = (z ^ (z >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^= z >> 32;
        if z % 5 == 0 {
            0.0
        } else {
            (z % 2001) as f64 / 1000.0 - 1.0
        }
    }

    /// The oracle: each example's weight and bias gradient by direct loops over output positions,
    /// channels and taps (zero padding), then plain dot products of those gradients.
    fn oracle(c: &Conv<f64>, acts: &[f64], deltas: &[f64], n: usize) -> Vec<f64> {
        let (h, w, k, pad) = (c.h as isize, c.wd as isize, c.k as isize, c.pad as isize);
        let s = c.s();
        let grads: Vec<Vec<f64>> = (0..n)
            .map(|e| {
                let x = |ci: usize, y: isize, xx: isize| {
                    if (0..h).contains(&y) && (0..w).contains(&xx) {
                        acts[e * c.in_len() + ci * s + (y * w + xx) as usize]
                    } else {
                        0.0
                    }
                };
                let mut g = vec![0.0; c.p()];
                for co in 0..c.c_out {
                    for pos in 0..s {
                        let d = deltas[e * c.delta_len() + co * s + pos];
                        let (y, xx) = ((pos / c.wd) as isize, (pos % c.wd) as isize);
                        for ci in 0..c.c_in {
                            for dy in 0..k {
                                for dx in 0..k {
                                    let f = (ci * c.k + dy as usize) * c.k + dx as usize;
                                    g[co * c.f() + f] += d * x(ci, y + dy - pad, xx + dx - pad);
                                }
                            }
                        }
                        g[c.c_out * c.f() + co] += d;
                    }
                }
                g
            })
            .collect();
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                k[i * n + j] = grads[i].iter().zip(&grads[j]).map(|(a, b)| a * b).sum();
            }
        }
        k
    }

    #[test]
    fn matches_per_example_gradients_for_every_block_size_and_padding() {
        // Odd and even maps, 1x1 kernels (no shifts), padding 1 and 2, a 1x1 map, blocks that do
        // and do not divide n (one block, several, one example each).
        for (ci, co, h, w, k) in [(3, 5, 4, 4, 3), (2, 3, 3, 5, 3), (4, 2, 5, 5, 5), (3, 4, 1, 1, 3), (2, 2, 3, 2, 1)] {
            let c = conv(ci, co, h, w, k);
            let n = 7;
            let acts: Vec<f64> = (0..n * c.in_len()).map(|i| value(i as u64 + 1)).collect();
            let deltas: Vec<f64> = (0..n * c.delta_len()).map(|i| value(i as u64 + 10_007)).collect();
            let want = oracle(&c, &acts, &deltas, n);
            for b in [1, 2, 3, 7] {
                let mut got = vec![0.0; n * n];
                gram(&c, Side { acts: &acts, deltas: &deltas, n }, None, b, &mut got, n);
                for i in 0..n {
                    for j in i..n {
                        let (g, o) = (got[i * n + j], want[i * n + j]);
                        let scale = (want[i * n + i] * want[j * n + j]).sqrt();
                        assert!((g - o).abs() <= 1e-12 * scale, "{ci}->{co} {h}x{w} k{k} b{b} [{i},{j}]: {g} vs {o}");
                    }
                }
            }
        }
    }

    #[test]
    fn cross_blocks_and_own_norms_match_per_example_gradients() {
        let c = conv(3, 4, 3, 5, 3);
        let (n, m) = (5, 4);
        let acts: Vec<f64> = (0..(n + m) * c.in_len()).map(|i| value(i as u64 + 3)).collect();
        let deltas: Vec<f64> = (0..(n + m) * c.delta_len()).map(|i| value(i as u64 + 20_011)).collect();
        let want = oracle(&c, &acts, &deltas, n + m);
        let side = |from: usize, len: usize| Side {
            acts: &acts[from * c.in_len()..(from + len) * c.in_len()],
            deltas: &deltas[from * c.delta_len()..(from + len) * c.delta_len()],
            n: len,
        };
        let scale = |i: usize, j: usize| (want[i * (n + m) + i] * want[j * (n + m) + j]).sqrt();
        for b in [1, 2, 5] {
            let mut got = vec![0.0; n * m];
            gram(&c, side(0, n), Some(side(n, m)), b, &mut got, m);
            for i in 0..n {
                for j in 0..m {
                    let o = want[i * (n + m) + n + j];
                    assert!((got[i * m + j] - o).abs() <= 1e-12 * scale(i, n + j), "b{b} [{i},{j}]");
                }
            }
        }
        let mut sq = vec![0.0; n + m];
        sq_norms(&c, side(0, n + m), &mut sq);
        for (i, &v) in sq.iter().enumerate() {
            let o = want[i * (n + m) + i];
            assert!((v - o).abs() <= 1e-12 * o, "norm {i}: {v} vs {o}");
        }
    }

    #[test]
    fn chosen_for_small_maps_with_many_channels_only() {
        // cnn5's last conv (4x4 maps, 128 -> 256) takes the pixel Gram; its third (8x8,
        // 64 -> 128) and the first (32x32, 3 -> 32) keep per-example gradient rows.
        assert!(preferred(&conv(128, 256, 4, 4, 3)));
        assert!(!preferred(&conv(64, 128, 8, 8, 3)));
        assert!(!preferred(&conv(3, 32, 32, 32, 3)));
    }
}
