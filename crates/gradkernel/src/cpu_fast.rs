//! A hand-written CPU kernel for dense (MLP) nets: forward, hand-derived backward and the blocked
//! factorised Gram `sum_l (D_l D_l^T) o (A_l A_l^T + 1)` on contiguous row-major slices with the
//! `gemm` crate, upper-triangle blocks only (rayon over balanced pairs of block rows), fused
//! accumulation, no tensor temporaries. The candle-tensor path in `engine` is the device-generic
//! version and its cross-check.

use rayon::prelude::*;
use stiff_gemm::Parallelism;

/// The float types the kernel runs in.
pub(crate) trait Elem:
    stiff_gemm::Scalar + Send + Sync + PartialOrd + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self>
{
    const ONE: Self;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

impl Elem for f32 {
    const ONE: Self = 1.0;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Elem for f64 {
    const ONE: Self = 1.0;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// `dst (m x n, row stride ldd) [+]= lhs (m x k, row stride lda) * op(rhs)`, where `op(rhs)` is
/// `rhs^T` for `rhs: (n x k)` (`rhs_t = true`) or `rhs: (k x n)` itself, row stride `ldb`.
/// Shapes come from the model and the chunking, never from user input, so a mismatch is a bug.
#[allow(clippy::too_many_arguments)]
fn matmul<T: Elem>(
    (m, n, k): (usize, usize, usize),
    lhs: &[T],
    lda: usize,
    rhs: &[T],
    ldb: usize,
    rhs_t: bool,
    dst: &mut [T],
    ldd: usize,
    accumulate: bool,
    par: Parallelism,
) {
    use stiff_gemm::{MatMut, MatRef};
    let rhs = if rhs_t { MatRef::row_major_ld(rhs, n, k, ldb).t() } else { MatRef::row_major_ld(rhs, k, n, ldb) };
    let alpha = accumulate.then_some(T::ONE);
    stiff_gemm::matmul(
        MatMut::row_major_ld(dst, m, n, ldd),
        alpha,
        MatRef::row_major_ld(lhs, m, k, lda),
        rhs,
        T::ONE,
        par,
    )
    .expect("internal shape invariant of the fast dense Gram");
}

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
    let b = block_size(n, threads);
    n * acts * e + if per_layer { layers.len() * n * n * e } else { 0 } + threads * 3 * b * b * e
}

fn block_size(n: usize, threads: usize) -> usize {
    n.div_ceil(4 * threads.max(1)).clamp(64, 256).div_ceil(16) * 16
}

/// x: `(n, in_0)` row-major; labels `< out_L`. Returns the Gram of the summed cross-entropy's
/// per-example gradients over all weights and biases.
pub(crate) fn dense_gram<T: Elem>(layers: &[DenseLayer<T>], x: &[T], labels: &[u32], per_layer: bool) -> FastGram<T> {
    let n = labels.len();
    let threads = rayon::current_num_threads();
    let par = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    let nl = layers.len();
    let mut phases = Phases::default();
    let t0 = std::time::Instant::now();

    // Forward: acts[l] is the input of layer l (acts[0] = x); the logits go to `z`.
    let mut acts: Vec<Vec<T>> = Vec::with_capacity(nl);
    let mut z = Vec::new();
    for (l, layer) in layers.iter().enumerate() {
        let a: &[T] = if l == 0 { x } else { &acts[l - 1] };
        let mut out = vec![T::ZERO; n * layer.out];
        for row in out.chunks_mut(layer.out) {
            row.copy_from_slice(&layer.b);
        }
        matmul((n, layer.out, layer.inp), a, layer.inp, &layer.w, layer.inp, true, &mut out, layer.out, true, par);
        if layer.relu {
            out.par_iter_mut().for_each(|v| {
                if (*v).partial_cmp(&T::ZERO) != Some(std::cmp::Ordering::Greater) {
                    *v = T::ZERO
                }
            });
        }
        if l + 1 < nl {
            acts.push(out);
        } else {
            z = out;
        }
    }
    phases.forward = t0.elapsed().as_secs_f64();
    let t0 = std::time::Instant::now();
    // D_L = softmax - onehot, and the per-example loss logsumexp - z_y (in f64).
    let c = layers[nl - 1].out;
    let mut loss = vec![0.0; n];
    let mut d_last = vec![T::ZERO; n * c];
    for i in 0..n {
        let zi = &z[i * c..(i + 1) * c];
        let m = zi.iter().map(|v| v.to_f64()).fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = zi.iter().map(|v| (v.to_f64() - m).exp()).sum();
        let y = labels[i] as usize;
        loss[i] = m + s.ln() - zi[y].to_f64();
        for j in 0..c {
            let p = (zi[j].to_f64() - m).exp() / s;
            d_last[i * c + j] = T::from_f64(if j == y { p - 1.0 } else { p });
        }
    }
    // Backward: D_{l-1} = (D_l W_l) o 1[A_l > 0]  (A_l = relu(z_{l-1}) > 0 iff z_{l-1} > 0).
    let mut deltas: Vec<Vec<T>> = vec![Vec::new(); nl];
    deltas[nl - 1] = d_last;
    for l in (1..nl).rev() {
        let layer = &layers[l];
        let mut d = vec![T::ZERO; n * layer.inp];
        matmul(
            (n, layer.inp, layer.out),
            &deltas[l],
            layer.out,
            &layer.w,
            layer.inp,
            false,
            &mut d,
            layer.inp,
            false,
            par,
        );
        if layers[l - 1].relu {
            d.par_iter_mut().zip(acts[l - 1].par_iter()).for_each(|(dv, av)| {
                if (*av).partial_cmp(&T::ZERO) != Some(std::cmp::Ordering::Greater) {
                    *dv = T::ZERO
                }
            });
        }
        deltas[l - 1] = d;
    }

    phases.backward = t0.elapsed().as_secs_f64();
    let t0 = std::time::Instant::now();
    let cpu = std::sync::Mutex::new([0.0f64; 3]);
    // Gram: strips of `b` rows; only blocks on or right of the diagonal, then mirror.
    let b = block_size(n, threads);
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
        // Pair strip t with strip nb-1-t so every task does about the same number of blocks.
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
        tasks.into_par_iter().for_each(|task| {
            let mut dd = vec![T::ZERO; b * b];
            let mut aa = vec![T::ZERO; b * b];
            let mut t = [0.0f64; 3];
            for (bi, strip, mut layer_strips) in task.into_iter().flatten() {
                let (r0, nr) = (bi * b, b.min(n - bi * b));
                for bj in bi..nb {
                    let (c0, nc) = (bj * b, b.min(n - bj * b));
                    for (l, layer) in layers.iter().enumerate() {
                        let (din, dout) = (layer.inp, layer.out);
                        let (a, d) = (input(l), &deltas[l]);
                        let c0t = std::time::Instant::now();
                        matmul(
                            (nr, nc, dout),
                            &d[r0 * dout..],
                            dout,
                            &d[c0 * dout..],
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
                            &a[r0 * din..],
                            din,
                            &a[c0 * din..],
                            din,
                            true,
                            &mut aa,
                            nc,
                            false,
                            Parallelism::None,
                        );
                        let c2t = std::time::Instant::now();
                        for r in 0..nr {
                            let row = &mut strip[r * n + c0..r * n + c0 + nc];
                            let (ddr, aar) = (&dd[r * nc..(r + 1) * nc], &aa[r * nc..(r + 1) * nc]);
                            if let Some(ls) = layer_strips.get_mut(l) {
                                let lrow = &mut ls[r * n + c0..r * n + c0 + nc];
                                for j in 0..nc {
                                    let v = ddr[j] * (aar[j] + T::ONE);
                                    lrow[j] = v;
                                    row[j] = row[j] + v;
                                }
                            } else {
                                for j in 0..nc {
                                    row[j] = row[j] + ddr[j] * (aar[j] + T::ONE);
                                }
                            }
                        }
                        t[0] += (c1t - c0t).as_secs_f64();
                        t[1] += (c2t - c1t).as_secs_f64();
                        t[2] += c2t.elapsed().as_secs_f64();
                    }
                }
            }
            let mut c = cpu.lock().unwrap_or_else(|e| e.into_inner());
            for (acc, v) in c.iter_mut().zip(t) {
                *acc += v;
            }
        });
    }
    phases.gram = t0.elapsed().as_secs_f64();
    [phases.dd, phases.aa, phases.hadamard] = cpu.into_inner().unwrap_or_else(|e| e.into_inner());
    let t0 = std::time::Instant::now();
    mirror(&mut k, n, b);
    for p in per.iter_mut() {
        mirror(p, n, b);
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
