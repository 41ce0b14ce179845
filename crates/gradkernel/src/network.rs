//! What the gradient kernel differentiates: the [`Network`] trait and its implementations for
//! the paper's presets ([`Model`]), spec models ([`SpecModel`], and [`PlainSpec`] for the
//! untapped oracle route) and a user's candle `Module` ([`ModuleNet`]).
//!
//! Each trainable layer of a preset is recorded under its checkpoint prefix (`layers.{i}`,
//! `conv.{i}`, `head`), each of a spec model under its layer index (`"0"`, `"3"`), so per-layer
//! Grams keep those names whichever route computes them.

use candle::{DType, Device, Module, Tensor, Var};
use stiff_models::ops::Window;
use stiff_models::{Layer, LayerKind, Model, SpecModel};

use crate::error::Result;

/// A network the general engine can differentiate: a batched forward pass (tapped layers from
/// [`crate::nn`] record when the engine asks them to) and its trainable parameters.
pub trait Network {
    /// x: `(N, ...)` prepared by [`Network::prepare`] -> outputs `(N, ...)`. Examples must not
    /// interact (eval mode).
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor>;
    /// Every trainable parameter with a stable name, in the order of per-example gradient columns.
    fn parameters(&self) -> Vec<(String, Var)>;
    /// Brings user inputs to the network's device, dtype and shape. Default: the first
    /// parameter's device and dtype, shape unchanged.
    fn prepare(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.parameters();
        let (dev, dt) = p.first().map(|(_, v)| (v.device().clone(), v.dtype())).unwrap_or((Device::Cpu, DType::F32));
        Ok(x.to_device(&dev)?.to_dtype(dt)?)
    }
    /// The network as a plain chain of dense / conv layers (each with an optional ReLU, a conv
    /// with optional max pooling, the last one dense without ReLU: the logits), when it is one
    /// and computes exactly [`Network::forward`] on prepared inputs. The specialised CPU kernels
    /// take such chains whatever the network's origin. Default `None` (the general engine).
    fn chain(&self) -> Option<Vec<Layer>> {
        None
    }
}

/// A user's candle `Module` and its `VarMap`, as a [`Network`]. Parameters are the map's
/// variables sorted by name, minus batch norm buffers (`*.running_mean`, `*.running_var`,
/// `*.num_batches_tracked`).
pub struct ModuleNet<'a, M: Module> {
    module: &'a M,
    params: Vec<(String, Var)>,
}

impl<'a, M: Module> ModuleNet<'a, M> {
    /// Wraps `module`, whose trainable parameters are every `Var` of `vars` (named by their
    /// `VarBuilder` paths). Buffers (`running_mean`, `running_var`) are not parameters.
    pub fn new(module: &'a M, vars: &candle_nn::VarMap) -> Self {
        let map = vars.data().lock().expect("the VarMap lock is not poisoned");
        let mut params: Vec<(String, Var)> =
            map.iter().filter(|(k, _)| !is_buffer_name(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Self { module, params }
    }

    /// With an explicit parameter list (order = gradient column order).
    pub fn with_params(module: &'a M, params: Vec<(String, Var)>) -> Self {
        Self { module, params }
    }
}

impl<M: Module> Network for ModuleNet<'_, M> {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        self.module.forward(x)
    }
    fn parameters(&self) -> Vec<(String, Var)> {
        self.params.clone()
    }
}

pub(crate) fn is_buffer_name(k: &str) -> bool {
    k.ends_with("running_mean") || k.ends_with("running_var") || k.ends_with("num_batches_tracked")
}

