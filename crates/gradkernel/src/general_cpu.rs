//! CPU fast paths of the general engine, taken when the plan says so (`Plan::cpu`: CPU tensors
//! and `cpu_fast_path`); the candle-op path in [`crate::factor`] and [`crate::pass`] stays the
//! device-generic one (CUDA's) and the cross-check.
//!
//! - Per-example gradients of a one-record linear, conv or norm unit are written straight into
//!   one `(n, P_unit)` buffer (single-threaded `stiff_gemm` per example) instead of a batched
//!   candle matmul, a bias sum and a `cat`.
//! - Gram blocks `G_a G_bᵀ` of materialised units are single-threaded `stiff_gemm` calls over
//!   fixed row stripes; a diagonal block computes only the stripes' upper parts (the entries
//!   below are unspecified: [`crate::hostmat::HostMat::put`] never reads them), and the units'
//!   blocks are summed in host loops.
//!
//! Both split the work into fixed blocks (examples, row stripes) whatever the thread count:
//! threads only choose who computes a block, so results are bit-identical at 1 or many threads.

use candle::{DType, Device, Tensor};
use rayon::prelude::*;
use stiff_gemm::{MatMut, MatRef, Parallelism};
use stiff_models::ops::unfold;

use crate::error::{GradKernelError, Result};
use crate::hostslice::{host, Num};
use crate::pass::Pass;
use crate::plan::{Plan, Unit};
use crate::tape::{NormLayout, RecKind};

/// Examples per parallel task of the per-example gradients.
const EX_BLOCK: usize = 4;
/// How a Gram block is cut into tasks (see [`gram_block`]).
#[derive(Clone, Copy)]
struct Tasks {
    /// Rows per task: each task streams its columns' gradients once, so taller stripes reuse
    /// them more (16 rows ran the transformer's blocks memory-bound).
    stripe: usize,
    /// Tasks a block of few stripes is cut into, by gradient columns.
    max_tasks: usize,
    /// The fewest gradient columns per piece.
    min_piece: usize,
}
// At most 4 pieces: with the part and the running total a block holds at most 6 `c x c` buffers,
// what `chunking::size_chunks` counts per block.
const TASKS: Tasks = Tasks { stripe: 64, max_tasks: 4, min_piece: 16384 };

/// Shapes here come from the tape and were checked against the parameters, so a gemm shape
/// error is a bug.
const SHAPES: &str = "internal shape invariant of the general engine's CPU path";

/// One row of `out` per example, computed by `f(example, row)` over fixed example blocks.
fn per_example<T: Num>(out: &mut [T], p: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    out.par_chunks_mut(EX_BLOCK * p).enumerate().for_each(|(bi, blk)| {
        for (j, row) in blk.chunks_mut(p).enumerate() {
            f(bi * EX_BLOCK + j, row);
        }
    });
}

/// `dst (m x n) = lhs . rhs`, single-threaded.
fn gemm<T: Num>(dst: MatMut<'_, T>, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>) {
    stiff_gemm::matmul(dst, None, lhs, rhs, T::ONE, Parallelism::None).expect(SHAPES);
}

/// Row sums of a row-major `(rows, cols)` block into `dst: (rows)`.
fn row_sums<T: Num>(dst: &mut [T], src: &[T], cols: usize) {
    for (o, r) in dst.iter_mut().zip(src.chunks(cols)) {
        *o = r.iter().fold(T::ZERO, |acc, &x| acc + x);
    }
}

/// The per-example gradients `(n, P_unit)` of a one-record linear, conv or norm unit (columns in
/// the unit's parameter order), or `None` where the candle path runs (another dtype, several
/// records, an offset record, a parameter that is not the record's weight or bias).
pub(crate) fn unit_mat_cpu(plan: &Plan, unit: &Unit, pass: &Pass) -> Result<Option<Tensor>> {
    if !plan.cpu {
        return Ok(None);
    }
    match plan.acc {
        DType::F32 => unit_mat_t::<f32>(plan, unit, pass),
        DType::F64 => unit_mat_t::<f64>(plan, unit, pass),
        _ => Ok(None),
    }
}

