//! A hand-written CPU kernel for the preset conv nets (`cnn5`, `cnn4`, any [`ArchSpec::Cnn`]):
//! conv (stride 1, "same" padding) -> ReLU -> `pool`x`pool` max pooling, repeated, then one dense
//! head, from a preset or any equivalent spec (`Network::chain`). Used by the dispatch
//! ([`crate::engine`]) for CPU chains with `Method::Auto` and
//! [`GramOptions::cpu_fast_path`]; the general engine (`general.rs`) is its cross-check.
//!
//! 1. **Forward**, layer by layer, rayon across examples: im2col ([`crate::im2col`]) and one
//!    `W U` gemm per example, ReLU, first-max pooling that records the argmax (or "no gradient"
//!    when the pooled value is 0, since `relu'(0) = 0`). The head is one batched gemm.
//! 2. **Backward** by hand (no autograd graph): `softmax - onehot` at the logits, `Wᵀ d` into the
//!    last pooled map, then per conv layer the pooled gradient is scattered to the argmax
//!    (`D_l`, the delta of the pre-activation) and, below the first layer, `W_lᵀ D_l` is folded
//!    back by col2im into the previous pooled map.
//! 3. Every example's layer inputs `A_l` and deltas `D_l` are kept (about 80k floats per example
//!    for `cnn5`). **Gram**, per conv layer, by the route with fewer multiply-adds per pair
//!    ([`gram::plan`]): *gradient rows*: per upper tile pair `a <= b` of examples the per-example
//!    gradient rows `G = [D_i U_iᵀ, sum_s D_i]` are rebuilt for the tile (cheap next to the
//!    product) and `G_a G_bᵀ` is added blockwise (single-threaded gemms on ~128-row blocks shared
//!    out over rayon's threads); diagonal tiles multiply only their upper blocks. *Pixel Gram*
//!    (small maps with many channels, `ghost.rs`): no `G`; the delta Gram and the input-pixel
//!    Gram of each block pair of examples, combined over the kernel offsets. The head is
//!    factorised, `(D Dᵀ) o (A Aᵀ + 1)`. `K` is mirrored at the end, so it is exactly symmetric.
//!    [`try_cross`] runs the same routes between two sets (all tile pairs, norms of both sets).
//!
//! Tile sizes come from [`GramOptions::memory_budget_bytes`]: a layer whose whole `G` fits (up to
//! 1 GiB) is built once; otherwise row tiles are as large as fit beside one column tile. When the stored inputs and deltas
//! do not fit, the kernel declines and the general engine (chunked, recomputing) runs instead.
//!
//! Files: this one (public API, the driver), `net.rs` (the chain in the kernel's terms),
//! `passes.rs` (forward
//! and backward), `gram.rs` (route and tile planning, building `G`, the products, the head),
//! `ghost.rs` (the pixel-Gram route).
//!
//! [`ArchSpec::Cnn`]: stiff_models::ArchSpec::Cnn

use std::time::Instant;

use candle::{DType, Tensor};
use stiff_models::Layer;

use crate::chain;
use crate::error::{GradKernelError, Result};
use crate::inputs::{acc_dtype, validate, Set};
use crate::network::Network;
use crate::options::GramOptions;
use crate::result::{CrossGramResult, GramResult};
use crate::routes::{LayerForm, Route};

mod ghost;
mod gram;
mod net;
mod passes;
mod stats;
mod waves;

use ghost::Side;
use gram::{build, head_gram, head_sq_norms, mirror, plan, product, LayerPlan};
pub(crate) use net::applies;
use net::{host, net, supported, Conv, Real};
use passes::{forward_layer, passes, Passes};
pub use stats::{ConvProfile, LayerProfile, PoolStats};

/// The kernel's outputs in dtype `T`.
struct Out<T> {
    /// `K: (n, m)` row-major; with one set, `n x n` and exactly symmetric.
    k: Vec<T>,
    per_layer: Vec<Vec<T>>,
    /// Per-example losses of set a, then (cross) of set b.
    loss: (Vec<f64>, Vec<f64>),
    /// Cross: squared gradient norms of set a and set b (one set: empty, `K`'s diagonal has them).
    sq: (Vec<f64>, Vec<f64>),
    chunk: usize,
    profile: ConvProfile,
}

