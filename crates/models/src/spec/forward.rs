//! The plain eval-mode forward pass of a spec model, built from candle ops.

use candle::Tensor;

use super::layer::LayerSpec;
use super::model::SpecModel;
use crate::ops;
use crate::{ModelError, Result};

impl SpecModel {
    /// Reshapes `x: (N, ...)` to `(N, input...)`, or fails naming both shapes.
    pub fn prepare_input(&self, x: &Tensor) -> Result<Tensor> {
        let want: usize = self.spec.input.iter().product();
        if x.rank() < 2 || x.elem_count() != x.dim(0)? * want {
            return Err(ModelError::InputShape { got: x.dims().to_vec(), expected: format!("{:?}", self.spec.input) });
        }
        let mut shape = vec![x.dim(0)?];
        shape.extend(&self.spec.input);
        Ok(x.to_dtype(self.dtype())?.reshape(shape)?)
    }

    /// Plain forward pass, eval mode: x `(N, ...)` -> `(N, outputs...)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut a = self.prepare_input(x)?;
        for i in 0..self.spec.layers.len() {
            a = self.layer_forward(i, &a)?;
        }
        Ok(a)
    }

    /// Layer `i` applied to `a` with plain candle ops.
    pub fn layer_forward(&self, i: usize, a: &Tensor) -> Result<Tensor> {
        let l = &self.spec.layers[i];
        let p = |f: &str| self.param(i, f).map(|v| v.as_tensor().clone());
        Ok(match l {
            LayerSpec::Linear { .. } => {
                let w = p("weight").expect("validated");
                let z = a.broadcast_matmul(&w.t()?)?;
                match p("bias") {
                    Some(b) => z.broadcast_add(&b)?,
                    None => z,
                }
            }
            LayerSpec::Conv2d { out_channels, .. } => {
                let win = l.window().expect("conv");
                let w = p("weight").expect("validated");
                let z = if win.stride.0 == win.stride.1
                    && win.padding.0 == win.padding.1
                    && win.dilation.0 == win.dilation.1
                {
                    a.conv2d(&w, win.padding.0, win.stride.0, win.dilation.0, 1)?
                } else {
                    // Unequal per-axis geometry: im2col and a matmul.
                    let (n, _, h, wd) = a.dims4()?;
                    let (ho, wo) = win.out_size(h, wd)?;
                    let u = ops::unfold(a, &win)?; // (n, F, S)
                    let wf = w.flatten_from(1)?; // (out, F)
                    wf.broadcast_matmul(&u)?.reshape((n, *out_channels, ho, wo))?
                };
                match p("bias") {
                    Some(b) => z.broadcast_add(&b.reshape((1, *out_channels, 1, 1))?)?,
                    None => z,
                }
            }
            LayerSpec::MaxPool2d { .. } => ops::max_pool2d(a, &l.window().expect("pool"))?,
            LayerSpec::AvgPool2d { .. } => ops::avg_pool2d(a, &l.window().expect("pool"))?,
            LayerSpec::AdaptiveAvgPool2d { .. } => ops::adaptive_avg_pool_1(a)?,
            LayerSpec::Flatten { .. } => a.flatten_from(1)?,
            LayerSpec::ReLU { .. } => ops::relu(a)?,
            LayerSpec::LeakyReLU { negative_slope, .. } => ops::leaky_relu(a, *negative_slope)?,
            LayerSpec::GELU { .. } => ops::gelu_erf(a)?,
            LayerSpec::SiLU { .. } => ops::silu(a)?,
            LayerSpec::Tanh {} => a.tanh()?,
            LayerSpec::Sigmoid {} => ops::sigmoid(a)?,
            LayerSpec::Identity {} | LayerSpec::Dropout { .. } => a.clone(),
            LayerSpec::BatchNorm1d { eps, .. } | LayerSpec::BatchNorm2d { eps, .. } => {
                let shape = channel_shape(a)?;
                let mean = self.buffer(i, "running_mean").expect("validated").reshape(shape.as_slice())?;
                let var = self.buffer(i, "running_var").expect("validated").reshape(shape.as_slice())?;
                let xhat = a.broadcast_sub(&mean)?.broadcast_div(&(var + *eps)?.sqrt()?)?;
                match (p("weight"), p("bias")) {
                    (Some(g), Some(b)) => xhat
                        .broadcast_mul(&g.reshape(shape.as_slice())?)?
                        .broadcast_add(&b.reshape(shape.as_slice())?)?,
                    _ => xhat,
                }
            }
            LayerSpec::LayerNorm { normalized_shape, eps, .. } => {
                let k = normalized_shape.dims().len();
                let xhat = layer_norm_hat(a, k, *eps)?;
                let mut y = xhat;
                if let Some(g) = p("weight") {
                    y = y.broadcast_mul(&g)?;
                }
                if let Some(b) = p("bias") {
                    y = y.broadcast_add(&b)?;
                }
                y
            }
        })
    }
}

/// `(1, C, 1, ...)` broadcasting shape for per-channel vectors of a `(N, C, ...)` tensor.
pub fn channel_shape(a: &Tensor) -> Result<Vec<usize>> {
    let mut s = vec![1; a.rank()];
    s[1] = a.dim(1)?;
    Ok(s)
}

/// `(x - mean) / sqrt(var + eps)` over the trailing `k` dims (biased variance), differentiable.
pub fn layer_norm_hat(a: &Tensor, k: usize, eps: f64) -> Result<Tensor> {
    let dims = a.dims().to_vec();
    let lead: usize = dims[..dims.len() - k].iter().product();
    let m: usize = dims[dims.len() - k..].iter().product();
    let x = a.reshape((lead, m))?;
    let mean = x.mean_keepdim(1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(1)?;
    Ok(xc.broadcast_div(&(var + eps)?.sqrt()?)?.reshape(dims)?)
}
