//! A hand-written CPU kernel for dense (MLP) nets: forward, hand-derived backward and the blocked
//! factorised Gram `sum_l (D_l D_l^T) o (A_l A_l^T + 1)` on contiguous row-major slices with the
//! `gemm` crate, upper-triangle blocks only (rayon over balanced pairs of block rows), fused
//! accumulation, no tensor temporaries. The general engine (`general.rs`, tapped layers) is the device-generic
//! version and its cross-check.

use std::sync::Mutex;

use rayon::prelude::*;
use stiff_gemm::Parallelism;

/// At most this many bytes of working buffers are kept between calls.
const POOL_CAP_BYTES: usize = 64 << 20;

/// Working buffers (activations, deltas, logits, block scratch) reused across calls: freeing and
/// reallocating them made the allocator hand megabytes back to the OS and page-fault them in
/// again on every call (about 2,000 faults per `fc6` Gram at N = 500). Every buffer taken is
/// fully overwritten before it is read, so reuse cannot change a result. Large ones (above the
/// cap, e.g. N = 10,000) are freed as usual.
struct Pool;

impl Pool {
    /// A buffer of exactly `len` elements with unspecified contents.
    fn take<T: Elem>(len: usize) -> Vec<T> {
        let mut pool = T::pool().lock().unwrap_or_else(|e| e.into_inner());
        // Smallest pooled buffer that is large enough.
        let best = (0..pool.len()).filter(|&i| pool[i].capacity() >= len).min_by_key(|&i| pool[i].capacity());
        let mut v = best.map(|i| pool.swap_remove(i)).unwrap_or_default();
        drop(pool);
        v.truncate(len);
        v.resize(len, T::ZERO);
        v
    }

    fn give<T: Elem>(v: Vec<T>) {
        let mut pool = T::pool().lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = pool.iter().map(|b| b.capacity()).sum::<usize>() + v.capacity();
        if held * std::mem::size_of::<T>() <= POOL_CAP_BYTES {
            pool.push(v);
        }
    }
}

/// The float types the kernel runs in.
pub(crate) trait Elem:
    stiff_gemm::Scalar + Send + Sync + PartialOrd + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self>
{
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    /// Working buffers kept between calls (see [`Pool`]).
    fn pool() -> &'static Mutex<Vec<Vec<Self>>>;
}

