//! The general engine: exact per-example gradient Grams of any [`Network`] (a preset `Model`, a
//! spec model, or a user's own candle `Module`), any [`Loss`].
//!
//! One batched forward with the tape recording, one backward of the **summed** loss: every tapped
//! layer gets its per-example output deltas from its zero probe. Tapped layers whose parameters
//! no other tapped call uses form a "unit" with a fast form (dense factorised, conv ghost, or
//! per-chunk materialised); parameters used by several tapped calls (weight sharing) are
//! materialised per call and summed ("shared"); every parameter no tapped layer covers goes
//! through the exact fallback: one autograd backward per example, gradients of just those
//! parameters, `G_u G_u^T`. The result lists each unit's route.
//!
//! Exactness requires that examples do not interact (eval mode: no batch statistics) and that
//! a tapped layer's parameters are used only inside tapped calls; a unit whose tapped gradient
//! disagrees with autograd on the planning pass (a parameter also used in a plain op) is moved
//! to the fallback.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use candle::{DType, Device, Module, Tensor, TensorId, Var};
use serde::{Deserialize, Serialize};
use stiff_models::ops::unfold;
use stiff_models::SpecModel;

use crate::engine::{size_chunks, Chunking, HostMat};
use crate::tape::{self, NormLayout, RecKind, Record, Recording, Tape};
use crate::{CrossGramResult, GradKernelError, GramOptions, Method, Result};

/// A network the general engine can differentiate: a batched forward pass (tapped layers from
/// [`crate::nn`] record when the engine asks them to) and its trainable parameters.
pub trait Network {
    /// x: `(N, ...)` prepared by [`Network::prepare`] -> outputs `(N, ...)`. Examples must not
    /// interact (eval mode).
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor>;
    /// Every trainable parameter with a stable name, in the order of per-example gradient columns.
    fn parameters(&self) -> Vec<(String, Var)>;
    /// Brings user inputs to the network's device, dtype and shape. Default: the first
    /// parameter's device and dtype, shape unchanged.
    fn prepare(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.parameters();
        let (dev, dt) = p.first().map(|(_, v)| (v.device().clone(), v.dtype())).unwrap_or((Device::Cpu, DType::F32));
        Ok(x.to_device(&dev)?.to_dtype(dt)?)
    }
}

/// A user's candle `Module` and its `VarMap`, as a [`Network`]. Parameters are the map's
/// variables sorted by name, minus batch norm buffers (`*.running_mean`, `*.running_var`,
/// `*.num_batches_tracked`).
pub struct ModuleNet<'a, M: Module> {
    module: &'a M,
    params: Vec<(String, Var)>,
}

impl<'a, M: Module> ModuleNet<'a, M> {
    /// Wraps `module`, whose trainable parameters are every `Var` of `vars` (named by their
    /// `VarBuilder` paths). Buffers (`running_mean`, `running_var`) are not parameters.
    pub fn new(module: &'a M, vars: &candle_nn::VarMap) -> Self {
        let map = vars.data().lock().expect("the VarMap lock is not poisoned");
        let mut params: Vec<(String, Var)> =
            map.iter().filter(|(k, _)| !is_buffer_name(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Self { module, params }
    }

    /// With an explicit parameter list (order = gradient column order).
    pub fn with_params(module: &'a M, params: Vec<(String, Var)>) -> Self {
        Self { module, params }
    }
}

impl<M: Module> Network for ModuleNet<'_, M> {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        self.module.forward(x)
    }
    fn parameters(&self) -> Vec<(String, Var)> {
        self.params.clone()
    }
}

fn is_buffer_name(k: &str) -> bool {
    k.ends_with("running_mean") || k.ends_with("running_var") || k.ends_with("num_batches_tracked")
}

