//! Per-layer "factors" of a chunk of examples and the pairwise products that turn two chunks'
//! factors into a block of that layer's Gram matrix.

use candle::{DType, Tensor};
use serde::{Deserialize, Serialize};
use stiff_models::{Layer, LayerKind};

use crate::pass::{sum_positions, unfold, Pass};
use crate::Result;

/// How one layer's contribution to the Gram is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerForm {
    /// Dense: `(D_a D_b^T) o (A_a A_b^T + 1)`.
    DenseFactorised,
    /// Conv, pairwise "ghost" form: `sum_{s,t} (D_i^T D_j)[s,t] ((U_i^T U_j)[s,t] + 1)` with `U` the
    /// unfolded input patches and `D` the deltas, both `(positions, features)` per example.
    ConvGhost,
    /// Per-example gradients `G: (n, P_layer)` (weights then bias) and `G_a G_b^T`.
    Materialised,
    /// Conv, CPU kernel (`conv_fast`): per-example gradient rows rebuilt per upper tile pair from
    /// the stored layer inputs and deltas, `G_a G_b^T` (upper triangle only).
    ConvTiles,
}

/// One layer's factors for a chunk of `n` examples (all in the accumulation dtype).
pub(crate) enum Factor {
    /// a: `(n, in)`, d: `(n, out)`.
    Dense { a: Tensor, d: Tensor },
    /// u: `(n*S, C_in*k*k)`, d: `(n*S, C_out)`, rows grouped by example; `s` = S positions.
    Ghost { u: Tensor, d: Tensor, s: usize },
    /// g: `(n, P_layer)`.
    Mat { g: Tensor },
}

/// Cost in multiply-adds per example pair of each form for one layer, given `n` examples in all.
/// Returns the cheapest form (dense layers are always factorised unless `Materialised` is forced).
pub(crate) fn choose_form(layer: &Layer, n: usize) -> LayerForm {
    match layer.kind {
        LayerKind::Dense => LayerForm::DenseFactorised,
        LayerKind::Conv2d { kernel, .. } => {
            let (c_out, s) = (layer.out_dims[0], layer.out_dims[1] * layer.out_dims[2]);
            let f = layer.in_dims[0] * kernel * kernel;
            let ghost = (s * s * (f + c_out + 1)) as f64;
            // Building G costs S*C_out*F per example, paid about twice (row and column chunks).
            let mat = (c_out * (f + 1)) as f64 + 2.0 * (s * c_out * f) as f64 / n.max(1) as f64;
            if ghost < mat {
                LayerForm::ConvGhost
            } else {
                LayerForm::Materialised
            }
        }
    }
}

/// Bytes per example of a layer's factor in `form` (`elem` bytes per scalar), plus transient bytes.
pub(crate) fn factor_bytes(layer: &Layer, form: LayerForm, elem: usize) -> (usize, usize) {
    let in_n: usize = layer.in_dims.iter().product();
    let out_n: usize = layer.out_dims.iter().product();
    match (layer.kind, form) {
        (LayerKind::Dense, LayerForm::Materialised) => (layer.num_params() * elem, 0),
        (LayerKind::Dense, _) => ((in_n + out_n) * elem, 0),
        (LayerKind::Conv2d { kernel, .. }, f) => {
            let s = layer.out_dims[1] * layer.out_dims[2];
            let unfolded = layer.in_dims[0] * kernel * kernel * s * elem;
            match f {
                LayerForm::ConvGhost => (unfolded + out_n * elem, unfolded),
                _ => (layer.num_params() * elem, 2 * unfolded),
            }
        }
    }
}

/// Builds layer `l`'s factor from a pass, cast to `acc` dtype.
pub(crate) fn make_factor(layer: &Layer, form: LayerForm, pass: &Pass, l: usize, acc: DType) -> Result<Factor> {
    let a = pass.inputs[l].to_dtype(acc)?;
    let d = pass.deltas[l].to_dtype(acc)?;
    match (layer.kind, form) {
        (LayerKind::Dense, LayerForm::Materialised) => Ok(Factor::Mat { g: dense_grads(&a, &d)? }),
        (LayerKind::Dense, _) => Ok(Factor::Dense { a, d }),
        (LayerKind::Conv2d { kernel, padding, .. }, f) => {
            let n = a.dim(0)?;
            let c_out = d.dim(1)?;
            let u = unfold(&a, kernel, padding)?; // (n, F, S)
            let s = u.dim(2)?;
            let d = d.reshape((n, c_out, s))?;
            match f {
                LayerForm::ConvGhost => {
                    let f_dim = u.dim(1)?;
                    let u = u.transpose(1, 2)?.contiguous()?.reshape((n * s, f_dim))?;
                    let d = d.transpose(1, 2)?.contiguous()?.reshape((n * s, c_out))?;
                    Ok(Factor::Ghost { u, d, s })
                }
                _ => Ok(Factor::Mat { g: conv_grads(&u, &d)? }),
            }
        }
    }
}