impl Elem for f32 {
    fn pool() -> &'static Mutex<Vec<Vec<Self>>> {
        static P: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
        &P
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Elem for f64 {
    fn pool() -> &'static Mutex<Vec<Vec<Self>>> {
        static P: Mutex<Vec<Vec<f64>>> = Mutex::new(Vec::new());
        &P
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

use crate::rowmajor::matmul;

/// One dense layer: `w: (out, in)` row-major, `b: (out)`.
pub(crate) struct DenseLayer<T> {
    pub w: Vec<T>,
    pub b: Vec<T>,
    pub inp: usize,
    pub out: usize,
    pub relu: bool,
}

/// Output of [`dense_gram`]: row-major `k (n x n)`, per-layer Grams when asked, per-example loss.
pub(crate) struct FastGram<T> {
    pub k: Vec<T>,
    pub per_layer: Vec<Vec<T>>,
    pub loss: Vec<f64>,
    pub phases: Phases,
}

/// Where [`dense_gram`]'s time went, in seconds. Wall times, except the three Gram parts, which
/// are summed over the threads (CPU seconds), so their sum is about `threads x gram`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    /// Copying weights and inputs out of the candle tensors (filled by [`crate::dense_gram_phases`]).
    pub inputs: f64,
    /// Batched forward (all layers, bias and ReLU included).
    pub forward: f64,
    /// Softmax deltas and the batched backward.
    pub backward: f64,
    /// The whole blocked Gram (wall).
    pub gram: f64,
    /// `D Dᵀ` block products (CPU seconds over threads).
    pub dd: f64,
    /// `A Aᵀ` block products (CPU seconds over threads).
    pub aa: f64,
    /// Hadamard accumulation into `K` (CPU seconds over threads).
    pub hadamard: f64,
    /// Mirroring the upper triangle.
    pub mirror: f64,
    /// Wrapping `K` into a candle tensor (filled by [`crate::dense_gram_phases`]).
    pub output: f64,
}

/// Bytes the kernel holds besides `K`: activations, deltas, per-layer Grams, block scratch.
pub(crate) fn dense_gram_bytes<T>(layers: &[DenseLayer<T>], n: usize, per_layer: bool, threads: usize) -> usize {
    let e = std::mem::size_of::<T>();
    let acts: usize = layers.iter().map(|l| l.inp + 2 * l.out).sum();
    let b = strip_rows(n);
    n * acts * e + if per_layer { layers.len() * n * n * e } else { 0 } + threads * 2 * b * TILE_COLS * e
}

/// Largest strip height: `b x TILE_COLS` scratch for `D Dᵀ` and `A Aᵀ` plus the `K` tile stay in a
/// core's L2 (1 MiB on the development machine).
const MAX_STRIP: usize = 192;
/// Widest column tile of one product.
const TILE_COLS: usize = 256;

/// Row blocks of the forward/backward phase: at least [`MIN_ROW_BLOCKS`] (so that two threads
/// get two blocks each, and one slowed down by another process hands work to the other) of at
/// most [`MAX_ROW_BLOCK`] rows (more blocks for more threads at large N), balanced: 125 rows at
/// N = 500. A function of `n` alone: gemm's summation order depends on the product's shape, so a
/// partition that followed the thread count would change the bits with it.
fn row_block(n: usize) -> usize {
    n.div_ceil(n.div_ceil(MAX_ROW_BLOCK).max(MIN_ROW_BLOCKS)).max(1)
}
const MIN_ROW_BLOCKS: usize = 4;
const MAX_ROW_BLOCK: usize = 128;

/// Strip height of the Gram phase: four strips when they fit under [`MAX_STRIP`], so that pairing
/// strip `t` with strip `nb-1-t` gives two tasks of equal area (N = 500: 125 rows; one task per
/// core on a two-core machine, as large as possible: halving the strips to 63 rows costs about 8%
/// in gemm throughput, measured with a standalone gemm bench), and more tasks of `MAX_STRIP` rows
/// at larger N. A function of `n` alone, never of the thread count (see [`row_block`]).
fn strip_rows(n: usize) -> usize {
    n.div_ceil(4).clamp(1, MAX_STRIP)
}

/// `s <= 0` (or NaN) gives 0: relu with relu'(0) = 0, as `stiff_models::ops`.
fn positive<T: Elem>(s: T) -> bool {
    s.partial_cmp(&T::ZERO) == Some(std::cmp::Ordering::Greater)
}

/// One thread's rows `r0..r0+nr` of every activation, logit, delta and loss buffer.
struct Rows<'a, T> {
    r0: usize,
    nr: usize,
    acts: Vec<&'a mut [T]>,
    logits: &'a mut [T],
    deltas: Vec<&'a mut [T]>,
    loss: &'a mut [f64],
}