/// A spec model runs through the tapped layers: Linear, Conv2d, BatchNorm (eval) and LayerNorm
/// are recorded under their layer index (`"0"`, `"3"`, ...).
impl Network for SpecModel {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        use crate::nn;
        use stiff_models::LayerSpec as L;
        let mut a = x.clone();
        for (i, l) in self.spec().layers.iter().enumerate() {
            let name = i.to_string();
            let p = |f: &str| self.param(i, f).map(|v| v.as_tensor().clone());
            a = match l {
                L::Linear { .. } => {
                    nn::linear_forward(&name, &a, &p("weight").expect("validated"), p("bias").as_ref())?
                }
                L::Conv2d { .. } => {
                    let win = l.window().expect("conv");
                    nn::conv2d_forward(&name, &a, &p("weight").expect("validated"), p("bias").as_ref(), &win)?
                }
                L::BatchNorm1d { eps, .. } | L::BatchNorm2d { eps, .. } => {
                    let (g, b) = (p("weight"), p("bias"));
                    let aff = g.as_ref().zip(b.as_ref());
                    let (m, v) = (self.buffer(i, "running_mean"), self.buffer(i, "running_var"));
                    nn::batch_norm_forward(&name, &a, m.expect("validated"), v.expect("validated"), aff, *eps)?
                }
                L::LayerNorm { normalized_shape, eps, .. } => {
                    let k = normalized_shape.dims().len();
                    nn::layer_norm_forward(&name, &a, k, p("weight").as_ref(), p("bias").as_ref(), *eps)?
                }
                _ => self.layer_forward(i, &a).map_err(|e| candle::Error::Msg(e.to_string()))?,
            };
        }
        Ok(a)
    }
    fn parameters(&self) -> Vec<(String, Var)> {
        self.params().to_vec()
    }
    fn prepare(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.prepare_input(&x.to_device(&self.device())?)?)
    }
}

/// A spec model through its plain forward ([`SpecModel::forward`], no taps): every parameter
/// takes the fallback route. The independent route for oracle checks and the fallback's speed.
pub struct PlainSpec<'a>(pub &'a SpecModel);

impl Network for PlainSpec<'_> {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        self.0.forward(x).map_err(|e| candle::Error::Msg(e.to_string()))
    }
    fn parameters(&self) -> Vec<(String, Var)> {
        self.0.params().to_vec()
    }
    fn prepare(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.0.prepare_input(&x.to_device(&self.0.device())?)?)
    }
}

/// A per-example loss closure: `(outputs (n, ...), targets (n, ...)) -> (n)`.
pub type LossFn = Arc<dyn Fn(&Tensor, &Tensor) -> candle::Result<Tensor> + Send + Sync>;

/// The per-example loss `L_i` whose gradients are compared.
#[derive(Clone, Default)]
pub enum Loss {
    /// Cross-entropy of logits `(n, C)` against integer labels `(n)` (default).
    #[default]
    CrossEntropy,
    /// `mean_c (f_c - onehot(y)_c)^2` of outputs `(n, C)`, integer labels `(n)`.
    MseOneHot,
    /// `mean (f - t)^2` over each example's outputs; float targets shaped like the outputs.
    Mse,
    /// Any per-example loss; it must depend on example `i`'s output and target only.
    PerExample(LossFn),
}

impl fmt::Debug for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Loss::CrossEntropy => "CrossEntropy",
            Loss::MseOneHot => "MseOneHot",
            Loss::Mse => "Mse",
            Loss::PerExample(_) => "PerExample(..)",
        })
    }
}

impl std::str::FromStr for Loss {
    type Err = GradKernelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ce" | "cross-entropy" | "cross_entropy" => Ok(Loss::CrossEntropy),
            "mse-onehot" | "mse_onehot" => Ok(Loss::MseOneHot),
            "mse" => Ok(Loss::Mse),
            _ => Err(GradKernelError::Unsupported(format!(
                "unknown loss `{s}` (expected cross-entropy, mse-onehot or mse)"
            ))),
        }
    }
}

impl Loss {
    fn labels(&self) -> bool {
        matches!(self, Loss::CrossEntropy | Loss::MseOneHot)
    }

    /// `(n)` per-example losses.
    pub fn per_example(&self, out: &Tensor, t: &Tensor) -> Result<Tensor> {
        let n = out.dim(0)?;
        let l = match self {
            Loss::CrossEntropy => stiff_models::loss::cross_entropy_per_example(out, t)?,
            Loss::MseOneHot => {
                let c = out.dim(1)?;
                let oh = candle_nn::encoding::one_hot(t.clone(), c, 1f32, 0f32)?.to_dtype(out.dtype())?;
                (out - oh)?.sqr()?.mean(1)?
            }
            Loss::Mse => (out - t.to_dtype(out.dtype())?)?.sqr()?.reshape((n, ()))?.mean(1)?,
            Loss::PerExample(f) => f(out, t)?,
        };
        if l.dims() != [n] {
            return Err(GradKernelError::Shape {
                what: "per-example loss",
                expected: format!("({n})"),
                got: l.dims().to_vec(),
            });
        }
        Ok(l)
    }

