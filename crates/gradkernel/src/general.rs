//! The general engine: exact per-example gradient Grams of any [`Network`] (a preset `Model`, a
//! spec model, or a user's own candle `Module`), any [`Loss`], through candle tensor ops on any
//! device.
//!
//! One batched forward with the tape recording, one backward of the **summed** loss
//! ([`crate::pass`]): every tapped layer gets its per-example output deltas from its zero probe.
//! The planning pass ([`crate::plan`]) groups tapped layers into units with a route each (dense
//! factorised, ghost, per-chunk materialised, shared for weight sharing) and sends parameters no
//! tapped layer covers to the exact fallback (one autograd backward per example); factors
//! ([`crate::factor`]) are computed per chunk of examples and their blocks assembled here into
//! host matrices under the memory budget.
//!
//! Exactness requires that examples do not interact (eval mode: no batch statistics) and that
//! a tapped layer's parameters are used only inside tapped calls; a unit whose tapped gradient
//! disagrees with autograd on the planning pass (a parameter also used in a plain op) is moved
//! to the fallback, and a parameter that gets no gradient at all is an error.

use std::time::Instant;

use candle::{DType, Device, Tensor, Var};

use crate::error::{GradKernelError, Result};
use crate::factor::{block_sum, chunk_factors, chunks, sum_all, Factor};
use crate::hostmat::HostMat;
use crate::loss::Loss;
use crate::network::{is_buffer_name, Network};
use crate::options::{GramOptions, Method};
use crate::plan::plan;
use crate::result::{CrossGramResult, GramResult};
use crate::tape;

/// Inputs on the network's device and targets checked against its outputs.
pub(crate) struct Prepared {
    pub x: Tensor,
    pub t: Tensor,
    pub n: usize,
    /// Output shape `(n, ...)`, from one example's forward.
    pub out_dims: Vec<usize>,
}

pub(crate) fn prepare<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    t: &Tensor,
    loss: &Loss,
    what: &'static str,
) -> Result<Prepared> {
    if x.rank() < 1 || x.dim(0)? == 0 {
        return Err(GradKernelError::Empty(what));
    }
    let xp = net.prepare(x)?;
    let n = xp.dim(0)?;
    // Output shape from one example, without recording.
    let out = tape::suspended(|| net.forward(&xp.narrow(0, 0, 1)?))?;
    let mut out_dims = out.dims().to_vec();
    out_dims[0] = n;
    let tt = loss.targets(t, n, &out_dims, xp.device(), what)?;
    Ok(Prepared { x: xp, t: tt, n, out_dims })
}

