//! Drop-in tapped layers for a user's own candle network. Same constructors and `VarBuilder`
//! paths as `candle_nn` (`linear`, `linear_no_bias`, `conv2d`, `conv2d_no_bias`, `batch_norm`,
//! `layer_norm`), and they implement [`candle::Module`]. Inside [`crate::gram_net`] (and the other
//! `*_net` entry points) they record what the exact fast Gram needs; elsewhere they are plain ops.
//!
//! Activations and pooling with the project's gradient conventions ([`relu`] with `relu'(0) = 0`,
//! [`max_pool2d`] passing the gradient to the first maximal element of each window) are
//! re-exported as `candle::Result` functions; use them instead of `Tensor::relu` /
//! `Tensor::max_pool2d` when the conventions matter.
//!
//! Batch norm is eval mode only (running statistics), which is what a per-example gradient
//! needs: in training mode the batch statistics couple the examples.

use candle::{Module, Tensor};
use candle_nn::VarBuilder;
use stiff_models::ops::{self as mops, Window};

use crate::tape::{self, NormLayout, RecKind};

fn wrap(e: stiff_models::ModelError) -> candle::Error {
    match e {
        stiff_models::ModelError::Candle(c) => c,
        other => candle::Error::Msg(other.to_string()),
    }
}

/// ReLU with `relu'(0) = 0`.
pub fn relu(x: &Tensor) -> candle::Result<Tensor> {
    mops::relu(x).map_err(wrap)
}

/// LeakyReLU (derivative `slope` at 0, as PyTorch).
pub fn leaky_relu(x: &Tensor, slope: f64) -> candle::Result<Tensor> {
    mops::leaky_relu(x, slope).map_err(wrap)
}

/// GELU, exact erf form.
pub fn gelu(x: &Tensor) -> candle::Result<Tensor> {
    mops::gelu_erf(x).map_err(wrap)
}

/// Max pooling `(N, C, H, W)`: square `kernel`, `stride`, `padding` (`-inf`); gradient to the
/// first maximal element per window.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> candle::Result<Tensor> {
    let win =
        Window { kernel: (kernel, kernel), stride: (stride, stride), padding: (padding, padding), dilation: (1, 1) };
    mops::max_pool2d(x, &win).map_err(wrap)
}

/// Average pooling (zero padding counted in the divisor, PyTorch's default).
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> candle::Result<Tensor> {
    let win =
        Window { kernel: (kernel, kernel), stride: (stride, stride), padding: (padding, padding), dilation: (1, 1) };
    mops::avg_pool2d(x, &win).map_err(wrap)
}

/// Global average pooling `(N, C, H, W) -> (N, C)`.
pub fn global_avg_pool(x: &Tensor) -> candle::Result<Tensor> {
    x.mean(3)?.mean(2)
}