    /// Validates targets against `n` examples and outputs `(n, out...)`; moves them to `dev`.
    fn targets(&self, t: &Tensor, n: usize, out_dims: &[usize], dev: &Device, what: &'static str) -> Result<Tensor> {
        if t.dim(0).ok() != Some(n) {
            return Err(GradKernelError::Shape {
                what,
                expected: format!("targets with {n} rows"),
                got: t.dims().to_vec(),
            });
        }
        if self.labels() {
            if out_dims.len() != 2 {
                return Err(GradKernelError::Shape {
                    what: "network outputs",
                    expected: "(N, classes)".into(),
                    got: out_dims.to_vec(),
                });
            }
            if t.dims() != [n] || !matches!(t.dtype(), DType::U8 | DType::U32 | DType::I64) {
                return Err(GradKernelError::Unsupported(format!(
                    "{what}: {self:?} needs integer labels (n) (u8, u32 or i64), got {:?} {:?}",
                    t.dtype(),
                    t.dims()
                )));
            }
            let classes = out_dims[1];
            let host = t.to_dtype(DType::I64)?.to_device(&Device::Cpu)?.to_vec1::<i64>()?;
            if let Some((index, &label)) = host.iter().enumerate().find(|(_, &l)| l < 0 || l as usize >= classes) {
                return Err(GradKernelError::LabelOutOfRange { what, index, label, classes });
            }
            let v: Vec<u32> = host.iter().map(|&l| l as u32).collect();
            return Ok(Tensor::from_vec(v, n, dev)?);
        }
        if let Loss::Mse = self {
            if t.dims() != out_dims || !t.dtype().is_float() {
                return Err(GradKernelError::Shape {
                    what,
                    expected: format!("float targets shaped like the outputs {out_dims:?}"),
                    got: t.dims().to_vec(),
                });
            }
        }
        Ok(t.to_device(dev)?)
    }
}

/// How a unit of parameters reaches the Gram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteForm {
    /// Dense layer on `(N, in)` inputs: `(D D^T) o (A A^T + 1)`.
    DenseFactorised,
    /// Conv (or a linear layer on `(N, positions, in)`): pairwise "ghost" form over positions.
    Ghost,
    /// Per-example gradients of the layer, materialised per chunk.
    Materialised,
    /// Parameters used by several tapped calls: per-call gradients materialised and summed.
    Shared,
    /// Not covered by a tapped layer: one autograd backward per example (exact, slow).
    Fallback,
}

/// One unit of the result: a name (the tapped layer's, or `fallback`), its parameters, its route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// The tapped layer's name, or `fallback`.
    pub name: String,
    /// Names of the parameters this unit covers.
    pub params: Vec<String>,
    /// How its Gram contribution was computed.
    pub form: RouteForm,
}

/// Output of [`gram_net`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NetGramResult {
    /// `(N, N)` on the CPU (f64 when the network is f64 or `accumulate_f64`), exactly symmetric.
    pub k: Tensor,
    /// `(unit name, (N, N))` per unit, summing to `k` (empty unless `per_layer`).
    pub per_unit: Vec<(String, Tensor)>,
    /// `sqrt(K[i,i])`.
    pub norms: Vec<f64>,
    /// The loss of each example, length N.
    pub loss_per_example: Vec<f64>,
    /// Route of every unit, in the same order as `per_unit`.
    pub routes: Vec<Route>,
    /// Wall time of the whole call.
    pub seconds: f64,
    /// Examples per chunk.
    pub chunk: usize,
}

/// The effective parameter list and the unit structure found on a probe pass.
struct Plan {
    params: Vec<(String, Var)>,
    /// Record names of the probe pass, to check later passes record the same layers.
    record_names: Vec<String>,
    units: Vec<Unit>,
    acc: DType,
    chunk: usize,
    cache: bool,
    ghost_rows: usize,
}

struct Unit {
    name: String,
    /// Record indices.
    records: Vec<usize>,
    /// Parameter indices (into `Plan::params`), in parameter order.
    vars: Vec<usize>,
    form: RouteForm,
}

enum Factor {
    Dense { a: Tensor, d: Tensor, bias: f64 },
    Ghost { u: Tensor, d: Tensor, s: usize, bias: f64 },
    Mat { g: Tensor },
}

fn sum_all(ts: Vec<Tensor>) -> Result<Tensor> {
    let mut it = ts.into_iter();
    let mut acc = it.next().expect("at least one term");
    for t in it {
        acc = (acc + t)?;
    }
    Ok(acc)
}

impl Factor {
    fn len(&self) -> Result<usize> {
        Ok(match self {
            Factor::Dense { a, .. } => a.dim(0)?,
            Factor::Ghost { u, s, .. } => u.dim(0)? / s,
            Factor::Mat { g } => g.dim(0)?,
        })
    }