/// Forward, softmax deltas and backward for one block of rows, single-threaded gemm.
/// Returns (forward, backward) seconds.
fn rows_pass<T: Elem>(layers: &[DenseLayer<T>], x: &[T], labels: &[u32], rows: Rows<'_, T>) -> (f64, f64) {
    let Rows { r0, nr, mut acts, logits, mut deltas, loss } = rows;
    let nl = layers.len();
    let t0 = std::time::Instant::now();
    // Forward: acts[l] = relu(A_l W_l^T + b_l) is the input of layer l+1; logits for the last.
    for (l, layer) in layers.iter().enumerate() {
        let (done, rest) = acts.split_at_mut(l.min(nl - 1));
        let inp: &[T] = if l == 0 { &x[r0 * layer.inp..(r0 + nr) * layer.inp] } else { &*done[l - 1] };
        let out: &mut [T] = if l + 1 < nl { &mut *rest[0] } else { &mut *logits };
        matmul(
            (nr, layer.out, layer.inp),
            inp,
            layer.inp,
            &layer.w,
            layer.inp,
            true,
            out,
            layer.out,
            false,
            Parallelism::None,
        );
        // Bias and ReLU in one pass over the product.
        for row in out.chunks_mut(layer.out) {
            for (v, &b) in row.iter_mut().zip(&layer.b) {
                let s = *v + b;
                *v = if layer.relu && !positive(s) { T::ZERO } else { s };
            }
        }
    }
    let forward = t0.elapsed().as_secs_f64();
    let t0 = std::time::Instant::now();
    // D_L = softmax - onehot, and the per-example loss logsumexp - z_y (in f64).
    let c = layers[nl - 1].out;
    for (i, (zi, di)) in logits.chunks(c).zip(deltas[nl - 1].chunks_mut(c)).enumerate() {
        let m = zi.iter().map(|v| v.to_f64()).fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = zi.iter().map(|v| (v.to_f64() - m).exp()).sum();
        let y = labels[r0 + i] as usize;
        loss[i] = m + s.ln() - zi[y].to_f64();
        for (j, (z, d)) in zi.iter().zip(di.iter_mut()).enumerate() {
            let p = (z.to_f64() - m).exp() / s;
            *d = T::from_f64(if j == y { p - 1.0 } else { p });
        }
    }
    // Backward: D_{l-1} = (D_l W_l) o 1[A_l > 0]  (A_l = relu(z_{l-1}) > 0 iff z_{l-1} > 0).
    for l in (1..nl).rev() {
        let layer = &layers[l];
        let (lower, upper) = deltas.split_at_mut(l);
        let d = &mut *lower[l - 1];
        matmul(
            (nr, layer.inp, layer.out),
            &*upper[0],
            layer.out,
            &layer.w,
            layer.inp,
            false,
            d,
            layer.inp,
            false,
            Parallelism::None,
        );
        if layers[l - 1].relu {
            for (dv, av) in d.iter_mut().zip(acts[l - 1].iter()) {
                if !positive(*av) {
                    *dv = T::ZERO
                }
            }
        }
    }
    (forward, t0.elapsed().as_secs_f64())
}

/// Where [`passes_in_blocks`] writes: `acts[l]` the input of layer `l+1` (`n x out_l`), the
/// logits, `deltas[l]` (`n x out_l`) and the per-example losses.
pub(crate) struct PassBufs<'a, T> {
    pub acts: &'a mut [Vec<T>],
    pub logits: &'a mut [T],
    pub deltas: &'a mut [Vec<T>],
    pub loss: &'a mut [f64],
}

/// Forward, softmax deltas and backward of all `labels.len()` examples in blocks of `per` rows,
/// the blocks shared out over rayon's threads (each block alone, single-threaded gemm). Returns
/// each block's (forward, backward) seconds. The blocks depend on `per` only, so the bits do not
/// depend on the thread count.
pub(crate) fn passes_in_blocks<T: Elem>(
    layers: &[DenseLayer<T>],
    x: &[T],
    labels: &[u32],
    per: usize,
    bufs: PassBufs<'_, T>,
) -> Vec<(f64, f64)> {
    let n = labels.len();
    let c = layers[layers.len() - 1].out;
    let mut blocks: Vec<Rows<T>> = (0..n.div_ceil(per))
        .map(|i| Rows {
            r0: i * per,
            nr: per.min(n - i * per),
            acts: Vec::new(),
            logits: &mut [],
            deltas: Vec::new(),
            loss: &mut [],
        })
        .collect();
    for (l, a) in bufs.acts.iter_mut().enumerate() {
        blocks.iter_mut().zip(a.chunks_mut(per * layers[l].out)).for_each(|(b, s)| b.acts.push(s));
    }
    for (l, d) in bufs.deltas.iter_mut().enumerate() {
        blocks.iter_mut().zip(d.chunks_mut(per * layers[l].out)).for_each(|(b, s)| b.deltas.push(s));
    }
    blocks.iter_mut().zip(bufs.logits.chunks_mut(per * c)).for_each(|(b, s)| b.logits = s);
    blocks.iter_mut().zip(bufs.loss.chunks_mut(per)).for_each(|(b, s)| b.loss = s);
    blocks.into_par_iter().map(|b| rows_pass(layers, x, labels, b)).collect()
}

/// A rectangle of the upper triangle: rows `r0..r0+nr` (within its strip) x columns `c0..c0+nc`.
#[derive(Clone, Copy)]
struct Piece {
    r0: usize,
    nr: usize,
    c0: usize,
    nc: usize,
}

