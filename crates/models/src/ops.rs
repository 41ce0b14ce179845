//! Differentiable ops with the project's gradient conventions, built from plain candle ops so
//! they run on every device and candle autograd differentiates them:
//!
//! * [`relu`]: `relu'(0) = 0` (candle's own `relu` backward uses 1 at 0).
//! * [`max_pool2d`]: the gradient goes to **one** maximal element per window, the first in
//!   row-major window order, as PyTorch and JAX do (a reduce-max backward gives every tied maximum
//!   the full gradient, which is not a subgradient and shows on flat image regions).
//! * [`gelu_erf`]: `0.5 x (1 + erf(x / sqrt 2))` from candle's `erf`, whose derivative is exact in
//!   f64 (candle's fused `gelu_erf` backward uses a 6-digit constant).
//!
//! Shapes: images are `(N, C, H, W)`. Output sizes follow PyTorch (floor mode):
//! `out = (in + 2 p - d (k - 1) - 1) / s + 1`.

use candle::{DType, Tensor};

use crate::{ModelError, Result};

fn bad(msg: String) -> ModelError {
    ModelError::InvalidConfig(msg)
}

/// ReLU with `relu'(0) = 0`: `x * 1[x > 0]`, the mask outside the graph.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let mask = x.gt(0.0)?.to_dtype(x.dtype())?;
    Ok(x.mul(&mask)?)
}

/// LeakyReLU: `x` for `x > 0`, `slope * x` otherwise (derivative `slope` at 0, as PyTorch).
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    let pos = x.gt(0.0)?.to_dtype(x.dtype())?;
    // factor = 1 where x > 0, slope elsewhere (outside the graph).
    let factor = ((pos * (1.0 - slope))? + slope)?;
    Ok(x.mul(&factor)?)
}

/// GELU, exact erf form (PyTorch's default `approximate='none'`).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    let e = (x / std::f64::consts::SQRT_2)?.erf()?;
    Ok(((x * 0.5)? * (e + 1.0)?)?)
}

/// Sigmoid `1 / (1 + exp(-x))`.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok((x.neg()?.exp()? + 1.0)?.recip()?)
}

/// SiLU `x * sigmoid(x)`.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(x.mul(&sigmoid(x)?)?)
}

/// Geometry of a 2-D sliding window (kernel, stride, padding, dilation), `(rows, cols)` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `(kh, kw)` window size.
    pub kernel: (usize, usize),
    /// `(sh, sw)` step between windows.
    pub stride: (usize, usize),
    /// `(ph, pw)` implicit padding on each side.
    pub padding: (usize, usize),
    /// `(dh, dw)` spacing between window elements (1: contiguous).
    pub dilation: (usize, usize),
}

impl Window {
    /// Output size for an `(h, w)` input, or an error when the window does not fit.
    pub fn out_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let one = |n: usize, k: usize, s: usize, p: usize, d: usize, what: &str| -> Result<usize> {
            if k == 0 || s == 0 || d == 0 {
                return Err(bad(format!("{what}: kernel, stride and dilation must be positive")));
            }
            // Checked: spec sizes come from user JSON and must not wrap around.
            let too_big = || bad(format!("{what}: kernel {k}, dilation {d} or padding {p} is too large"));
            let span = d.checked_mul(k - 1).and_then(|x| x.checked_add(1)).ok_or_else(too_big)?;
            let padded = p.checked_mul(2).and_then(|x| x.checked_add(n)).ok_or_else(too_big)?;
            if padded < span {
                return Err(bad(format!(
                    "{what}: input size {n} with padding {p} is smaller than the window span {span}"
                )));
            }
            Ok((padded - span) / s + 1)
        };
        Ok((
            one(h, self.kernel.0, self.stride.0, self.padding.0, self.dilation.0, "height")?,
            one(w, self.kernel.1, self.stride.1, self.padding.1, self.dilation.1, "width")?,
        ))
    }
}

/// Pads dims 2 and 3 of `x` with `value`, `before` on the leading side and `after` trailing.
fn pad2(x: &Tensor, before: (usize, usize), after: (usize, usize), value: f64) -> Result<Tensor> {
    let pad_dim = |t: Tensor, dim: usize, l: usize, r: usize| -> Result<Tensor> {
        if l == 0 && r == 0 {
            return Ok(t);
        }
        if value == 0.0 {
            return Ok(t.pad_with_zeros(dim, l, r)?);
        }
        let mut parts = Vec::with_capacity(3);
        let mut shape = t.dims().to_vec();
        if l > 0 {
            shape[dim] = l;
            parts.push(Tensor::full(value, shape.as_slice(), t.device())?.to_dtype(t.dtype())?);
        }
        parts.push(t.clone());
        if r > 0 {
            shape[dim] = r;
            parts.push(Tensor::full(value, shape.as_slice(), t.device())?.to_dtype(t.dtype())?);
        }
        Ok(Tensor::cat(&parts, dim)?)
    };
    let x = pad_dim(x.clone(), 2, before.0, after.0)?;
    pad_dim(x, 3, before.1, after.1)
}

