//! The options of every entry point: memory budget, accumulation dtype, per-layer Grams, the
//! form choice and whether the specialised CPU kernels may run.

use serde::{Deserialize, Serialize};

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
