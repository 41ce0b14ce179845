//! Blockwise assembly of Gram matrices from per-chunk factors under a memory budget.

use std::time::Instant;

use candle::{DType, Device, Tensor};
use stiff_models::Model;

use crate::cpu_fast::{dense_gram, dense_gram_bytes, DenseLayer};
use crate::factors::{choose_form, factor_bytes, make_factor, Factor, LayerForm};
use crate::pass::{forward_backward, per_example_loss, Seed};
use crate::{CrossGramResult, GradKernelError, GramOptions, GramResult, Method, Result};

/// K, the per-layer Grams and the per-example loss from the CPU kernel.
type FastOut = (HostMat, Vec<HostMat>, Vec<f64>);

/// A validated input set: prepared inputs and u32 labels on the model's device.
pub(crate) struct Set {
    pub x: Tensor,
    pub y: Tensor,
    pub n: usize,
}

/// Checks shapes and labels and moves `(x, y)` to the model's device and dtype.
/// x: `(N, ...)` (see [`Model::prepare_input`]); y: integer `(N)` with values in `0..classes`.
pub(crate) fn validate(model: &Model, x: &Tensor, y: Option<&Tensor>, what: &'static str) -> Result<Set> {
    if x.rank() < 2 {
        return Err(GradKernelError::Shape { what, expected: "(N, ...) inputs".into(), got: x.dims().to_vec() });
    }
    let n = x.dim(0)?;
    if n == 0 {
        return Err(GradKernelError::Empty(what));
    }
    let xp = model.prepare_input(&x.to_device(model.device())?)?;
    let classes = model.config().num_classes;
    let y = match y {
        None => Tensor::zeros(n, DType::U32, model.device())?,
        Some(y) => {
            if y.dims() != [n] {
                return Err(GradKernelError::Shape { what, expected: format!("labels ({n})"), got: y.dims().to_vec() });
            }
            if !matches!(y.dtype(), DType::U8 | DType::U32 | DType::I64) {
                return Err(GradKernelError::Unsupported(format!(
                    "{what}: labels must be an integer tensor (u8, u32 or i64), got {:?}",
                    y.dtype()
                )));
            }
            let host = y.to_dtype(DType::I64)?.to_device(&Device::Cpu)?.to_vec1::<i64>()?;
            if let Some((index, &label)) = host.iter().enumerate().find(|(_, &l)| l < 0 || l as usize >= classes) {
                return Err(GradKernelError::LabelOutOfRange { what, index, label, classes });
            }
            let v: Vec<u32> = host.iter().map(|&l| l as u32).collect();
            Tensor::from_vec(v, n, model.device())?
        }
    };
    Ok(Set { x: xp, y, n })
}

/// Chunking decisions for one Gram computation.
pub(crate) struct Plan {
    pub forms: Vec<LayerForm>,
    pub acc: DType,
    /// Examples per forward/backward chunk and per Gram block side.
    pub chunk: usize,
    /// Whether every chunk's factors are kept (else recomputed per block).
    pub cache: bool,
    pub ghost_rows: usize,
}

pub(crate) fn acc_dtype(model: &Model, opts: &GramOptions) -> DType {
    if opts.accumulate_f64 || model.dtype() == DType::F64 {
        DType::F64
    } else {
        model.dtype()
    }
}

pub(crate) fn forms(model: &Model, method: Method, n: usize) -> Vec<LayerForm> {
    model
        .layers()
        .iter()
        .map(|l| match (method, l.kind) {
            (Method::Materialised, _) => LayerForm::Materialised,
            (Method::Factorised, stiff_models::LayerKind::Dense) => LayerForm::DenseFactorised,
            (Method::Factorised, _) => LayerForm::ConvGhost,
            (Method::Auto, _) => choose_form(l, n),
        })
        .collect()
}

/// Per-example bytes of one forward/backward pass (activations, deltas, autograd temporaries).
pub(crate) fn pass_bytes(model: &Model) -> usize {
    let elem = model.dtype().size_in_bytes();
    model
        .layers()
        .iter()
        .map(|l| {
            let i: usize = l.in_dims.iter().product();
            let o: usize = l.out_dims.iter().product();
            (i + 4 * o) * elem * 2
        })
        .sum()
}

