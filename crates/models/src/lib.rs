//! # stiff-models
//!
//! The networks of the stiffness paper, as plain sequences of trainable layers that other crates
//! can walk: fully-connected ReLU nets (`fc6`, `fc4`, any widths) and convolutional nets without
//! batch norm (`cnn5`, `cnn4`, any channel list).
//!
//! * [`ModelConfig`] / [`ArchSpec`] / [`Preset`] describe a net (serde, so every result can carry
//!   the exact architecture that produced it).
//! * [`Model`] holds the parameters as candle `Var`s, runs the forward pass ([`Model::forward`]),
//!   and, for analysis, a forward pass that also returns every layer's input, pre-activation and
//!   hidden representation, optionally with zero "probe" variables added to each pre-activation so
//!   a single backward pass of a summed loss yields the per-example deltas ([`Model::forward_taps`]).
//! * Checkpoints are safetensors files with PyTorch-compatible keys (see [`Model::save`]).
//!
//! ## Parameter names (the safetensors keys)
//! * MLP: `layers.{i}.weight` with shape `(out_features, in_features)`, `layers.{i}.bias` `(out_features)`,
//!   `i = 0..depth`, the last one producing the logits.
//! * CNN: `conv.{i}.weight` `(out, in, kh, kw)`, `conv.{i}.bias` `(out)`, then `head.weight`
//!   `(classes, features)` and `head.bias`.
//!
//! ## Initialisation
//! PyTorch's default for `nn.Linear`/`nn.Conv2d`: every weight and bias is drawn from
//! `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` (fan_in = in_features, or in_channels*kh*kw), from a
//! `ChaCha8Rng` seeded with the model seed, layer by layer, weight before bias, in row-major order.
//! Values are drawn in f32 and cast, so an f64 model equals its f32 twin up to the cast.
#![deny(missing_docs)]

mod arch;
mod error;
pub mod io;
pub mod loss;
mod model;
pub mod ops;
mod pickle_scan;
mod pt;
pub mod spec;

pub use arch::{ArchSpec, InputShape, ModelConfig, Preset};
pub use error::{ModelError, SpecKeyError};
pub use model::{Layer, LayerKind, Model, Taps};
pub use spec::{KeyMap, LayerSpec, ModelSpec, SpecModel};

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

/// The crate README's examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// `with_<field>(value)` setters that return the changed value, for the workspace's
/// `#[non_exhaustive]` options structs (`TrainConfig`, `GramOptions`, `CrossOptions`, ...):
/// `options_setters!(Opts { with_a => a: usize, ... })`, or `Opts<'a> { ... }` with a lifetime.
#[macro_export]
macro_rules! options_setters {
    ($ty:ident $(<$lt:lifetime>)? { $($name:ident => $field:ident: $t:ty),* $(,)? }) => {
        impl$(<$lt>)? $ty$(<$lt>)? {
            $(
                #[doc = concat!("Sets [`", stringify!($ty), "::", stringify!($field), "`] (its docs give the default).")]
                #[must_use]
                pub fn $name(mut self, value: $t) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}
