//! The model a [`super::ModelSpec`] builds: its parameters and buffers (the methods live beside
//! what they do: loading in `weights`, the forward pass in `forward`).

use std::collections::HashMap;

use candle::{Tensor, Var};

use super::shapes::ModelSpec;

/// A model built from a [`ModelSpec`]: parameters as `Var`s in `state_dict()` order, buffers as
/// tensors. Its [`SpecModel::forward`] is a plain candle forward (no taps), eval mode.
#[derive(Debug, Clone)]
pub struct SpecModel {
    pub(super) spec: ModelSpec,
    /// `(key, var)` of every parameter, in `state_dict()` order.
    pub(super) params: Vec<(String, Var)>,
    pub(super) buffers: HashMap<String, Tensor>,
}