/// How examples are chunked: `chunk` examples per block, whether every chunk's factors stay
/// cached, and the bytes left for block temporaries.
pub(crate) struct Chunking {
    pub chunk: usize,
    pub cache: bool,
    pub avail: usize,
}

/// The largest chunk whose passes (`pass_pe` bytes per example), factors (`factor_pe`) and block
/// temporaries fit what `budget` leaves after the `outputs` bytes of part Grams (`outputs_what`
/// names them in the error). Shared by the preset engine and the general one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn size_chunks(
    budget: usize,
    outputs: usize,
    outputs_what: &str,
    n_total: usize,
    n_max: usize,
    pass_pe: usize,
    factor_pe: usize,
    ae: usize,
) -> Result<Chunking> {
    if outputs >= budget {
        return Err(GradKernelError::OverBudget { what: outputs_what.into(), needed: outputs, budget });
    }
    let avail_all = budget - outputs;
    // Block temporaries: two products, their elementwise product, the running sum, the host copy.
    let per_c2 = ae * 6;
    let fits = |c: usize, cache: bool| {
        let (avail, factors) =
            if cache { (avail_all.saturating_sub(n_total * factor_pe), 0) } else { (avail_all, 2 * c * factor_pe) };
        c * pass_pe + factors + c * c * per_c2 <= avail
    };
    // Keep every chunk's factors when they take at most half the budget and one example still fits.
    let cache = n_total.saturating_mul(factor_pe) <= avail_all / 2 && fits(1, true);
    let mut c = n_max.max(1);
    while c > 1 && !fits(c, cache) {
        c = (c * 9 / 10).min(c - 1);
    }
    if !fits(c, cache) {
        return Err(GradKernelError::OverBudget {
            what: "one example's forward/backward pass and factors".into(),
            needed: pass_pe + 2 * factor_pe + per_c2 + outputs,
            budget,
        });
    }
    let avail = if cache { avail_all - n_total * factor_pe } else { avail_all };
    Ok(Chunking { chunk: c, cache, avail })
}

/// Picks the chunk size: the largest `c` whose passes, factors and block temporaries fit the budget.
/// `n_total` examples are involved (rows plus columns for a cross Gram); `n_max` bounds `c`.
pub(crate) fn plan(model: &Model, opts: &GramOptions, n_total: usize, n_max: usize, out_elems: usize) -> Result<Plan> {
    let acc = acc_dtype(model, opts);
    let ae = acc.size_in_bytes();
    let forms = forms(model, opts.method, n_total);
    let layers = model.layers();
    let (mut factor_pe, mut transient_pe) = (0usize, 0usize);
    for (l, f) in layers.iter().zip(&forms) {
        let (p, t) = factor_bytes(l, *f, ae);
        factor_pe += p;
        transient_pe = transient_pe.max(t);
    }
    let budget = opts.memory_budget_bytes;
    // Per-layer Gram outputs count against the budget (K itself does not).
    let outputs = if opts.per_layer { out_elems * ae * layers.len() } else { 0 };
    let pass_pe = pass_bytes(model) + transient_pe;
    let Chunking { chunk: c, cache, avail } =
        size_chunks(budget, outputs, "the per-layer Gram matrices", n_total, n_max, pass_pe, factor_pe, ae)?;
    // Ghost products hold (rows*S)^2 temporaries, three at a time.
    let max_s = layers
        .iter()
        .zip(&forms)
        .filter(|(_, f)| **f == LayerForm::ConvGhost)
        .map(|(l, _)| l.out_dims[1] * l.out_dims[2])
        .max()
        .unwrap_or(1);
    let ghost_rows = ((avail as f64 / 4.0 / (3 * max_s * max_s * ae) as f64).sqrt() as usize).clamp(1, c);
    Ok(Plan { forms, acc, chunk: c, cache, ghost_rows })
}

