//! The one place that decides how a Gram is computed, for every network.
//!
//! A network that describes itself as a plain chain ([`Network::chain`]: the presets, and every
//! spec model of that shape) and asks for cross-entropy gets the memory check on the chain's
//! sizes and then the specialised CPU kernels where they apply: the conv kernel
//! ([`crate::conv_fast`]) for conv chains, the dense kernel ([`crate::cpu_fast`]) for dense
//! chains. Everything else, and whatever a kernel declines, runs the general engine
//! ([`crate::general`]) with per-layer routes from its planning pass. No network has a path of
//! its own: the same chain gives the same kernels whether it came as a preset or a spec.

use std::time::Instant;

use candle::{DType, Tensor};
use stiff_models::{Layer, LayerKind};

use crate::cpu_fast::{dense_gram, dense_gram_bytes, DenseLayer, Elem};
use crate::dense_cross::{dense_cross, FastCross};
use crate::error::{GradKernelError, Result};
use crate::general::{cross_gram_general, gram_general};
use crate::hostmat::{HostMat, IntoHost};
use crate::inputs::{acc_dtype, validate, Set};
use crate::loss::Loss;
use crate::network::Network;
use crate::options::{DeltaRoute, GramOptions, Method};
use crate::result::{CrossGramResult, GramResult};
use crate::routes::{LayerForm, Route};
use crate::{budget, chain, conv_fast};

/// The chain the kernels may take: cross-entropy, a non-empty chain.
fn kernel_chain<N: Network + ?Sized>(net: &N, loss: &Loss) -> Option<Vec<Layer>> {
    matches!(loss, Loss::CrossEntropy).then(|| net.chain()).flatten().filter(|l| !l.is_empty())
}

/// `opts` with the bytes of `K` (`rows x cols` entries in the accumulation dtype) taken out of the
/// budget, for a network without a chain (the chain's check is [`budget::working_options`]).
fn without_k(rows: usize, cols: usize, entry: usize, opts: &GramOptions) -> Result<GramOptions> {
    let k = rows.checked_mul(cols).and_then(|v| v.checked_mul(entry)).unwrap_or(usize::MAX);
    if k >= opts.memory_budget_bytes {
        return Err(GradKernelError::OverBudget {
            what: format!("K ({rows} x {cols})"),
            needed: k,
            budget: opts.memory_budget_bytes,
        });
    }
    let mut o = opts.clone();
    o.memory_budget_bytes -= k;
    Ok(o)
}

/// The dtype of a network's first parameter (f32 when it has none: the planner then refuses).
fn net_dtype<N: Network + ?Sized>(net: &N) -> DType {
    net.parameters().first().map_or(DType::F32, |(_, v)| v.dtype())
}

/// Rows of `x` (0 for a scalar).
fn rows(x: &Tensor) -> usize {
    x.dims().first().copied().unwrap_or(0)
}

