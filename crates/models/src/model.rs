use candle::{DType, Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{ArchSpec, ModelConfig, ModelError, Result};

/// What a trainable layer computes (before its optional ReLU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayerKind {
    /// `z = a W^T + b`, `W: (out, in)`.
    Dense,
    /// `z = conv2d(a, W, stride 1, padding) + b`, `W: (out, in, k, k)`; the block then applies
    /// ReLU and `pool`x`pool` max pooling (input cropped to a multiple of `pool`, like PyTorch's floor mode).
    Conv2d {
        /// Side of the square kernel.
        kernel: usize,
        /// Zero padding on each side (`kernel / 2`: "same").
        padding: usize,
        /// Side and stride of the max-pooling window.
        pool: usize,
    },
}

/// One trainable layer: its parameters and the per-example shapes it maps between.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Parameter prefix: `layers.{i}`, `conv.{i}` or `head`.
    pub name: String,
    /// What the layer computes.
    pub kind: LayerKind,
    /// Dense: `(out, in)`; conv: `(out, in, k, k)`.
    pub weight: Var,
    /// `(out)`.
    pub bias: Var,
    /// Whether a ReLU follows (false for the logits layer).
    pub relu: bool,
    /// Per-example input dims as the layer sees them: `[in]` (dense) or `[C, H, W]` (conv).
    pub in_dims: Vec<usize>,
    /// Per-example pre-activation dims: `[out]` or `[C_out, H, W]` (before pooling).
    pub out_dims: Vec<usize>,
}

impl Layer {
    /// Number of trainable scalars in this layer (weights and bias).
    pub fn num_params(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }

    /// The `(weight key, bias key)` under which the parameters are saved.
    pub fn keys(&self) -> (String, String) {
        (format!("{}.weight", self.name), format!("{}.bias", self.name))
    }

    fn apply(&self, a: &Tensor) -> Result<Tensor> {
        let w = self.weight.as_tensor();
        let b = self.bias.as_tensor();
        Ok(match self.kind {
            LayerKind::Dense => a.matmul(&w.t()?)?.broadcast_add(b)?,
            LayerKind::Conv2d { padding, .. } => {
                let c = b.dim(0)?;
                a.conv2d(w, padding, 1, 1, 1)?.broadcast_add(&b.reshape((1, c, 1, 1))?)?
            }
        })
    }

    /// The block output after the pre-activation: ReLU (and pooling for conv layers).
    fn activate(&self, z: &Tensor) -> Result<Tensor> {
        let a = if self.relu { crate::ops::relu(z)? } else { z.clone() };
        Ok(match self.kind {
            LayerKind::Dense => a,
            LayerKind::Conv2d { pool, .. } => max_pool(&a, pool)?,
        })
    }
}

/// `pool`x`pool` max pooling with stride `pool`, dropping the trailing rows/columns that do not
/// fill a window (PyTorch's floor mode). The gradient goes to the first maximal element of each
/// window in row-major order ([`crate::ops::max_pool2d`]), as in PyTorch and JAX.
pub(crate) fn max_pool(a: &Tensor, pool: usize) -> Result<Tensor> {
    if pool == 1 {
        return Ok(a.clone());
    }
    let win = crate::ops::Window { kernel: (pool, pool), stride: (pool, pool), padding: (0, 0), dilation: (1, 1) };
    crate::ops::max_pool2d(a, &win)
}

/// The intermediate tensors of one forward pass, for analysis and the gradient kernel.
#[derive(Debug, Clone)]
pub struct Taps {
    /// `(N, classes)`.
    pub logits: Tensor,
    /// Per layer, the input as the layer sees it: `(N, in)` (dense) or `(N, C, H, W)` (conv).
    pub inputs: Vec<Tensor>,
    /// Per layer, the pre-activation `z` (including the zero probe when probes were requested).
    pub pre_activations: Vec<Tensor>,
    /// Per hidden layer (all but the last), the post-activation output (after pooling for conv
    /// layers), flattened: `(N, features)`. These are the "representations" of Fig. 9.
    pub representations: Vec<Tensor>,
    /// Zero variables added to each pre-activation when requested: after `loss.backward()`,
    /// `grads.get(probe)` is `dL/dz` of that layer, one row per example for a summed loss.
    pub probes: Vec<Var>,
}

/// A network: a configuration and its trainable layers.
#[derive(Debug, Clone)]
pub struct Model {
    config: ModelConfig,
    layers: Vec<Layer>,
}

/// Per-layer skeleton derived from a configuration, before parameters exist.
struct LayerPlan {
    name: String,
    kind: LayerKind,
    relu: bool,
    in_dims: Vec<usize>,
    out_dims: Vec<usize>,
    weight_shape: Vec<usize>,
    fan_in: usize,
}

