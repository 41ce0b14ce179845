//! A fast training step for fully-connected ReLU nets on CPU in f32.
//!
//! candle's autograd pays a fixed cost per tensor operation (allocation, graph bookkeeping,
//! dispatch) that dominates a batch-32 step of `fc6`. This module does the same step with
//! hand-derived forward and backward passes on preallocated contiguous buffers:
//!
//! * forward, layer `l`: `Z = A W^T` (one `gemm` on the untransposed `(out, in)` weights through
//!   strides), then bias and ReLU fused in one pass;
//! * loss: mean cross-entropy, `dZ_L = (softmax(Z_L) - onehot(y)) / B`;
//! * backward: `dA = dZ W` (skipped for the input layer), then `dZ = dA * [A > 0]`;
//!   the weight gradient `dZ^T A` is accumulated **into the weights** for SGD
//!   (`W = W - lr dZ^T A` as one gemm with `alpha = 1, beta = -lr`), or into a gradient buffer
//!   followed by the elementwise Adam update (same operation order as [`crate::AutogradStep`]).
//!
//! No allocation happens per step. Results are bit-identical for a given rayon thread count
//! (gemm splits the output, never the reduction, across threads). The weights live here during
//! training; [`FastMlp::write_to`] copies them into the model's `Var`s (the trainer does so before
//! every evaluation, snapshot and checkpoint).

use candle::{DType, Device, Tensor};
use stiff_gemm::Parallelism;
use stiff_models::{LayerKind, Model};

use crate::optim::adam_bias_corrections;
use crate::{OptimizerConfig, Result, TrainError};

/// Preallocated state of the fast MLP step.
#[derive(Debug)]
pub struct FastMlp {
    opt: OptimizerConfig,
    /// Layer widths `[d0, d1, ..., dL]` (input first, classes last).
    dims: Vec<usize>,
    batch: usize,
    /// Per layer: weights `(out, in)` row-major, biases `(out)`.
    w: Vec<Vec<f32>>,
    b: Vec<Vec<f32>>,
    /// Adam moments (empty for SGD) and gradient buffers (Adam only).
    mw: Vec<Vec<f32>>,
    vw: Vec<Vec<f32>>,
    mb: Vec<Vec<f32>>,
    vb: Vec<Vec<f32>>,
    gw: Vec<Vec<f32>>,
    gb: Vec<Vec<f32>>,
    /// `acts[0]`: the input batch `(B, d0)`; `acts[l + 1]`: output of layer `l` `(B, d_{l+1})`
    /// (post-ReLU for hidden layers, logits for the last).
    acts: Vec<Vec<f32>>,
    /// `deltas[l]`: `dL/dZ_l`, `(B, d_{l+1})`.
    deltas: Vec<Vec<f32>>,
    t: u64,
    par: Parallelism,
}

impl FastMlp {
    /// Whether the fast path can train `model` (dense layers only, ReLU on all but the last,
    /// f32 on CPU); the reason when not.
    pub fn check_supported(model: &Model) -> std::result::Result<(), String> {
        if !matches!(model.device(), Device::Cpu) {
            return Err(format!("device {:?} is not the CPU", model.device()));
        }
        if model.dtype() != DType::F32 {
            return Err(format!("dtype {:?} is not f32", model.dtype()));
        }
        let n = model.layers().len();
        for (i, l) in model.layers().iter().enumerate() {
            if l.kind != LayerKind::Dense {
                return Err(format!("layer `{}` is not dense", l.name));
            }
            if l.relu != (i + 1 < n) {
                return Err(format!("layer `{}` does not follow the ReLU-on-hidden-layers pattern", l.name));
            }
        }
        Ok(())
    }

