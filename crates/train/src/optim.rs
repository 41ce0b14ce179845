//! The reference training step: candle autograd plus SGD/Adam on the model's `Var`s. Works for
//! every model, dtype and device; the fast MLP path ([`crate::fast_mlp`]) is tested against it.

use candle::{Tensor, Var};
use stiff_models::{loss::cross_entropy_mean, Model};

use crate::{OptimizerConfig, Result, TrainError};

/// Optimizer state for the autograd path: Adam moments per variable (in [`Model::vars`] order)
/// and the number of updates taken.
#[derive(Debug)]
pub struct AutogradStep {
    opt: OptimizerConfig,
    vars: Vec<Var>,
    /// Adam first and second moments, same shapes as `vars` (empty for SGD).
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: u64,
}

impl AutogradStep {
    /// Fresh optimizer state (zero moments) for `model`'s variables.
    pub fn new(model: &Model, opt: OptimizerConfig) -> Result<Self> {
        opt.validate()?;
        let vars = model.vars();
        let (m, v) = match opt {
            OptimizerConfig::Sgd { .. } => (Vec::new(), Vec::new()),
            OptimizerConfig::Adam { .. } => {
                let z = |v: &Var| v.as_tensor().zeros_like();
                (vars.iter().map(z).collect::<candle::Result<_>>()?, vars.iter().map(z).collect::<candle::Result<_>>()?)
            }
        };
        Ok(Self { opt, vars, m, v, t: 0 })
    }

    /// Number of updates taken so far (Adam's `t`).
    pub fn updates(&self) -> u64 {
        self.t
    }

    /// One step on a mini-batch: mean cross-entropy, backward, update. Returns the mini-batch
    /// loss measured before the update.
    /// x: `(B, ...)` on the model's device; y: u32 `(B)` on the same device.
    pub fn step(&mut self, model: &Model, x: &Tensor, y: &Tensor) -> Result<f64> {
        let logits = model.forward(x)?;
        let loss = cross_entropy_mean(&logits, y)?;
        let grads = loss.backward()?;
        self.t += 1;
        for (i, var) in self.vars.iter().enumerate() {
            // A variable the loss does not reach gets a zero gradient: SGD leaves it alone and Adam
            // still decays its moments, as in PyTorch with zero_grad(set_to_none=False).
            let g = match grads.get(var) {
                Some(g) => g.clone(),
                None => var.as_tensor().zeros_like()?,
            };
            let w = var.as_tensor();
            let new_w = match self.opt {
                OptimizerConfig::Sgd { lr } => w.sub(&g.affine(lr, 0.0)?)?,
                OptimizerConfig::Adam { lr, beta1, beta2, eps } => {
                    // Same operation order as the fast path's elementwise Adam update.
                    let m = (self.m[i].affine(beta1, 0.0)? + g.affine(1.0 - beta1, 0.0)?)?;
                    let v = (self.v[i].affine(beta2, 0.0)? + g.sqr()?.affine(1.0 - beta2, 0.0)?)?;
                    let (inv_bc1, inv_bc2) = adam_bias_corrections(beta1, beta2, self.t);
                    let mhat = m.affine(inv_bc1, 0.0)?;
                    let vhat = v.affine(inv_bc2, 0.0)?;
                    let upd = mhat.affine(lr, 0.0)?.div(&vhat.sqrt()?.affine(1.0, eps)?)?;
                    self.m[i] = m;
                    self.v[i] = v;
                    w.sub(&upd)?
                }
            };
            var.set(&new_w)?;
        }
        Ok(loss.to_dtype(candle::DType::F64)?.to_scalar::<f64>()?)
    }

    /// Adam moments as `(m, v)` per variable (empty for SGD), and the update count.
    pub fn state(&self) -> (&[Tensor], &[Tensor], u64) {
        (&self.m, &self.v, self.t)
    }

    /// Restores moments and update count (from a checkpoint); shapes must match the variables.
    pub fn set_state(&mut self, m: Vec<Tensor>, v: Vec<Tensor>, t: u64) -> Result<()> {
        let expect = if matches!(self.opt, OptimizerConfig::Adam { .. }) { self.vars.len() } else { 0 };
        if m.len() != expect || v.len() != expect {
            return Err(TrainError::Config(format!(
                "optimizer state has {} / {} moment tensors, expected {expect}",
                m.len(),
                v.len()
            )));
        }
        for ((var, a), b) in self.vars.iter().zip(&m).zip(&v) {
            if a.dims() != var.dims() || b.dims() != var.dims() {
                return Err(TrainError::Config(format!(
                    "optimizer moment shapes {:?}/{:?} do not match parameter shape {:?}",
                    a.dims(),
                    b.dims(),
                    var.dims()
                )));
            }
        }
        let conv = |t: Vec<Tensor>| -> Result<Vec<Tensor>> {
            t.into_iter()
                .zip(&self.vars)
                .map(|(t, var)| Ok(t.to_dtype(var.dtype())?.to_device(var.device())?))
                .collect()
        };
        self.m = conv(m)?;
        self.v = conv(v)?;
        self.t = t;
        Ok(())
    }
}

/// `(1 / (1 - beta1^t), 1 / (1 - beta2^t))`, computed in f64.
pub(crate) fn adam_bias_corrections(beta1: f64, beta2: f64, t: u64) -> (f64, f64) {
    let t = t.min(i32::MAX as u64) as i32;
    (1.0 / (1.0 - beta1.powi(t)), 1.0 / (1.0 - beta2.powi(t)))
}
