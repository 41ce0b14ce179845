//! A hand-written CPU kernel for the preset conv nets (`cnn5`, `cnn4`, any [`ArchSpec::Cnn`]):
//! conv (stride 1, "same" padding) -> ReLU -> `pool`x`pool` max pooling, repeated, then one dense
//! head. Used by [`crate::gram`] for CPU models with [`Method::Auto`] and
//! [`GramOptions::cpu_fast_path`]; the candle route in `engine` is its cross-check.
//!
//! 1. **Forward**, layer by layer, rayon across examples: im2col ([`crate::im2col`]) and one
//!    `W U` gemm per example, ReLU, first-max pooling that records the argmax (or "no gradient"
//!    when the pooled value is 0, since `relu'(0) = 0`). The head is one batched gemm.
//! 2. **Backward** by hand (no autograd graph): `softmax - onehot` at the logits, `Wᵀ d` into the
//!    last pooled map, then per conv layer the pooled gradient is scattered to the argmax
//!    (`D_l`, the delta of the pre-activation) and, below the first layer, `W_lᵀ D_l` is folded
//!    back by col2im into the previous pooled map.
//! 3. Every example's layer inputs `A_l` and deltas `D_l` are kept (about 80k floats per example
//!    for `cnn5`). **Gram**, per conv layer, per upper tile pair `a <= b` of examples: the
//!    per-example gradient rows `G = [D_i U_iᵀ, sum_s D_i]` are rebuilt for the tile (cheap next
//!    to the product) and `G_a G_bᵀ` is added with one big gemm (gemm's own threads); diagonal
//!    tiles are cut into a staircase so only the upper triangle is multiplied. The head is
//!    factorised, `(D Dᵀ) o (A Aᵀ + 1)`. `K` is mirrored at the end, so it is exactly symmetric.
//!
//! Tile sizes come from [`GramOptions::memory_budget_bytes`]: a layer whose whole `G` fits is
//! built once; otherwise tiles are as large as two of them fit. When the stored inputs and deltas
//! do not fit, the kernel declines and the chunked candle route (which recomputes) runs instead.
//!
//! [`ArchSpec::Cnn`]: stiff_models::ArchSpec::Cnn

use std::time::Instant;

use candle::{DType, Tensor};
use rayon::prelude::*;
use serde::Serialize;
use stiff_gemm::{MatMut, MatRef, Parallelism};
use stiff_models::{LayerKind, Model};

use crate::engine::{acc_dtype, validate, Set};
use crate::im2col::{col2im_add, im2col, im2row};
use crate::{GradKernelError, GramOptions, GramResult, LayerForm, Method, Result};

/// The float types the kernel runs in (f32, f64).
pub(crate) trait Real: candle::WithDType + stiff_gemm::Scalar + Default {}
impl<T: candle::WithDType + stiff_gemm::Scalar + Default> Real for T {}

/// Marks a pooled element whose gradient is zero (its maximum is 0 after ReLU).
const NO_GRAD: u16 = u16::MAX;

/// `dst (m x n, row stride ldd) [+]= lhs (m x k) · rhs`, both row-major with leading dimensions;
/// `rhs_t` reads `rhs` as `(n x k)` and uses its transpose. Shapes come from the model, never from
/// user input, so a mismatch is a bug (hence `expect`).
#[allow(clippy::too_many_arguments)]
fn mm<T: Real>(
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
    let rhs = if rhs_t { MatRef::row_major_ld(rhs, n, k, ldb).t() } else { MatRef::row_major_ld(rhs, k, n, ldb) };
    stiff_gemm::matmul(
        MatMut::row_major_ld(dst, m, n, ldd),
        accumulate.then_some(T::from_f64(1.0)),
        MatRef::row_major_ld(lhs, m, k, lda),
        rhs,
        T::from_f64(1.0),
        par,
    )
    .expect("internal shape invariant of the conv kernel");
}

/// One conv block: `w: (c_out, c_in*k*k)` row-major, `b: (c_out)`; input and pre-activation
/// are `h x wd`, the pooled output `ho x wo` (floor mode).
struct Conv<T> {
    w: Vec<T>,
    b: Vec<T>,
    c_in: usize,
    h: usize,
    wd: usize,
    c_out: usize,
    k: usize,
    pad: usize,
    pool: usize,
    ho: usize,
    wo: usize,
}

