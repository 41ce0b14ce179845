//! # stiff-gradkernel
//!
//! Exact Gram matrices of per-example loss gradients, `K[i,j] = g_i . g_j` with
//! `g_i = dL(f_W(x_i), y_i)/dW` over **all** parameters (weights and biases), without ever
//! materialising the `N x P` gradient matrix unless asked to.
//!
//! **One engine.** Every network, the paper's presets (`stiff_models::Model`) included, goes
//! through the general engine ([`gram_net`]): one batched forward with the tapped layers of
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
//! `conv.1`, `head`). [`gram`] on a `Model` first offers the call to the **specialised CPU
//! kernels** (the hand-written dense kernel for ReLU MLPs), all dispatched in one place; where
//! none applies (conv nets, CUDA, `cpu_fast_path = false`, `Method::Materialised`,
//! `DeltaRoute::Autograd`) the general engine runs, which is also the cross-check of the kernels.
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
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

pub mod budget;
mod conv_fast;
mod cpu_fast;
mod engine;
mod error;
mod factors;
mod general;
mod im2col;
pub mod nn;
mod preset;
mod profile;
mod reference;
mod rowmajor;
mod tape;

use candle::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use stiff_models::Model;

pub use conv_fast::{conv_gram_profiled, pooling_stats, ConvProfile, LayerProfile, PoolStats};
pub use cpu_fast::Phases as DensePhases;
pub use error::GradKernelError;
pub use factors::LayerForm;
pub use general::{
    cross_gram_net, gram_net, per_example_gradients_net, reference_gram_net, reference_per_example_gradients_net, Loss,
    LossFn, ModuleNet, NetGramResult, Network, PlainSpec, Route, RouteForm,
};
pub use preset::{logit_jacobians, per_example_gradients};
pub use profile::dense_gram_phases;
pub use reference::{reference_gram, reference_per_example_gradients};
pub use tape::is_recording;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, GradKernelError>;

/// Default memory budget: 2 GiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 2 << 30;

/// How layer contributions are computed (the general engine's per-layer form choice; the CPU
/// dense kernel is factorised, so it runs for `Auto` and `Factorised` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Dense layers factorised; each conv layer materialised or ghost, whichever costs fewer
    /// multiply-adds (default).
    #[default]
    Auto,
    /// Dense layers factorised, conv layers in the ghost form.
    Factorised,
    /// Every layer through materialised per-example gradients (chunked); always the general engine.
    Materialised,
}

/// Where the per-example deltas `dL/dz` come from, i.e. which engine [`gram`] may use on a `Model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaRoute {
    /// A specialised CPU kernel where one applies (the dense kernel's hand-written backward),
    /// else the general engine's probe deltas (default).
    #[default]
    Auto,
    /// Always the general engine: zero probe `Var`s on every tapped layer's output and candle
    /// autograd (any architecture). Same as `cpu_fast_path = false`.
    Autograd,
    /// The hand-written backward `D_{l-1} = (D_l W_l) o relu'(z_{l-1})`. It now exists only
    /// inside the CPU dense kernel of [`gram`]: every call where that kernel does not run
    /// (conv nets, CUDA, `cpu_fast_path = false`, `Method::Materialised`, a budget the kernel does
    /// not fit, [`cross_gram`], [`per_example_gradients`], [`logit_jacobians`]) is an
    /// `Unsupported` error rather than a silent switch to autograd.
    #[deprecated(note = "the hand-written backward exists only in the CPU dense kernel; use DeltaRoute::Auto")]
    Manual,
}

/// Options for [`gram`], [`cross_gram`], [`per_example_gradients`] and [`logit_jacobians`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GramOptions {
    /// Memory budget in bytes (default [`DEFAULT_MEMORY_BUDGET`], 2 GiB). It covers `K`, the
    /// per-layer Grams and the working memory; a call that cannot fit is refused before any work
    /// (see [`budget`]); within it, the example chunks grow as large as fits.
    pub memory_budget_bytes: usize,
    /// Compute the Gram products in f64 (factors are cast up first). Default false: the model's
    /// dtype. An f64 model always gives f64.
    pub accumulate_f64: bool,
    /// Also return each layer's Gram (they sum to `K`). Default true.
    pub per_layer: bool,
    /// Default [`Method::Auto`].
    pub method: Method,
    /// Default [`DeltaRoute::Auto`].
    pub delta_route: DeltaRoute,
    /// Let [`gram`] use the specialised CPU kernels where they apply: dense nets on the CPU with
    /// `Auto`/`Factorised` and a non-autograd route (the hand-written dense `gemm` kernel), conv
    /// presets on the CPU with `Auto` and [`DeltaRoute::Auto`] (the hand-written conv kernel, see
    /// [`conv_gram_profiled`]); false forces the general engine (device-generic, the
    /// cross-check). Default true.
    pub cpu_fast_path: bool,
}