fn unit_mat_t<T: Num>(plan: &Plan, unit: &Unit, pass: &Pass) -> Result<Option<Tensor>> {
    let &[ri] = unit.records.as_slice() else { return Ok(None) };
    let r = &pass.tape.records[ri];
    // Where the record's weight and bias go in a row of the unit's matrix.
    let (mut w_at, mut b_at, mut p) = (None, None, 0);
    for &v in &unit.vars {
        let id = plan.params[v].1.as_tensor().id();
        if r.weight.as_ref().is_some_and(|w| w.id() == id) {
            w_at = Some(p);
        } else if r.bias.as_ref().is_some_and(|b| b.id() == id) {
            b_at = Some(p);
        } else {
            return Ok(None);
        }
        p += plan.params[v].1.elem_count();
    }
    let a = r.input.to_dtype(T::DTYPE)?;
    let d = pass.deltas[ri].to_dtype(T::DTYPE)?;
    let n = a.dim(0)?;
    let numel = |t: &Option<Tensor>| t.as_ref().map_or(0, |t| t.elem_count());
    let (wn, bn) = (numel(&r.weight) * w_at.map_or(0, |_| 1), numel(&r.bias) * b_at.map_or(0, |_| 1));
    if n == 0 || p == 0 || wn + bn != p {
        return Ok(None);
    }
    let mut out = vec![T::ZERO; n * p];
    match &r.kind {
        RecKind::Linear | RecKind::LinearT => {
            let held_in_out = matches!(r.kind, RecKind::LinearT);
            let (i, o) = (a.dim(a.rank() - 1)?, d.dim(d.rank() - 1)?);
            if i == 0 || o == 0 {
                return Ok(None);
            }
            let s = a.elem_count() / (n * i);
            if (w_at.is_some() && wn != o * i) || (b_at.is_some() && bn != o) || d.elem_count() != n * s * o {
                return Ok(None);
            }
            host(&a, |av: &[T]| {
                host(&d, |dv: &[T]| {
                    per_example(&mut out, p, |e, row| {
                        let (ae, de) = (&av[e * s * i..(e + 1) * s * i], &dv[e * s * o..(e + 1) * s * o]);
                        if let Some(w) = w_at {
                            if held_in_out {
                                // gW_e = A_eᵀ D_e: (i, s) . (s, o), the weight's (in, out) layout
                                let dst = MatMut::row_major(&mut row[w..w + i * o], i, o);
                                gemm(dst, MatRef::row_major(ae, s, i).t(), MatRef::row_major(de, s, o));
                            } else {
                                // gW_e = D_eᵀ A_e: (o, s) . (s, i)
                                let dst = MatMut::row_major(&mut row[w..w + o * i], o, i);
                                gemm(dst, MatRef::row_major(de, s, o).t(), MatRef::row_major(ae, s, i));
                            }
                        }
                        if let Some(b) = b_at {
                            let gb = &mut row[b..b + o];
                            gb.fill(T::ZERO);
                            for ds in de.chunks(o) {
                                gb.iter_mut().zip(ds).for_each(|(g, &x)| *g += x);
                            }
                        }
                    })
                })
            })??;
        }
        RecKind::Conv { win } => {
            let u = if w_at.is_some() { Some(unfold(&a, win)?) } else { None }; // (n, F, S)
            let c = d.dim(1)?;
            if c == 0 || d.elem_count() == 0 {
                return Ok(None);
            }
            let (s, f) = (d.elem_count() / (n * c), wn / c);
            let bad_w = w_at.is_some() && (f * c != wn || u.as_ref().is_some_and(|u| u.elem_count() != n * f * s));
            if bad_w || (b_at.is_some() && bn != c) {
                return Ok(None);
            }
            let u = u.unwrap_or_else(|| d.clone());
            host(&u, |uv: &[T]| {
                host(&d, |dv: &[T]| {
                    per_example(&mut out, p, |e, row| {
                        let de = &dv[e * c * s..(e + 1) * c * s];
                        if let Some(w) = w_at {
                            // gW_e = D_e U_eᵀ: (C, S) . (S, F)
                            let ue = &uv[e * f * s..(e + 1) * f * s];
                            let dst = MatMut::row_major(&mut row[w..w + c * f], c, f);
                            gemm(dst, MatRef::row_major(de, c, s), MatRef::row_major(ue, f, s).t());
                        }
                        if let Some(b) = b_at {
                            row_sums(&mut row[b..b + c], de, s);
                        }
                    })
                })
            })??;
        }
        RecKind::Norm { layout } => {
            // Per example, x̂ and the delta as `(rows, q)`: the parameters index `q`.
            let per = a.elem_count() / n;
            let (rows, q, channel) = match layout {
                NormLayout::Channel => (a.dim(1)?, per / a.dim(1)?.max(1), true),
                NormLayout::Trailing(k) => {
                    let q: usize = a.dims()[a.rank() - k..].iter().product();
                    (per / q.max(1), q, false)
                }
            };
            let len = if channel { rows } else { q };
            if per == 0 || q == 0 || rows * q != per {
                return Ok(None);
            }
            if (w_at.is_some() && wn != len) || (b_at.is_some() && bn != len) || d.elem_count() != a.elem_count() {
                return Ok(None);
            }
            host(&a, |av: &[T]| {
                host(&d, |dv: &[T]| {
                    per_example(&mut out, p, |e, row| {
                        let (ae, de) = (&av[e * per..(e + 1) * per], &dv[e * per..(e + 1) * per]);
                        norm_grads(row, w_at, b_at, ae, de, (rows, q), channel);
                    })
                })
            })??;
        }
        RecKind::Offset { .. } => return Ok(None),
    }
    Ok(Some(Tensor::from_vec(out, (n, p), &Device::Cpu)?))
}