impl<T> Conv<T> {
    fn s(&self) -> usize {
        self.h * self.wd
    }
    fn f(&self) -> usize {
        self.c_in * self.k * self.k
    }
    fn in_len(&self) -> usize {
        self.c_in * self.s()
    }
    fn delta_len(&self) -> usize {
        self.c_out * self.s()
    }
    fn pooled_len(&self) -> usize {
        self.c_out * self.ho * self.wo
    }
    /// Parameters: weights then bias.
    fn p(&self) -> usize {
        self.c_out * self.f() + self.c_out
    }
}

/// The dense head: `w: (classes, feat)`, `b: (classes)`.
struct Head<T> {
    w: Vec<T>,
    b: Vec<T>,
    feat: usize,
    classes: usize,
}

struct Net<T> {
    convs: Vec<Conv<T>>,
    head: Head<T>,
}

/// Whether the model is a conv chain this kernel covers: conv+ReLU+pool blocks (stride 1, same
/// padding, pooling windows addressable in `u16`), then one dense head without ReLU on their
/// flattened output.
fn supported(model: &Model) -> bool {
    let layers = model.layers();
    let Some((head, convs)) = layers.split_last() else { return false };
    if convs.is_empty() || head.kind != LayerKind::Dense || head.relu {
        return false;
    }
    let mut expect: Option<Vec<usize>> = None;
    for l in convs {
        let LayerKind::Conv2d { kernel, padding, pool } = l.kind else { return false };
        let ok = l.relu
            && pool >= 1
            && l.in_dims.len() == 3
            && l.out_dims.len() == 3
            && l.in_dims[1..] == l.out_dims[1..]
            && kernel == 2 * padding + 1
            && l.out_dims[1] * l.out_dims[2] < NO_GRAD as usize
            && expect.as_ref().is_none_or(|e| *e == l.in_dims);
        if !ok {
            return false;
        }
        expect = Some(vec![l.out_dims[0], l.out_dims[1] / pool, l.out_dims[2] / pool]);
    }
    expect.is_some_and(|e| head.in_dims == [e.iter().product::<usize>()])
}

/// Whether [`crate::gram`] should try this kernel.
pub(crate) fn applies(model: &Model, opts: &GramOptions) -> bool {
    opts.cpu_fast_path
        && opts.method == Method::Auto
        && opts.delta_route == crate::DeltaRoute::Auto
        && model.device().is_cpu()
        && matches!(model.dtype(), DType::F32 | DType::F64)
        && supported(model)
}

fn host<T: Real>(t: &Tensor) -> Result<Vec<T>> {
    Ok(t.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1::<T>()?)
}

fn net<T: Real>(model: &Model) -> Result<Net<T>> {
    let layers = model.layers();
    let (head, convs) = layers.split_last().expect("checked by `supported`");
    let convs = convs
        .iter()
        .map(|l| {
            let LayerKind::Conv2d { kernel, padding, pool } = l.kind else { unreachable!("checked by `supported`") };
            Ok(Conv {
                w: host(l.weight.as_tensor())?,
                b: host(l.bias.as_tensor())?,
                c_in: l.in_dims[0],
                h: l.in_dims[1],
                wd: l.in_dims[2],
                c_out: l.out_dims[0],
                k: kernel,
                pad: padding,
                pool,
                ho: l.out_dims[1] / pool,
                wo: l.out_dims[2] / pool,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let head = Head {
        w: host(head.weight.as_tensor())?,
        b: host(head.bias.as_tensor())?,
        feat: head.in_dims[0],
        classes: head.out_dims[0],
    };
    Ok(Net { convs, head })
}

/// Max pooling windows of one conv layer over a set of examples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Pooled windows (examples x channels x output positions).
    pub windows: u64,
    /// Windows whose maximum (after ReLU) is attained by two or more elements; the gradient goes
    /// to the first in row-major order.
    pub tied: u64,
    /// Tied windows whose maximum is positive: here the first-maximum convention decides which
    /// input receives the gradient.
    pub tied_live: u64,
    /// Windows whose maximum is 0 (every pre-activation `<= 0`): no gradient, `relu'(0) = 0`.
    pub zero: u64,
}

impl std::ops::Add for PoolStats {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            windows: self.windows + o.windows,
            tied: self.tied + o.tied,
            tied_live: self.tied_live + o.tied_live,
            zero: self.zero + o.zero,
        }
    }
}

/// Wall-clock seconds of one layer's share of the kernel.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LayerProfile {
    /// The layer's parameter prefix (`conv.0`, ..., `head`).
    pub name: String,
    /// im2col, `W U`, ReLU and pooling (the head: its gemm, loss and `softmax - onehot`).
    pub forward: f64,
    /// Scatter to the argmax, `Wᵀ D` and col2im (the head: `Wᵀ d`).
    pub backward: f64,
    /// Rebuilding the per-example gradient rows `G` of tiles (im2col and `D Uᵀ` again).
    pub build: f64,
    /// The Gram products (`G_a G_bᵀ`; the head: `D Dᵀ`, `A Aᵀ` and their product).
    pub gram: f64,
    /// Pooling statistics (conv layers).
    pub pool: PoolStats,
    /// Examples per row tile of this layer's Gram (N when its whole `G` is built once).
    pub tile: usize,
}