/// Factors of every layer for examples `start..start+len` of `set`, plus their per-example loss.
fn chunk_factors(
    model: &Model,
    set: &Set,
    start: usize,
    len: usize,
    plan: &Plan,
    opts: &GramOptions,
) -> Result<(Vec<Factor>, Vec<f64>)> {
    let x = set.x.narrow(0, start, len)?;
    let y = set.y.narrow(0, start, len)?;
    let pass = forward_backward(model, &x, Seed::CrossEntropy(&y), opts.delta_route)?;
    let loss = per_example_loss(&pass.logits, &y)?;
    let factors = model
        .layers()
        .iter()
        .zip(&plan.forms)
        .enumerate()
        .map(|(l, (layer, form))| make_factor(layer, *form, &pass, l, plan.acc))
        .collect::<Result<Vec<_>>>()?;
    Ok((factors, loss))
}

/// A row-major host matrix in the output dtype.
pub(crate) enum HostMat {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl HostMat {
    pub(crate) fn zeros(dtype: DType, len: usize) -> Self {
        match dtype {
            DType::F64 => HostMat::F64(vec![0.0; len]),
            _ => HostMat::F32(vec![0.0; len]),
        }
    }

    /// Writes `block: (nr, nc)` at `(r0, c0)` of a matrix with `cols` columns; with `mirror`, also
    /// its transpose at `(c0, r0)`; with `upper_only` (a diagonal block) only entries `c >= r` are
    /// taken and mirrored, so the result is exactly symmetric.
    pub(crate) fn put(
        &mut self,
        block: &Tensor,
        r0: usize,
        c0: usize,
        cols: usize,
        mirror: bool,
        upper_only: bool,
    ) -> Result<()> {
        let (nr, nc) = block.dims2()?;
        let b = block.to_device(&Device::Cpu)?;
        #[allow(clippy::too_many_arguments)]
        fn put_t<T: Copy>(
            dst: &mut [T],
            src: &[T],
            nr: usize,
            nc: usize,
            r0: usize,
            c0: usize,
            cols: usize,
            mirror: bool,
            upper: bool,
        ) {
            for r in 0..nr {
                let from = if upper { r } else { 0 };
                for c in from..nc {
                    let v = src[r * nc + c];
                    dst[(r0 + r) * cols + c0 + c] = v;
                    if mirror {
                        dst[(c0 + c) * cols + r0 + r] = v;
                    }
                }
            }
        }
        match self {
            HostMat::F32(dst) => {
                let src = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                put_t(dst, &src, nr, nc, r0, c0, cols, mirror, upper_only);
            }
            HostMat::F64(dst) => {
                let src = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                put_t(dst, &src, nr, nc, r0, c0, cols, mirror, upper_only);
            }
        }
        Ok(())
    }

    pub(crate) fn into_tensor(self, rows: usize, cols: usize) -> Result<Tensor> {
        Ok(match self {
            HostMat::F32(v) => Tensor::from_vec(v, (rows, cols), &Device::Cpu)?,
            HostMat::F64(v) => Tensor::from_vec(v, (rows, cols), &Device::Cpu)?,
        })
    }

