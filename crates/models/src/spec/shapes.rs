//! A whole spec: parsing, validation and per-layer shapes, and the state-dict tensors it names.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::layer::LayerSpec;
use crate::{ModelError, Result};

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
