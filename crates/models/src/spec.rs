//! A network as a list of layers in PyTorch terms (`nn.Sequential`), its parameters under the
//! exact `state_dict()` keys, weight loading (safetensors, PyTorch `.pt`/`.pth`), and a plain
//! forward pass built from candle ops with the project's conventions ([`crate::ops`]).
//!
//! JSON form (type and argument names are PyTorch's constructor names; omitted arguments take
//! PyTorch's defaults; unknown arguments are an error):
//! ```json
//! {"input": [3, 32, 32],
//!  "layers": [{"type": "Conv2d", "in_channels": 3, "out_channels": 16, "kernel_size": 3,
//!              "stride": 2, "padding": 1},
//!             {"type": "BatchNorm2d", "num_features": 16},
//!             {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2},
//!             {"type": "Flatten"}, {"type": "Linear", "in_features": 1024, "out_features": 10}]}
//! ```
//! Layer `i`'s parameters are `{i}.weight`, `{i}.bias`; batch norm buffers `{i}.running_mean`,
//! `{i}.running_var` (and `{i}.num_batches_tracked`, accepted and ignored).

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::SpecKeyError;
use crate::ops::{self, Window};
use crate::{ModelError, Result};

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

/// Whether a named tensor of a layer is trained (a parameter) or a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorRole {
    /// Trained: gets a per-example gradient.
    Parameter,
    /// Fixed statistics (batch norm running mean and variance).
    Buffer,
}

/// One tensor of the state dict: its key, shape, role, and the layer it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// Index of the layer in the spec.
    pub layer: usize,
    /// `"{layer}.weight"` etc.
    pub key: String,
    /// `weight`, `bias`, `running_mean`, `running_var`.
    pub field: &'static str,
    /// Shape PyTorch stores.
    pub shape: Vec<usize>,
    /// Parameter or buffer.
    pub role: TensorRole,
    /// Fan-in for PyTorch's default uniform initialisation (Linear/Conv2d).
    pub fan_in: Option<usize>,
}

/// A whole `nn.Sequential`: the per-example input shape and the layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Per-example input shape, e.g. `[3, 32, 32]` or `[784]`.
    pub input: Vec<usize>,
    /// The layers, in order (indices are the `state_dict()` key prefixes).
    pub layers: Vec<LayerSpec>,
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

/// Elements of `shape`, `None` when the product overflows (sizes come from user JSON).
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

fn layer_err(index: usize, layer: &LayerSpec, msg: impl std::fmt::Display) -> ModelError {
    ModelError::SpecLayer { index, layer: layer.type_name().to_string(), msg: msg.to_string() }
}

