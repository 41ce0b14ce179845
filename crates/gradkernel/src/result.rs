//! What every Gram entry point returns: one result type for a square Gram ([`GramResult`]) and
//! one for a Gram between two sets ([`CrossGramResult`]), whatever engine or kernel ran.

use candle::Tensor;

use crate::routes::Route;

/// Output of [`crate::gram`] and [`crate::gram_net`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GramResult {
    /// `(N, N)` on the CPU, f32 (or f64: f64 network or `accumulate_f64`); exactly symmetric.
    pub k: Tensor,
    /// `(layer name, (N, N))` per layer (unit) in the order of [`GramResult::routes`], summing
    /// to `k`; empty unless `per_layer`.
    pub per_layer: Vec<(String, Tensor)>,
    /// `|g_i| = sqrt(K[i,i])`, length N.
    pub norms: Vec<f64>,
    /// The loss of each example (the summed loss's rows), length N.
    pub loss_per_example: Vec<f64>,
    /// Wall time of the whole computation (validation, passes, products, assembly).
    pub seconds: f64,
    /// Each layer's (unit's) parameters and route, in forward order.
    pub routes: Vec<Route>,
    /// Examples per chunk (block side or row tile; the smallest over layers), chosen from the
    /// memory budget; `N` when nothing was split.
    pub chunk: usize,
}

/// Output of [`crate::cross_gram`] and [`crate::cross_gram_net`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CrossGramResult {
    /// `K[i,j] = g^a_i . g^b_j`: `(N, M)` on the CPU.
    pub k: Tensor,
    /// `(layer name, (N, M))` per layer; empty unless `per_layer`.
    pub per_layer: Vec<(String, Tensor)>,
    /// Gradient norms `|g^a_i|` of set a (length N).
    pub norms_a: Vec<f64>,
    /// Gradient norms `|g^b_j|` of set b (length M).
    pub norms_b: Vec<f64>,
    /// Per-example loss of set a (length N).
    pub loss_a: Vec<f64>,
    /// Per-example loss of set b (length M).
    pub loss_b: Vec<f64>,
    /// Wall time of the whole call.
    pub seconds: f64,
    /// Each layer's parameters and route (as [`GramResult::routes`]).
    pub routes: Vec<Route>,
    /// Examples per chunk or row tile (the smallest over layers; `N` when nothing was split).
    pub chunk: usize,
}