fn plan(cfg: &ModelConfig) -> Result<Vec<LayerPlan>> {
    cfg.validate()?;
    let mut plans = Vec::new();
    let classes = cfg.num_classes;
    match &cfg.arch {
        ArchSpec::Mlp { hidden } => {
            let mut d_in = cfg.input.numel();
            let widths: Vec<usize> = hidden.iter().copied().chain([classes]).collect();
            for (i, &d_out) in widths.iter().enumerate() {
                plans.push(LayerPlan {
                    name: format!("layers.{i}"),
                    kind: LayerKind::Dense,
                    relu: i + 1 < widths.len(),
                    in_dims: vec![d_in],
                    out_dims: vec![d_out],
                    weight_shape: vec![d_out, d_in],
                    fan_in: d_in,
                });
                d_in = d_out;
            }
        }
        ArchSpec::Cnn { channels, kernel, pool } => {
            let (mut c, mut h, mut w) = (cfg.input.channels, cfg.input.height, cfg.input.width);
            for (i, &c_out) in channels.iter().enumerate() {
                plans.push(LayerPlan {
                    name: format!("conv.{i}"),
                    kind: LayerKind::Conv2d { kernel: *kernel, padding: kernel / 2, pool: *pool },
                    relu: true,
                    in_dims: vec![c, h, w],
                    out_dims: vec![c_out, h, w],
                    weight_shape: vec![c_out, c, *kernel, *kernel],
                    fan_in: c * kernel * kernel,
                });
                c = c_out;
                h /= pool;
                w /= pool;
            }
            let features = c * h * w;
            plans.push(LayerPlan {
                name: "head".into(),
                kind: LayerKind::Dense,
                relu: false,
                in_dims: vec![features],
                out_dims: vec![classes],
                weight_shape: vec![classes, features],
                fan_in: features,
            });
        }
    }
    Ok(plans)
}

impl Model {
    /// A freshly initialised model (PyTorch's default uniform scheme, see the crate docs).
    pub fn new(cfg: &ModelConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut draw = |shape: &[usize], fan_in: usize| -> Result<Var> {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
            let t = Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?;
            Ok(Var::from_tensor(&t)?)
        };
        let mut layers = Vec::new();
        for p in plan(cfg)? {
            let weight = draw(&p.weight_shape, p.fan_in)?;
            let bias = draw(&[p.weight_shape[0]], p.fan_in)?;
            layers.push(Layer {
                name: p.name,
                kind: p.kind,
                weight,
                bias,
                relu: p.relu,
                in_dims: p.in_dims,
                out_dims: p.out_dims,
            });
        }
        Ok(Self { config: cfg.clone(), layers })
    }

