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
//! Threads are used explicitly rather than through gemm's own splitting, which gains nothing
//! at batch 32: (1) the batch is cut into blocks of [`ROW_BLOCK`] rows, each block running
//! forward, loss and the backward deltas for its rows alone; (2) after one join, every layer's
//! output units (rows of `W`, entries of `b`) are cut into blocks of [`UNIT_BLOCK`] units, each
//! block updating its rows of its layer. No reduction over the batch or over a layer's inputs is
//! split between blocks, and the blocks depend only on the batch size and the layer widths,
//! never on the thread count: threads only choose who computes a block. gemm's summation order
//! for an entry depends on the product's shape (its kernel and depth blocking), so fixing the
//! shapes fixes the bits: a run gives the same numbers on 1, 2 or 64 threads.
//! Every buffer is preallocated; a step only builds the short lists of blocks. The weights live
//! here during training; [`FastMlp::write_to`] copies them into the model's `Var`s (the trainer
//! does so before every evaluation, snapshot and checkpoint).

use candle::{DType, Device, Tensor};
use rayon::prelude::*;
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
    /// Per-example loss of the last step (summed in order afterwards).
    row_loss: Vec<f64>,
    t: u64,
}

/// Batch rows per block of the forward/backward phase: batch 32 gives two blocks, one per core
/// on a two-core machine, as large as possible for gemm. Fixed, so results do not depend on the
/// thread count.
pub const ROW_BLOCK: usize = 16;

/// Output units per block of the update phase: fc6's layers (500, 300, 100, 100, 100, 10 units)
/// give 13 blocks, enough to share out evenly. Fixed, so results do not depend on the thread
/// count.
pub const UNIT_BLOCK: usize = 64;

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
    /// Steps run on rayon's current pool (`RAYON_NUM_THREADS`); the pool size does not change
    /// the results.
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
            row_loss: vec![0.0; batch],
            t: 0,
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
        self.t += 1;
        // Blocks run in parallel only when there is a second thread; the bits are the same.
        let parallel = rayon::current_num_threads() > 1;
        let dims = &self.dims;
        let (w, b) = (&mut self.w, &mut self.b);

        // Phase 1: forward, loss and backward deltas, in fixed blocks of batch rows.
        {
            let per = ROW_BLOCK.min(bsz);
            let mut blocks: Vec<RowBlock> = (0..bsz.div_ceil(per))
                .map(|i| RowBlock { r0: i * per, acts: Vec::new(), deltas: Vec::new(), loss: &mut [] })
                .collect();
            for (l, a) in self.acts.iter_mut().enumerate() {
                blocks.iter_mut().zip(a.chunks_mut(per * dims[l])).for_each(|(blk, s)| blk.acts.push(s));
            }
            for (l, d) in self.deltas.iter_mut().enumerate() {
                blocks.iter_mut().zip(d.chunks_mut(per * dims[l + 1])).for_each(|(blk, s)| blk.deltas.push(s));
            }
            blocks.iter_mut().zip(self.row_loss.chunks_mut(per)).for_each(|(blk, s)| blk.loss = s);
            let (w, b) = (&*w, &*b);
            let run = |blk: RowBlock| rows_forward_backward(dims, w, b, labels, bsz, blk);
            if parallel {
                blocks.into_par_iter().try_for_each(run)?;
            } else {
                blocks.into_iter().try_for_each(run)?;
            }
        }
        let loss: f64 = self.row_loss.iter().sum();

        // Phase 2: gradients and updates, in fixed blocks of every layer's output units.
        let mut tasks: Vec<Units> = Vec::new();
        let adam = !self.mw.is_empty();
        // Per layer: [mw, vw, gw, mb, vb], empty slices for SGD.
        let state: Vec<[&mut [f32]; 5]> = if adam {
            self.mw
                .iter_mut()
                .zip(self.vw.iter_mut())
                .zip(self.gw.iter_mut())
                .zip(self.mb.iter_mut().zip(self.vb.iter_mut()))
                .map(|(((mw, vw), gw), (mb, vb))| [&mut mw[..], &mut vw[..], &mut gw[..], &mut mb[..], &mut vb[..]])
                .collect()
        } else {
            (0..nl).map(|_| Default::default()).collect()
        };
        let layers = w.iter_mut().zip(b.iter_mut()).zip(self.gb.iter_mut()).zip(state);
        for (l, (((wl, bl), gbl), st)) in layers.enumerate() {
            let (d_in, d_out) = (dims[l], dims[l + 1]);
            let mut w_rest = &mut wl[..];
            let mut b_rest = &mut bl[..];
            let mut gb_rest = &mut gbl[..];
            let [mut mw, mut vw, mut gw, mut mb, mut vb] = st;
            for j0 in (0..d_out).step_by(UNIT_BLOCK) {
                let rows = UNIT_BLOCK.min(d_out - j0);
                let (wa, wb) = if adam { (rows * d_in, rows) } else { (0, 0) };
                tasks.push(Units {
                    l,
                    j0,
                    w: take(&mut w_rest, rows * d_in),
                    b: take(&mut b_rest, rows),
                    gb: take(&mut gb_rest, rows),
                    mw: take(&mut mw, wa),
                    vw: take(&mut vw, wa),
                    gw: take(&mut gw, wa),
                    mb: take(&mut mb, wb),
                    vb: take(&mut vb, wb),
                });
            }
        }
        let (acts, deltas) = (&self.acts, &self.deltas);
        let (opt, t) = (self.opt, self.t);
        let run = |u: Units| update_units(dims, acts, deltas, bsz, opt, t, u);
        if parallel {
            tasks.into_par_iter().try_for_each(run)?;
        } else {
            tasks.into_iter().try_for_each(run)?;
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

/// Splits the first `len` elements off `s`.
fn take<'a>(s: &mut &'a mut [f32], len: usize) -> &'a mut [f32] {
    let (head, tail) = std::mem::take(s).split_at_mut(len);
    *s = tail;
    head
}