/// Where the kernel's time went, per layer and in total.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConvProfile {
    /// Forward order, head last.
    pub layers: Vec<LayerProfile>,
    /// Host copies: weights and inputs into the kernel's dtype, mirroring `K`, tensors out.
    pub copies: f64,
    /// Everything, as [`GramResult::seconds`].
    pub total: f64,
}

/// The kernel's outputs in dtype `T`.
struct Out<T> {
    k: Vec<T>,
    per_layer: Vec<Vec<T>>,
    loss: Vec<f64>,
    chunk: usize,
    profile: ConvProfile,
}

/// Per-example state kept from the passes for the Gram phase.
struct Passes<T> {
    /// `acts[l]`: input of conv `l` (`acts[L]`: the head's input), `(n, len)` row-major.
    acts: Vec<Vec<T>>,
    /// `deltas[l]`: `dL/dz` of conv `l` at every position, `(n, c_out * S)`.
    deltas: Vec<Vec<T>>,
    /// `softmax - onehot`: `(n, classes)`.
    dhead: Vec<T>,
    loss: Vec<f64>,
}

/// The `(row, column)` tile sizes of each conv layer's Gram for `n` examples within `budget`
/// bytes (beyond `K`); `None` when the kernel's stored passes and one row of `G` do not fit.
fn plan<T>(net: &Net<T>, n: usize, per_layer: bool, budget: usize) -> Option<Vec<(usize, usize)>> {
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
const TILE_BYTES: usize = 1 << 30;
/// Size of a column tile of `G` (products of `row tile x column tile` examples: not too thin).
const COL_TILE_BYTES: usize = 160 << 20;

/// Rows of the head's `D Dᵀ` / `A Aᵀ` strips.
const HEAD_ROWS: usize = 256;

/// Forward of conv layer `c` for one example: `a: (c_in, h, wd)` -> pooled `out: (c_out, ho, wo)`
/// with the argmax position of each window in `idx` (or [`NO_GRAD`]).
fn conv_forward<T: Real>(c: &Conv<T>, a: &[T], u: &mut [T], z: &mut [T], out: &mut [T], idx: &mut [u16]) -> PoolStats {
    let (s, f) = (c.s(), c.f());
    im2col(a, c.c_in, c.h, c.wd, c.k, c.pad, u);
    mm((c.c_out, s, f), &c.w, f, u, s, false, z, s, false, Parallelism::None);
    let zero = T::from_f64(0.0);
    for (zc, &b) in z.chunks_exact_mut(s).zip(&c.b) {
        for v in zc.iter_mut() {
            let t = *v + b;
            // ReLU, keeping NaN (a diverged model must not look healthy).
            *v = if t > zero || t.to_f64().is_nan() { t } else { zero };
        }
    }
    let mut st = PoolStats::default();
    let (p, wd) = (c.pool, c.wd);
    for ch in 0..c.c_out {
        let zc = &z[ch * s..(ch + 1) * s];
        for oy in 0..c.ho {
            for ox in 0..c.wo {
                let first = oy * p * wd + ox * p;
                let (mut best, mut arg, mut count) = (zc[first], first, 0u32);
                for dy in 0..p {
                    for dx in 0..p {
                        let pos = first + dy * wd + dx;
                        let v = zc[pos];
                        // Strictly greater replaces: the first maximum in row-major order wins.
                        if v > best {
                            (best, arg, count) = (v, pos, 1);
                        } else if v == best {
                            count += 1;
                        }
                    }
                }
                let e = (ch * c.ho + oy) * c.wo + ox;
                out[e] = best;
                let live = best > zero || best.to_f64().is_nan();
                idx[e] = if live { arg as u16 } else { NO_GRAD };
                st.windows += 1;
                st.tied += u64::from(count > 1);
                st.tied_live += u64::from(count > 1 && live);
                st.zero += u64::from(!live);
            }
        }
    }
    st
}

/// Backward of conv layer `c` for one example: the pooled gradient `g: (c_out, ho, wo)` goes to
/// the argmax (`delta: (c_out, S)`); with `prev`, also `Wᵀ delta` folded into `prev: (c_in, h, wd)`.
fn conv_backward<T: Real>(c: &Conv<T>, g: &[T], idx: &[u16], delta: &mut [T], du: &mut [T], prev: Option<&mut [T]>) {
    let (s, f) = (c.s(), c.f());
    let zero = T::from_f64(0.0);
    delta.fill(zero);
    let per = c.ho * c.wo;
    for ch in 0..c.c_out {
        for e in ch * per..(ch + 1) * per {
            if idx[e] != NO_GRAD {
                delta[ch * s + idx[e] as usize] = g[e];
            }
        }
    }
    if let Some(prev) = prev {
        // du (f x S) = Wᵀ (f x c_out) · delta (c_out x S)
        let wt = MatRef::row_major(&c.w, c.c_out, f).t();
        stiff_gemm::matmul(
            MatMut::row_major(du, f, s),
            None,
            wt,
            MatRef::row_major(delta, c.c_out, s),
            T::from_f64(1.0),
            Parallelism::None,
        )
        .expect("internal shape invariant of the conv kernel");
        prev.fill(zero);
        col2im_add(du, c.c_in, c.h, c.wd, c.k, c.pad, prev);
    }
}

/// Forward and backward of all `n` examples; `x: (n, c_in*h*w)` in dtype `T`, labels `y`.
fn passes<T: Real>(net: &Net<T>, x: Vec<T>, y: &[u32], prof: &mut [LayerProfile]) -> Passes<T> {
    let n = y.len();
    let nc = net.convs.len();
    let zero = T::from_f64(0.0);
    let mut acts = vec![x];
    let mut idx: Vec<Vec<u16>> = Vec::with_capacity(nc);
    for (l, c) in net.convs.iter().enumerate() {
        let t = Instant::now();
        let mut out = vec![zero; n * c.pooled_len()];
        let mut ix = vec![0u16; n * c.pooled_len()];
        let input = &acts[l];
        let stats = out
            .par_chunks_mut(c.pooled_len())
            .zip(ix.par_chunks_mut(c.pooled_len()))
            .enumerate()
            .map_init(
                || (vec![zero; c.f() * c.s()], vec![zero; c.delta_len()]),
                |(u, z), (i, (o, ix))| conv_forward(c, &input[i * c.in_len()..(i + 1) * c.in_len()], u, z, o, ix),
            )
            .reduce(PoolStats::default, |a, b| a + b);
        prof[l].pool = stats;
        acts.push(out);
        idx.push(ix);
        prof[l].forward = t.elapsed().as_secs_f64();
    }
    // Head: logits (n x classes) = A Wᵀ + b, per-example loss and softmax - onehot, in f64.
    let t = Instant::now();
    let h = &net.head;
    let mut logits = vec![zero; n * h.classes];
    mm(
        (n, h.classes, h.feat),
        &acts[nc],
        h.feat,
        &h.w,
        h.feat,
        true,
        &mut logits,
        h.classes,
        false,
        Parallelism::Rayon(0),
    );
    let mut dhead = vec![zero; n * h.classes];
    let mut loss = vec![0.0; n];
    for i in 0..n {
        let row: Vec<f64> = (0..h.classes).map(|c| (logits[i * h.classes + c] + h.b[c]).to_f64()).collect();
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - m).exp()).sum();
        let lse = m + sum.ln();
        loss[i] = lse - row[y[i] as usize];
        for (c, v) in row.iter().enumerate() {
            let p = (v - lse).exp() - if c == y[i] as usize { 1.0 } else { 0.0 };
            dhead[i * h.classes + c] = T::from_f64(p);
        }
    }
    prof[nc].forward = t.elapsed().as_secs_f64();
    let t = Instant::now();
    // Gradient at the last pooled map: dhead (n x classes) · W (classes x feat).
    let mut g = vec![zero; n * h.feat];
    mm((n, h.feat, h.classes), &dhead, h.classes, &h.w, h.feat, false, &mut g, h.feat, false, Parallelism::Rayon(0));
    prof[nc].backward = t.elapsed().as_secs_f64();
    let mut deltas: Vec<Vec<T>> = (0..nc).map(|_| Vec::new()).collect();
    for l in (0..nc).rev() {
        let t = Instant::now();
        let c = &net.convs[l];
        let mut d = vec![zero; n * c.delta_len()];
        let ix = &idx[l];
        let pl = c.pooled_len();
        if l > 0 {
            let mut prev = vec![zero; n * c.in_len()];
            d.par_chunks_mut(c.delta_len()).zip(prev.par_chunks_mut(c.in_len())).enumerate().for_each_init(
                || vec![zero; c.f() * c.s()],
                |du, (i, (di, pi))| {
                    conv_backward(c, &g[i * pl..(i + 1) * pl], &ix[i * pl..(i + 1) * pl], di, du, Some(pi))
                },
            );
            g = prev;
        } else {
            d.par_chunks_mut(c.delta_len()).enumerate().for_each(|(i, di)| {
                conv_backward(c, &g[i * pl..(i + 1) * pl], &ix[i * pl..(i + 1) * pl], di, &mut [], None)
            });
        }
        deltas[l] = d;
        prof[l].backward = t.elapsed().as_secs_f64();
    }
    Passes { acts, deltas, dhead, loss }
}