/// The pieces covering the upper triangle of strip rows `r0..r1`: the diagonal block (see
/// [`diag_pieces`]) and the columns right of it in tiles of [`TILE_COLS`].
fn strip_pieces(r0: usize, r1: usize, n: usize) -> Vec<Piece> {
    let mut v = Vec::new();
    diag_pieces(r0, r1, &mut v);
    let mut c0 = r1;
    while c0 < n {
        let nc = TILE_COLS.min(n - c0);
        v.push(Piece { r0, nr: r1 - r0, c0, nc });
        c0 += nc;
    }
    v
}

/// A diagonal block `r0..r1` as its upper-right quadrant plus the two diagonal halves,
/// recursively down to squares under 48 rows, which are computed whole (their lower triangle is
/// discarded by [`mirror`]): about 6% of the Gram's products are wasted at N = 500 (125-row strips).
fn diag_pieces(r0: usize, r1: usize, out: &mut Vec<Piece>) {
    let nr = r1 - r0;
    if nr >= 48 {
        let h = nr / 2;
        out.push(Piece { r0, nr: h, c0: r0 + h, nc: nr - h });
        diag_pieces(r0, r0 + h, out);
        diag_pieces(r0 + h, r1, out);
    } else {
        out.push(Piece { r0, nr, c0: r0, nc: nr });
    }
}