    /// Copies `model`'s weights and allocates every buffer for mini-batches of `batch` examples.
    /// Threads: rayon's current pool size (`RAYON_NUM_THREADS`).
    pub fn new(model: &Model, opt: OptimizerConfig, batch: usize) -> Result<Self> {
        Self::check_supported(model).map_err(TrainError::FastPathUnsupported)?;
        opt.validate()?;
        if batch == 0 {
            return Err(TrainError::Config("fast MLP: batch size must be positive".into()));
        }
        let mut dims = vec![model.layers()[0].in_dims[0]];
        dims.extend(model.layers().iter().map(|l| l.out_dims[0]));
        let nl = dims.len() - 1;
        let zeros_w = || (0..nl).map(|l| vec![0f32; dims[l] * dims[l + 1]]).collect::<Vec<_>>();
        let zeros_b = || (0..nl).map(|l| vec![0f32; dims[l + 1]]).collect::<Vec<_>>();
        let adam = matches!(opt, OptimizerConfig::Adam { .. });
        let threads = rayon::current_num_threads();
        let mut me = Self {
            opt,
            batch,
            w: zeros_w(),
            b: zeros_b(),
            mw: if adam { zeros_w() } else { Vec::new() },
            vw: if adam { zeros_w() } else { Vec::new() },
            mb: if adam { zeros_b() } else { Vec::new() },
            vb: if adam { zeros_b() } else { Vec::new() },
            gw: if adam { zeros_w() } else { Vec::new() },
            gb: zeros_b(),
            acts: dims.iter().map(|&d| vec![0f32; batch * d]).collect(),
            deltas: dims[1..].iter().map(|&d| vec![0f32; batch * d]).collect(),
            dims,
            t: 0,
            par: if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None },
        };
        me.read_from(model)?;
        Ok(me)
    }

    /// Mini-batch size this instance was built for.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Input width `d0`.
    pub fn input_dim(&self) -> usize {
        self.dims[0]
    }

    /// Number of updates taken (Adam's `t`).
    pub fn updates(&self) -> u64 {
        self.t
    }

    /// The input buffer `(B, d0)`, row-major: fill it, then call [`FastMlp::step_prepared`].
    pub fn input_mut(&mut self) -> &mut [f32] {
        &mut self.acts[0]
    }

    /// One step on `x: (B, d0)` row-major with labels `(B)`; returns the mini-batch mean loss
    /// measured before the update.
    pub fn step(&mut self, x: &[f32], labels: &[u32]) -> Result<f64> {
        if x.len() != self.acts[0].len() {
            return Err(TrainError::Data {
                what: "x",
                msg: format!("fast MLP step expects {} x {} inputs, got {} values", self.batch, self.dims[0], x.len()),
            });
        }
        self.acts[0].copy_from_slice(x);
        self.step_prepared(labels)
    }

    /// One step on the batch already in [`FastMlp::input_mut`].
    pub fn step_prepared(&mut self, labels: &[u32]) -> Result<f64> {
        let (bsz, nl) = (self.batch, self.dims.len() - 1);
        let classes = self.dims[nl];
        if labels.len() != bsz {
            return Err(TrainError::Data {
                what: "labels",
                msg: format!("expected {bsz} labels, got {}", labels.len()),
            });
        }
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(TrainError::Data {
                what: "labels",
                msg: format!("label {l} out of range for {classes} classes"),
            });
        }
        // Forward.
        for l in 0..nl {
            let (d_in, d_out) = (self.dims[l], self.dims[l + 1]);
            let (lo, hi) = self.acts.split_at_mut(l + 1);
            let (a, z) = (&lo[l], &mut hi[0]);
            // Z (B, out) = A (B, in) . W^T, W^T read through strides (rs 1, cs in).
            matmul(bsz, d_out, d_in, z, None, a, d_in as isize, 1, &self.w[l], 1, d_in as isize, 1.0, self.par)?;
            let bias = &self.b[l];
            let relu = l + 1 < nl;
            for row in z.chunks_exact_mut(d_out) {
                for (v, &bj) in row.iter_mut().zip(bias) {
                    let s = *v + bj;
                    *v = if relu && s < 0.0 { 0.0 } else { s };
                }
            }
        }
        // Loss and dZ_L = (softmax - onehot) / B.
        let inv_b = 1.0 / bsz as f32;
        let mut loss = 0f64;
        {
            let logits = &self.acts[nl];
            let d = &mut self.deltas[nl - 1];
            for ((row, drow), &y) in logits.chunks_exact(classes).zip(d.chunks_exact_mut(classes)).zip(labels) {
                let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut s = 0f32;
                for (dv, &v) in drow.iter_mut().zip(row) {
                    let e = (v - mx).exp();
                    *dv = e;
                    s += e;
                }
                loss += f64::from(mx + s.ln() - row[y as usize]);
                let inv_s = 1.0 / s;
                for dv in drow.iter_mut() {
                    *dv *= inv_s;
                }
                drow[y as usize] -= 1.0;
                for dv in drow.iter_mut() {
                    *dv *= inv_b;
                }
            }
        }
        // Backward and update, top layer first; dA uses W before its update.
        self.t += 1;
        for l in (0..nl).rev() {
            let (d_in, d_out) = (self.dims[l], self.dims[l + 1]);
            if l > 0 {
                let (lo, hi) = self.deltas.split_at_mut(l);
                let (da, dz) = (&mut lo[l - 1], &hi[0]);
                // dA (B, in) = dZ (B, out) . W (out, in).
                matmul(bsz, d_in, d_out, da, None, dz, d_out as isize, 1, &self.w[l], d_in as isize, 1, 1.0, self.par)?;
                // ReLU': the previous layer's output is positive exactly where its pre-activation was.
                for (g, &a) in da.iter_mut().zip(&self.acts[l]) {
                    if a <= 0.0 {
                        *g = 0.0;
                    }
                }
            }
            let dz = &self.deltas[l];
            let a = &self.acts[l];
            let gb = &mut self.gb[l];
            gb.fill(0.0);
            for row in dz.chunks_exact(d_out) {
                for (g, &v) in gb.iter_mut().zip(row) {
                    *g += v;
                }
            }
            match self.opt {
                OptimizerConfig::Sgd { lr } => {
                    let lr32 = lr as f32;
                    // W = W - lr * dZ^T A in one gemm; dZ^T read through strides (rs 1, cs out).
                    matmul(
                        d_out,
                        d_in,
                        bsz,
                        &mut self.w[l],
                        Some(1.0),
                        dz,
                        1,
                        d_out as isize,
                        a,
                        d_in as isize,
                        1,
                        -lr32,
                        self.par,
                    )?;
                    for (bj, &g) in self.b[l].iter_mut().zip(gb.iter()) {
                        *bj -= g * lr32;
                    }
                }
                OptimizerConfig::Adam { lr, beta1, beta2, eps } => {
                    matmul(
                        d_out,
                        d_in,
                        bsz,
                        &mut self.gw[l],
                        None,
                        dz,
                        1,
                        d_out as isize,
                        a,
                        d_in as isize,
                        1,
                        1.0,
                        self.par,
                    )?;
                    let (c1, c2) = adam_bias_corrections(beta1, beta2, self.t);
                    let k = AdamConsts {
                        b1: beta1 as f32,
                        one_minus_b1: (1.0 - beta1) as f32,
                        b2: beta2 as f32,
                        one_minus_b2: (1.0 - beta2) as f32,
                        inv_bc1: c1 as f32,
                        inv_bc2: c2 as f32,
                        lr: lr as f32,
                        eps: eps as f32,
                    };
                    adam_update(&mut self.w[l], &self.gw[l], &mut self.mw[l], &mut self.vw[l], &k);
                    adam_update(&mut self.b[l], &self.gb[l], &mut self.mb[l], &mut self.vb[l], &k);
                }
            }
        }
        Ok(loss / bsz as f64)
    }

    /// Copies `model`'s parameters into this instance (same architecture).
    pub fn read_from(&mut self, model: &Model) -> Result<()> {
        let layers = model.layers();
        if layers.len() != self.w.len() {
            return Err(TrainError::Config("fast MLP: model depth changed".into()));
        }
        for (l, layer) in layers.iter().enumerate() {
            let w = layer.weight.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let b = layer.bias.as_tensor().to_vec1::<f32>()?;
            if w.len() != self.w[l].len() || b.len() != self.b[l].len() {
                return Err(TrainError::Config(format!("fast MLP: layer `{}` changed shape", layer.name)));
            }
            self.w[l] = w;
            self.b[l] = b;
        }
        Ok(())
    }

    /// Writes the current parameters into `model`'s `Var`s.
    pub fn write_to(&self, model: &Model) -> Result<()> {
        for (l, layer) in model.layers().iter().enumerate() {
            layer.weight.set(&Tensor::from_slice(&self.w[l], layer.weight.dims(), &Device::Cpu)?)?;
            layer.bias.set(&Tensor::from_slice(&self.b[l], layer.bias.dims(), &Device::Cpu)?)?;
        }
        Ok(())
    }

    /// Adam moments `(m, v)` as tensors in [`Model::vars`] order (empty for SGD).
    pub fn moments(&self, model: &Model) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let (mut m, mut v) = (Vec::new(), Vec::new());
        if self.mw.is_empty() {
            return Ok((m, v));
        }
        for (l, layer) in model.layers().iter().enumerate() {
            m.push(Tensor::from_slice(&self.mw[l], layer.weight.dims(), &Device::Cpu)?);
            m.push(Tensor::from_slice(&self.mb[l], layer.bias.dims(), &Device::Cpu)?);
            v.push(Tensor::from_slice(&self.vw[l], layer.weight.dims(), &Device::Cpu)?);
            v.push(Tensor::from_slice(&self.vb[l], layer.bias.dims(), &Device::Cpu)?);
        }
        Ok((m, v))
    }

    /// Restores Adam moments (in [`Model::vars`] order) and the update count.
    pub fn set_moments(&mut self, m: &[Tensor], v: &[Tensor], t: u64) -> Result<()> {
        let expect = if self.mw.is_empty() { 0 } else { 2 * self.w.len() };
        if m.len() != expect || v.len() != expect {
            return Err(TrainError::Config(format!(
                "optimizer state has {} / {} moment tensors, expected {expect}",
                m.len(),
                v.len()
            )));
        }
        for l in 0..expect / 2 {
            let get = |t: &Tensor, len: usize| -> Result<Vec<f32>> {
                let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                if v.len() != len {
                    return Err(TrainError::Config(format!(
                        "optimizer moment of layer {l} has {} values, expected {len}",
                        v.len()
                    )));
                }
                Ok(v)
            };
            self.mw[l] = get(&m[2 * l], self.w[l].len())?;
            self.mb[l] = get(&m[2 * l + 1], self.b[l].len())?;
            self.vw[l] = get(&v[2 * l], self.w[l].len())?;
            self.vb[l] = get(&v[2 * l + 1], self.b[l].len())?;
        }
        self.t = t;
        Ok(())
    }

    /// Largest parameter magnitude, or infinity if any parameter is not finite.
    pub fn max_abs_param(&self) -> f64 {
        let mut mx = 0f32;
        for v in self.w.iter().chain(&self.b).flatten() {
            if !v.is_finite() {
                return f64::INFINITY;
            }
            mx = mx.max(v.abs());
        }
        f64::from(mx)
    }
}