/// One example of a norm record: `γ` gets `Σ δ x̂`, `β` gets `Σ δ`, summed over the `q` entries of
/// each of the `rows` channels (`channel`: batch norm, parameters per row) or over the rows
/// (layer norm, parameters per trailing entry).
fn norm_grads<T: Num>(
    row: &mut [T],
    w_at: Option<usize>,
    b_at: Option<usize>,
    ae: &[T],
    de: &[T],
    (rows, q): (usize, usize),
    channel: bool,
) {
    let len = if channel { rows } else { q };
    for at in [w_at, b_at].into_iter().flatten() {
        row[at..at + len].fill(T::ZERO);
    }
    for (r, (ar, dr)) in ae.chunks(q).zip(de.chunks(q)).enumerate() {
        for (j, (&x, &g)) in ar.iter().zip(dr).enumerate() {
            let k = if channel { r } else { j };
            if let Some(w) = w_at {
                row[w + k] += g * x;
            }
            if let Some(b) = b_at {
                row[b + k] += g;
            }
        }
    }
}

/// `G_a G_bᵀ` of a materialised unit's factors on the CPU (see [`gram_block`]); another dtype
/// takes candle's matmul.
pub(crate) fn gram_block_cpu(g: &Tensor, g2: &Tensor, diag: bool) -> Result<Tensor> {
    let (na, nb) = (g.dim(0)?, g2.dim(0)?);
    Ok(match g.dtype() {
        DType::F32 => Tensor::from_vec(gram_block::<f32>(g, g2, diag, TASKS)?, (na, nb), &Device::Cpu)?,
        DType::F64 => Tensor::from_vec(gram_block::<f64>(g, g2, diag, TASKS)?, (na, nb), &Device::Cpu)?,
        _ => g.matmul(&g2.t()?)?,
    })
}

/// The sum of equally shaped CPU blocks, added in order in host loops.
pub(crate) fn sum_blocks_cpu(parts: &[Tensor]) -> Result<Tensor> {
    fn sum<T: Num>(parts: &[Tensor]) -> Result<Tensor> {
        let mut total = host(&parts[0], <[T]>::to_vec)?;
        for p in &parts[1..] {
            host(p, |v: &[T]| total.iter_mut().zip(v).for_each(|(t, &x)| *t += x))?;
        }
        Ok(Tensor::from_vec(total, parts[0].shape(), &Device::Cpu)?)
    }
    match parts.first().map(Tensor::dtype) {
        Some(DType::F32) => sum::<f32>(parts),
        Some(DType::F64) => sum::<f64>(parts),
        _ => Err(GradKernelError::Unsupported("sum of Gram blocks: empty, or not f32/f64".into())),
    }
}