/// The general engine's square Gram (see the module docs); `opts.cpu_fast_path` etc. are the
/// caller's business (the dispatch in [`crate::engine`] runs the kernels first).
pub(crate) fn gram_general<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    targets: &Tensor,
    loss: &Loss,
    opts: &GramOptions,
) -> Result<GramResult> {
    let start = Instant::now();
    let set = prepare(net, x, targets, loss, "gram inputs")?;
    let n = set.n;
    let plan = plan(net, &set.x, &set.t, loss, opts, n, n, n * n)?;
    let spans = chunks(n, plan.chunk);
    let nu = plan.units.len();
    let mut lossv = vec![0.0; n];
    let mut cached: Vec<Vec<Factor>> = Vec::new();
    let factors =
        |s: usize, len: usize| chunk_factors(net, &plan, &set.x.narrow(0, s, len)?, &set.t.narrow(0, s, len)?, loss);
    if plan.cache {
        for &(s, len) in &spans {
            let (f, l) = factors(s, len)?;
            lossv[s..s + len].copy_from_slice(&l);
            cached.push(f);
        }
    }
    let mut k = HostMat::zeros(plan.acc, n * n);
    let mut per: Vec<HostMat> =
        if opts.per_layer { (0..nu).map(|_| HostMat::zeros(plan.acc, n * n)).collect() } else { Vec::new() };
    for (bi, &(si, li)) in spans.iter().enumerate() {
        let owned_row;
        let fa: &[Factor] = if plan.cache {
            &cached[bi]
        } else {
            let (f, l) = factors(si, li)?;
            lossv[si..si + li].copy_from_slice(&l);
            owned_row = f;
            &owned_row
        };
        for (bj, &(sj, lj)) in spans.iter().enumerate().skip(bi) {
            let owned_col;
            let fb: &[Factor] = if bj == bi {
                fa
            } else if plan.cache {
                &cached[bj]
            } else {
                owned_col = factors(sj, lj)?.0;
                &owned_col
            };
            let diag = bi == bj;
            let (total, parts) = block_sum(fa, fb, &plan, opts.per_layer, diag)?;
            k.put(&total, si, sj, n, true, diag)?;
            for (p, m) in parts.iter().zip(per.iter_mut()) {
                m.put(p, si, sj, n, true, diag)?;
            }
        }
    }
    let norms = k.diag(n).iter().map(|&v| v.max(0.0).sqrt()).collect();
    let per_unit = plan
        .units
        .iter()
        .zip(per)
        .map(|(u, m)| Ok((u.name.clone(), m.into_tensor(n, n)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(GramResult {
        k: k.into_tensor(n, n)?,
        per_layer: per_unit,
        norms,
        loss_per_example: lossv,
        routes: plan.routes(),
        seconds: start.elapsed().as_secs_f64(),
        chunk: plan.chunk,
    })
}

/// The general engine's `(N, M)` Gram between two example sets of any [`Network`].
pub(crate) fn cross_gram_general<N: Network + ?Sized>(
    net: &N,
    x_a: &Tensor,
    t_a: &Tensor,
    x_b: &Tensor,
    t_b: &Tensor,
    loss: &Loss,
    opts: &GramOptions,
) -> Result<CrossGramResult> {
    let start = Instant::now();
    let a = prepare(net, x_a, t_a, loss, "cross_gram rows (set a)")?;
    let b = prepare(net, x_b, t_b, loss, "cross_gram columns (set b)")?;
    let (n, m) = (a.n, b.n);
    let plan = plan(net, &a.x, &a.t, loss, opts, n + m, n.max(m), n * m)?;
    let (sa, sb) = (chunks(n, plan.chunk), chunks(m, plan.chunk));
    let nu = plan.units.len();
    let (mut loss_a, mut loss_b) = (vec![0.0; n], vec![0.0; m]);
    let (mut norm_a, mut norm_b) = (vec![0.0; n], vec![0.0; m]);
    let fac = |set: &Prepared, s: usize, len: usize| {
        chunk_factors(net, &plan, &set.x.narrow(0, s, len)?, &set.t.narrow(0, s, len)?, loss)
    };
    let sq = |fs: &[Factor]| -> Result<Vec<f64>> {
        let t = sum_all(fs.iter().map(Factor::sq_norms).collect::<Result<Vec<_>>>()?)?;
        Ok(t.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.to_vec1::<f64>()?)
    };
    let mut cached_b = Vec::new();
    for &(s, len) in &sb {
        let (f, l) = fac(&b, s, len)?;
        loss_b[s..s + len].copy_from_slice(&l);
        norm_b[s..s + len].copy_from_slice(&sq(&f)?);
        if plan.cache {
            cached_b.push(f);
        }
    }
    let mut k = HostMat::zeros(plan.acc, n * m);
    let mut per: Vec<HostMat> =
        if opts.per_layer { (0..nu).map(|_| HostMat::zeros(plan.acc, n * m)).collect() } else { Vec::new() };
    for &(si, li) in &sa {
        let (fa, l) = fac(&a, si, li)?;
        loss_a[si..si + li].copy_from_slice(&l);
        norm_a[si..si + li].copy_from_slice(&sq(&fa)?);
        for (bj, &(sj, lj)) in sb.iter().enumerate() {
            let owned;
            let fb: &[Factor] = if plan.cache {
                &cached_b[bj]
            } else {
                owned = fac(&b, sj, lj)?.0;
                &owned
            };
            let (total, parts) = block_sum(&fa, fb, &plan, opts.per_layer, false)?;
            k.put(&total, si, sj, m, false, false)?;
            for (p, h) in parts.iter().zip(per.iter_mut()) {
                h.put(p, si, sj, m, false, false)?;
            }
        }
    }
    let per_layer = plan
        .units
        .iter()
        .zip(per)
        .map(|(u, h)| Ok((u.name.clone(), h.into_tensor(n, m)?)))
        .collect::<Result<Vec<_>>>()?;
    let sqrt = |v: Vec<f64>| v.into_iter().map(|x| x.max(0.0).sqrt()).collect();
    Ok(CrossGramResult {
        k: k.into_tensor(n, m)?,
        per_layer,
        norms_a: sqrt(norm_a),
        norms_b: sqrt(norm_b),
        loss_a,
        loss_b,
        seconds: start.elapsed().as_secs_f64(),
        routes: plan.routes(),
        chunk: plan.chunk,
    })
}

/// Per-example gradients `(N, P)` of any [`Network`] through the same routes as [`crate::gram_net`],
/// columns in [`Network::parameters`] order (buffers excluded), each parameter flattened
/// row-major. Fails with `OverBudget` when `N * P` values exceed the budget.
pub fn per_example_gradients_net<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    targets: &Tensor,
    loss: &Loss,
    opts: &GramOptions,
) -> Result<Tensor> {
    let set = prepare(net, x, targets, loss, "per_example_gradients inputs")?;
    let mut o = opts.clone();
    o.method = Method::Materialised;
    o.per_layer = false;
    let plan = plan(net, &set.x, &set.t, loss, &o, set.n, set.n, 0)?;
    let p: usize = plan.params.iter().map(|(_, v)| v.elem_count()).sum();
    let out = set.n.saturating_mul(p).saturating_mul(plan.acc.size_in_bytes());
    if out > opts.memory_budget_bytes {
        return Err(GradKernelError::OverBudget {
            what: format!("per-example gradients ({} x {p})", set.n),
            needed: out,
            budget: opts.memory_budget_bytes,
        });
    }
    let mut rows = Vec::new();
    for (s, len) in chunks(set.n, plan.chunk) {
        let (fs, _) = chunk_factors(net, &plan, &set.x.narrow(0, s, len)?, &set.t.narrow(0, s, len)?, loss)?;
        let mut cols: Vec<Option<Tensor>> = vec![None; plan.params.len()];
        for (u, f) in plan.units.iter().zip(fs) {
            let Factor::Mat { g } = f else { unreachable!("materialised plan") };
            let mut at = 0;
            for &v in &u.vars {
                let w = plan.params[v].1.elem_count();
                cols[v] = Some(g.narrow(1, at, w)?);
                at += w;
            }
        }
        let cols = cols.into_iter().map(|c| c.expect("every parameter is in one unit")).collect::<Vec<_>>();
        rows.push(Tensor::cat(&cols, 1)?);
    }
    Ok(Tensor::cat(&rows, 0)?)
}

/// The oracle for any [`Network`]: one autograd backward per example on the forward pass with
/// recording off, gradients of [`Network::parameters`] (buffers excluded) in f64 on the CPU: `(N, P)`.
pub fn reference_per_example_gradients_net<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    targets: &Tensor,
    loss: &Loss,
) -> Result<Tensor> {
    let set = prepare(net, x, targets, loss, "reference inputs")?;
    let params: Vec<(String, Var)> = net.parameters().into_iter().filter(|(k, _)| !is_buffer_name(k)).collect();
    let mut rows = Vec::with_capacity(set.n);
    for i in 0..set.n {
        let out = tape::suspended(|| net.forward(&set.x.narrow(0, i, 1)?))?;
        let grads = loss.per_example(&out, &set.t.narrow(0, i, 1)?)?.sum_all()?.backward()?;
        let mut row = Vec::with_capacity(params.len());
        for (k, v) in &params {
            // The oracle never reads a missing gradient as zero: it would agree with a kernel
            // that silently dropped the same parameters.
            let g = grads.get(v.as_tensor()).ok_or_else(|| GradKernelError::MissingGradient(k.clone()))?;
            row.push(g.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.flatten_all()?);
        }
        rows.push(Tensor::cat(&row, 0)?);
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// `G G^T` of [`reference_per_example_gradients_net`]: `(N, N)` f64 on the CPU.
pub fn reference_gram_net<N: Network + ?Sized>(net: &N, x: &Tensor, targets: &Tensor, loss: &Loss) -> Result<Tensor> {
    let g = reference_per_example_gradients_net(net, x, targets, loss)?;
    Ok(g.matmul(&g.t()?)?)
}
