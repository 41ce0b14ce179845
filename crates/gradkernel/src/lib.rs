//! # stiff-gradkernel
//!
//! Exact Gram matrices of per-example loss gradients, `K[i,j] = g_i . g_j` with
//! `g_i = dL(f_W(x_i), y_i)/dW` over **all** parameters (weights and biases), without ever
//! materialising the `N x P` gradient matrix unless asked to.
//!
//! **One front door.** [`gram`], [`cross_gram`], [`per_example_gradients`] and
//! [`logit_jacobians`] take any [`Network`]: a preset (`stiff_models::Model`), a spec model (any
//! PyTorch-style `nn.Sequential`), or a user's candle module ([`ModuleNet`]); the `_net` forms take
//! any [`Loss`]. One dispatch picks the routes: a network that is a plain chain of dense / conv
//! layers ([`Network::chain`]; the presets and every spec of that shape) gets the hand-written CPU
//! kernels, whatever its origin; everything else runs the general engine: one batched forward with the tapped layers of
//! [`nn`] recording each layer's input and a zero probe on its output, one backward of the
//! **summed** loss (so row `i` of a probe's gradient is example `i`'s own delta, no `1/N`), then
//! per layer the cheapest exact form:
//! * dense layer `z = W a + b`: its gradient is `d_i a_i^T` (and `d_i` for the bias), so it
//!   contributes `(D D^T) o (A A^T + 1)` to `K`;
//! * conv layer: per-example weight gradient `D_i U_i^T` with `U_i` the unfolded input patches
//!   (im2col); either materialised per chunk of examples or in the pairwise "ghost" form
//!   `sum_{s,t} (D_i^T D_j)[s,t] ((U_i^T U_j)[s,t] + 1)`, cheaper only for tiny spatial maps;
//!   [`Method::Auto`] picks per layer by multiply-add count;
//! * parameters no tapped layer covers: an exact per-example autograd fallback.
//!
//! A `Model` is a [`Network`] whose layers are tapped under their checkpoint names (`layers.0`,
//! `conv.1`, `head`), a spec model's under their layer index (`"0"`, `"3"`). Where no kernel
//! applies (CUDA, `cpu_fast_path = false`, `Method::Materialised`, `DeltaRoute::Autograd`, a loss
//! other than cross-entropy, a network that is not a chain) the general engine runs, which is
//! also the kernels' cross-check. A parameter that receives no gradient (an op without a backward
//! between it and the loss) is an error, never a silent zero.
//!
//! * Bounded memory: examples are processed in chunks sized from
//!   [`GramOptions::memory_budget_bytes`] (default 2 GiB); `K` is assembled blockwise (upper
//!   blocks only, mirrored) on the host.
//! * [`reference_gram`] is the oracle: one autograd backward per example on the plain
//!   [`Model::forward`] and explicit dot products.
//!
//! All results are returned on the CPU; the computation runs on the model's device (CPU, or CUDA
//! with the `cuda` feature).
//!
//! ```
//! use candle::{DType, Device, Tensor};
//! use stiff_models::{InputShape, Model, ModelConfig, ArchSpec};
//! use stiff_gradkernel::{gram, GramOptions};
//!
//! let cfg = ModelConfig::new(ArchSpec::Mlp { hidden: vec![8] }, InputShape::new(1, 4, 4), 3);
//! let model = Model::new(&cfg, 0, DType::F32, &Device::Cpu)?;
//! let x = Tensor::randn(0f32, 1.0, (5, 16), &Device::Cpu)?;          // (N, 16)
//! let y = Tensor::new(&[0u32, 1, 2, 0, 1], &Device::Cpu)?;           // (N)
//! let r = gram(&model, &x, &y, &GramOptions::default())?;
//! assert_eq!(r.k.dims(), &[5, 5]);
//! assert_eq!(r.per_layer.len(), 2);
//! // The same net written as a PyTorch-style spec takes the same kernel, with the same Gram.
//! let spec = model.to_spec_model()?;
//! let r2 = gram(&spec, &x, &y, &GramOptions::default())?;
//! assert_eq!(r2.routes[0].form, r.routes[0].form);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod api;
pub mod budget;
mod chain;
mod chunking;
mod conv_fast;
mod conv_op;
mod cpu_fast;
mod dense_cross;
mod engine;
mod error;
mod factor;
mod general;
mod general_cpu;
mod hostmat;
mod hostslice;
mod im2col;
mod inputs;
mod loss;
mod network;
pub mod nn;
mod options;
mod pass;
mod plan;
mod profile;
mod reference;
mod result;
mod routes;
mod rowmajor;
mod tape;

pub use api::{cross_gram, cross_gram_net, gram, gram_net, logit_jacobians, per_example_gradients};
pub use conv_fast::{conv_gram_profiled, pooling_stats, ConvProfile, LayerProfile, PoolStats};
pub use cpu_fast::Phases as DensePhases;
pub use error::{GradKernelError, Result};
pub use general::{per_example_gradients_net, reference_gram_net, reference_per_example_gradients_net};
pub use loss::{Loss, LossFn};
pub use network::{ModuleNet, Network, PlainSpec};
pub use options::{DeltaRoute, GramOptions, Method, DEFAULT_MEMORY_BUDGET};
pub use profile::dense_gram_phases;
pub use reference::{reference_gram, reference_per_example_gradients};
pub use result::{CrossGramResult, GramResult};
pub use routes::{LayerForm, Route};
pub use tape::is_recording;

/// Former name of [`GramResult`] (the general engine's result; there is one result type now).
#[deprecated(note = "use GramResult: one result type for every network")]
pub type NetGramResult = GramResult;

/// Former name of [`LayerForm`] (the general engine's routes; there is one enum of routes now).
#[deprecated(note = "use LayerForm: one enum of routes for every engine")]
pub type RouteForm = LayerForm;

/// Copies a 2-D tensor (any float dtype, any device) into an `ndarray::Array2<f64>`.
pub fn to_ndarray_f64(t: &candle::Tensor) -> Result<ndarray::Array2<f64>> {
    let (r, c) = t.dims2()?;
    let v = t.to_dtype(candle::DType::F64)?.to_device(&candle::Device::Cpu)?.flatten_all()?.to_vec1::<f64>()?;
    ndarray::Array2::from_shape_vec((r, c), v).map_err(|e| GradKernelError::Unsupported(format!("to_ndarray_f64: {e}")))
}

/// The crate README's examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
