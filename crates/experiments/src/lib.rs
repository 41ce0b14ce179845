//! # stiff-experiments
//!
//! The paper's figure pipelines on top of the other crates: data preparation (stiff-data),
//! models (stiff-models), training to loss thresholds (stiff-train), the per-example gradient
//! Gram (stiff-gradkernel), stiffness analysis (stiff-analysis) and plots (stiff-plot).
//!
//! One pattern, three times: each figure family implements [`pipeline::Pipeline`] in its own
//! folder (`config`, `run`, `figures`, `summary`), and the [`registry`] lists them. Module
//! dependency order, lowest first (no module imports one to its right):
//!
//! 1. shared vocabulary and helpers: [`error`](ExperimentError), [`store`], [`sweep`],
//!    [`options`], [`training`], [`stats`], [`tidy`], [`progress`], [`prepare`], [`measure`],
//!    [`testdata`], [`pipeline`];
//! 2. the pipelines: [`dynamics`] (Figs 2-7), [`lr_sweep`] (Figs 8-10), [`spherical`];
//! 3. [`registry`] (the one list of pipelines), [`index`] (`index.md`);
//! 4. [`runner`]: `reproduce` and `report` for any pipeline.
#![deny(missing_docs)]

pub mod dynamics;
mod error;
pub mod index;
pub mod lr_sweep;
pub mod measure;
pub mod options;
pub mod pipeline;
pub mod prepare;
pub mod progress;
pub mod registry;
pub mod runner;
pub mod spherical;
pub mod stats;
pub mod store;
pub mod sweep;
pub mod testdata;
pub mod tidy;
pub mod training;

pub use error::ExperimentError;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ExperimentError>;

/// The crate README's examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