/// One block's batch rows `r0..` of every activation (`acts[0]` the inputs), delta and loss buffer.
struct RowBlock<'a> {
    r0: usize,
    acts: Vec<&'a mut [f32]>,
    deltas: Vec<&'a mut [f32]>,
    loss: &'a mut [f64],
}

/// Forward (bias and ReLU fused), per-example loss, `dZ_L = (softmax - onehot) / B` and the
/// backward deltas `dA = dZ W`, `dZ = dA * [A > 0]` for one block of batch rows.
fn rows_forward_backward(
    dims: &[usize],
    w: &[Vec<f32>],
    b: &[Vec<f32>],
    labels: &[u32],
    bsz: usize,
    blk: RowBlock<'_>,
) -> Result<()> {
    let RowBlock { r0, mut acts, mut deltas, loss } = blk;
    let nl = dims.len() - 1;
    let nr = loss.len();
    for l in 0..nl {
        let (d_in, d_out) = (dims[l], dims[l + 1]);
        let (lo, hi) = acts.split_at_mut(l + 1);
        let (a, z) = (&*lo[l], &mut *hi[0]);
        // Z (rows, out) = A (rows, in) . W^T, W^T read through strides (rs 1, cs in).
        matmul(nr, d_out, d_in, z, None, a, d_in as isize, 1, &w[l], 1, d_in as isize, 1.0)?;
        let relu = l + 1 < nl;
        for row in z.chunks_exact_mut(d_out) {
            for (v, &bj) in row.iter_mut().zip(&b[l]) {
                let s = *v + bj;
                *v = if relu && s < 0.0 { 0.0 } else { s };
            }
        }
    }
    let classes = dims[nl];
    let inv_b = 1.0 / bsz as f32;
    let rows = acts[nl].chunks_exact(classes).zip(deltas[nl - 1].chunks_exact_mut(classes));
    for (((row, drow), &y), lv) in rows.zip(&labels[r0..r0 + nr]).zip(loss.iter_mut()) {
        let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0f32;
        for (dv, &v) in drow.iter_mut().zip(row) {
            let e = (v - mx).exp();
            *dv = e;
            s += e;
        }
        *lv = f64::from(mx + s.ln() - row[y as usize]);
        let inv_s = 1.0 / s;
        for dv in drow.iter_mut() {
            *dv *= inv_s;
        }
        drow[y as usize] -= 1.0;
        for dv in drow.iter_mut() {
            *dv *= inv_b;
        }
    }
    for l in (1..nl).rev() {
        let (d_in, d_out) = (dims[l], dims[l + 1]);
        let (lo, hi) = deltas.split_at_mut(l);
        let (da, dz) = (&mut *lo[l - 1], &*hi[0]);
        // dA (rows, in) = dZ (rows, out) . W (out, in), with W before this step's update.
        matmul(nr, d_in, d_out, da, None, dz, d_out as isize, 1, &w[l], d_in as isize, 1, 1.0)?;
        // ReLU': the previous layer's output is positive exactly where its pre-activation was.
        for (g, &a) in da.iter_mut().zip(&*acts[l]) {
            if a <= 0.0 {
                *g = 0.0;
            }
        }
    }
    Ok(())
}