    pub(crate) fn diag(&self, n: usize) -> Vec<f64> {
        match self {
            HostMat::F32(v) => (0..n).map(|i| v[i * n + i] as f64).collect(),
            HostMat::F64(v) => (0..n).map(|i| v[i * n + i]).collect(),
        }
    }
}

fn chunks(n: usize, c: usize) -> Vec<(usize, usize)> {
    (0..n).step_by(c).map(|s| (s, c.min(n - s))).collect()
}

/// Sum of the per-layer blocks between two chunks; also the per-layer blocks when asked.
fn block_sum(fa: &[Factor], fb: &[Factor], plan: &Plan, keep: bool) -> Result<(Tensor, Vec<Tensor>)> {
    let mut total: Option<Tensor> = None;
    let mut parts = Vec::new();
    for (a, b) in fa.iter().zip(fb) {
        let blk = a.block(b, plan.ghost_rows)?;
        total = Some(match total {
            None => blk.clone(),
            Some(t) => (t + &blk)?,
        });
        if keep {
            parts.push(blk);
        }
    }
    Ok((total.expect("a model has at least one layer"), parts))
}

#[allow(clippy::type_complexity)]
/// The hand-written CPU kernel's inputs in dtype `T`: layers, x `(n, in)` row-major, labels.
pub(crate) fn fast_inputs<T: crate::cpu_fast::Elem + candle::WithDType>(
    model: &Model,
    set: &Set,
    dtype: DType,
) -> Result<(Vec<DenseLayer<T>>, Vec<T>, Vec<u32>)> {
    let host = |t: &Tensor| -> Result<Vec<T>> { Ok(t.to_dtype(dtype)?.flatten_all()?.to_vec1::<T>()?) };
    let layers = model
        .layers()
        .iter()
        .map(|l| {
            Ok(DenseLayer {
                w: host(l.weight.as_tensor())?,
                b: host(l.bias.as_tensor())?,
                inp: l.in_dims[0],
                out: l.out_dims[0],
                relu: l.relu,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((layers, host(&set.x)?, set.y.to_vec1::<u32>()?))
}

/// Whether [`crate::cpu_fast`] handles this call: a dense net on the CPU, factorised, hand backward.
fn fast_applies(model: &Model, opts: &GramOptions) -> bool {
    opts.cpu_fast_path
        && model.device().is_cpu()
        && crate::pass::manual_supported(model)
        && opts.method != Method::Materialised
        && opts.delta_route != crate::DeltaRoute::Autograd
        && matches!(model.dtype(), DType::F32 | DType::F64)
}

fn fast_gram(model: &Model, set: &Set, opts: &GramOptions, acc: DType) -> Result<Option<FastOut>> {
    let threads = rayon::current_num_threads();
    Ok(match acc {
        DType::F64 => {
            let (layers, x, y) = fast_inputs::<f64>(model, set, acc)?;
            if dense_gram_bytes(&layers, set.n, opts.per_layer, threads) > opts.memory_budget_bytes {
                return Ok(None);
            }
            let r = dense_gram(&layers, &x, &y, opts.per_layer);
            Some((HostMat::F64(r.k), r.per_layer.into_iter().map(HostMat::F64).collect(), r.loss))
        }
        _ => {
            let (layers, x, y) = fast_inputs::<f32>(model, set, DType::F32)?;
            if dense_gram_bytes(&layers, set.n, opts.per_layer, threads) > opts.memory_budget_bytes {
                return Ok(None);
            }
            let r = dense_gram(&layers, &x, &y, opts.per_layer);
            Some((HostMat::F32(r.k), r.per_layer.into_iter().map(HostMat::F32).collect(), r.loss))
        }
    })
}

pub(crate) fn gram_impl(model: &Model, x: &Tensor, y: &Tensor, opts: &GramOptions) -> Result<GramResult> {
    let start = Instant::now();
    let set = validate(model, x, Some(y), "gram inputs")?;
    let n = set.n;
    let acc = acc_dtype(model, opts);
    if fast_applies(model, opts) {
        if let Some((k, per, loss)) = fast_gram(model, &set, opts, acc)? {
            return finish(model, k, per, loss, n, start, vec![LayerForm::DenseFactorised; model.layers().len()], n);
        }
    }
    let plan = plan(model, opts, n, n, n * n)?;
    let spans = chunks(n, plan.chunk);
    let nl = model.layers().len();
    let mut loss = vec![0.0; n];
    let mut cached: Vec<Vec<Factor>> = Vec::new();
    if plan.cache {
        for &(s, len) in &spans {
            let (f, l) = chunk_factors(model, &set, s, len, &plan, opts)?;
            loss[s..s + len].copy_from_slice(&l);
            cached.push(f);
        }
    }
    let mut k = HostMat::zeros(plan.acc, n * n);
    let mut per: Vec<HostMat> =
        if opts.per_layer { (0..nl).map(|_| HostMat::zeros(plan.acc, n * n)).collect() } else { Vec::new() };
    for (bi, &(si, li)) in spans.iter().enumerate() {
        let owned_row;
        let fa: &[Factor] = if plan.cache {
            &cached[bi]
        } else {
            let (f, l) = chunk_factors(model, &set, si, li, &plan, opts)?;
            loss[si..si + li].copy_from_slice(&l);
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
                owned_col = chunk_factors(model, &set, sj, lj, &plan, opts)?.0;
                &owned_col
            };
            let (total, parts) = block_sum(fa, fb, &plan, opts.per_layer)?;
            let diag = bi == bj;
            k.put(&total, si, sj, n, true, diag)?;
            for (p, m) in parts.iter().zip(per.iter_mut()) {
                m.put(p, si, sj, n, true, diag)?;
            }
        }
    }
    finish(model, k, per, loss, n, start, plan.forms, plan.chunk)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    model: &Model,
    k: HostMat,
    per: Vec<HostMat>,
    loss: Vec<f64>,
    n: usize,
    start: Instant,
    forms: Vec<LayerForm>,
    chunk: usize,
) -> Result<GramResult> {
    let norms = k.diag(n).iter().map(|&v| v.max(0.0).sqrt()).collect();
    let per_layer = model
        .layers()
        .iter()
        .zip(per)
        .map(|(l, m)| Ok((l.name.clone(), m.into_tensor(n, n)?)))
        .collect::<Result<Vec<_>>>()?;
    let forms = model.layers().iter().map(|l| l.name.clone()).zip(forms).collect();
    Ok(GramResult {
        k: k.into_tensor(n, n)?,
        per_layer,
        norms,
        loss_per_example: loss,
        seconds: start.elapsed().as_secs_f64(),
        forms,
        chunk,
    })
}

fn sq_norms_host(fs: &[Factor]) -> Result<Vec<f64>> {
    let mut total: Option<Tensor> = None;
    for f in fs {
        let s = f.sq_norms()?;
        total = Some(match total {
            None => s,
            Some(t) => (t + s)?,
        });
    }
    let t = total.expect("a model has at least one layer");
    Ok(t.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.to_vec1::<f64>()?)
}

pub(crate) fn cross_gram_impl(
    model: &Model,
    x_a: &Tensor,
    y_a: &Tensor,
    x_b: &Tensor,
    y_b: &Tensor,
    opts: &GramOptions,
) -> Result<CrossGramResult> {
    let start = Instant::now();
    let a = validate(model, x_a, Some(y_a), "cross_gram rows (set a)")?;
    let b = validate(model, x_b, Some(y_b), "cross_gram columns (set b)")?;
    let (n, m) = (a.n, b.n);
    let plan = plan(model, opts, n + m, n.max(m), n * m)?;
    let (sa, sb) = (chunks(n, plan.chunk), chunks(m, plan.chunk));
    let nl = model.layers().len();
    let (mut loss_a, mut loss_b) = (vec![0.0; n], vec![0.0; m]);
    let (mut norm_a, mut norm_b) = (vec![0.0; n], vec![0.0; m]);
    let mut cached_b: Vec<Vec<Factor>> = Vec::new();
    for &(s, len) in &sb {
        let (f, l) = chunk_factors(model, &b, s, len, &plan, opts)?;
        loss_b[s..s + len].copy_from_slice(&l);
        norm_b[s..s + len].copy_from_slice(&sq_norms_host(&f)?);
        if plan.cache {
            cached_b.push(f);
        }
    }
    let mut k = HostMat::zeros(plan.acc, n * m);
    let mut per: Vec<HostMat> =
        if opts.per_layer { (0..nl).map(|_| HostMat::zeros(plan.acc, n * m)).collect() } else { Vec::new() };
    for &(si, li) in &sa {
        let (fa, l) = chunk_factors(model, &a, si, li, &plan, opts)?;
        loss_a[si..si + li].copy_from_slice(&l);
        norm_a[si..si + li].copy_from_slice(&sq_norms_host(&fa)?);
        for (bj, &(sj, lj)) in sb.iter().enumerate() {
            let owned;
            let fb: &[Factor] = if plan.cache {
                &cached_b[bj]
            } else {
                owned = chunk_factors(model, &b, sj, lj, &plan, opts)?.0;
                &owned
            };
            let (total, parts) = block_sum(&fa, fb, &plan, opts.per_layer)?;
            k.put(&total, si, sj, m, false, false)?;
            for (p, h) in parts.iter().zip(per.iter_mut()) {
                h.put(p, si, sj, m, false, false)?;
            }
        }
    }
    let per_layer = model
        .layers()
        .iter()
        .zip(per)
        .map(|(l, h)| Ok((l.name.clone(), h.into_tensor(n, m)?)))
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
    })
}