// Builder-style setters (the struct is `#[non_exhaustive]`): start from
// `GramOptions::default()` and chain, e.g. `GramOptions::default().with_per_layer(false)`.
stiff_models::options_setters!(GramOptions {
    with_memory_budget_bytes => memory_budget_bytes: usize,
    with_accumulate_f64 => accumulate_f64: bool,
    with_per_layer => per_layer: bool,
    with_method => method: Method,
    with_delta_route => delta_route: DeltaRoute,
    with_cpu_fast_path => cpu_fast_path: bool,
});

impl Default for GramOptions {
    fn default() -> Self {
        Self {
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET,
            accumulate_f64: false,
            per_layer: true,
            method: Method::Auto,
            delta_route: DeltaRoute::Auto,
            cpu_fast_path: true,
        }
    }
}

/// Output of [`gram`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GramResult {
    /// `(N, N)` on the CPU, f32 (or f64: f64 model or `accumulate_f64`); exactly symmetric.
    pub k: Tensor,
    /// `(layer name, (N, N))` per layer in forward order, summing to `k`; empty unless `per_layer`.
    pub per_layer: Vec<(String, Tensor)>,
    /// `|g_i| = sqrt(K[i,i])`, length N.
    pub norms: Vec<f64>,
    /// Cross-entropy of each example (the summed loss's rows), length N.
    pub loss_per_example: Vec<f64>,
    /// Wall time of the whole computation (validation, passes, products, assembly).
    pub seconds: f64,
    /// The form used for each layer.
    pub forms: Vec<(String, LayerForm)>,
    /// Examples per chunk (block side) chosen from the memory budget.
    pub chunk: usize,
}

/// Output of [`cross_gram`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CrossGramResult {
    /// `K[i,j] = g^a_i . g^b_j`: `(N, M)` on the CPU.
    pub k: Tensor,
    /// `(layer name, (N, M))` per layer; empty unless `per_layer`.
    pub per_layer: Vec<(String, Tensor)>,
    /// Gradient norms of set a (length N) and set b (length M).
    pub norms_a: Vec<f64>,
    /// Gradient norms of set b (length M).
    pub norms_b: Vec<f64>,
    /// Per-example cross-entropy of set a (length N).
    pub loss_a: Vec<f64>,
    /// Per-example cross-entropy of set b (length M).
    pub loss_b: Vec<f64>,
    /// Wall time of the whole call.
    pub seconds: f64,
    /// How each layer's contribution was computed (as [`GramResult::forms`]).
    pub forms: Vec<(String, LayerForm)>,
    /// Examples per chunk or row tile (the smallest over layers; `N` when nothing was split).
    pub chunk: usize,
}

/// The Gram matrix of per-example loss gradients of `model` on `(x, y)`: the budget check, then
/// the specialised CPU kernels where they apply, else the general engine (see the crate docs).
///
/// x: `(N, ...)` in any shape [`Model::prepare_input`] accepts; y: integer labels `(N)` (u8, u32
/// or i64) in `0..num_classes`.
pub fn gram(model: &Model, x: &Tensor, y: &Tensor, opts: &GramOptions) -> Result<GramResult> {
    let n = x.dims().first().copied().unwrap_or(0);
    let opts = budget::working_options(model, n, n, true, opts)?;
    engine::gram_impl(model, x, y, &opts)
}

/// The `(N, M)` Gram between two example sets (e.g. validation rows, training columns): the
/// budget check, then the conv CPU kernel where it applies (conv presets, as for [`gram`]), else
/// the general engine.
/// x_a: `(N, ...)`, y_a: `(N)`, x_b: `(M, ...)`, y_b: `(M)`.
pub fn cross_gram(
    model: &Model,
    x_a: &Tensor,
    y_a: &Tensor,
    x_b: &Tensor,
    y_b: &Tensor,
    opts: &GramOptions,
) -> Result<CrossGramResult> {
    let (n, m) = (x_a.dims().first().copied().unwrap_or(0), x_b.dims().first().copied().unwrap_or(0));
    let opts = budget::working_options(model, n, m, false, opts)?;
    preset::cross_gram(model, x_a, y_a, x_b, y_b, &opts)
}

/// Bytes per Gram entry for `model` under `opts` (see [`GramOptions::accumulate_f64`]).
pub(crate) fn acc_bytes(model: &Model, opts: &GramOptions) -> usize {
    engine::acc_dtype(model, opts).size_in_bytes()
}

/// Copies a 2-D tensor (any float dtype, any device) into an `ndarray::Array2<f64>`.
pub fn to_ndarray_f64(t: &Tensor) -> Result<ndarray::Array2<f64>> {
    let (r, c) = t.dims2()?;
    let v = t.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f64>()?;
    ndarray::Array2::from_shape_vec((r, c), v).map_err(|e| GradKernelError::Unsupported(format!("to_ndarray_f64: {e}")))
}

/// The crate README's examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