/// [`crate::gram_net`]: the square Gram of any network and loss.
pub(crate) fn gram<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    t: &Tensor,
    loss: &Loss,
    opts: &GramOptions,
) -> Result<GramResult> {
    let start = Instant::now();
    let n = rows(x);
    let Some(layers) = kernel_chain(net, loss) else {
        if wants_manual(opts) {
            return Err(manual_unsupported("gram"));
        }
        let entry = acc_dtype(net_dtype(net), opts).size_in_bytes();
        return gram_general(net, x, t, loss, &without_k(n, n, entry, opts)?);
    };
    let opts = budget::working_options(&layers, n, n, true, opts)?;
    let set = validate(net, chain::classes(&layers), x, Some(t), "gram inputs")?;
    for kernel in KERNELS {
        if kernel.applies(&layers, &opts) {
            if let Some(r) = kernel.gram(&layers, &set, &opts, start)? {
                return Ok(r);
            }
        }
    }
    if wants_manual(&opts) {
        // The hand-written backward lives only in the dense kernel, which declined or does not apply.
        return Err(manual_unsupported("gram"));
    }
    let mut r = gram_general(net, &set.x, &set.y, loss, &opts)?;
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

/// [`crate::cross_gram_net`]: the `(N, M)` Gram between two sets, any network and loss.
pub(crate) fn cross<N: Network + ?Sized>(
    net: &N,
    (x_a, t_a): (&Tensor, &Tensor),
    (x_b, t_b): (&Tensor, &Tensor),
    loss: &Loss,
    opts: &GramOptions,
) -> Result<CrossGramResult> {
    let start = Instant::now();
    if wants_manual(opts) {
        return Err(manual_unsupported("cross_gram"));
    }
    let (n, m) = (rows(x_a), rows(x_b));
    let Some(layers) = kernel_chain(net, loss) else {
        let entry = acc_dtype(net_dtype(net), opts).size_in_bytes();
        return cross_gram_general(net, x_a, t_a, x_b, t_b, loss, &without_k(n, m, entry, opts)?);
    };
    let opts = budget::working_options(&layers, n, m, false, opts)?;
    let classes = chain::classes(&layers);
    let a = validate(net, classes, x_a, Some(t_a), "cross_gram rows (set a)")?;
    let b = validate(net, classes, x_b, Some(t_b), "cross_gram columns (set b)")?;
    for kernel in KERNELS {
        if kernel.applies(&layers, &opts) {
            if let Some(r) = kernel.cross(&layers, (&a, &b), &opts, start)? {
                return Ok(r);
            }
        }
    }
    let mut r = cross_gram_general(net, &a.x, &a.y, &b.x, &b.y, loss, &opts)?;
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

/// A specialised CPU kernel for chains: whether it takes a call, and its square and cross Grams
/// (`None`: it declines, e.g. its stored passes do not fit the budget, and the general engine
/// runs). `opts.memory_budget_bytes` excludes `K` (see [`budget::working_options`]).
trait Kernel: Sync {
    fn applies(&self, layers: &[Layer], opts: &GramOptions) -> bool;
    fn gram(&self, layers: &[Layer], set: &Set, opts: &GramOptions, start: Instant) -> Result<Option<GramResult>>;
    fn cross(
        &self,
        layers: &[Layer],
        sets: (&Set, &Set),
        opts: &GramOptions,
        start: Instant,
    ) -> Result<Option<CrossGramResult>>;
}

/// The conv kernel (`conv_fast/`): conv chains with a dense head.
struct ConvKernel;
/// The dense kernel (`cpu_fast.rs`, `dense_cross.rs`): dense chains.
struct DenseKernel;

/// Every kernel, tried in this order; each `applies` to a different kind of chain.
const KERNELS: [&dyn Kernel; 2] = [&ConvKernel, &DenseKernel];

impl Kernel for ConvKernel {
    fn applies(&self, layers: &[Layer], opts: &GramOptions) -> bool {
        conv_fast::applies(layers, opts)
    }
    fn gram(&self, layers: &[Layer], set: &Set, opts: &GramOptions, start: Instant) -> Result<Option<GramResult>> {
        Ok(conv_fast::try_gram(layers, set, opts, start)?.map(|(r, _profile)| r))
    }
    fn cross(
        &self,
        layers: &[Layer],
        (a, b): (&Set, &Set),
        opts: &GramOptions,
        start: Instant,
    ) -> Result<Option<CrossGramResult>> {
        conv_fast::try_cross(layers, a, b, opts, start)
    }
}

impl Kernel for DenseKernel {
    fn applies(&self, layers: &[Layer], opts: &GramOptions) -> bool {
        dense_applies(layers, opts)
    }
    fn gram(&self, layers: &[Layer], set: &Set, opts: &GramOptions, start: Instant) -> Result<Option<GramResult>> {
        dense_square(layers, set, opts, start)
    }
    fn cross(
        &self,
        layers: &[Layer],
        sets: (&Set, &Set),
        opts: &GramOptions,
        start: Instant,
    ) -> Result<Option<CrossGramResult>> {
        dense_cross_result(layers, sets, opts, start)
    }
}

/// Whether `opts` asks for the deprecated [`DeltaRoute::Manual`].
#[allow(deprecated)]
pub(crate) fn wants_manual(opts: &GramOptions) -> bool {
    opts.delta_route == DeltaRoute::Manual
}

/// The error for [`DeltaRoute::Manual`] where the hand-written backward does not run.
pub(crate) fn manual_unsupported(what: &str) -> GradKernelError {
    GradKernelError::Unsupported(format!(
        "{what}: DeltaRoute::Manual (deprecated) asks for the hand-written backward, which exists only in the CPU \
         dense kernel of `gram` (dense chains, CPU, f32/f64, cpu_fast_path, Method::Auto/Factorised, within the \
         memory budget); use DeltaRoute::Auto"
    ))
}

/// The dense kernel's inputs in dtype `T`: layers, x `(n, in)` row-major, labels.
#[allow(clippy::type_complexity)]
pub(crate) fn dense_inputs<T: Elem + candle::WithDType>(
    layers: &[Layer],
    set: &Set,
) -> Result<(Vec<DenseLayer<T>>, Vec<T>, Vec<u32>)> {
    let host = |t: &Tensor| -> Result<Vec<T>> { Ok(t.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1::<T>()?) };
    let layers = layers
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

/// Whether the dense kernel takes this call: a dense chain in f32/f64 on the CPU, with
/// `cpu_fast_path`, a factorised method and a route other than `Autograd` (which means "the
/// general engine").
pub(crate) fn dense_applies(layers: &[Layer], opts: &GramOptions) -> bool {
    opts.cpu_fast_path
        && chain::device(layers).is_cpu()
        && layers.iter().all(|l| l.kind == LayerKind::Dense)
        && opts.method != Method::Materialised
        && opts.delta_route != DeltaRoute::Autograd
        && matches!(chain::dtype(layers), DType::F32 | DType::F64)
}

fn routes_of(layers: &[Layer], form: LayerForm) -> Vec<Route> {
    layers.iter().map(|l| Route::of_layer(&l.name, form)).collect()
}

/// `K`, the per-layer Grams and the per-example losses of the dense kernel.
type SquareOut = (HostMat, Vec<HostMat>, Vec<f64>);

/// The dense kernel's square Gram; `None` when it does not fit the budget.
fn dense_square(layers: &[Layer], set: &Set, opts: &GramOptions, start: Instant) -> Result<Option<GramResult>> {
    fn go<T: Elem + IntoHost + candle::WithDType>(
        layers: &[Layer],
        set: &Set,
        opts: &GramOptions,
    ) -> Result<Option<SquareOut>> {
        let (dl, x, y) = dense_inputs::<T>(layers, set)?;
        if dense_gram_bytes(&dl, set.n, opts.per_layer, rayon::current_num_threads()) > opts.memory_budget_bytes {
            return Ok(None);
        }
        let r = dense_gram(&dl, &x, &y, opts.per_layer);
        Ok(Some((T::host(r.k), r.per_layer.into_iter().map(T::host).collect(), r.loss)))
    }
    let out = match acc_dtype(chain::dtype(layers), opts) {
        DType::F64 => go::<f64>(layers, set, opts)?,
        _ => go::<f32>(layers, set, opts)?,
    };
    let Some((k, per, loss)) = out else { return Ok(None) };
    let n = set.n;
    let norms = k.diag(n).iter().map(|&v| v.max(0.0).sqrt()).collect();
    let per_layer =
        layers.iter().zip(per).map(|(l, m)| Ok((l.name.clone(), m.into_tensor(n, n)?))).collect::<Result<Vec<_>>>()?;
    Ok(Some(GramResult {
        k: k.into_tensor(n, n)?,
        per_layer,
        norms,
        loss_per_example: loss,
        seconds: start.elapsed().as_secs_f64(),
        routes: routes_of(layers, LayerForm::DenseFactorised),
        chunk: n,
    }))
}

/// The dense kernel's Gram between rows `a` and columns `b`; `None` when it does not fit.
fn dense_cross_result(
    layers: &[Layer],
    (a, b): (&Set, &Set),
    opts: &GramOptions,
    start: Instant,
) -> Result<Option<CrossGramResult>> {
    fn go<T: Elem + IntoHost + candle::WithDType>(
        layers: &[Layer],
        (a, b): (&Set, &Set),
        opts: &GramOptions,
    ) -> Result<Option<FastCross<T>>> {
        let (dl, xa, ya) = dense_inputs::<T>(layers, a)?;
        let (_, xb, yb) = dense_inputs::<T>(layers, b)?;
        Ok(dense_cross(&dl, (&xa, &ya), (&xb, &yb), opts.per_layer, opts.memory_budget_bytes))
    }
    let (n, m) = (a.n, b.n);
    let tensor = |h: HostMat| h.into_tensor(n, m);
    macro_rules! pack {
        ($r:expr) => {{
            let Some(r) = $r else { return Ok(None) };
            let per_layer = layers
                .iter()
                .zip(r.per_layer)
                .map(|(l, v)| Ok((l.name.clone(), tensor(IntoHost::host(v))?)))
                .collect::<Result<Vec<_>>>()?;
            let sqrt = |v: Vec<f64>| v.into_iter().map(|x| x.max(0.0).sqrt()).collect();
            Ok(Some(CrossGramResult {
                k: tensor(IntoHost::host(r.k))?,
                per_layer,
                norms_a: sqrt(r.sq.0),
                norms_b: sqrt(r.sq.1),
                loss_a: r.loss.0,
                loss_b: r.loss.1,
                seconds: start.elapsed().as_secs_f64(),
                routes: routes_of(layers, LayerForm::DenseFactorised),
                chunk: r.chunk,
            }))
        }};
    }
    match acc_dtype(chain::dtype(layers), opts) {
        DType::F64 => pack!(go::<f64>(layers, (a, b), opts)?),
        _ => pack!(go::<f32>(layers, (a, b), opts)?),
    }
}