impl ModelSpec {
    /// Reads a JSON spec; errors name the file.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
        let spec: ModelSpec = serde_json::from_str(&text).map_err(|e| ModelError::File {
            path: path.to_path_buf(),
            msg: format!("not a model spec: {}", crate::error::clip_quoted(&e.to_string())),
        })?;
        // Layer and shape errors name the file too.
        spec.shapes().map_err(|e| ModelError::File { path: path.to_path_buf(), msg: e.to_string() })?;
        Ok(spec)
    }

    /// Per-example output shape after every layer (index `i` = after layer `i`), checking that each
    /// layer accepts its input; errors name the layer index and type.
    pub fn shapes(&self) -> Result<Vec<Vec<usize>>> {
        if self.input.is_empty() || self.input.contains(&0) {
            return Err(ModelError::InvalidConfig(format!(
                "spec input shape {:?} must be non-empty and positive",
                self.input
            )));
        }
        if self.layers.is_empty() {
            return Err(ModelError::InvalidConfig("spec has no layers".into()));
        }
        if numel(&self.input).is_none() {
            return Err(ModelError::InvalidConfig(format!(
                "spec input shape {:?} has more elements than memory can address",
                self.input
            )));
        }
        if let Some(p) = self.tensors().into_iter().find(|p| numel(&p.shape).is_none()) {
            let msg = format!("`{}` of shape {:?} has more elements than memory can address", p.key, p.shape);
            return Err(layer_err(p.layer, &self.layers[p.layer], msg));
        }
        let mut cur = self.input.clone();
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let e = |m: String| layer_err(i, l, m);
            cur = match l {
                LayerSpec::Linear { in_features, out_features, .. } => {
                    if *in_features == 0 || *out_features == 0 {
                        return Err(e("in_features and out_features must be positive".into()));
                    }
                    if cur.last() != Some(in_features) {
                        return Err(e(format!("expects inputs (..., {in_features}), got per-example shape {cur:?}")));
                    }
                    let mut c = cur.clone();
                    *c.last_mut().expect("non-empty") = *out_features;
                    c
                }
                LayerSpec::Conv2d { in_channels, out_channels, groups, .. } => {
                    if *groups != 1 {
                        return Err(e(format!("groups = {groups} is not supported (only 1)")));
                    }
                    if *out_channels == 0 {
                        return Err(e("out_channels must be positive".into()));
                    }
                    let [c, h, w] = cur[..] else {
                        return Err(e(format!("expects (C, H, W) inputs, got {cur:?}")));
                    };
                    if c != *in_channels {
                        return Err(e(format!("expects {in_channels} input channels, got {c} (input {cur:?})")));
                    }
                    let (ho, wo) = l.window().expect("conv").out_size(h, w).map_err(|m| e(m.to_string()))?;
                    vec![*out_channels, ho, wo]
                }
                LayerSpec::MaxPool2d { ceil_mode, .. } | LayerSpec::AvgPool2d { ceil_mode, .. } => {
                    if *ceil_mode {
                        return Err(e("ceil_mode = true is not supported".into()));
                    }
                    if let LayerSpec::AvgPool2d { count_include_pad: false, .. } = l {
                        return Err(e("count_include_pad = false is not supported".into()));
                    }
                    let win = l.window().expect("pool");
                    if matches!(l, LayerSpec::MaxPool2d { .. })
                        && (win.padding.0 * 2 > win.kernel.0 || win.padding.1 * 2 > win.kernel.1)
                    {
                        return Err(e("padding must be at most half the kernel size".into()));
                    }
                    let [c, h, w] = cur[..] else {
                        return Err(e(format!("expects (C, H, W) inputs, got {cur:?}")));
                    };
                    let (ho, wo) = win.out_size(h, w).map_err(|m| e(m.to_string()))?;
                    vec![c, ho, wo]
                }
                LayerSpec::AdaptiveAvgPool2d { output_size } => {
                    if output_size.pair() != (1, 1) {
                        return Err(e(format!("only output_size 1 is supported, got {output_size:?}")));
                    }
                    let [c, _, _] = cur[..] else {
                        return Err(e(format!("expects (C, H, W) inputs, got {cur:?}")));
                    };
                    vec![c, 1, 1]
                }
                LayerSpec::Flatten { start_dim, end_dim } => {
                    if *start_dim != 1 || *end_dim != -1 {
                        return Err(e("only start_dim = 1, end_dim = -1 is supported".into()));
                    }
                    vec![numel(&cur).expect("checked after every layer")]
                }
                LayerSpec::GELU { approximate } if approximate != "none" => {
                    return Err(e(format!("approximate = {approximate:?} is not supported (only \"none\")")));
                }
                LayerSpec::BatchNorm1d { num_features, affine, track_running_stats, .. }
                | LayerSpec::BatchNorm2d { num_features, affine, track_running_stats, .. } => {
                    let _ = affine;
                    if !track_running_stats {
                        return Err(e(
                            "track_running_stats = false (batch statistics in eval mode) mixes examples; not supported"
                                .into(),
                        ));
                    }
                    let ok = match l {
                        LayerSpec::BatchNorm1d { .. } => matches!(cur.len(), 1 | 2),
                        _ => cur.len() == 3,
                    };
                    if !ok || cur[0] != *num_features {
                        return Err(e(format!(
                            "expects {} inputs with {num_features} channels, got per-example shape {cur:?}",
                            if matches!(l, LayerSpec::BatchNorm1d { .. }) { "(C) or (C, L)" } else { "(C, H, W)" }
                        )));
                    }
                    cur
                }
                LayerSpec::LayerNorm { normalized_shape, .. } => {
                    let ns = normalized_shape.dims();
                    if ns.is_empty() || ns.len() > cur.len() || cur[cur.len() - ns.len()..] != ns[..] {
                        return Err(e(format!("normalized_shape {ns:?} does not end the per-example shape {cur:?}")));
                    }
                    cur
                }
                _ => cur,
            };
            if numel(&cur).is_none() {
                return Err(e(format!("output shape {cur:?} has more elements than memory can address")));
            }
            out.push(cur.clone());
        }
        Ok(out)
    }

    /// Number of outputs per example (the last layer's flattened size).
    pub fn num_outputs(&self) -> Result<usize> {
        Ok(self.shapes()?.last().expect("non-empty").iter().product())
    }

    /// Every tensor of the state dict in `state_dict()` order.
    pub fn tensors(&self) -> Vec<ParamSpec> {
        let mut v = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let mut push = |field: &'static str, shape: Vec<usize>, role: TensorRole, fan_in: Option<usize>| {
                v.push(ParamSpec { layer: i, key: format!("{i}.{field}"), field, shape, role, fan_in })
            };
            match l {
                LayerSpec::Linear { in_features, out_features, bias } => {
                    push("weight", vec![*out_features, *in_features], TensorRole::Parameter, Some(*in_features));
                    if *bias {
                        push("bias", vec![*out_features], TensorRole::Parameter, Some(*in_features));
                    }
                }
                LayerSpec::Conv2d { in_channels, out_channels, kernel_size, bias, .. } => {
                    let (kh, kw) = kernel_size.pair();
                    let fan = in_channels.saturating_mul(kh).saturating_mul(kw);
                    push("weight", vec![*out_channels, *in_channels, kh, kw], TensorRole::Parameter, Some(fan));
                    if *bias {
                        push("bias", vec![*out_channels], TensorRole::Parameter, Some(fan));
                    }
                }
                LayerSpec::BatchNorm1d { num_features, affine, .. }
                | LayerSpec::BatchNorm2d { num_features, affine, .. } => {
                    if *affine {
                        push("weight", vec![*num_features], TensorRole::Parameter, None);
                        push("bias", vec![*num_features], TensorRole::Parameter, None);
                    }
                    push("running_mean", vec![*num_features], TensorRole::Buffer, None);
                    push("running_var", vec![*num_features], TensorRole::Buffer, None);
                }
                LayerSpec::LayerNorm { normalized_shape, elementwise_affine: true, bias, .. } => {
                    push("weight", normalized_shape.dims(), TensorRole::Parameter, None);
                    if *bias {
                        push("bias", normalized_shape.dims(), TensorRole::Parameter, None);
                    }
                }
                _ => {}
            }
        }
        v
    }
}