/// `G_a G_bᵀ` by fixed tasks: stripes of `stripe` rows (with `diag`, from each stripe's first
/// row's diagonal entry on) times pieces of the gradient columns. A block of few stripes (a
/// small chunk) cuts the columns into up to `max_tasks / stripes` pieces of at least
/// `min_piece`, each into its own buffer, summed in piece order: the tasks, and so the bits,
/// depend on the shapes only.
fn gram_block<T: Num>(g: &Tensor, g2: &Tensor, diag: bool, cut: Tasks) -> Result<Vec<T>> {
    let Tasks { stripe: rs, max_tasks, min_piece } = cut;
    let (na, p) = g.dims2()?;
    let (nb, p2) = g2.dims2()?;
    if p != p2 || (diag && na != nb) {
        return Err(GradKernelError::Unsupported(format!("Gram block of ({na}, {p}) and ({nb}, {p2}) factors")));
    }
    if na == 0 || nb == 0 {
        return Ok(vec![T::ZERO; na * nb]);
    }
    let stripes = na.div_ceil(rs);
    let pieces = (max_tasks / stripes).min(p / min_piece).max(1);
    let width = p.div_ceil(pieces);
    let mut bufs: Vec<Vec<T>> = (0..pieces).map(|_| vec![T::ZERO; na * nb]).collect();
    host(g, |ga: &[T]| {
        host(g2, |gb: &[T]| {
            let tasks: Vec<(usize, usize, &mut [T])> = bufs
                .iter_mut()
                .enumerate()
                .flat_map(|(k, b)| b.chunks_mut(rs * nb).enumerate().map(move |(si, st)| (k, si, st)))
                .collect();
            tasks.into_par_iter().for_each(|(k, si, stripe)| {
                let (r0, rows) = (si * rs, stripe.len() / nb);
                let c0 = if diag { r0 } else { 0 };
                let (k0, k1) = ((k * width).min(p), ((k + 1) * width).min(p));
                let dst = MatMut::row_major_ld(&mut stripe[c0..], rows, nb - c0, nb);
                let lhs = MatRef::new(&ga[r0 * p + k0..], rows, k1 - k0, p, 1);
                gemm(dst, lhs, MatRef::new(&gb[c0 * p + k0..], nb - c0, k1 - k0, p, 1).t());
            })
        })
    })??;
    let mut it = bufs.into_iter();
    let mut out = it.next().expect("at least one piece");
    for b in it {
        out.iter_mut().zip(&b).for_each(|(o, &x)| *o += x);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded values in [-1, 1).
    fn noise(len: usize, seed: u64) -> Vec<f64> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// Several stripes (a ragged last one) and several column pieces against a naive f64
    /// product, square-diagonal (upper part) and rectangular, and the same bits in pools of 1, 2
    /// and 3 threads.
    #[test]
    fn gram_block_tasks_match_a_naive_product_at_any_thread_count() {
        let (na, nb, p) = (23, 17, 50);
        let cut = Tasks { stripe: 5, max_tasks: 16, min_piece: 12 };
        let (a, b) = (noise(na * p, 1), noise(nb * p, 2));
        let ga = Tensor::from_vec(a.clone(), (na, p), &Device::Cpu).unwrap();
        let gb = Tensor::from_vec(b.clone(), (nb, p), &Device::Cpu).unwrap();
        let dot = |x: &[f64], i: usize, y: &[f64], j: usize| (0..p).map(|k| x[i * p + k] * y[j * p + k]).sum::<f64>();
        let run = |threads: usize, g: &Tensor, g2: &Tensor, diag: bool| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| gram_block::<f64>(g, g2, diag, cut).unwrap())
        };
        let rect = run(1, &ga, &gb, false);
        let square = run(1, &ga, &ga, true);
        for i in 0..na {
            for j in 0..nb {
                assert!((rect[i * nb + j] - dot(&a, i, &b, j)).abs() < 1e-12, "rect ({i}, {j})");
            }
            for j in i..na {
                assert!((square[i * na + j] - dot(&a, i, &a, j)).abs() < 1e-12, "square ({i}, {j})");
            }
        }
        for t in [2, 3] {
            assert!(run(t, &ga, &gb, false) == rect, "rect at {t} threads");
            assert!(run(t, &ga, &ga, true) == square, "square at {t} threads");
        }
    }
}