    /// Builds a model from named tensors (safetensors keys); `source` names where they came from
    /// in error messages. Every key must be present with the right shape, and no other key may be.
    pub fn from_tensors(
        cfg: &ModelConfig,
        mut tensors: std::collections::HashMap<String, Tensor>,
        source: &std::path::Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        for p in plan(cfg)? {
            let mut take = |key: String, expected: &[usize]| -> Result<Var> {
                let t = tensors
                    .remove(&key)
                    .ok_or_else(|| ModelError::MissingKey { path: source.to_path_buf(), key: key.clone() })?;
                if t.dims() != expected {
                    return Err(ModelError::WrongShape {
                        path: source.to_path_buf(),
                        key,
                        got: t.dims().to_vec(),
                        expected: expected.to_vec(),
                    });
                }
                Ok(Var::from_tensor(&t.to_dtype(dtype)?.to_device(device)?)?)
            };
            let weight = take(format!("{}.weight", p.name), &p.weight_shape)?;
            let bias = take(format!("{}.bias", p.name), &[p.weight_shape[0]])?;
            layers.push(Layer {
                name: p.name,
                kind: p.kind,
                weight,
                bias,
                relu: p.relu,
                in_dims: p.in_dims,
                out_dims: p.out_dims,
            });
        }
        if let Some(key) = tensors.into_keys().min() {
            return Err(ModelError::UnexpectedKey { path: source.to_path_buf(), key });
        }
        Ok(Self { config: cfg.clone(), layers })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The trainable layers in forward order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The device holding the parameters.
    pub fn device(&self) -> &Device {
        self.layers[0].weight.device()
    }

    /// The parameters' dtype (f32 or f64).
    pub fn dtype(&self) -> DType {
        self.layers[0].weight.dtype()
    }

    /// All trainable variables, weight then bias, layer by layer (the optimizer's order).
    pub fn vars(&self) -> Vec<Var> {
        self.layers.iter().flat_map(|l| [l.weight.clone(), l.bias.clone()]).collect()
    }

    /// `(key, tensor)` for every parameter, in [`Model::vars`] order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .flat_map(|l| {
                let (wk, bk) = l.keys();
                [(wk, l.weight.as_tensor().clone()), (bk, l.bias.as_tensor().clone())]
            })
            .collect()
    }

    /// Total number of trainable scalars `P`.
    pub fn num_params(&self) -> usize {
        self.layers.iter().map(Layer::num_params).sum()
    }

    /// An independent copy (new storage), e.g. a snapshot during training.
    pub fn deep_clone(&self) -> Result<Self> {
        self.map_params(|t| Ok(t.copy()?))
    }

    /// A copy in another dtype (e.g. F64 for oracle tests).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        self.map_params(|t| Ok(t.to_dtype(dtype)?.copy()?))
    }

    /// A copy on another device.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        self.map_params(|t| Ok(t.to_device(device)?.copy()?))
    }

    fn map_params(&self, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(Layer {
                    weight: Var::from_tensor(&f(l.weight.as_tensor())?)?,
                    bias: Var::from_tensor(&f(l.bias.as_tensor())?)?,
                    ..l.clone()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { config: self.config.clone(), layers })
    }

    /// Overwrites this model's parameters with `other`'s values (same architecture).
    pub fn copy_from(&self, other: &Model) -> Result<()> {
        if self.config != other.config {
            return Err(ModelError::InvalidConfig("copy_from: architectures differ".into()));
        }
        for (a, b) in self.vars().iter().zip(other.vars()) {
            a.set(&b.as_tensor().to_dtype(a.dtype())?.to_device(a.device())?)?;
        }
        Ok(())
    }

    /// Brings `x` to the shape the first layer expects: `(N, features)` for an MLP, `(N, C, H, W)` for a CNN.
    /// Accepts `(N, C, H, W)`, `(N, H, W)` for one channel, or `(N, C*H*W)`.
    pub fn prepare_input(&self, x: &Tensor) -> Result<Tensor> {
        let inp = self.config.input;
        let n = x.dim(0)?;
        if x.elem_count() != n * inp.numel() || x.rank() < 2 {
            return Err(ModelError::InputShape {
                got: x.dims().to_vec(),
                expected: format!("{}x{}x{} = {} features", inp.channels, inp.height, inp.width, inp.numel()),
            });
        }
        let x = x.to_dtype(self.dtype())?;
        Ok(match self.layers[0].kind {
            LayerKind::Dense => x.reshape((n, inp.numel()))?,
            LayerKind::Conv2d { .. } => x.reshape((n, inp.channels, inp.height, inp.width))?,
        })
    }

    /// Logits `(N, classes)` for inputs `x` (see [`Model::prepare_input`] for accepted shapes).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut a = self.prepare_input(x)?;
        for layer in &self.layers {
            a = flatten_for(layer, &a)?;
            a = layer.activate(&layer.apply(&a)?)?;
        }
        Ok(a)
    }

    /// A forward pass that records every layer's input, pre-activation and representation in one
    /// go. With `probes`, a zero `Var` is added to each pre-activation (see [`Taps::probes`]).
    pub fn forward_taps(&self, x: &Tensor, probes: bool) -> Result<Taps> {
        let mut a = self.prepare_input(x)?;
        let mut taps = Taps {
            logits: a.clone(),
            inputs: Vec::new(),
            pre_activations: Vec::new(),
            representations: Vec::new(),
            probes: Vec::new(),
        };
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            a = flatten_for(layer, &a)?;
            taps.inputs.push(a.clone());
            let mut z = layer.apply(&a)?;
            if probes {
                let p = Var::zeros(z.shape(), z.dtype(), z.device())?;
                z = z.add(p.as_tensor())?;
                taps.probes.push(p);
            }
            taps.pre_activations.push(z.clone());
            a = layer.activate(&z)?;
            if i < last {
                taps.representations.push(a.flatten_from(1)?);
            }
        }
        taps.logits = a;
        Ok(taps)
    }

    /// Mean cross-entropy and accuracy of the model on `(x, labels)`, evaluated in chunks of
    /// `batch` examples (no gradients kept). labels: u32 `(N)`.
    pub fn evaluate(&self, x: &Tensor, labels: &Tensor, batch: usize) -> Result<(f64, f64)> {
        let n = x.dim(0)?;
        if n == 0 {
            return Err(ModelError::InvalidConfig("evaluate: empty input".into()));
        }
        let (mut loss, mut correct) = (0f64, 0f64);
        let mut start = 0;
        while start < n {
            let len = batch.max(1).min(n - start);
            let xb = x.narrow(0, start, len)?;
            let yb = labels.narrow(0, start, len)?;
            let logits = self.forward(&xb)?.detach();
            loss += crate::loss::cross_entropy_sum(&logits, &yb)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let pred = logits.argmax(D::Minus1)?;
            correct += pred.eq(&yb.to_dtype(pred.dtype())?)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
            start += len;
        }
        Ok((loss / n as f64, correct / n as f64))
    }
}

/// Dense layers take flat inputs: flatten a conv feature map before the head.
fn flatten_for(layer: &Layer, a: &Tensor) -> Result<Tensor> {
    Ok(match layer.kind {
        LayerKind::Dense if a.rank() > 2 => a.flatten_from(1)?,
        _ => a.clone(),
    })
}