/// How file keys become spec keys: explicit renames (`from -> to`, applied first), then a
/// leading `module.` (DataParallel) is stripped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMap {
    /// File key to spec key.
    pub rename: HashMap<String, String>,
}

impl KeyMap {
    /// Reads `{"file key": "spec key", ...}` from a JSON file.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
        let rename: HashMap<String, String> = serde_json::from_str(&text).map_err(|e| ModelError::File {
            path: path.to_path_buf(),
            msg: format!("a key map must be a JSON object of strings: {}", crate::error::clip_quoted(&e.to_string())),
        })?;
        Ok(Self { rename })
    }

    /// The spec key of file key `key`: the rename if there is one, else `key` without a leading `module.`.
    pub fn apply(&self, key: &str) -> String {
        if let Some(k) = self.rename.get(key) {
            return k.clone();
        }
        key.strip_prefix("module.").map(str::to_string).unwrap_or_else(|| key.to_string())
    }
}

/// Reads every tensor of a safetensors file, or of a PyTorch `.pt`/`.pth` state dict (zip +
/// pickle, checked before anything is allocated; a checkpoint dict with a `state_dict` entry
/// works too). A malformed file gives [`ModelError::File`] saying what is wrong, never a panic.
pub fn read_weights(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext == "pt" || ext == "pth" || ext == "bin" {
        if !path.exists() {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let v = crate::pt::read(path)?;
        v.into_iter().map(|(k, t)| Ok((k, t.to_device(device)?))).collect()
    } else {
        Ok(crate::io::load_tensors(path, device)?.0)
    }
}

/// A model built from a [`ModelSpec`]: parameters as `Var`s in `state_dict()` order, buffers as
/// tensors. Its [`SpecModel::forward`] is a plain candle forward (no taps), eval mode.
#[derive(Debug, Clone)]
pub struct SpecModel {
    spec: ModelSpec,
    /// `(key, var)` of every parameter, in `state_dict()` order.
    params: Vec<(String, Var)>,
    buffers: HashMap<String, Tensor>,
}

impl SpecModel {
    /// Fresh parameters: Linear/Conv2d weights and biases `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
    /// (PyTorch's default) from `ChaCha8Rng(seed)` in state-dict order; norm weights 1, biases 0;
    /// running mean 0, variance 1.
    pub fn new(spec: &ModelSpec, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        spec.shapes()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        for p in spec.tensors() {
            let n: usize = p.shape.iter().product();
            let v: Vec<f32> = match (p.fan_in, p.field) {
                (Some(f), _) => {
                    let b = 1.0 / (f as f32).sqrt();
                    (0..n).map(|_| rng.random_range(-b..b)).collect()
                }
                (None, "weight" | "running_var") => vec![1.0; n],
                _ => vec![0.0; n],
            };
            tensors.insert(p.key.clone(), Tensor::from_vec(v, p.shape.as_slice(), &Device::Cpu)?);
        }
        Self::from_tensors(spec, tensors, Path::new("<random init>"), &KeyMap::default(), dtype, device)
    }

    /// Builds the model from named tensors (file keys, mapped through `keys`). Every parameter and
    /// buffer must be present with the right shape and no other key may be (`num_batches_tracked`
    /// is ignored). Errors name `source`, the layer index and type, the key, and both shapes.
    pub fn from_tensors(
        spec: &ModelSpec,
        tensors: HashMap<String, Tensor>,
        source: &Path,
        keys: &KeyMap,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        spec.shapes()?;
        let mut mapped: HashMap<String, (String, Tensor)> = HashMap::new();
        for (k, t) in tensors {
            let to = keys.apply(&k);
            if let Some((prev, _)) = mapped.get(&to) {
                return Err(ModelError::File {
                    path: source.to_path_buf(),
                    msg: format!("keys `{prev}` and `{k}` both map to `{to}`"),
                });
            }
            mapped.insert(to, (k, t));
        }
        let mut params = Vec::new();
        let mut buffers = HashMap::new();
        for p in spec.tensors() {
            let layer = spec.layers[p.layer].type_name().to_string();
            let (file_key, t) = mapped.remove(&p.key).ok_or_else(|| {
                ModelError::SpecMissingKey(Box::new(SpecKeyError {
                    path: source.to_path_buf(),
                    index: p.layer,
                    layer: layer.clone(),
                    key: p.key.clone(),
                    expected: p.shape.clone(),
                    got: None,
                }))
            })?;
            if t.dims() != p.shape.as_slice() {
                return Err(ModelError::SpecShape(Box::new(SpecKeyError {
                    path: source.to_path_buf(),
                    index: p.layer,
                    layer,
                    key: file_key,
                    expected: p.shape.clone(),
                    got: Some(t.dims().to_vec()),
                })));
            }
            // The checks every model source gets (Model::load makes them for presets): a NaN
            // weight would give a NaN Gram, an integer one would be cast silently.
            crate::io::check_float_finite(source, &file_key, &t)?;
            let t = t.to_dtype(dtype)?.to_device(device)?;
            match p.role {
                TensorRole::Parameter => params.push((p.key.clone(), Var::from_tensor(&t)?)),
                TensorRole::Buffer => {
                    buffers.insert(p.key.clone(), t);
                }
            }
        }
        mapped.retain(|k, _| !k.ends_with(".num_batches_tracked"));
        if let Some((_, (file_key, _))) = mapped.into_iter().min_by(|a, b| a.0.cmp(&b.0)) {
            return Err(ModelError::UnexpectedKey { path: source.to_path_buf(), key: file_key });
        }
        Ok(Self { spec: spec.clone(), params, buffers })
    }

    /// Loads weights from a safetensors or `.pt`/`.pth` file (see [`read_weights`]).
    pub fn load(spec: &ModelSpec, path: &Path, keys: &KeyMap, dtype: DType, device: &Device) -> Result<Self> {
        let t = read_weights(path, device)?;
        Self::from_tensors(spec, t, path, keys, dtype, device)
    }

    /// The layer list.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// `(key, var)` of every parameter in `state_dict()` order.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Buffers (batch norm running statistics) by key.
    pub fn buffers(&self) -> &HashMap<String, Tensor> {
        &self.buffers
    }

    /// The parameter `"{layer}.{field}"`, if the layer has it.
    pub fn param(&self, layer: usize, field: &str) -> Option<&Var> {
        let key = format!("{layer}.{field}");
        self.params.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The buffer `"{layer}.{field}"`.
    pub fn buffer(&self, layer: usize, field: &str) -> Option<&Tensor> {
        self.buffers.get(&format!("{layer}.{field}"))
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The dtype of the stored tensors (f32 when there are none).
    pub fn dtype(&self) -> DType {
        self.buffers
            .values()
            .next()
            .map(|t| t.dtype())
            .or(self.params.first().map(|(_, v)| v.dtype()))
            .unwrap_or(DType::F32)
    }

    /// The device of the parameters (CPU when there are none).
    pub fn device(&self) -> Device {
        self.params.first().map(|(_, v)| v.device().clone()).unwrap_or(Device::Cpu)
    }

    /// An independent copy in another dtype (e.g. F64 for oracle checks).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let params = self
            .params
            .iter()
            .map(|(k, v)| Ok((k.clone(), Var::from_tensor(&v.as_tensor().to_dtype(dtype)?.copy()?)?)))
            .collect::<Result<Vec<_>>>()?;
        let buffers =
            self.buffers.iter().map(|(k, t)| Ok((k.clone(), t.to_dtype(dtype)?.copy()?))).collect::<Result<_>>()?;
        Ok(Self { spec: self.spec.clone(), params, buffers })
    }

    /// `(key, tensor)` of every parameter and buffer, `state_dict()` order (for saving).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.spec
            .tensors()
            .into_iter()
            .filter_map(|p| match p.role {
                TensorRole::Parameter => self.param(p.layer, p.field).map(|v| (p.key, v.as_tensor().clone())),
                TensorRole::Buffer => self.buffers.get(&p.key).map(|t| (p.key, t.clone())),
            })
            .collect()
    }

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

impl crate::ModelConfig {
    /// This configuration as an `nn.Sequential` spec, plus the key map from the checkpoint keys of
    /// [`crate::Model`] (`layers.{i}`, `conv.{i}`, `head`) to the spec's indices. MLP:
    /// `Flatten, (Linear, ReLU)*, Linear`; CNN: `(Conv2d same-padded, ReLU, MaxPool2d)*, Flatten, Linear`.
    pub fn to_spec(&self) -> Result<(ModelSpec, KeyMap)> {
        self.validate()?;
        let inp = self.input;
        let mut layers = Vec::new();
        let mut rename = HashMap::new();
        let mut alias = |from: &str, to: usize| {
            for f in ["weight", "bias"] {
                rename.insert(format!("{from}.{f}"), format!("{to}.{f}"));
            }
        };
        let input;
        match &self.arch {
            crate::ArchSpec::Mlp { hidden } => {
                input = vec![inp.numel()];
                layers.push(LayerSpec::Flatten { start_dim: 1, end_dim: -1 });
                let mut d = inp.numel();
                for (i, &h) in hidden.iter().enumerate() {
                    alias(&format!("layers.{i}"), layers.len());
                    layers.push(LayerSpec::Linear { in_features: d, out_features: h, bias: true });
                    layers.push(LayerSpec::ReLU { inplace: false });
                    d = h;
                }
                alias(&format!("layers.{}", hidden.len()), layers.len());
                layers.push(LayerSpec::Linear { in_features: d, out_features: self.num_classes, bias: true });
            }
            crate::ArchSpec::Cnn { channels, kernel, pool } => {
                input = vec![inp.channels, inp.height, inp.width];
                let (mut c, mut h, mut w) = (inp.channels, inp.height, inp.width);
                for (i, &co) in channels.iter().enumerate() {
                    alias(&format!("conv.{i}"), layers.len());
                    layers.push(LayerSpec::Conv2d {
                        in_channels: c,
                        out_channels: co,
                        kernel_size: Size2::One(*kernel),
                        stride: Size2::One(1),
                        padding: Size2::One(kernel / 2),
                        dilation: Size2::One(1),
                        groups: 1,
                        bias: true,
                    });
                    layers.push(LayerSpec::ReLU { inplace: false });
                    layers.push(LayerSpec::MaxPool2d {
                        kernel_size: Size2::One(*pool),
                        stride: None,
                        padding: Size2::One(0),
                        dilation: Size2::One(1),
                        ceil_mode: false,
                    });
                    c = co;
                    h /= pool;
                    w /= pool;
                }
                layers.push(LayerSpec::Flatten { start_dim: 1, end_dim: -1 });
                alias("head", layers.len());
                layers.push(LayerSpec::Linear { in_features: c * h * w, out_features: self.num_classes, bias: true });
            }
        }
        Ok((ModelSpec { input, layers }, KeyMap { rename }))
    }
}

impl crate::Model {
    /// The same network as a [`SpecModel`] whose parameters are this model's own `Var`s (shared
    /// storage, not copies), keyed by the spec's indices.
    pub fn to_spec_model(&self) -> Result<SpecModel> {
        let (spec, keys) = self.config().to_spec()?;
        let mut params = Vec::new();
        for l in self.layers() {
            let (wk, bk) = l.keys();
            params.push((keys.apply(&wk), l.weight.clone()));
            params.push((keys.apply(&bk), l.bias.clone()));
        }
        Ok(SpecModel { spec, params, buffers: HashMap::new() })
    }
}
