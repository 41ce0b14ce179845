//! The dense kernel between two example sets: `K = sum_l (D^a_l D^bᵀ_l) o (A^a_l A^bᵀ_l + 1)`,
//! `(N, M)`, on host slices with the `gemm` crate (what [`crate::cross_gram`] runs for a dense
//! chain on the CPU, e.g. `stiff cross` over MNIST train x test for `fc6`).
//!
//! Forward and backward per set in fixed blocks of [`PASS_ROWS`] examples (the same per-row
//! passes as the square kernel), then `K` in fixed strips of [`STRIP`] rows shared out over
//! rayon's threads, each strip walking column tiles of [`TILE`] with the two products of every
//! layer followed at once by their Hadamard accumulation. Every block and tile is fixed by
//! `N` and `M` alone, so the result is bit-identical whatever the thread count.

use rayon::prelude::*;
use stiff_gemm::Parallelism;

use crate::cpu_fast::{passes_in_blocks, DenseLayer, Elem, PassBufs};
use crate::rowmajor::matmul;

/// Examples per forward/backward block.
const PASS_ROWS: usize = 64;
/// Rows of `K` per parallel task.
const STRIP: usize = 128;
/// Columns of `K` per product.
const TILE: usize = 256;

/// Output of [`dense_cross`]: `k (n x m)` row-major, per-layer Grams when asked, squared
/// gradient norms and losses of both sets.
pub(crate) struct FastCross<T> {
    pub k: Vec<T>,
    pub per_layer: Vec<Vec<T>>,
    pub sq: (Vec<f64>, Vec<f64>),
    pub loss: (Vec<f64>, Vec<f64>),
    pub chunk: usize,
}

/// Every layer's input (after the first) and delta for one set, and its per-example losses.
struct Passes<T> {
    acts: Vec<Vec<T>>,
    deltas: Vec<Vec<T>>,
    loss: Vec<f64>,
}

fn passes<T: Elem>(layers: &[DenseLayer<T>], x: &[T], labels: &[u32]) -> Passes<T> {
    let n = labels.len();
    let nl = layers.len();
    let c = layers[nl - 1].out;
    let mut acts: Vec<Vec<T>> = layers[..nl - 1].iter().map(|l| vec![T::ZERO; n * l.out]).collect();
    let mut logits = vec![T::ZERO; n * c];
    let mut deltas: Vec<Vec<T>> = layers.iter().map(|l| vec![T::ZERO; n * l.out]).collect();
    let mut loss = vec![0.0; n];
    let bufs = PassBufs { acts: &mut acts, logits: &mut logits, deltas: &mut deltas, loss: &mut loss };
    passes_in_blocks(layers, x, labels, PASS_ROWS, bufs);
    Passes { acts, deltas, loss }
}

/// Squared gradient norm of every example: `sum_l |d_l|^2 (|a_l|^2 + 1)`, in f64.
fn sq_norms<T: Elem>(layers: &[DenseLayer<T>], x: &[T], p: &Passes<T>) -> Vec<f64> {
    let n = p.loss.len();
    let sq = |v: &[T]| v.iter().map(|&e| e.to_f64() * e.to_f64()).sum::<f64>();
    (0..n)
        .map(|i| {
            layers
                .iter()
                .enumerate()
                .map(|(l, layer)| {
                    let a = if l == 0 { x } else { &p.acts[l - 1] };
                    let ai = &a[i * layer.inp..(i + 1) * layer.inp];
                    let di = &p.deltas[l][i * layer.out..(i + 1) * layer.out];
                    sq(di) * (sq(ai) + 1.0)
                })
                .sum()
        })
        .collect()
}

/// Bytes held besides `K`: both sets' activations and deltas, per-layer Grams, product scratch.
fn bytes<T>(layers: &[DenseLayer<T>], n: usize, m: usize, per_layer: bool) -> usize {
    let e = std::mem::size_of::<T>();
    let per_example: usize = layers.iter().map(|l| 2 * l.out).sum();
    let threads = rayon::current_num_threads().max(1);
    (n + m) * per_example * e + if per_layer { layers.len() * n * m * e } else { 0 } + threads * 2 * STRIP * TILE * e
}

/// The cross Gram of rows `(xa, ya)` and columns `(xb, yb)` (x row-major `(n, in_0)`); `None`
/// when it does not fit `budget` bytes besides `K`.
pub(crate) fn dense_cross<T: Elem>(
    layers: &[DenseLayer<T>],
    (xa, ya): (&[T], &[u32]),
    (xb, yb): (&[T], &[u32]),
    per_layer: bool,
    budget: usize,
) -> Option<FastCross<T>> {
    let (n, m) = (ya.len(), yb.len());
    if bytes(layers, n, m, per_layer) > budget {
        return None;
    }
    let pa = passes(layers, xa, ya);
    let pb = passes(layers, xb, yb);
    let mut k = vec![T::ZERO; n * m];
    let mut per: Vec<Vec<T>> =
        if per_layer { (0..layers.len()).map(|_| vec![T::ZERO; n * m]).collect() } else { Vec::new() };
    type Strip<'a, T> = (usize, &'a mut [T], Vec<&'a mut [T]>);
    let mut strips: Vec<Strip<T>> = k.chunks_mut(STRIP * m).enumerate().map(|(i, s)| (i, s, Vec::new())).collect();
    for p in per.iter_mut() {
        for (i, s) in p.chunks_mut(STRIP * m).enumerate() {
            strips[i].2.push(s);
        }
    }
    strips.into_par_iter().for_each(|(si, strip, mut layer_strips)| {
        let r0 = si * STRIP;
        let nr = strip.len() / m;
        let mut dd = vec![T::ZERO; nr * TILE];
        let mut aa = vec![T::ZERO; nr * TILE];
        for c0 in (0..m).step_by(TILE) {
            let nc = TILE.min(m - c0);
            for (l, layer) in layers.iter().enumerate() {
                let (din, dout) = (layer.inp, layer.out);
                let (a_rows, a_cols): (&[T], &[T]) = if l == 0 { (xa, xb) } else { (&pa.acts[l - 1], &pb.acts[l - 1]) };
                let (d_rows, d_cols) = (&pa.deltas[l], &pb.deltas[l]);
                let none = Parallelism::None;
                matmul(
                    (nr, nc, dout),
                    &d_rows[r0 * dout..],
                    dout,
                    &d_cols[c0 * dout..],
                    dout,
                    true,
                    &mut dd,
                    nc,
                    false,
                    none,
                );
                matmul(
                    (nr, nc, din),
                    &a_rows[r0 * din..],
                    din,
                    &a_cols[c0 * din..],
                    din,
                    true,
                    &mut aa,
                    nc,
                    false,
                    none,
                );
                for r in 0..nr {
                    let at = r * m + c0;
                    let row = &mut strip[at..at + nc];
                    let terms =
                        dd[r * nc..(r + 1) * nc].iter().zip(&aa[r * nc..(r + 1) * nc]).map(|(&d, &a)| d * (a + T::ONE));
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
            }
        }
    });
    let sq = (sq_norms(layers, xa, &pa), sq_norms(layers, xb, &pb));
    Some(FastCross { k, per_layer: per, sq, loss: (pa.loss, pb.loss), chunk: n })
}