struct AdamConsts {
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    inv_bc1: f32,
    inv_bc2: f32,
    lr: f32,
    eps: f32,
}

/// Elementwise Adam, in the operation order of the autograd path.
fn adam_update(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &AdamConsts) {
    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = *m * k.b1 + g * k.one_minus_b1;
        *v = *v * k.b2 + (g * g) * k.one_minus_b2;
        let mhat = *m * k.inv_bc1;
        let vhat = *v * k.inv_bc2;
        *w -= (mhat * k.lr) / (vhat.sqrt() + k.eps);
    }
}

/// `dst (m, n, row-major) = [alpha * dst] + beta * lhs . rhs`, with `lhs (m, k)` and `rhs (k, n)`
/// given by non-negative row/column strides into their slices. `alpha = None` overwrites `dst`.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    alpha: Option<f32>,
    lhs: &[f32],
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: &[f32],
    rhs_rs: isize,
    rhs_cs: isize,
    beta: f32,
    par: Parallelism,
) -> Result<()> {
    use stiff_gemm::{MatMut, MatRef};
    let bad = |what: &str| TrainError::Config(format!("fast MLP: matmul {what} ({m}x{k} . {k}x{n})"));
    let stride = |s: isize| usize::try_from(s).map_err(|_| bad("with a negative stride"));
    let lhs = MatRef::new(lhs, m, k, stride(lhs_rs)?, stride(lhs_cs)?);
    let rhs = MatRef::new(rhs, k, n, stride(rhs_rs)?, stride(rhs_cs)?);
    stiff_gemm::matmul(MatMut::row_major(dst, m, n), alpha, lhs, rhs, beta, par)
        .map_err(|e| TrainError::Config(format!("fast MLP: {e}")))
}