/// The whole kernel in dtype `T`: the Gram of set `a` with itself, or (`b`) between the rows `a`
/// and the columns `b`. `None` when it does not fit `budget` (bytes beyond `K`).
fn run<T: Real>(layers: &[Layer], a: &Set, b: Option<&Set>, per_layer: bool, budget: usize) -> Result<Option<Out<T>>> {
    let t_all = Instant::now();
    let t = Instant::now();
    let net = net::<T>(layers)?;
    let (n, m) = (a.n, b.map_or(a.n, |b| b.n));
    let stored = n + b.map_or(0, |b| b.n);
    let Some(plans) = plan(&net, stored, if per_layer { n * m } else { 0 }, budget) else { return Ok(None) };
    let inputs = |set: &Set| -> Result<(Vec<T>, Vec<u32>)> { Ok((host::<T>(&set.x)?, set.y.to_vec1::<u32>()?)) };
    let (xa, ya) = inputs(a)?;
    let xb = b.map(inputs).transpose()?;
    let mut copies = t.elapsed().as_secs_f64();
    let fresh = |nm: &String| LayerProfile {
        name: nm.clone(),
        forward: 0.0,
        backward: 0.0,
        build: 0.0,
        gram: 0.0,
        pool: PoolStats::default(),
        tile: n,
        form: LayerForm::DenseFactorised,
    };
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let mut prof: Vec<LayerProfile> = names.iter().map(fresh).collect();
    let pa = passes(&net, xa, &ya, &mut prof);
    let pb = xb.map(|(x, y)| {
        let mut pr: Vec<LayerProfile> = names.iter().map(fresh).collect();
        let ps = passes(&net, x, &y, &mut pr);
        for (p, q) in prof.iter_mut().zip(pr) {
            (p.forward, p.backward, p.pool) = (p.forward + q.forward, p.backward + q.backward, p.pool + q.pool);
        }
        ps
    });
    let cross = pb.is_some();
    let zero = T::from_f64(0.0);
    let mut k = written_zeros(n * m);
    let mut per: Vec<Vec<T>> = Vec::new();
    let (mut sq_a, mut sq_b) = if cross { (vec![0.0; n], vec![0.0; m]) } else { (Vec::new(), Vec::new()) };
    // Tile buffers at their largest size up front: later layers reuse the pages earlier ones
    // touched instead of freeing them and faulting fresh ones in (the same peak as growing).
    let (mut len_a, mut len_b) = (0, 0);
    for (c, plan) in net.convs.iter().zip(&plans) {
        if let LayerPlan::Rows { tile, tile_b } = *plan {
            let (ra, rb) = row_tiles((tile, tile_b), n, b.map(|b| b.n));
            (len_a, len_b) = (len_a.max(ra * c.p()), len_b.max(rb * c.p()));
        }
    }
    let mut bufs = (vec![zero; len_a], vec![zero; len_b]);
    for (l, c) in net.convs.iter().enumerate() {
        let (sa, sb) = (side(&pa, l, n), pb.as_ref().map(|pb| side(pb, l, m)));
        let mut layer = if per_layer { written_zeros(n * m) } else { Vec::new() };
        let dst = if per_layer { &mut layer } else { &mut k };
        match plans[l] {
            LayerPlan::Ghost { block } => {
                prof[l].tile = block;
                prof[l].form = LayerForm::ConvPixelGhost;
                (prof[l].build, prof[l].gram) = ghost::gram(c, sa, sb, block, dst, m);
                if let Some(sb) = sb {
                    ghost::sq_norms(c, sa, &mut sq_a);
                    ghost::sq_norms(c, sb, &mut sq_b);
                }
            }
            LayerPlan::Rows { tile, tile_b } => {
                prof[l].tile = tile.min(n);
                prof[l].form = LayerForm::ConvTiles;
                let norms = cross.then_some((&mut sq_a[..], &mut sq_b[..]));
                (prof[l].build, prof[l].gram) = rows_gram(c, sa, sb, (tile, tile_b), &mut bufs, dst, norms);
            }
        }
        if per_layer {
            per.push(layer);
        }
    }
    drop(bufs);
    let t = Instant::now();
    let h = &net.head;
    let nc = net.convs.len();
    let mut layer = if per_layer { written_zeros(n * m) } else { Vec::new() };
    let dst = if per_layer { &mut layer } else { &mut k };
    match &pb {
        None => head_gram((&pa.acts[nc], &pa.dhead), None, (h.feat, h.classes), (n, n), dst),
        Some(pb) => {
            head_gram((&pa.acts[nc], &pa.dhead), Some((&pb.acts[nc], &pb.dhead)), (h.feat, h.classes), (n, m), dst);
            head_sq_norms(&pa.acts[nc], &pa.dhead, (h.feat, h.classes), &mut sq_a);
            head_sq_norms(&pb.acts[nc], &pb.dhead, (h.feat, h.classes), &mut sq_b);
        }
    }
    if per_layer {
        per.push(layer);
    }
    prof[nc].gram = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let loss = (pa.loss, pb.map(|p| p.loss).unwrap_or_default());
    drop(pa.acts);
    drop(pa.deltas);
    if per_layer {
        // K is the sum of the layers in forward order.
        for m in &per {
            for (kv, &v) in k.iter_mut().zip(m) {
                *kv += v;
            }
        }
    }
    if !cross {
        for m in per.iter_mut() {
            mirror(m, n);
        }
        mirror(&mut k, n);
    }
    copies += t.elapsed().as_secs_f64();
    let chunk = plans
        .iter()
        .map(|t| match *t {
            LayerPlan::Rows { tile, .. } => tile.min(n),
            LayerPlan::Ghost { .. } => n,
        })
        .min()
        .unwrap_or(n);
    let profile = ConvProfile { layers: prof, copies, total: t_all.elapsed().as_secs_f64() };
    Ok(Some(Out { k, per_layer: per, loss, sq: (sq_a, sq_b), chunk, profile }))
}

