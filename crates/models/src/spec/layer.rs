//! The layer kinds of a spec: PyTorch's constructor arguments and defaults, names and windows.

use serde::{Deserialize, Serialize};

use crate::ops::Window;

/// An int or a pair, as PyTorch accepts for `kernel_size`, `stride`, `padding`, `dilation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size2 {
    /// The same value for both dims, e.g. `3`.
    One(usize),
    /// `[height, width]`, e.g. `[3, 5]`.
    Two([usize; 2]),
}

impl Size2 {
    /// `(height, width)`.
    pub fn pair(self) -> (usize, usize) {
        match self {
            Size2::One(v) => (v, v),
            Size2::Two([a, b]) => (a, b),
        }
    }
}

fn one() -> Size2 {
    Size2::One(1)
}
fn zero() -> Size2 {
    Size2::One(0)
}
fn yes() -> bool {
    true
}
fn eps() -> f64 {
    1e-5
}
fn leaky() -> f64 {
    0.01
}
fn start_dim() -> i64 {
    1
}
fn end_dim() -> i64 {
    -1
}
fn gelu_none() -> String {
    "none".into()
}

/// `normalized_shape` of LayerNorm: an int or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Shape1 {
    /// A single trailing dim.
    One(usize),
    /// Several trailing dims, outermost first.
    Many(Vec<usize>),
}

impl Shape1 {
    /// The dims as a list.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Shape1::One(v) => vec![*v],
            Shape1::Many(v) => v.clone(),
        }
    }
}