/// Tapped `z = x W^T + b`. x: `(N, ..., in)`; W: `(out, in)`; b: `(out)`.
pub fn linear_forward(name: &str, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle::Result<Tensor> {
    let z = x.broadcast_matmul(&w.t()?)?;
    let z = match b {
        Some(b) => z.broadcast_add(b)?,
        None => z,
    };
    tape::tap(name, RecKind::Linear, x, z, Some(w), b)
}

/// Tapped `z = x W + b` with the weight held `(in, out)` (the constant operand of an ONNX
/// MatMul, a Gemm with `transB = 0`). x: `(N, ..., in)`; W: `(in, out)`; b: `(out)`.
pub fn linear_t_forward(name: &str, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle::Result<Tensor> {
    let z = x.broadcast_matmul(w)?;
    let z = match b {
        Some(b) => z.broadcast_add(b)?,
        None => z,
    };
    tape::tap(name, RecKind::LinearT, x, z, Some(w), b)
}

/// Tapped convolution (groups 1; any stride, padding, dilation, also unequal per axis).
/// x: `(N, C, H, W)`; W: `(out, C, kh, kw)`; b: `(out)`.
pub fn conv2d_forward(name: &str, x: &Tensor, w: &Tensor, b: Option<&Tensor>, win: &Window) -> candle::Result<Tensor> {
    let c_out = w.dim(0)?;
    let own = if tape::own_conv() { crate::conv_op::conv(x, w, win)? } else { None };
    let z = if let Some(z) = own {
        z
    } else if win.stride.0 == win.stride.1 && win.padding.0 == win.padding.1 && win.dilation.0 == win.dilation.1 {
        x.conv2d(w, win.padding.0, win.stride.0, win.dilation.0, 1)?
    } else {
        let (n, _, h, wd) = x.dims4()?;
        let (ho, wo) = win.out_size(h, wd).map_err(wrap)?;
        let u = mops::unfold(x, win).map_err(wrap)?;
        w.flatten_from(1)?.broadcast_matmul(&u)?.reshape((n, c_out, ho, wo))?
    };
    let z = match b {
        Some(b) => z.broadcast_add(&b.reshape((1, c_out, 1, 1))?)?,
        None => z,
    };
    tape::tap(name, RecKind::Conv { win: *win }, x, z, Some(w), b)
}

/// Tapped `x + p` for a parameter `p` broadcast over the batch (a learned positional table
/// `(1, T, d)` or `(T, d)`, a bias vector added on its own). A `p` that varies along the batch
/// dimension is added untapped.
pub fn add_offset(name: &str, x: &Tensor, p: &Tensor) -> candle::Result<Tensor> {
    let y = x.broadcast_add(p)?;
    let (k, r) = (y.rank(), p.rank());
    if k == 0 || r > k || (r == k && p.dim(0)? != 1) {
        return Ok(y);
    }
    tape::tap(name, RecKind::Offset { shape: p.dims().to_vec() }, x, y, None, Some(p))
}

/// Tapped eval-mode batch norm over dim 1 of `(N, C, ...)`.
pub fn batch_norm_forward(
    name: &str,
    x: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f64,
) -> candle::Result<Tensor> {
    let mut shape = vec![1; x.rank()];
    shape[1] = x.dim(1)?;
    tape::buffer(running_mean);
    tape::buffer(running_var);
    let mean = running_mean.detach().reshape(shape.as_slice())?;
    let var = running_var.detach().reshape(shape.as_slice())?;
    let xhat = x.broadcast_sub(&mean)?.broadcast_div(&(var + eps)?.sqrt()?)?;
    let Some((g, b)) = affine else { return Ok(xhat) };
    let y = xhat.broadcast_mul(&g.reshape(shape.as_slice())?)?.broadcast_add(&b.reshape(shape.as_slice())?)?;
    tape::tap(name, RecKind::Norm { layout: NormLayout::Channel }, &xhat, y, Some(g), Some(b))
}

/// Tapped layer norm over the trailing `k` dims.
pub fn layer_norm_forward(
    name: &str,
    x: &Tensor,
    k: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> candle::Result<Tensor> {
    let xhat = stiff_models::spec::layer_norm_hat(x, k, eps).map_err(wrap)?;
    if weight.is_none() && bias.is_none() {
        return Ok(xhat);
    }
    let mut y = xhat.clone();
    if let Some(g) = weight {
        y = y.broadcast_mul(g)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    tape::tap(name, RecKind::Norm { layout: NormLayout::Trailing(k) }, &xhat, y, weight, bias)
}

/// A tapped linear layer (see [`linear`]).
#[derive(Debug, Clone)]
pub struct Linear {
    /// Name on the tape (the `VarBuilder` prefix for [`linear`]).
    pub name: String,
    /// `(out, in)`, PyTorch's layout.
    pub weight: Tensor,
    /// `(out)`, if any.
    pub bias: Option<Tensor>,
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        linear_forward(&self.name, x, &self.weight, self.bias.as_ref())
    }
}

impl Linear {
    /// Wraps a `candle_nn::Linear` (same tensors), recording under `name`.
    pub fn from_candle(name: impl Into<String>, l: &candle_nn::Linear) -> Self {
        Self { name: name.into(), weight: l.weight().clone(), bias: l.bias().cloned() }
    }
}

/// Same as `candle_nn::linear` (keys `{prefix}.weight`, `{prefix}.bias`, same initialisation).
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> candle::Result<Linear> {
    let name = vb.prefix();
    Ok(Linear::from_candle(name, &candle_nn::linear(in_dim, out_dim, vb)?))
}

/// Same as `candle_nn::linear_no_bias`.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> candle::Result<Linear> {
    let name = vb.prefix();
    Ok(Linear::from_candle(name, &candle_nn::linear_no_bias(in_dim, out_dim, vb)?))
}

/// A tapped convolution (see [`conv2d`]). Groups other than 1 run untapped (their parameters
/// then go through the exact fallback).
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// Name on the tape (the `VarBuilder` prefix for [`conv2d`]).
    pub name: String,
    /// `(out, in, k, k)`.
    pub weight: Tensor,
    /// `(out)`, if any.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation, groups.
    pub config: candle_nn::Conv2dConfig,
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let c = &self.config;
        if c.groups != 1 {
            let z = x.conv2d(&self.weight, c.padding, c.stride, c.dilation, c.groups)?;
            return match &self.bias {
                Some(b) => z.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
                None => Ok(z),
            };
        }
        let (kh, kw) = (self.weight.dim(2)?, self.weight.dim(3)?);
        let win = Window {
            kernel: (kh, kw),
            stride: (c.stride, c.stride),
            padding: (c.padding, c.padding),
            dilation: (c.dilation, c.dilation),
        };
        conv2d_forward(&self.name, x, &self.weight, self.bias.as_ref(), &win)
    }
}