/// `len` zeros, written (not calloc's lazily mapped zero pages): `K` and the per-layer Grams are
/// accumulated with read-then-add from several threads, and a first read would map the shared
/// zero page and make the first add a copy-on-write fault with a TLB shootdown.
fn written_zeros<T: Real>(len: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    v.resize(len, T::from_f64(0.0));
    v
}

/// Conv layer `l`'s stored inputs and deltas of one set of `n` examples.
fn side<T>(ps: &Passes<T>, l: usize, n: usize) -> Side<'_, T> {
    Side { acts: &ps.acts[l], deltas: &ps.deltas[l], n }
}

/// Rows of the row and column tile buffers of a gradient-rows layer with plan `(tile, tile_b)`:
/// one set of `n` (`tile_b` only when the row tile does not cover all `n`), or rows `n` against
/// columns `m` (`tile_b == 0`: all `m` at once).
fn row_tiles((tile, tile_b): (usize, usize), n: usize, m: Option<usize>) -> (usize, usize) {
    let ta = tile.min(n);
    match m {
        None => (ta, if ta < n { tile_b } else { 0 }),
        Some(m) => (ta, if tile_b == 0 { m } else { tile_b.min(m) }),
    }
}

/// The per-example-gradient-rows route of one conv layer: `G` rebuilt per tile, products added
/// into `dst: (a.n, ld)`. One set (`b` none): upper tile pairs only, `ld = a.n`. Two sets: every
/// row tile of `a` against every column tile of `b`, and (with `norms`) each example's squared
/// gradient norm added. `(tile, tile_b)` from [`plan`] (`tile_b == 0`: everything in one tile).
/// Returns seconds building `G` and multiplying.
fn rows_gram<T: Real>(
    c: &Conv<T>,
    a: Side<T>,
    b: Option<Side<T>>,
    (tile, tile_b): (usize, usize),
    (ga, gb): &mut (Vec<T>, Vec<T>),
    dst: &mut [T],
    mut norms: Option<(&mut [f64], &mut [f64])>,
) -> (f64, f64) {
    let p = c.p();
    let zero = T::from_f64(0.0);
    // A fresh zeroed allocation (calloc: pages mapped lazily) instead of `resize`, which would
    // write every element before `build` writes them again.
    let grow = |v: &mut Vec<T>, len: usize| {
        if v.len() < len {
            *v = Vec::new();
            *v = vec![zero; len];
        }
    };
    let add_sq = |g: &[T], rows: usize, out: &mut [f64]| {
        for (o, row) in out[..rows].iter_mut().zip(g.chunks_exact(p)) {
            *o += row.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>();
        }
    };
    let (n, ld) = (a.n, b.map_or(a.n, |b| b.n));
    let (mut tb, mut tg) = (0.0, 0.0);
    let timed = |f: &mut dyn FnMut(), acc: &mut f64| {
        let t = Instant::now();
        f();
        *acc += t.elapsed().as_secs_f64();
    };
    let (ta, tb_rows) = row_tiles((tile, tile_b), n, b.map(|b| b.n));
    grow(ga, ta * p);
    grow(gb, tb_rows * p);
    let Some(b) = b else {
        for a0 in (0..n).step_by(ta) {
            let ra = ta.min(n - a0);
            timed(&mut || build(c, a.acts, a.deltas, a0, ra, ga), &mut tb);
            timed(&mut || product(&ga[..ra * p], ra, &ga[..ra * p], ra, p, true, dst, ld, (a0, a0)), &mut tg);
            for b0 in (a0 + ra..n).step_by(tile_b.max(1)) {
                let rb = tile_b.min(n - b0);
                timed(&mut || build(c, a.acts, a.deltas, b0, rb, gb), &mut tb);
                timed(&mut || product(ga, ra, gb, rb, p, false, dst, ld, (a0, b0)), &mut tg);
            }
        }
        return (tb, tg);
    };
    let m = b.n;
    let once = tb_rows == m;
    for a0 in (0..n).step_by(ta) {
        let ra = ta.min(n - a0);
        timed(&mut || build(c, a.acts, a.deltas, a0, ra, ga), &mut tb);
        if let Some((sa, _)) = norms.as_mut() {
            add_sq(ga, ra, &mut sa[a0..]);
        }
        for b0 in (0..m).step_by(tb_rows) {
            let rb = tb_rows.min(m - b0);
            if !once || a0 == 0 {
                timed(&mut || build(c, b.acts, b.deltas, b0, rb, gb), &mut tb);
                if let (0, Some((_, sb))) = (a0, norms.as_mut()) {
                    add_sq(gb, rb, &mut sb[b0..]);
                }
            }
            timed(&mut || product(ga, ra, gb, rb, p, false, dst, ld, (a0, b0)), &mut tg);
        }
    }
    (tb, tg)
}