    fn block(&self, other: &Factor, ghost_rows: usize) -> Result<Tensor> {
        Ok(match (self, other) {
            (Factor::Dense { a, d, bias }, Factor::Dense { a: a2, d: d2, .. }) => {
                (d.matmul(&d2.t()?)? * (a.matmul(&a2.t()?)? + *bias)?)?
            }
            (Factor::Mat { g }, Factor::Mat { g: g2 }) => g.matmul(&g2.t()?)?,
            (Factor::Ghost { u, d, s, bias }, Factor::Ghost { u: u2, d: d2, .. }) => {
                let (na, nb) = (self.len()?, other.len()?);
                let step = ghost_rows.max(1);
                let mut rows = Vec::new();
                for i0 in (0..na).step_by(step) {
                    let ni = step.min(na - i0);
                    let (ui, di) = (u.narrow(0, i0 * s, ni * s)?, d.narrow(0, i0 * s, ni * s)?);
                    let mut cols = Vec::new();
                    for j0 in (0..nb).step_by(step) {
                        let nj = step.min(nb - j0);
                        let (uj, dj) = (u2.narrow(0, j0 * s, nj * s)?, d2.narrow(0, j0 * s, nj * s)?);
                        let prod = (di.matmul(&dj.t()?)? * (ui.matmul(&uj.t()?)? + *bias)?)?;
                        cols.push(prod.reshape((ni, *s, nj, *s))?.sum(3)?.sum(1)?);
                    }
                    rows.push(Tensor::cat(&cols, 1)?);
                }
                Tensor::cat(&rows, 0)?
            }
            _ => unreachable!("both chunks of a unit use the same form"),
        })
    }

    fn sq_norms(&self) -> Result<Tensor> {
        Ok(match self {
            Factor::Dense { a, d, bias } => (d.sqr()?.sum(1)? * (a.sqr()?.sum(1)? + *bias)?)?,
            Factor::Mat { g } => g.sqr()?.sum(1)?,
            Factor::Ghost { u, d, s, bias } => {
                let n = self.len()?;
                let u3 = u.reshape((n, *s, u.dim(1)?))?;
                let d3 = d.reshape((n, *s, d.dim(1)?))?;
                let uu = (u3.matmul(&u3.transpose(1, 2)?)? + *bias)?;
                (uu * d3.matmul(&d3.transpose(1, 2)?)?)?.sum(2)?.sum(1)?
            }
        })
    }
}

/// One recorded forward + summed backward over a chunk.
struct Pass {
    tape: Tape,
    deltas: Vec<Tensor>,
    loss: Vec<f64>,
    /// The backward's gradients (kept for the probe pass only, see [`untapped_uses`]).
    grads: Option<candle::backprop::GradStore>,
}

fn run_pass<N: Network + ?Sized>(net: &N, x: &Tensor, t: &Tensor, loss: &Loss) -> Result<Pass> {
    run_pass_keep(net, x, t, loss, false)
}

fn run_pass_keep<N: Network + ?Sized>(net: &N, x: &Tensor, t: &Tensor, loss: &Loss, keep: bool) -> Result<Pass> {
    let rec = Recording::start();
    let out = net.forward(x)?;
    let tape = rec.finish();
    let l = loss.per_example(&out, t)?;
    let grads = l.sum_all()?.backward()?;
    let deltas = tape
        .records
        .iter()
        .map(|r| match grads.get(r.probe.as_tensor()) {
            Some(g) => Ok(g.detach()),
            // A tapped output the loss does not depend on: its deltas are zero.
            None => Ok(r.probe.as_tensor().zeros_like()?),
        })
        .collect::<Result<Vec<_>>>()?;
    let loss_v = l.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.to_vec1::<f64>()?;
    Ok(Pass { tape, deltas, loss: loss_v, grads: keep.then_some(grads) })
}