/// Every window position as a separate slice: `(N, C, kh*kw, ho, wo)`, window offsets in
/// row-major `(ki, kj)` order; padding filled with `pad_value`. Differentiable (narrow, reshape,
/// cat); strided picks use "narrow a multiple of the stride, reshape, take index 0".
pub fn windows(x: &Tensor, win: &Window, pad_value: f64) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = win.out_size(h, w)?;
    let (kh, kw) = win.kernel;
    if win.stride == win.kernel && win.padding == (0, 0) && win.dilation == (1, 1) {
        // Non-overlapping windows (the presets' pooling): one reshape and permute.
        let cropped = x.narrow(2, 0, ho * kh)?.narrow(3, 0, wo * kw)?;
        return Ok(cropped.reshape((n, c, ho, kh, wo, kw))?.permute((0, 1, 3, 5, 2, 4))?.contiguous()?.reshape((
            n,
            c,
            kh * kw,
            ho,
            wo,
        ))?);
    }
    let (sh, sw) = win.stride;
    let (dh, dw) = win.dilation;
    // Trailing padding so every strided pick (`ho * s` rows from any offset) stays in range.
    let xp = pad2(x, win.padding, (win.padding.0 + sh - 1, win.padding.1 + sw - 1), pad_value)?;
    let mut slices = Vec::with_capacity(kh * kw);
    for ki in 0..kh {
        let rows = xp.narrow(2, ki * dh, ho * sh)?;
        let rows =
            if sh == 1 { rows } else { rows.reshape((n, c, ho, sh, xp.dim(3)?))?.narrow(3, 0, 1)?.squeeze(3)? };
        for kj in 0..kw {
            let cols = rows.narrow(3, kj * dw, wo * sw)?;
            let cols = if sw == 1 { cols } else { cols.reshape((n, c, ho, wo, sw))?.narrow(4, 0, 1)?.squeeze(4)? };
            slices.push(cols);
        }
    }
    Ok(Tensor::stack(&slices, 2)?)
}

/// Max pooling `(N, C, H, W) -> (N, C, ho, wo)` with `-inf` padding; the gradient goes to the first
/// maximal element of each window in row-major order. PyTorch requires `padding <= kernel / 2`.
pub fn max_pool2d(x: &Tensor, win: &Window) -> Result<Tensor> {
    if win.padding.0 * 2 > win.kernel.0 || win.padding.1 * 2 > win.kernel.1 {
        return Err(bad(format!(
            "max pooling: padding {:?} must be at most half the kernel {:?}",
            win.padding, win.kernel
        )));
    }
    let wins = windows(x, win, f64::NEG_INFINITY)?; // (N, C, K, ho, wo)
    let m = wins.max_keepdim(2)?.detach();
    let eq = wins.detach().broadcast_eq(&m)?.to_dtype(DType::F32)?;
    // First maximum: a tie whose running count along the window is exactly 1. The running count
    // is a matmul with an upper-triangular ones matrix (exact for these small integers).
    let (n, c, k, ho, wo) = eq.dims5()?;
    let rows = eq.permute((0, 1, 3, 4, 2))?.contiguous()?.reshape((n * c * ho * wo, k))?;
    let count = rows.matmul(&Tensor::triu2(k, DType::F32, eq.device())?)?;
    let first_rows = (count.eq(1.0)?.to_dtype(DType::F32)? * rows)?;
    let first = first_rows.reshape((n, c, ho, wo, k))?.permute((0, 1, 4, 2, 3))?.gt(0.5)?;
    let zeros = wins.zeros_like()?;
    Ok(first.where_cond(&wins, &zeros)?.sum(2)?)
}

/// Average pooling with zero padding counted in the divisor (PyTorch's `count_include_pad=True`).
pub fn avg_pool2d(x: &Tensor, win: &Window) -> Result<Tensor> {
    let k = (win.kernel.0 * win.kernel.1) as f64;
    Ok((windows(x, win, 0.0)?.sum(2)? / k)?)
}

/// Global average pooling `(N, C, H, W) -> (N, C, 1, 1)`.
pub fn adaptive_avg_pool_1(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean_keepdim(3)?.mean_keepdim(2)?)
}

/// im2col for a convolution: `(N, C, H, W) -> (N, C*kh*kw, ho*wo)`, feature index over
/// `(c, ki, kj)` row-major, matching weights `(out, in, kh, kw)`; zero padding.
pub fn unfold(x: &Tensor, win: &Window) -> Result<Tensor> {
    let (n, c, _, _) = x.dims4()?;
    let w = windows(x, win, 0.0)?;
    let (_, _, k, ho, wo) = w.dims5()?;
    Ok(w.reshape((n, c * k, ho * wo))?)
}