fn tensor<T: Real>(v: Vec<T>, n: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, (n, n), &candle::Device::Cpu)?)
}

/// Runs the kernel in the accumulation dtype and packs a [`GramResult`]; `None` when it declines
/// (the stored passes do not fit the budget). `opts.memory_budget_bytes` excludes `K` (see
/// [`crate::budget::working_options`]).
pub(crate) fn try_gram(
    layers: &[Layer],
    set: &Set,
    opts: &GramOptions,
    start: Instant,
) -> Result<Option<(GramResult, ConvProfile)>> {
    fn pack<T: Real>(
        layers: &[Layer],
        o: Option<Out<T>>,
        n: usize,
        start: Instant,
    ) -> Result<Option<(GramResult, ConvProfile)>> {
        let Some(o) = o else { return Ok(None) };
        let t = Instant::now();
        let norms = (0..n).map(|i| o.k[i * n + i].to_f64().max(0.0).sqrt()).collect();
        let per_layer = layers
            .iter()
            .zip(o.per_layer)
            .map(|(l, m)| Ok((l.name.clone(), tensor(m, n)?)))
            .collect::<Result<Vec<_>>>()?;
        let routes = o.profile.layers.iter().map(|l| Route::of_layer(&l.name, l.form)).collect();
        let k = tensor(o.k, n)?;
        let mut profile = o.profile;
        profile.copies += t.elapsed().as_secs_f64();
        let seconds = start.elapsed().as_secs_f64();
        profile.total = seconds;
        let r = GramResult { k, per_layer, norms, loss_per_example: o.loss.0, seconds, routes, chunk: o.chunk };
        Ok(Some((r, profile)))
    }
    let budget = opts.memory_budget_bytes;
    match acc_dtype(chain::dtype(layers), opts) {
        DType::F64 => pack(layers, run::<f64>(layers, set, None, opts.per_layer, budget)?, set.n, start),
        _ => pack(layers, run::<f32>(layers, set, None, opts.per_layer, budget)?, set.n, start),
    }
}