/// Per-parameter per-example gradients of one record: `(param slot, (n, numel))`.
fn record_grads(r: &Record, delta: &Tensor, acc: DType) -> Result<Vec<(Option<TensorId>, Tensor)>> {
    let a = r.input.to_dtype(acc)?;
    let d = delta.to_dtype(acc)?;
    let n = a.dim(0)?;
    let (gw, gb) = match &r.kind {
        RecKind::Linear => {
            let (i, o) = (a.dim(a.rank() - 1)?, d.dim(d.rank() - 1)?);
            let a3 = a.reshape((n, (), i))?;
            let d3 = d.reshape((n, (), o))?;
            let gw = d3.transpose(1, 2)?.contiguous()?.matmul(&a3)?.reshape((n, o * i))?;
            (gw, d3.sum(1)?)
        }
        RecKind::Conv { win } => {
            let u = unfold(&a, win)?; // (n, F, S)
            let c = d.dim(1)?;
            let d3 = d.reshape((n, c, ()))?;
            // A transposed (column-major) right operand is fine for the batched gemm: no copy.
            let gw = d3.matmul(&u.transpose(1, 2)?)?.reshape((n, ()))?;
            (gw, d3.sum(2)?)
        }
        RecKind::Norm { layout } => {
            let prod = (&d * &a)?;
            match layout {
                NormLayout::Channel => {
                    let c = a.dim(1)?;
                    (prod.reshape((n, c, ()))?.sum(2)?, d.reshape((n, c, ()))?.sum(2)?)
                }
                NormLayout::Trailing(k) => {
                    let p: usize = a.dims()[a.rank() - k..].iter().product();
                    (prod.reshape((n, (), p))?.sum(1)?, d.reshape((n, (), p))?.sum(1)?)
                }
            }
        }
    };
    let mut v = Vec::new();
    if let Some(w) = &r.weight {
        v.push((Some(w.id()), gw));
    }
    if let Some(b) = &r.bias {
        v.push((Some(b.id()), gb));
    }
    Ok(v)
}

/// Multiply-adds per example pair (ghost) vs per example (materialised) for a positional record.
fn choose_positional(r: &Record, out_dims: &[usize], n: usize) -> RouteForm {
    let (f, c, s) = match &r.kind {
        RecKind::Conv { win } => {
            let cin = r.input.dim(1).unwrap_or(1);
            (cin * win.kernel.0 * win.kernel.1, out_dims[1], out_dims[2] * out_dims[3])
        }
        _ => {
            let i = *r.input.dims().last().unwrap_or(&1);
            let o = *out_dims.last().unwrap_or(&1);
            (i, o, out_dims[1..out_dims.len() - 1].iter().product())
        }
    };
    let ghost = (s * s * (f + c + 1)) as f64;
    let mat = (c * (f + 1)) as f64 + 2.0 * (s * c * f) as f64 / n.max(1) as f64;
    if ghost < mat {
        RouteForm::Ghost
    } else {
        RouteForm::Materialised
    }
}

