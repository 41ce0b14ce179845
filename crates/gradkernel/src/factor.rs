//! Each unit's factors for a chunk of examples (layer inputs and deltas, or materialised
//! per-example gradients) and the Gram blocks they give between two chunks.

use std::collections::HashMap;

use candle::{Tensor, TensorId};
use stiff_models::ops::unfold;

use crate::error::{GradKernelError, Result};
use crate::general_cpu::{gram_block_cpu, sum_blocks_cpu, unit_mat_cpu};
use crate::loss::Loss;
use crate::network::Network;
use crate::pass::{record_grads, run_pass, Pass};
use crate::plan::{Plan, Unit};
use crate::routes::LayerForm;
use crate::tape::{self, RecKind};

/// A unit's factors for one chunk.
pub(crate) enum Factor {
    Dense { a: Tensor, d: Tensor, bias: f64 },
    Ghost { u: Tensor, d: Tensor, s: usize, bias: f64 },
    Mat { g: Tensor },
}

pub(crate) fn sum_all(ts: Vec<Tensor>) -> Result<Tensor> {
    let mut it = ts.into_iter();
    let mut acc = it.next().expect("at least one term");
    for t in it {
        acc = (acc + t)?;
    }
    Ok(acc)
}

impl Factor {
    pub(crate) fn len(&self) -> Result<usize> {
        Ok(match self {
            Factor::Dense { a, .. } => a.dim(0)?,
            Factor::Ghost { u, s, .. } => u.dim(0)? / s,
            Factor::Mat { g } => g.dim(0)?,
        })
    }

    pub(crate) fn block(&self, other: &Factor, ghost_rows: usize) -> Result<Tensor> {
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

    pub(crate) fn sq_norms(&self) -> Result<Tensor> {
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
/// The fallback's per-example gradients of `vars`: one backward per example, `(n, P_u)`.
pub(crate) fn fallback_grads<N: Network + ?Sized>(
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
            // A missing gradient is an error, never a zero (the planning pass names the cause).
            let g =
                grads.get(var.as_tensor()).ok_or_else(|| GradKernelError::MissingGradient(plan.params[v].0.clone()))?;
            parts.push(g.to_dtype(plan.acc)?.flatten_all()?);
        }
        rows.push(Tensor::cat(&parts, 0)?);
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// Per-example gradients of every parameter of `unit` from a pass, summed over the unit's calls:
/// `(n, P_unit)`, columns in the unit's parameter order.
pub(crate) fn unit_mat(plan: &Plan, unit: &Unit, pass: &Pass) -> Result<Tensor> {
    if let Some(g) = unit_mat_cpu(plan, unit, pass)? {
        return Ok(g);
    }
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
pub(crate) fn chunk_factors<N: Network + ?Sized>(
    net: &N,
    plan: &Plan,
    x: &Tensor,
    t: &Tensor,
    loss: &Loss,
) -> Result<(Vec<Factor>, Vec<f64>)> {
    let pass = run_pass(net, x, t, loss, plan.cpu)?;
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
            LayerForm::DenseFactorised => {
                let ri = u.records[0];
                let r = &pass.tape.records[ri];
                let bias = if r.bias.is_some() { 1.0 } else { 0.0 };
                Factor::Dense { a: r.input.to_dtype(plan.acc)?, d: pass.deltas[ri].to_dtype(plan.acc)?, bias }
            }
            LayerForm::Ghost => {
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
            // The CPU kernels' conv routes are never planned by the general engine.
            LayerForm::Materialised | LayerForm::Shared | LayerForm::ConvTiles | LayerForm::ConvPixelGhost => {
                Factor::Mat { g: unit_mat(plan, u, &pass)? }
            }
            LayerForm::Fallback => Factor::Mat { g: fallback_grads(net, plan, &u.vars, x, t, loss)? },
        });
    }
    Ok((fs, pass.loss))
}

pub(crate) fn chunks(n: usize, c: usize) -> Vec<(usize, usize)> {
    (0..n).step_by(c).map(|s| (s, c.min(n - s))).collect()
}

/// Every unit's Gram block between two chunks and their sum (and the blocks, with `keep`);
/// `diag`: `fa` and `fb` are the same chunk, whose block is read on and above the diagonal only.
pub(crate) fn block_sum(
    fa: &[Factor],
    fb: &[Factor],
    plan: &Plan,
    keep: bool,
    diag: bool,
) -> Result<(Tensor, Vec<Tensor>)> {
    if plan.cpu && !fa.is_empty() {
        let mut parts = Vec::with_capacity(fa.len());
        for (a, b) in fa.iter().zip(fb) {
            parts.push(match (a, b) {
                (Factor::Mat { g }, Factor::Mat { g: g2 }) => gram_block_cpu(g, g2, diag)?,
                _ => a.block(b, plan.ghost_rows)?,
            });
        }
        let total = sum_blocks_cpu(&parts)?;
        return Ok((total, if keep { parts } else { Vec::new() }));
    }
    let mut parts = Vec::with_capacity(fa.len());
    for (a, b) in fa.iter().zip(fb) {
        parts.push(a.block(b, plan.ghost_rows)?);
    }
    let total = sum_all(parts.clone())?;
    Ok((total, if keep { parts } else { Vec::new() }))
}