/// Per-example gradient rows of conv `c` for examples `r0..r0+rows` into `g: (rows, P)`:
/// `D_i U_iᵀ` (`c_out x f`, row-major) then the bias gradient `sum_s D_i[:, s]`. `D_i` is zero
/// except at one argmax per live pooling window, so each row of `D_i U_iᵀ` is a sum of a few
/// patch rows (`im2row`): about `1/pool²` of the dense product's multiply-adds.
fn build<T: Real>(c: &Conv<T>, acts: &[T], deltas: &[T], r0: usize, rows: usize, g: &mut [T]) {
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
                im2col(a, c.c_in, c.h, c.wd, c.k, c.pad, patches);
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
const SPARSE_MIN_F: usize = 512;

/// `dst[r0.., c0..] += ga (ra x p) · gb (rb x p)ᵀ` into an `n x n` row-major matrix.
#[allow(clippy::too_many_arguments)]
fn product<T: Real>(ga: &[T], ra: usize, gb: &[T], rb: usize, p: usize, dst: &mut [T], n: usize, r0: usize, c0: usize) {
    mm((ra, rb, p), ga, p, gb, p, true, &mut dst[r0 * n + c0..], n, true, Parallelism::Rayon(0));
}

/// The upper triangle of `g gᵀ` for the `len` rows of `g: (len, p)`, added at `(r0, r0)` of an
/// `n x n` matrix: split in halves, the off-diagonal rectangle in one gemm, both halves
/// recursively; squares of at most [`TRI_BASE`] rows are multiplied whole (their lower part is
/// overwritten by the final mirror).
fn upper<T: Real>(g: &[T], len: usize, p: usize, dst: &mut [T], n: usize, r0: usize) {
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
const TRI_BASE: usize = 48;

/// The head's factorised Gram `(D Dᵀ) o (A Aᵀ + 1)`, upper triangle, added into `dst`.
fn head_gram<T: Real>(a: &[T], feat: usize, d: &[T], classes: usize, n: usize, dst: &mut [T]) {
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
fn mirror<T: Copy>(k: &mut [T], n: usize) {
    for i in 0..n {
        for j in i + 1..n {
            k[j * n + i] = k[i * n + j];
        }
    }
}

/// The whole kernel in dtype `T`; `None` when it does not fit `budget` (bytes beyond `K`).
fn run<T: Real>(model: &Model, set: &Set, per_layer: bool, budget: usize) -> Result<Option<Out<T>>> {
    let t_all = Instant::now();
    let t = Instant::now();
    let net = net::<T>(model)?;
    let n = set.n;
    let Some(tiles) = plan(&net, n, per_layer, budget) else { return Ok(None) };
    let x = host::<T>(&set.x)?;
    let y = set.y.to_vec1::<u32>()?;
    let mut copies = t.elapsed().as_secs_f64();
    let names: Vec<String> = model.layers().iter().map(|l| l.name.clone()).collect();
    let mut prof: Vec<LayerProfile> =
        names.iter().map(|nm| LayerProfile { name: nm.clone(), ..Default::default() }).collect();
    let ps = passes(&net, x, &y, &mut prof);
    let zero = T::from_f64(0.0);
    let mut k = vec![zero; n * n];
    let mut per: Vec<Vec<T>> = Vec::new();
    // Tile buffers shared by all layers: pages touched once, not per layer.
    let (mut ga, mut gb) = (Vec::new(), Vec::new());
    // A fresh zeroed allocation (calloc: pages mapped lazily) instead of `resize`, which would
    // write every element before `build` writes them again.
    let grow = |v: &mut Vec<T>, len: usize| {
        if v.len() < len {
            *v = Vec::new();
            *v = vec![zero; len];
        }
    };
    for (l, c) in net.convs.iter().enumerate() {
        let (tile, tile_b) = tiles[l];
        prof[l].tile = tile;
        let p = c.p();
        let (acts, deltas) = (&ps.acts[l], &ps.deltas[l]);
        grow(&mut ga, tile * p);
        if tile < n {
            grow(&mut gb, tile_b * p);
        }
        let mut layer = if per_layer { vec![zero; n * n] } else { Vec::new() };
        let dst = if per_layer { &mut layer } else { &mut k };
        let (mut tb, mut tg) = (0.0, 0.0);
        for a0 in (0..n).step_by(tile) {
            let ra = tile.min(n - a0);
            let t = Instant::now();
            build(c, acts, deltas, a0, ra, &mut ga);
            tb += t.elapsed().as_secs_f64();
            let t = Instant::now();
            upper(&ga[..ra * p], ra, p, dst, n, a0);
            tg += t.elapsed().as_secs_f64();
            for b0 in (a0 + ra..n).step_by(tile_b.max(1)) {
                let rb = tile_b.min(n - b0);
                let t = Instant::now();
                build(c, acts, deltas, b0, rb, &mut gb);
                tb += t.elapsed().as_secs_f64();
                let t = Instant::now();
                product(&ga, ra, &gb, rb, p, dst, n, a0, b0);
                tg += t.elapsed().as_secs_f64();
            }
        }
        (prof[l].build, prof[l].gram) = (tb, tg);
        if per_layer {
            per.push(layer);
        }
    }
    drop((ga, gb));
    let t = Instant::now();
    let h = &net.head;
    let nc = net.convs.len();
    if per_layer {
        let mut layer = vec![zero; n * n];
        head_gram(&ps.acts[nc], h.feat, &ps.dhead, h.classes, n, &mut layer);
        per.push(layer);
    } else {
        head_gram(&ps.acts[nc], h.feat, &ps.dhead, h.classes, n, &mut k);
    }
    prof[nc].gram = t.elapsed().as_secs_f64();
    prof[nc].tile = n;
    let t = Instant::now();
    let loss = ps.loss;
    drop(ps.acts);
    drop(ps.deltas);
    if per_layer {
        // K is the sum of the layers in forward order.
        for m in &per {
            for (kv, &v) in k.iter_mut().zip(m) {
                *kv += v;
            }
        }
    }
    for m in per.iter_mut() {
        mirror(m, n);
    }
    mirror(&mut k, n);
    copies += t.elapsed().as_secs_f64();
    let chunk = tiles.iter().map(|t| t.0).min().unwrap_or(n);
    let profile = ConvProfile { layers: prof, copies, total: t_all.elapsed().as_secs_f64() };
    Ok(Some(Out { k, per_layer: per, loss, chunk, profile }))
}

fn tensor<T: Real>(v: Vec<T>, n: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, (n, n), &candle::Device::Cpu)?)
}

/// Runs the kernel in the accumulation dtype and packs a [`GramResult`]; `None` when it declines
/// (the stored passes do not fit the budget). `opts.memory_budget_bytes` excludes `K` (see
/// [`crate::budget::working_options`]).
pub(crate) fn try_gram(
    model: &Model,
    set: &Set,
    opts: &GramOptions,
    start: Instant,
) -> Result<Option<(GramResult, ConvProfile)>> {
    fn pack<T: Real>(
        model: &Model,
        o: Option<Out<T>>,
        n: usize,
        start: Instant,
    ) -> Result<Option<(GramResult, ConvProfile)>> {
        let Some(o) = o else { return Ok(None) };
        let t = Instant::now();
        let norms = (0..n).map(|i| o.k[i * n + i].to_f64().max(0.0).sqrt()).collect();
        let layers = model.layers();
        let per_layer = layers
            .iter()
            .zip(o.per_layer)
            .map(|(l, m)| Ok((l.name.clone(), tensor(m, n)?)))
            .collect::<Result<Vec<_>>>()?;
        let forms = layers
            .iter()
            .map(|l| {
                let f = if l.kind == LayerKind::Dense { LayerForm::DenseFactorised } else { LayerForm::ConvTiles };
                (l.name.clone(), f)
            })
            .collect();
        let k = tensor(o.k, n)?;
        let mut profile = o.profile;
        profile.copies += t.elapsed().as_secs_f64();
        let seconds = start.elapsed().as_secs_f64();
        profile.total = seconds;
        let r = GramResult { k, per_layer, norms, loss_per_example: o.loss, seconds, forms, chunk: o.chunk };
        Ok(Some((r, profile)))
    }
    let budget = opts.memory_budget_bytes;
    match acc_dtype(model, opts) {
        DType::F64 => pack(model, run::<f64>(model, set, opts.per_layer, budget)?, set.n, start),
        _ => pack(model, run::<f32>(model, set, opts.per_layer, budget)?, set.n, start),
    }
}

/// [`crate::gram`] through the conv kernel, with where its time went (for benchmarks). Errors
/// when the kernel does not apply to `model`/`opts` (see [`crate::gram`]'s dispatch) or declines
/// the budget, instead of falling back to the candle route.
///
/// x: `(N, C, H, W)` or `(N, C*H*W)`; y: integer labels `(N)`.
pub fn conv_gram_profiled(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    opts: &GramOptions,
) -> Result<(GramResult, ConvProfile)> {
    let start = Instant::now();
    if !applies(model, opts) {
        return Err(GradKernelError::Unsupported(
            "the conv CPU kernel needs a conv preset chain on the CPU (f32/f64), Method::Auto, \
             DeltaRoute::Auto and cpu_fast_path"
                .into(),
        ));
    }
    let n = x.dims().first().copied().unwrap_or(0);
    let opts = crate::budget::working_options(model, n, n, true, opts)?;
    let set = validate(model, x, Some(y), "gram inputs")?;
    try_gram(model, &set, &opts, start)?.ok_or_else(|| GradKernelError::OverBudget {
        what: "the conv kernel's stored layer inputs and deltas".into(),
        needed: 0,
        budget: opts.memory_budget_bytes,
    })
}

/// Max-pooling statistics of each conv layer of `model` on inputs `x` (forward only, model dtype):
/// how many windows tie (the first-maximum convention decides) and how many are all zero.
/// Errors when the model is not a conv chain the kernel covers.
pub fn pooling_stats(model: &Model, x: &Tensor) -> Result<Vec<PoolStats>> {
    if !supported(model) {
        return Err(GradKernelError::Unsupported(
            "pooling_stats: not a conv chain (conv+ReLU+pool, dense head)".into(),
        ));
    }
    let set = validate(model, x, None, "pooling_stats inputs")?;
    fn go<T: Real>(model: &Model, set: &Set) -> Result<Vec<PoolStats>> {
        let net = net::<T>(model)?;
        let mut a = host::<T>(&set.x)?;
        let zero = T::from_f64(0.0);
        let mut stats = Vec::new();
        for c in &net.convs {
            let mut out = vec![zero; set.n * c.pooled_len()];
            let mut ix = vec![0u16; set.n * c.pooled_len()];
            let st = out
                .par_chunks_mut(c.pooled_len())
                .zip(ix.par_chunks_mut(c.pooled_len()))
                .enumerate()
                .map_init(
                    || (vec![zero; c.f() * c.s()], vec![zero; c.delta_len()]),
                    |(u, z), (i, (o, ix))| conv_forward(c, &a[i * c.in_len()..(i + 1) * c.in_len()], u, z, o, ix),
                )
                .reduce(PoolStats::default, |x, y| x + y);
            stats.push(st);
            a = out;
        }
        Ok(stats)
    }
    match model.dtype() {
        DType::F64 => go::<f64>(model, &set),
        _ => go::<f32>(model, &set),
    }
}
