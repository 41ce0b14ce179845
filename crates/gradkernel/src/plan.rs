//! The planning pass: one recorded forward/backward on the first example finds the units
//! (tapped layers, layers sharing parameters, the fallback), checks that every parameter gets a
//! gradient and that tapped gradients equal autograd's, picks each unit's route by cost and sizes
//! the chunks from the memory budget.

use std::collections::{HashMap, HashSet};

use candle::{DType, Tensor, TensorId, Var};

use crate::chunking::{size_chunks, Chunking};
use crate::error::{GradKernelError, Result};
use crate::hostslice::{compare, host_f64, max_abs};
use crate::loss::Loss;
use crate::network::{is_buffer_name, Network};
use crate::options::{GramOptions, Method};
use crate::pass::{record_grads, run_pass_keep, Pass};
use crate::routes::{LayerForm, Route};
use crate::tape::{RecKind, Record};

/// The effective parameter list and the unit structure found on a probe pass.
pub(crate) struct Plan {
    pub params: Vec<(String, Var)>,
    /// Record names of the probe pass, to check later passes record the same layers.
    pub record_names: Vec<String>,
    pub units: Vec<Unit>,
    pub acc: DType,
    pub chunk: usize,
    pub cache: bool,
    pub ghost_rows: usize,
    /// Whether the CPU fast paths ([`crate::general_cpu`]) run: CPU tensors and `cpu_fast_path`.
    pub cpu: bool,
}

/// Parameters whose Gram contribution is computed together (one tapped layer, layers sharing
/// parameters, or the fallback).
pub(crate) struct Unit {
    pub name: String,
    /// Record indices.
    pub records: Vec<usize>,
    /// Parameter indices (into `Plan::params`), in parameter order.
    pub vars: Vec<usize>,
    pub form: LayerForm,
}

impl Plan {
    /// Each unit's name, parameter names and route, in unit order.
    pub(crate) fn routes(&self) -> Vec<Route> {
        self.units
            .iter()
            .map(|u| Route {
                name: u.name.clone(),
                params: u.vars.iter().map(|&v| self.params[v].0.clone()).collect(),
                form: u.form,
            })
            .collect()
    }
}
/// Multiply-adds per example pair (ghost) vs per example (materialised) for a positional record.
fn choose_positional(r: &Record, out_dims: &[usize], n: usize) -> LayerForm {
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
        LayerForm::Ghost
    } else {
        LayerForm::Materialised
    }
}

/// Elements one example holds for record `r` (output `d`) while its chunk's pass runs: what the
/// forward graph keeps, the backward's gradients and the kernels' temporaries, as if all were
/// alive at once. Counting input and output four times and the patches twice (as before) sized
/// cnn4's chunks for 0.94 MB per example where 1.63 MB were allocated (`tests/live_memory.rs`),
/// and `stiff gram --budget-mb 512` peaked far over its budget.
/// * The input twice: the value the graph keeps and its gradient.
/// * The output ten times: pre-activation, plus bias, the zero probe, plus probe and activation
///   (kept by the graph), at the backward's peak their gradients and the zeroed buffers candle's
///   `Add` backward sums into, and the delta the tape keeps.
/// * A conv's unfolded patches `(F, S)` four times: the forward convolution's im2col, autograd's
///   for the kernel gradient (the kernel is a `Var`), and the unfold with its transposed copy for
///   the per-example gemm; they dwarf the input when channels are many (cnn4's conv.1: 144 x 196).
fn pass_elems(r: &Record, d: &Tensor) -> usize {
    let unfold = match &r.kind {
        RecKind::Conv { win } => {
            let f = r.input.dim(1).unwrap_or(1) * win.kernel.0 * win.kernel.1;
            let s: usize = d.dims()[2..].iter().product();
            f * s
        }
        _ => 0,
    };
    2 * r.input.elem_count() + 10 * d.elem_count() + 4 * unfold
}