/// Per-example dense gradients `(n, out*in + out)`: the outer product `d_i a_i^T` row-major, then `d_i`.
pub(crate) fn dense_grads(a: &Tensor, d: &Tensor) -> Result<Tensor> {
    let (n, out) = d.dims2()?;
    let inp = a.dim(1)?;
    let w = d.unsqueeze(2)?.matmul(&a.unsqueeze(1)?)?.reshape((n, out * inp))?;
    Ok(Tensor::cat(&[&w, d], 1)?)
}

/// Per-example conv gradients from patches u: `(n, F, S)` and deltas d: `(n, C_out, S)`:
/// `(n, C_out*F + C_out)`, the weight part `D_i U_i^T` row-major then the bias `sum_s D_i[:, s]`.
pub(crate) fn conv_grads(u: &Tensor, d: &Tensor) -> Result<Tensor> {
    let (n, c_out, _) = d.dims3()?;
    let f = u.dim(1)?;
    let w = d.matmul(&u.transpose(1, 2)?)?.reshape((n, c_out * f))?;
    Ok(Tensor::cat(&[&w, &sum_positions(d)?], 1)?)
}

/// The whole-layer per-example gradient of a pass (materialised): `(n, P_layer)`.
pub(crate) fn layer_grads(layer: &Layer, pass: &Pass, l: usize, acc: DType) -> Result<Tensor> {
    match make_factor(layer, LayerForm::Materialised, pass, l, acc)? {
        Factor::Mat { g } => Ok(g),
        _ => unreachable!("materialised form always yields Mat"),
    }
}

impl Factor {
    pub(crate) fn len(&self) -> Result<usize> {
        Ok(match self {
            Factor::Dense { a, .. } => a.dim(0)?,
            Factor::Ghost { u, s, .. } => u.dim(0)? / s,
            Factor::Mat { g } => g.dim(0)?,
        })
    }

    /// This layer's Gram block between two chunks: `(n_a, n_b)`. `ghost_rows` bounds the number of
    /// examples per side in one ghost product (its temporaries are `(rows*S)^2`).
    pub(crate) fn block(&self, other: &Factor, ghost_rows: usize) -> Result<Tensor> {
        match (self, other) {
            (Factor::Dense { a, d }, Factor::Dense { a: a2, d: d2 }) => {
                let dd = d.matmul(&d2.t()?)?;
                let aa = (a.matmul(&a2.t()?)? + 1.0)?;
                Ok((dd * aa)?)
            }
            (Factor::Mat { g }, Factor::Mat { g: g2 }) => Ok(g.matmul(&g2.t()?)?),
            (Factor::Ghost { u, d, s }, Factor::Ghost { u: u2, d: d2, .. }) => {
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
                        let dd = di.matmul(&dj.t()?)?;
                        let uu = (ui.matmul(&uj.t()?)? + 1.0)?;
                        let prod = (dd * uu)?.reshape((ni, *s, nj, *s))?;
                        cols.push(prod.sum(3)?.sum(1)?);
                    }
                    rows.push(Tensor::cat(&cols, 1)?);
                }
                Ok(Tensor::cat(&rows, 0)?)
            }
            _ => unreachable!("both chunks of a layer use the same form"),
        }
    }

    /// Squared per-example gradient norms of this layer: `(n)`.
    pub(crate) fn sq_norms(&self) -> Result<Tensor> {
        Ok(match self {
            Factor::Dense { a, d } => (d.sqr()?.sum(1)? * (a.sqr()?.sum(1)? + 1.0)?)?,
            Factor::Mat { g } => g.sqr()?.sum(1)?,
            Factor::Ghost { u, d, s } => {
                let n = self.len()?;
                let (f, c) = (u.dim(1)?, d.dim(1)?);
                let u3 = u.reshape((n, *s, f))?;
                let d3 = d.reshape((n, *s, c))?;
                let uu = (u3.matmul(&u3.transpose(1, 2)?)? + 1.0)?;
                let dd = d3.matmul(&d3.transpose(1, 2)?)?;
                (uu * dd)?.sum(2)?.sum(1)?
            }
        })
    }
}