/// One block's output units `j0..j0+rows` of layer `l`: its rows of `W` (and of the Adam state
/// and gradient buffers, empty for SGD) and its entries of `b`.
struct Units<'a> {
    l: usize,
    j0: usize,
    w: &'a mut [f32],
    b: &'a mut [f32],
    gb: &'a mut [f32],
    mw: &'a mut [f32],
    vw: &'a mut [f32],
    gw: &'a mut [f32],
    mb: &'a mut [f32],
    vb: &'a mut [f32],
}

/// Bias gradient (batch rows summed in order) and the SGD or Adam update of one block's units.
fn update_units(
    dims: &[usize],
    acts: &[Vec<f32>],
    deltas: &[Vec<f32>],
    bsz: usize,
    opt: OptimizerConfig,
    t: u64,
    u: Units<'_>,
) -> Result<()> {
    let Units { l, j0, w, b, gb, mw, vw, gw, mb, vb } = u;
    let (d_in, d_out) = (dims[l], dims[l + 1]);
    let rows = b.len();
    if rows == 0 {
        return Ok(());
    }
    let (dz, a) = (&deltas[l], &acts[l]);
    gb.fill(0.0);
    for row in dz.chunks_exact(d_out) {
        for (g, &v) in gb.iter_mut().zip(&row[j0..j0 + rows]) {
            *g += v;
        }
    }
    // dZ[:, j0..]^T (rows, B) through strides (rs 1, cs out).
    let dz_t = &dz[j0..];
    match opt {
        OptimizerConfig::Sgd { lr } => {
            let lr32 = lr as f32;
            // W = W - lr * dZ^T A in one gemm.
            matmul(rows, d_in, bsz, w, Some(1.0), dz_t, 1, d_out as isize, a, d_in as isize, 1, -lr32)?;
            for (bj, &g) in b.iter_mut().zip(gb.iter()) {
                *bj -= g * lr32;
            }
        }
        OptimizerConfig::Adam { lr, beta1, beta2, eps } => {
            matmul(rows, d_in, bsz, gw, None, dz_t, 1, d_out as isize, a, d_in as isize, 1, 1.0)?;
            let (c1, c2) = adam_bias_corrections(beta1, beta2, t);
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
            adam_update(w, gw, mw, vw, &k);
            adam_update(b, gb, mb, vb, &k);
        }
    }
    Ok(())
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
) -> Result<()> {
    use stiff_gemm::{MatMut, MatRef};
    let bad = |what: &str| TrainError::Config(format!("fast MLP: matmul {what} ({m}x{k} . {k}x{n})"));
    let stride = |s: isize| usize::try_from(s).map_err(|_| bad("with a negative stride"));
    let lhs = MatRef::new(lhs, m, k, stride(lhs_rs)?, stride(lhs_cs)?);
    let rhs = MatRef::new(rhs, k, n, stride(rhs_rs)?, stride(rhs_cs)?);
    stiff_gemm::matmul(MatMut::row_major(dst, m, n), alpha, lhs, rhs, beta, Parallelism::None)
        .map_err(|e| TrainError::Config(format!("fast MLP: {e}")))
}