/// [`crate::cross_gram`] through the kernel: rows `a`, columns `b`; `None` when it declines.
pub(crate) fn try_cross(
    layers: &[Layer],
    a: &Set,
    b: &Set,
    opts: &GramOptions,
    start: Instant,
) -> Result<Option<CrossGramResult>> {
    fn pack<T: Real>(
        layers: &[Layer],
        o: Option<Out<T>>,
        (n, m): (usize, usize),
        start: Instant,
    ) -> Result<Option<CrossGramResult>> {
        let Some(o) = o else { return Ok(None) };
        let mat = |v: Vec<T>| Tensor::from_vec(v, (n, m), &candle::Device::Cpu);
        let per_layer =
            layers.iter().zip(o.per_layer).map(|(l, v)| Ok((l.name.clone(), mat(v)?))).collect::<Result<Vec<_>>>()?;
        let norms = |sq: Vec<f64>| sq.into_iter().map(|v| v.max(0.0).sqrt()).collect();
        let routes = o.profile.layers.iter().map(|l| Route::of_layer(&l.name, l.form)).collect();
        Ok(Some(CrossGramResult {
            k: mat(o.k)?,
            per_layer,
            norms_a: norms(o.sq.0),
            norms_b: norms(o.sq.1),
            loss_a: o.loss.0,
            loss_b: o.loss.1,
            seconds: start.elapsed().as_secs_f64(),
            routes,
            chunk: o.chunk,
        }))
    }
    let budget = opts.memory_budget_bytes;
    let nm = (a.n, b.n);
    match acc_dtype(chain::dtype(layers), opts) {
        DType::F64 => pack(layers, run::<f64>(layers, a, Some(b), opts.per_layer, budget)?, nm, start),
        _ => pack(layers, run::<f32>(layers, a, Some(b), opts.per_layer, budget)?, nm, start),
    }
}

/// The chain of `net` when the conv kernel covers it, else an `Unsupported` error saying why.
fn conv_chain<N: Network + ?Sized>(net: &N, what: &str) -> Result<Vec<Layer>> {
    net.chain().filter(|l| !l.is_empty() && supported(l)).ok_or_else(|| {
        GradKernelError::Unsupported(format!(
            "{what}: the conv CPU kernel needs a conv chain (conv + ReLU + max-pool blocks with stride-1 \
             \"same\" convolutions, then one dense head), as a preset or an equivalent spec"
        ))
    })
}

/// [`crate::gram`] through the conv kernel, with where its time went (for benchmarks). Errors
/// when the kernel does not apply to `net`/`opts` (see the dispatch in [`crate::gram`]) or
/// declines the budget, instead of falling back to the general engine.
///
/// x: `(N, C, H, W)` or `(N, C*H*W)`; y: integer labels `(N)`.
pub fn conv_gram_profiled<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    y: &Tensor,
    opts: &GramOptions,
) -> Result<(GramResult, ConvProfile)> {
    let start = Instant::now();
    let layers = conv_chain(net, "conv_gram_profiled")?;
    if !applies(&layers, opts) {
        return Err(GradKernelError::Unsupported(
            "conv_gram_profiled: the conv CPU kernel runs on the CPU (f32/f64) with Method::Auto, \
             DeltaRoute::Auto and cpu_fast_path"
                .into(),
        ));
    }
    let n = x.dims().first().copied().unwrap_or(0);
    let opts = crate::budget::working_options(&layers, n, n, true, opts)?;
    let set = validate(net, chain::classes(&layers), x, Some(y), "gram inputs")?;
    try_gram(&layers, &set, &opts, start)?.ok_or_else(|| GradKernelError::OverBudget {
        what: "the conv kernel's stored layer inputs and deltas".into(),
        needed: 0,
        budget: opts.memory_budget_bytes,
    })
}

/// Max-pooling statistics of each conv layer of `net` on inputs `x` (forward only, the
/// network's dtype): how many windows tie (the first-maximum convention decides) and how many
/// are all zero. Errors when `net` is not a conv chain the kernel covers.
pub fn pooling_stats<N: Network + ?Sized>(net: &N, x: &Tensor) -> Result<Vec<PoolStats>> {
    let layers = conv_chain(net, "pooling_stats")?;
    let set = validate(net, chain::classes(&layers), x, None, "pooling_stats inputs")?;
    fn go<T: Real>(layers: &[Layer], set: &Set) -> Result<Vec<PoolStats>> {
        let kernel_net = self::net::net::<T>(layers)?;
        let mut a = host::<T>(&set.x)?;
        let mut stats = Vec::new();
        for c in &kernel_net.convs {
            let (out, _, st) = forward_layer(c, &a, set.n);
            stats.push(st);
            a = out;
        }
        Ok(stats)
    }
    match chain::dtype(&layers) {
        DType::F64 => go::<f64>(&layers, &set),
        _ => go::<f32>(&layers, &set),
    }
}