/// x: `(n, in_0)` row-major; labels `< out_L`. Returns the Gram of the summed cross-entropy's
/// per-example gradients over all weights and biases.
///
/// Two parallel phases: (1) the examples split into blocks of rows ([`row_block`]), each running
/// forward and backward alone (single-threaded gemm, no synchronisation); (2) the upper triangle
/// of `K` in strips of rows, strip `t` paired with strip `nb-1-t` so the tasks have equal area,
/// each piece's `D Dᵀ` and `A Aᵀ` products followed at once by their Hadamard accumulation while
/// they are in cache. Then the lower triangle is mirrored. Every split depends only on `n`, never
/// on the thread count (threads only choose who computes a block), so results are bit-identical
/// whatever the thread count.
pub(crate) fn dense_gram<T: Elem>(layers: &[DenseLayer<T>], x: &[T], labels: &[u32], per_layer: bool) -> FastGram<T> {
    let n = labels.len();
    let nl = layers.len();
    let c = layers[nl - 1].out;
    let mut phases = Phases::default();
    let t0 = std::time::Instant::now();

    // acts[l]: input of layer l+1 (x is the input of layer 0); deltas[l]: dL/dz_l.
    let mut acts: Vec<Vec<T>> = layers[..nl - 1].iter().map(|l| Pool::take(n * l.out)).collect();
    let mut logits = Pool::take(n * c);
    let mut deltas: Vec<Vec<T>> = layers.iter().map(|l| Pool::take(n * l.out)).collect();
    let mut loss = vec![0.0; n];
    {
        let per = row_block(n);
        let bufs = PassBufs { acts: &mut acts, logits: &mut logits, deltas: &mut deltas, loss: &mut loss };
        let times = passes_in_blocks(layers, x, labels, per, bufs);
        // The slowest thread's share of the wall time of phase 1.
        let slowest = times.iter().copied().fold((0.0, 0.0), |m, t| if t.0 + t.1 > m.0 + m.1 { t } else { m });
        let wall = t0.elapsed().as_secs_f64();
        let busy = slowest.0 + slowest.1;
        phases.forward = if busy > 0.0 { wall * slowest.0 / busy } else { wall };
        phases.backward = wall - phases.forward;
    }
    Pool::give(logits);

    let t0 = std::time::Instant::now();
    let cpu = std::sync::Mutex::new([0.0f64; 3]);
    let b = strip_rows(n);
    let nb = n.div_ceil(b);
    let mut k = vec![T::ZERO; n * n];
    let mut per: Vec<Vec<T>> = if per_layer { (0..nl).map(|_| vec![T::ZERO; n * n]).collect() } else { Vec::new() };
    {
        type Strip<'a, T> = Option<(usize, &'a mut [T], Vec<&'a mut [T]>)>;
        let mut strips: Vec<Strip<T>> =
            k.chunks_mut(b * n).enumerate().map(|(i, s)| Some((i, s, Vec::new()))).collect();
        for p in per.iter_mut() {
            for (i, s) in p.chunks_mut(b * n).enumerate() {
                if let Some(st) = strips[i].as_mut() {
                    st.2.push(s);
                }
            }
        }
        let mut tasks = Vec::new();
        for t in 0..nb.div_ceil(2) {
            let first = strips[t].take();
            let second = if nb - 1 - t != t { strips[nb - 1 - t].take() } else { None };
            tasks.push([first, second]);
        }
        let input = |l: usize| -> &[T] {
            if l == 0 {
                x
            } else {
                &acts[l - 1]
            }
        };
        let scratch = b * TILE_COLS.max(b);
        tasks.into_par_iter().for_each(|task| {
            let mut dd = Pool::take(scratch);
            let mut aa = Pool::take(scratch);
            let mut t = [0.0f64; 3];
            for (si, strip, mut layer_strips) in task.into_iter().flatten() {
                let s0 = si * b;
                for p in strip_pieces(s0, (s0 + b).min(n), n) {
                    let (nr, nc) = (p.nr, p.nc);
                    for (l, layer) in layers.iter().enumerate() {
                        let (din, dout) = (layer.inp, layer.out);
                        let (a, d) = (input(l), &deltas[l]);
                        let c0t = std::time::Instant::now();
                        matmul(
                            (nr, nc, dout),
                            &d[p.r0 * dout..],
                            dout,
                            &d[p.c0 * dout..],
                            dout,
                            true,
                            &mut dd,
                            nc,
                            false,
                            Parallelism::None,
                        );
                        let c1t = std::time::Instant::now();
                        matmul(
                            (nr, nc, din),
                            &a[p.r0 * din..],
                            din,
                            &a[p.c0 * din..],
                            din,
                            true,
                            &mut aa,
                            nc,
                            false,
                            Parallelism::None,
                        );
                        let c2t = std::time::Instant::now();
                        for r in 0..nr {
                            let at = (p.r0 - s0 + r) * n + p.c0;
                            let row = &mut strip[at..at + nc];
                            let (ddr, aar) = (&dd[r * nc..(r + 1) * nc], &aa[r * nc..(r + 1) * nc]);
                            // Iterators, not indices, so the loops vectorise.
                            let terms = ddr.iter().zip(aar).map(|(&d, &a)| d * (a + T::ONE));
                            match layer_strips.get_mut(l) {
                                Some(ls) => {
                                    for ((kv, lv), v) in row.iter_mut().zip(&mut ls[at..at + nc]).zip(terms) {
                                        *lv = v;
                                        *kv = if l == 0 { v } else { *kv + v };
                                    }
                                }
                                None if l == 0 => row.iter_mut().zip(terms).for_each(|(kv, v)| *kv = v),
                                None => row.iter_mut().zip(terms).for_each(|(kv, v)| *kv = *kv + v),
                            }
                        }
                        t[0] += (c1t - c0t).as_secs_f64();
                        t[1] += (c2t - c1t).as_secs_f64();
                        t[2] += c2t.elapsed().as_secs_f64();
                    }
                }
            }
            Pool::give(dd);
            Pool::give(aa);
            let mut c = cpu.lock().unwrap_or_else(|e| e.into_inner());
            for (acc, v) in c.iter_mut().zip(t) {
                *acc += v;
            }
        });
    }
    acts.into_iter().chain(deltas).for_each(Pool::give);
    phases.gram = t0.elapsed().as_secs_f64();
    [phases.dd, phases.aa, phases.hadamard] = cpu.into_inner().unwrap_or_else(|e| e.into_inner());
    let t0 = std::time::Instant::now();
    mirror(&mut k, n, b.max(16));
    for p in per.iter_mut() {
        mirror(p, n, b.max(16));
    }
    phases.mirror = t0.elapsed().as_secs_f64();
    FastGram { k, per_layer: per, loss, phases }
}

/// Copies the upper triangle onto the lower one, tile by tile, so the matrix is exactly symmetric.
fn mirror<T: Elem>(m: &mut [T], n: usize, tile: usize) {
    for i0 in (0..n).step_by(tile) {
        for j0 in (0..=i0).step_by(tile) {
            for i in i0..(i0 + tile).min(n) {
                for j in j0..(j0 + tile).min(i) {
                    m[i * n + j] = m[j * n + i];
                }
            }
        }
    }
}