impl Conv2d {
    /// A tapped copy of a `candle_nn` convolution (same tensors), recorded under `name`.
    pub fn from_candle(name: impl Into<String>, c: &candle_nn::Conv2d) -> Self {
        Self { name: name.into(), weight: c.weight().clone(), bias: c.bias().cloned(), config: *c.config() }
    }
}

/// Same as `candle_nn::conv2d` (keys `{prefix}.weight` `(out, in, k, k)`, `{prefix}.bias`).
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: candle_nn::Conv2dConfig,
    vb: VarBuilder,
) -> candle::Result<Conv2d> {
    let name = vb.prefix();
    Ok(Conv2d::from_candle(name, &candle_nn::conv2d(in_channels, out_channels, kernel_size, cfg, vb)?))
}

/// Same as `candle_nn::conv2d_no_bias`.
pub fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: candle_nn::Conv2dConfig,
    vb: VarBuilder,
) -> candle::Result<Conv2d> {
    let name = vb.prefix();
    Ok(Conv2d::from_candle(name, &candle_nn::conv2d_no_bias(in_channels, out_channels, kernel_size, cfg, vb)?))
}

/// Eval-mode batch norm (see [`batch_norm`]).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    /// Name on the tape.
    pub name: String,
    /// `(C)` running mean (a buffer, not a parameter).
    pub running_mean: Tensor,
    /// `(C)` running variance (a buffer).
    pub running_var: Tensor,
    /// `(weight, bias)` when affine.
    pub affine: Option<(Tensor, Tensor)>,
    /// Added to the variance (PyTorch default 1e-5).
    pub eps: f64,
}

impl Module for BatchNorm {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let aff = self.affine.as_ref().map(|(g, b)| (g, b));
        batch_norm_forward(&self.name, x, &self.running_mean, &self.running_var, aff, self.eps)
    }
}

/// Same keys as `candle_nn::batch_norm` (`running_mean`, `running_var`, `weight`, `bias`), eval
/// mode. The running statistics are buffers: they are excluded from the gradient even when the
/// `VarBuilder` made them `Var`s.
pub fn batch_norm(num_features: usize, eps: f64, vb: VarBuilder) -> candle::Result<BatchNorm> {
    let name = vb.prefix();
    let c = candle_nn::batch_norm(num_features, candle_nn::BatchNormConfig { eps, ..Default::default() }, vb)?;
    Ok(BatchNorm {
        name,
        running_mean: c.running_mean().clone(),
        running_var: c.running_var().clone(),
        affine: c.weight_and_bias().map(|(g, b)| (g.clone(), b.clone())),
        eps,
    })
}

/// Layer norm over the last dim (see [`layer_norm`]).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Name on the tape.
    pub name: String,
    /// Scale `γ`, shaped like the normalised dims, if affine.
    pub weight: Option<Tensor>,
    /// Shift `β`, if affine with bias.
    pub bias: Option<Tensor>,
    /// Number of trailing dims normalised over (1 for `layer_norm`).
    pub dims: usize,
    /// Added to the variance (PyTorch default 1e-5).
    pub eps: f64,
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        layer_norm_forward(&self.name, x, self.dims, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

/// Takes what `candle_nn::layer_norm` takes (an `eps` as f64, or a `LayerNormConfig`) and reads
/// the same keys (`weight`, `bias`), normalising the last dim; unlike candle's fused kernel it has
/// a backward, so the layers before it get their gradients. `remove_mean = false` (RMS norm) is
/// refused: this layer always subtracts the mean.
pub fn layer_norm<C: Into<candle_nn::LayerNormConfig>>(
    size: usize,
    config: C,
    vb: VarBuilder,
) -> candle::Result<LayerNorm> {
    let config: candle_nn::LayerNormConfig = config.into();
    if !config.remove_mean {
        return Err(candle::Error::Msg(
            "stiff_gradkernel::nn::layer_norm: remove_mean = false (RMS norm) is not supported".into(),
        ));
    }
    let name = vb.prefix();
    let eps = config.eps;
    let l = candle_nn::layer_norm(size, config, vb)?;
    let weight = config.affine.then(|| l.weight().clone());
    Ok(LayerNorm { name, weight, bias: l.bias().cloned(), dims: 1, eps })
}