/// A spec model runs through the tapped layers: Linear, Conv2d, BatchNorm (eval) and LayerNorm
/// are recorded under their layer index (`"0"`, `"3"`, ...).
impl Network for SpecModel {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        use crate::nn;
        use stiff_models::LayerSpec as L;
        let mut a = x.clone();
        for (i, l) in self.spec().layers.iter().enumerate() {
            let name = i.to_string();
            let p = |f: &str| self.param(i, f).map(|v| v.as_tensor().clone());
            a = match l {
                L::Linear { .. } => {
                    nn::linear_forward(&name, &a, &p("weight").expect("validated"), p("bias").as_ref())?
                }
                L::Conv2d { .. } => {
                    let win = l.window().expect("conv");
                    nn::conv2d_forward(&name, &a, &p("weight").expect("validated"), p("bias").as_ref(), &win)?
                }
                L::BatchNorm1d { eps, .. } | L::BatchNorm2d { eps, .. } => {
                    let (g, b) = (p("weight"), p("bias"));
                    let aff = g.as_ref().zip(b.as_ref());
                    let (m, v) = (self.buffer(i, "running_mean"), self.buffer(i, "running_var"));
                    nn::batch_norm_forward(&name, &a, m.expect("validated"), v.expect("validated"), aff, *eps)?
                }
                L::LayerNorm { normalized_shape, eps, .. } => {
                    let k = normalized_shape.dims().len();
                    nn::layer_norm_forward(&name, &a, k, p("weight").as_ref(), p("bias").as_ref(), *eps)?
                }
                _ => self.layer_forward(i, &a).map_err(|e| candle::Error::Msg(e.to_string()))?,
            };
        }
        Ok(a)
    }
    fn parameters(&self) -> Vec<(String, Var)> {
        self.params().to_vec()
    }
    fn prepare(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.prepare_input(&x.to_device(&self.device())?)?)
    }
    fn chain(&self) -> Option<Vec<Layer>> {
        crate::chain::of_spec(self)
    }
}

/// A spec model through its plain forward ([`SpecModel::forward`], no taps): every parameter
/// takes the fallback route. The independent route for oracle checks and the fallback's speed.
pub struct PlainSpec<'a>(pub &'a SpecModel);

impl Network for PlainSpec<'_> {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        self.0.forward(x).map_err(|e| candle::Error::Msg(e.to_string()))
    }
    fn parameters(&self) -> Vec<(String, Var)> {
        self.0.params().to_vec()
    }
    fn prepare(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.0.prepare_input(&x.to_device(&self.0.device())?)?)
    }
}

/// The same function as [`Model::forward`], built from the tapped layers: dense `x W^T + b`,
/// stride-1 convolutions with the model's padding, `relu'(0) = 0`, and max pooling that passes
/// the gradient to the first maximum of each window (floor mode).
impl Network for Model {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let mut a = x.clone();
        for l in self.layers() {
            let (w, b) = (l.weight.as_tensor(), l.bias.as_tensor());
            let z = match l.kind {
                LayerKind::Dense => {
                    if a.rank() > 2 {
                        a = a.flatten_from(1)?;
                    }
                    crate::nn::linear_forward(&l.name, &a, w, Some(b))?
                }
                LayerKind::Conv2d { kernel, padding, .. } => {
                    let win = Window {
                        kernel: (kernel, kernel),
                        stride: (1, 1),
                        padding: (padding, padding),
                        dilation: (1, 1),
                    };
                    crate::nn::conv2d_forward(&l.name, &a, w, Some(b), &win)?
                }
            };
            a = if l.relu { crate::nn::relu(&z)? } else { z };
            if let LayerKind::Conv2d { pool, .. } = l.kind {
                if pool > 1 {
                    a = crate::nn::max_pool2d(&a, pool, pool, 0)?;
                }
            }
        }
        Ok(a)
    }

    fn parameters(&self) -> Vec<(String, Var)> {
        self.layers()
            .iter()
            .flat_map(|l| {
                let (wk, bk) = l.keys();
                [(wk, l.weight.clone()), (bk, l.bias.clone())]
            })
            .collect()
    }

    fn prepare(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.prepare_input(&x.to_device(self.device())?)?)
    }

    fn chain(&self) -> Option<Vec<Layer>> {
        Some(self.layers().to_vec())
    }
}

/// A reference to a network is the network (so `gram(&&model, ...)` and `&dyn Network` work).
impl<T: Network + ?Sized> Network for &T {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        (**self).forward(x)
    }
    fn parameters(&self) -> Vec<(String, Var)> {
        (**self).parameters()
    }
    fn prepare(&self, x: &Tensor) -> Result<Tensor> {
        (**self).prepare(x)
    }
    fn chain(&self) -> Option<Vec<Layer>> {
        (**self).chain()
    }
}