/// Finds units on a 1-example probe pass and sizes the chunks from the memory budget.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    t: &Tensor,
    loss: &Loss,
    opts: &GramOptions,
    n_total: usize,
    n_max: usize,
    out_elems: usize,
) -> Result<Plan> {
    let probe = run_pass_keep(net, &x.narrow(0, 0, 1)?, &t.narrow(0, 0, 1)?, loss)?;
    let buffers: HashSet<TensorId> = probe.tape.buffers.iter().copied().collect();
    let params: Vec<(String, Var)> = net
        .parameters()
        .into_iter()
        .filter(|(k, v)| !buffers.contains(&v.as_tensor().id()) && !is_buffer_name(k))
        .collect();
    if params.is_empty() {
        return Err(GradKernelError::Unsupported("the network has no trainable parameters".into()));
    }
    missing_gradients(&probe, &params)?;
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
            LayerForm::Shared
        } else if opts.method == Method::Materialised {
            LayerForm::Materialised
        } else {
            match &r.kind {
                RecKind::Linear | RecKind::LinearT if r.input.rank() == 2 => LayerForm::DenseFactorised,
                RecKind::Linear | RecKind::LinearT | RecKind::Conv { .. } => {
                    if opts.method == Method::Factorised {
                        LayerForm::Ghost
                    } else {
                        choose_positional(r, &out_dims, n_total)
                    }
                }
                RecKind::Norm { .. } | RecKind::Offset { .. } => LayerForm::Materialised,
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
        units.push(Unit { name: "fallback".into(), records: Vec::new(), vars: fallback, form: LayerForm::Fallback });
    }
    // Memory: bytes per example of the pass and of each unit's factor.
    let ae = acc.size_in_bytes();
    let pass_pe: usize = records.iter().zip(&probe.deltas).map(|(r, d)| pass_elems(r, d) * ae).sum::<usize>()
        + x.narrow(0, 0, 1)?.elem_count() * ae * 2;
    let numel = |v: &[usize]| v.iter().map(|&i| params[i].1.elem_count()).sum::<usize>();
    let mut factor_pe = 0usize;
    let mut max_s = 1usize;
    for u in &units {
        factor_pe += match u.form {
            LayerForm::DenseFactorised => {
                (records[u.records[0]].input.elem_count() + probe.deltas[u.records[0]].elem_count()) * ae
            }
            LayerForm::Ghost => {
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
    let cpu = opts.cpu_fast_path && x.device().is_cpu();
    Ok(Plan { params, record_names, units, acc, chunk: c, cache, ghost_rows, cpu })
}

/// Indices (ascending) of the units whose per-example gradient on the one-example probe pass
/// differs from autograd's gradient of that example's loss for one of their parameters, i.e.
/// whose parameters reach the loss through an op the tape did not record. A use that contributes
/// nothing on the probe example (a dead ReLU, say) is not seen. Differences are measured against
/// the parameter's own gradient, floored at 1e-3 of the largest gradient entry of the whole
/// network: a parameter whose exact gradient vanishes (a key bias under softmax attention, which
/// cancels) would otherwise be compared with its own rounding noise.
fn untapped_uses(probe: &Pass, units: &[Unit], params: &[(String, Var)], records: &[Record]) -> Result<Vec<usize>> {
    let Some(grads) = &probe.grads else { return Ok(Vec::new()) };
    // Host loops, not tensor ops: on a large net (resnet18, 11M parameters) every `abs`/`max`/
    // `sub` over all gradients allocated and faulted in a fresh f64 copy of them.
    let mut global = 0f64;
    for (_, v) in params {
        if let Some(g) = grads.get(v.as_tensor()) {
            global = global.max(max_abs(g)?);
        }
    }
    let mut moved = Vec::new();
    for (ui, u) in units.iter().enumerate() {
        let mut by_var: HashMap<TensorId, Vec<f64>> = HashMap::new();
        for &ri in &u.records {
            for (id, g) in record_grads(&records[ri], &probe.deltas[ri], DType::F64)? {
                if let Some(id) = id {
                    let g = host_f64(&g)?;
                    match by_var.get_mut(&id) {
                        Some(prev) => prev.iter_mut().zip(&g).for_each(|(p, x)| *p += x),
                        None => {
                            by_var.insert(id, g);
                        }
                    }
                }
            }
        }
        for &v in &u.vars {
            let var = params[v].1.as_tensor();
            let Some(tapped) = by_var.get(&var.id()) else { continue };
            let batch = match grads.get(var) {
                Some(g) => g.clone(),
                None => var.zeros_like()?,
            };
            // Rounding of one example's products: far below any real missed path.
            let tol = if var.dtype() == DType::F64 { 1e-9 } else { 1e-3 };
            let differs = match compare(tapped, &batch)? {
                Some((mt, mb, diff)) => diff > tol * mt.max(mb).max(1e-3 * global),
                None => true,
            };
            if differs {
                moved.push(ui);
                break;
            }
        }
    }
    Ok(moved)
}

/// Fails when a parameter gets no gradient on the probe pass (`GradStore` has no entry: no
/// autograd path from it to the loss), naming the parameters and their tapped layers. Reading
/// such a gradient as 0 would silently drop the parameter's whole contribution from `K`.
fn missing_gradients(probe: &Pass, params: &[(String, Var)]) -> Result<()> {
    let Some(grads) = &probe.grads else { return Ok(()) };
    let missing: Vec<&(String, Var)> = params.iter().filter(|(_, v)| grads.get(v.as_tensor()).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let layer_of = |v: &Var| {
        let id = v.as_tensor().id();
        probe
            .tape
            .records
            .iter()
            .find(|r| [&r.weight, &r.bias].into_iter().flatten().any(|t| t.id() == id))
            .map_or("-".to_string(), |r| r.name.clone())
    };
    let mut layers: Vec<String> = missing.iter().map(|(_, v)| layer_of(v)).collect();
    layers.dedup();
    Err(GradKernelError::NoGradient {
        params: missing.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", "),
        layers: layers.join(", "),
    })
}