/// One layer of an `nn.Sequential`, with PyTorch's constructor argument names and defaults.
/// Arguments that do not change the eval-mode function (`inplace`, `momentum`, dropout `p`) are
/// accepted and ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum LayerSpec {
    /// `y = x W^T + b`, W: `(out_features, in_features)`; input `(N, ..., in_features)`.
    Linear {
        /// Features per example in.
        in_features: usize,
        /// Features per example out.
        out_features: usize,
        /// Whether the layer adds a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 2-D convolution, W: `(out, in, kh, kw)`; `groups` must be 1, `padding_mode` zeros.
    Conv2d {
        /// Channels in.
        in_channels: usize,
        /// Channels out (filters).
        out_channels: usize,
        /// Kernel size.
        kernel_size: Size2,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: Size2,
        /// Zero padding on each side (default 0).
        #[serde(default = "zero")]
        padding: Size2,
        /// Dilation (default 1).
        #[serde(default = "one")]
        dilation: Size2,
        /// Groups (default 1, the only supported value).
        #[serde(default = "one_usize")]
        groups: usize,
        /// Whether the layer adds a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Max pooling (stride defaults to the kernel, `-inf` padding); `ceil_mode` must be false.
    MaxPool2d {
        /// Window size.
        kernel_size: Size2,
        /// Stride (default: the window size).
        #[serde(default)]
        stride: Option<Size2>,
        /// Padding (default 0; padded cells never win the max).
        #[serde(default = "zero")]
        padding: Size2,
        /// Dilation (default 1).
        #[serde(default = "one")]
        dilation: Size2,
        /// Round output sizes up (default false, the only supported value).
        #[serde(default)]
        ceil_mode: bool,
    },
    /// Average pooling, zero padding counted (`count_include_pad` must be true), floor mode.
    AvgPool2d {
        /// Window size.
        kernel_size: Size2,
        /// Stride (default: the window size).
        #[serde(default)]
        stride: Option<Size2>,
        /// Padding (default 0).
        #[serde(default = "zero")]
        padding: Size2,
        /// Round output sizes up (default false, the only supported value).
        #[serde(default)]
        ceil_mode: bool,
        /// Count padded zeros in the mean (default true, as PyTorch).
        #[serde(default = "yes")]
        count_include_pad: bool,
    },
    /// Global average pooling; only `output_size` 1 (or `[1, 1]`).
    AdaptiveAvgPool2d {
        /// Must be 1 (or `[1, 1]`).
        output_size: Size2,
    },
    /// Flattens dims `start_dim..=end_dim` (defaults 1 and -1, the only supported values).
    Flatten {
        /// First flattened dim (default 1).
        #[serde(default = "start_dim")]
        start_dim: i64,
        /// Last flattened dim (default -1).
        #[serde(default = "end_dim")]
        end_dim: i64,
    },
    /// `max(x, 0)`, with derivative 0 at 0 (see [`crate::ops`]).
    ReLU {
        /// Ignored (no effect on the function).
        #[serde(default)]
        inplace: bool,
    },
    /// `x` for `x > 0`, else `negative_slope * x`.
    LeakyReLU {
        /// Slope for negative inputs (default 0.01).
        #[serde(default = "leaky")]
        negative_slope: f64,
        /// Ignored.
        #[serde(default)]
        inplace: bool,
    },
    /// Exact erf form; `approximate` must be "none".
    GELU {
        /// Only `"none"` (the default) is supported.
        #[serde(default = "gelu_none")]
        approximate: String,
    },
    /// `x * sigmoid(x)`.
    SiLU {
        /// Ignored.
        #[serde(default)]
        inplace: bool,
    },
    /// `tanh(x)`.
    Tanh {},
    /// `1 / (1 + exp(-x))`.
    Sigmoid {},
    /// The input unchanged.
    Identity {},
    /// Identity: measurement is in eval mode.
    Dropout {
        /// Drop probability; ignored (eval mode).
        #[serde(default)]
        p: Option<f64>,
        /// Ignored.
        #[serde(default)]
        inplace: bool,
    },
    /// Eval mode: `(x - running_mean) / sqrt(running_var + eps) * weight + bias` on `(N, C)` or `(N, C, L)`.
    BatchNorm1d {
        /// Channels `C`.
        num_features: usize,
        /// Added to the variance (default 1e-5).
        #[serde(default = "eps")]
        eps: f64,
        /// Ignored (eval mode uses the stored running statistics).
        #[serde(default)]
        momentum: Option<f64>,
        /// Whether `weight` and `bias` exist (default true).
        #[serde(default = "yes")]
        affine: bool,
        /// Must be true (default): eval mode needs the running statistics.
        #[serde(default = "yes")]
        track_running_stats: bool,
    },
    /// Eval mode on `(N, C, H, W)`.
    BatchNorm2d {
        /// Channels `C`.
        num_features: usize,
        /// Added to the variance (default 1e-5).
        #[serde(default = "eps")]
        eps: f64,
        /// Ignored (eval mode uses the stored running statistics).
        #[serde(default)]
        momentum: Option<f64>,
        /// Whether `weight` and `bias` exist (default true).
        #[serde(default = "yes")]
        affine: bool,
        /// Must be true (default): eval mode needs the running statistics.
        #[serde(default = "yes")]
        track_running_stats: bool,
    },
    /// Normalises over the trailing `normalized_shape` dims (biased variance, as PyTorch).
    LayerNorm {
        /// The trailing dims normalised over.
        normalized_shape: Shape1,
        /// Added to the variance (default 1e-5).
        #[serde(default = "eps")]
        eps: f64,
        /// Whether `weight` (and `bias`, see below) exist (default true).
        #[serde(default = "yes")]
        elementwise_affine: bool,
        /// Whether `bias` exists when `elementwise_affine` (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
}

fn one_usize() -> usize {
    1
}

impl LayerSpec {
    /// PyTorch's class name (the JSON `type`).
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerSpec::Linear { .. } => "Linear",
            LayerSpec::Conv2d { .. } => "Conv2d",
            LayerSpec::MaxPool2d { .. } => "MaxPool2d",
            LayerSpec::AvgPool2d { .. } => "AvgPool2d",
            LayerSpec::AdaptiveAvgPool2d { .. } => "AdaptiveAvgPool2d",
            LayerSpec::Flatten { .. } => "Flatten",
            LayerSpec::ReLU { .. } => "ReLU",
            LayerSpec::LeakyReLU { .. } => "LeakyReLU",
            LayerSpec::GELU { .. } => "GELU",
            LayerSpec::SiLU { .. } => "SiLU",
            LayerSpec::Tanh {} => "Tanh",
            LayerSpec::Sigmoid {} => "Sigmoid",
            LayerSpec::Identity {} => "Identity",
            LayerSpec::Dropout { .. } => "Dropout",
            LayerSpec::BatchNorm1d { .. } => "BatchNorm1d",
            LayerSpec::BatchNorm2d { .. } => "BatchNorm2d",
            LayerSpec::LayerNorm { .. } => "LayerNorm",
        }
    }

    /// The window of a conv or pooling layer.
    pub fn window(&self) -> Option<Window> {
        let w = |k: Size2, s: Size2, p: Size2, d: Size2| Window {
            kernel: k.pair(),
            stride: s.pair(),
            padding: p.pair(),
            dilation: d.pair(),
        };
        match self {
            LayerSpec::Conv2d { kernel_size, stride, padding, dilation, .. } => {
                Some(w(*kernel_size, *stride, *padding, *dilation))
            }
            LayerSpec::MaxPool2d { kernel_size, stride, padding, dilation, .. } => {
                Some(w(*kernel_size, stride.unwrap_or(*kernel_size), *padding, *dilation))
            }
            LayerSpec::AvgPool2d { kernel_size, stride, padding, .. } => {
                Some(w(*kernel_size, stride.unwrap_or(*kernel_size), *padding, Size2::One(1)))
            }
            _ => None,
        }
    }
}