/// Finds units on a 1-example probe pass and sizes the chunks from the memory budget.
#[allow(clippy::too_many_arguments)]
fn plan<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    t: &Tensor,
    loss: &Loss,
    opts: &GramOptions,
    n_total: usize,
    n_max: usize,
    out_elems: usize,
) -> Result<Plan> {
    let probe = run_pass_keep(net, &x.narrow(0, 0, 1)?, &t.narrow(0, 0, 1)?, loss, true)?;
    let buffers: HashSet<TensorId> = probe.tape.buffers.iter().copied().collect();
    let params: Vec<(String, Var)> = net
        .parameters()
        .into_iter()
        .filter(|(k, v)| !buffers.contains(&v.as_tensor().id()) && !is_buffer_name(k))
        .collect();
    if params.is_empty() {
        return Err(GradKernelError::Unsupported("the network has no trainable parameters".into()));
    }
    let dtype = params[0].1.dtype();
    let acc = if opts.accumulate_f64 || dtype == DType::F64 { DType::F64 } else { dtype };
    let index: HashMap<TensorId, usize> =
        params.iter().enumerate().map(|(i, (_, v))| (v.as_tensor().id(), i)).collect();
    let records = &probe.tape.records;
    // Union-find over records sharing a parameter.
    let mut parent: Vec<usize> = (0..records.len()).collect();
    fn root(p: &mut [usize], i: usize) -> usize {
        let mut i = i;
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let mut owner: HashMap<usize, usize> = HashMap::new();
    let mut partial = vec![false; records.len()];
    for (ri, r) in records.iter().enumerate() {
        for t in [&r.weight, &r.bias].into_iter().flatten() {
            match index.get(&t.id()) {
                Some(&pi) => {
                    if let Some(&o) = owner.get(&pi) {
                        let (a, b) = (root(&mut parent, o), root(&mut parent, ri));
                        parent[a] = b;
                    } else {
                        owner.insert(pi, ri);
                    }
                }
                None => partial[ri] = true,
            }
        }
    }
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for ri in 0..records.len() {
        let g = root(&mut parent, ri);
        match groups.iter_mut().find(|(k, _)| *k == g) {
            Some((_, v)) => v.push(ri),
            None => groups.push((g, vec![ri])),
        }
    }
    let mut units = Vec::new();
    let mut covered = vec![false; params.len()];
    for (_, recs) in groups {
        let mut vars: Vec<usize> = recs
            .iter()
            .flat_map(|&ri| [&records[ri].weight, &records[ri].bias])
            .flatten()
            .filter_map(|t| index.get(&t.id()).copied())
            .collect();
        vars.sort_unstable();
        vars.dedup();
        if vars.is_empty() {
            continue; // a tapped layer with frozen tensors only
        }
        for &v in &vars {
            covered[v] = true;
        }
        let r = &records[recs[0]];
        let out_dims = probe.deltas[recs[0]].dims().to_vec();
        let form = if recs.len() > 1 || partial[recs[0]] {
            RouteForm::Shared
        } else if opts.method == Method::Materialised {
            RouteForm::Materialised
        } else {
            match &r.kind {
                RecKind::Linear if r.input.rank() == 2 => RouteForm::DenseFactorised,
                RecKind::Linear | RecKind::Conv { .. } => {
                    if opts.method == Method::Factorised {
                        RouteForm::Ghost
                    } else {
                        choose_positional(r, &out_dims, n_total)
                    }
                }
                RecKind::Norm { .. } => RouteForm::Materialised,
            }
        };
        let name = recs.iter().map(|&ri| records[ri].name.as_str()).collect::<Vec<_>>().join("+");
        units.push(Unit { name, records: recs, vars, form });
    }
    // A tapped parameter also used outside its tapped calls (a plain op elsewhere) would make the
    // tapped route miss that path: on the probe example, the tapped per-example gradient must
    // equal autograd's gradient of the loss. Units that differ go to the exact fallback.
    let moved = untapped_uses(&probe, &units, &params, records)?;
    for &u in moved.iter().rev() {
        for &v in &units[u].vars {
            covered[v] = false;
        }
        units.remove(u);
    }
    let fallback: Vec<usize> = (0..params.len()).filter(|&i| !covered[i]).collect();
    if !fallback.is_empty() {
        units.push(Unit { name: "fallback".into(), records: Vec::new(), vars: fallback, form: RouteForm::Fallback });
    }
    // Memory: bytes per example of the pass and of each unit's factor.
    let ae = acc.size_in_bytes();
    let pass_pe: usize =
        records.iter().zip(&probe.deltas).map(|(r, d)| (r.input.elem_count() + d.elem_count()) * 4 * ae).sum::<usize>()
            + x.narrow(0, 0, 1)?.elem_count() * ae * 2;
    let numel = |v: &[usize]| v.iter().map(|&i| params[i].1.elem_count()).sum::<usize>();
    let mut factor_pe = 0usize;
    let mut max_s = 1usize;
    for u in &units {
        factor_pe += match u.form {
            RouteForm::DenseFactorised => {
                (records[u.records[0]].input.elem_count() + probe.deltas[u.records[0]].elem_count()) * ae
            }
            RouteForm::Ghost => {
                let r = &records[u.records[0]];
                let d = &probe.deltas[u.records[0]];
                let (f, s) = match &r.kind {
                    RecKind::Conv { win } => (r.input.dim(1)? * win.kernel.0 * win.kernel.1, d.dim(2)? * d.dim(3)?),
                    _ => (*r.input.dims().last().expect("rank"), d.elem_count() / d.dim(d.rank() - 1)?),
                };
                max_s = max_s.max(s);
                (f * s + d.elem_count()) * ae * 2
            }
            _ => numel(&u.vars) * ae,
        };
    }
    let budget = opts.memory_budget_bytes;
    let outputs = if opts.per_layer { out_elems * ae * units.len() } else { 0 };
    let Chunking { chunk: c, cache, avail } =
        size_chunks(budget, outputs, "the per-unit Gram matrices", n_total, n_max, pass_pe, factor_pe, ae)?;
    let ghost_rows = ((avail as f64 / 4.0 / (3 * max_s * max_s * ae) as f64).sqrt() as usize).clamp(1, c);
    let record_names = records.iter().map(|r| r.name.clone()).collect();
    Ok(Plan { params, record_names, units, acc, chunk: c, cache, ghost_rows })
}

/// Indices (ascending) of the units whose per-example gradient on the one-example probe pass
/// differs from autograd's gradient of that example's loss for one of their parameters, i.e.
/// whose parameters reach the loss through an op the tape did not record. A use that contributes
/// nothing on the probe example (a dead ReLU, say) is not seen.
fn untapped_uses(probe: &Pass, units: &[Unit], params: &[(String, Var)], records: &[Record]) -> Result<Vec<usize>> {
    let Some(grads) = &probe.grads else { return Ok(Vec::new()) };
    let mut moved = Vec::new();
    for (ui, u) in units.iter().enumerate() {
        let mut by_var: HashMap<TensorId, Tensor> = HashMap::new();
        for &ri in &u.records {
            for (id, g) in record_grads(&records[ri], &probe.deltas[ri], DType::F64)? {
                if let Some(id) = id {
                    let g = g.flatten_all()?;
                    let sum = match by_var.remove(&id) {
                        Some(prev) => (prev + g)?,
                        None => g,
                    };
                    by_var.insert(id, sum);
                }
            }
        }
        for &v in &u.vars {
            let var = params[v].1.as_tensor();
            let Some(tapped) = by_var.get(&var.id()) else { continue };
            let batch = match grads.get(var) {
                Some(g) => g.to_dtype(DType::F64)?.flatten_all()?,
                None => tapped.zeros_like()?,
            };
            let scale = batch.abs()?.max(0)?.to_scalar::<f64>()?.max(tapped.abs()?.max(0)?.to_scalar::<f64>()?);
            let diff = (tapped - &batch)?.abs()?.max(0)?.to_scalar::<f64>()?;
            // Rounding of one example's products: far below any real missed path.
            let tol = if var.dtype() == DType::F64 { 1e-9 } else { 1e-3 };
            if diff > tol * scale {
                moved.push(ui);
                break;
            }
        }
    }
    Ok(moved)
}

/// The fallback's per-example gradients of `vars`: one backward per example, `(n, P_u)`.
fn fallback_grads<N: Network + ?Sized>(
    net: &N,
    plan: &Plan,
    vars: &[usize],
    x: &Tensor,
    t: &Tensor,
    loss: &Loss,
) -> Result<Tensor> {
    let n = x.dim(0)?;
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let out = tape::suspended(|| net.forward(&x.narrow(0, i, 1)?))?;
        let l = loss.per_example(&out, &t.narrow(0, i, 1)?)?.sum_all()?;
        let grads = l.backward()?;
        let mut parts = Vec::with_capacity(vars.len());
        for &v in vars {
            let var = &plan.params[v].1;
            let g = match grads.get(var.as_tensor()) {
                Some(g) => g.clone(),
                None => var.as_tensor().zeros_like()?,
            };
            parts.push(g.to_dtype(plan.acc)?.flatten_all()?);
        }
        rows.push(Tensor::cat(&parts, 0)?);
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// Per-example gradients of every parameter of `unit` from a pass, summed over the unit's calls:
/// `(n, P_unit)`, columns in the unit's parameter order.
fn unit_mat(plan: &Plan, unit: &Unit, pass: &Pass) -> Result<Tensor> {
    let mut by_var: HashMap<TensorId, Vec<Tensor>> = HashMap::new();
    for &ri in &unit.records {
        for (id, g) in record_grads(&pass.tape.records[ri], &pass.deltas[ri], plan.acc)? {
            if let Some(id) = id {
                by_var.entry(id).or_default().push(g);
            }
        }
    }
    let parts = unit
        .vars
        .iter()
        .map(|&v| {
            let id = plan.params[v].1.as_tensor().id();
            match by_var.remove(&id) {
                Some(gs) => sum_all(gs),
                None => Err(GradKernelError::MissingGradient(plan.params[v].0.clone())),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 1)?)
}

/// The factors of every unit for examples `x: (n, ...)`, plus their losses.
fn chunk_factors<N: Network + ?Sized>(
    net: &N,
    plan: &Plan,
    x: &Tensor,
    t: &Tensor,
    loss: &Loss,
) -> Result<(Vec<Factor>, Vec<f64>)> {
    let pass = run_pass(net, x, t, loss)?;
    let names: Vec<&str> = pass.tape.records.iter().map(|r| r.name.as_str()).collect();
    if names != plan.record_names.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(GradKernelError::Unsupported(format!(
            "the network recorded different tapped layers on different chunks ({:?} vs {:?}); \
             the forward pass must not depend on the batch",
            plan.record_names, names
        )));
    }
    let mut fs = Vec::with_capacity(plan.units.len());
    for u in &plan.units {
        fs.push(match u.form {
            RouteForm::DenseFactorised => {
                let ri = u.records[0];
                let r = &pass.tape.records[ri];
                let bias = if r.bias.is_some() { 1.0 } else { 0.0 };
                Factor::Dense { a: r.input.to_dtype(plan.acc)?, d: pass.deltas[ri].to_dtype(plan.acc)?, bias }
            }
            RouteForm::Ghost => {
                let ri = u.records[0];
                let r = &pass.tape.records[ri];
                let bias = if r.bias.is_some() { 1.0 } else { 0.0 };
                let a = r.input.to_dtype(plan.acc)?;
                let d = pass.deltas[ri].to_dtype(plan.acc)?;
                let n = a.dim(0)?;
                let (u, d, s) = match &r.kind {
                    RecKind::Conv { win } => {
                        let uf = unfold(&a, win)?; // (n, F, S)
                        let (f, s) = (uf.dim(1)?, uf.dim(2)?);
                        let c = d.dim(1)?;
                        let u = uf.transpose(1, 2)?.contiguous()?.reshape((n * s, f))?;
                        let d = d.reshape((n, c, s))?.transpose(1, 2)?.contiguous()?.reshape((n * s, c))?;
                        (u, d, s)
                    }
                    _ => {
                        let (i, o) = (a.dim(a.rank() - 1)?, d.dim(d.rank() - 1)?);
                        let s = a.elem_count() / (n * i);
                        (a.reshape((n * s, i))?, d.reshape((n * s, o))?, s)
                    }
                };
                Factor::Ghost { u, d, s, bias }
            }
            RouteForm::Materialised | RouteForm::Shared => Factor::Mat { g: unit_mat(plan, u, &pass)? },
            RouteForm::Fallback => Factor::Mat { g: fallback_grads(net, plan, &u.vars, x, t, loss)? },
        });
    }
    Ok((fs, pass.loss))
}

fn chunks(n: usize, c: usize) -> Vec<(usize, usize)> {
    (0..n).step_by(c).map(|s| (s, c.min(n - s))).collect()
}

fn block_sum(fa: &[Factor], fb: &[Factor], plan: &Plan, keep: bool) -> Result<(Tensor, Vec<Tensor>)> {
    let mut parts = Vec::with_capacity(fa.len());
    for (a, b) in fa.iter().zip(fb) {
        parts.push(a.block(b, plan.ghost_rows)?);
    }
    let total = sum_all(parts.clone())?;
    Ok((total, if keep { parts } else { Vec::new() }))
}

/// How a general-engine route reads as a [`LayerForm`]. Presets never have shared or uncovered
/// parameters; both are per-example gradients materialised, so they read as `Materialised`.
pub(crate) fn layer_form(f: RouteForm) -> crate::LayerForm {
    use crate::LayerForm;
    match f {
        RouteForm::DenseFactorised => LayerForm::DenseFactorised,
        RouteForm::Ghost => LayerForm::ConvGhost,
        RouteForm::Materialised | RouteForm::Shared | RouteForm::Fallback => LayerForm::Materialised,
    }
}

fn routes(plan: &Plan) -> Vec<Route> {
    plan.units
        .iter()
        .map(|u| Route {
            name: u.name.clone(),
            params: u.vars.iter().map(|&v| plan.params[v].0.clone()).collect(),
            form: u.form,
        })
        .collect()
}

struct Prepared {
    x: Tensor,
    t: Tensor,
    n: usize,
}

fn prepare<N: Network + ?Sized>(net: &N, x: &Tensor, t: &Tensor, loss: &Loss, what: &'static str) -> Result<Prepared> {
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
    Ok(Prepared { x: xp, t: tt, n })
}

/// The exact Gram `K[i,j] = g_i . g_j` of per-example loss gradients of any [`Network`] over all
/// its parameters. x: `(N, ...)`; targets: labels `(N)` or float `(N, ...)` per `loss`.
/// Options as for [`crate::gram`] (`method` picks the forms; `delta_route` and `cpu_fast_path`
/// do not apply).
pub fn gram_net<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    targets: &Tensor,
    loss: &Loss,
    opts: &GramOptions,
) -> Result<NetGramResult> {
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
            let (total, parts) = block_sum(fa, fb, &plan, opts.per_layer)?;
            let diag = bi == bj;
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
    Ok(NetGramResult {
        k: k.into_tensor(n, n)?,
        per_unit,
        norms,
        loss_per_example: lossv,
        routes: routes(&plan),
        seconds: start.elapsed().as_secs_f64(),
        chunk: plan.chunk,
    })
}

/// The `(N, M)` Gram between two example sets of any [`Network`].
pub fn cross_gram_net<N: Network + ?Sized>(
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
            let (total, parts) = block_sum(&fa, fb, &plan, opts.per_layer)?;
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
        forms: routes(&plan).into_iter().map(|r| (r.name, layer_form(r.form))).collect(),
        chunk: plan.chunk,
    })
}

/// Per-example gradients `(N, P)` of any [`Network`] through the same routes as [`gram_net`],
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
        for (_, v) in &params {
            let g = match grads.get(v.as_tensor()) {
                Some(g) => g.clone(),
                None => v.as_tensor().zeros_like()?,
            };
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
