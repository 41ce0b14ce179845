//! # stiff-experiments
//!
//! The paper's figure pipelines on top of the other crates: data preparation (stiff-data),
//! models (stiff-models), training to loss thresholds (stiff-train), the per-example gradient
//! Gram (stiff-gradkernel), stiffness analysis (stiff-analysis) and plots (stiff-plot).
//!
//! * [`dynamics`]: training dynamics behind Figs 2-7 (stiffness measured along training).
//! * [`lr_sweep`]: the learning-rate sweep behind Figs 8-10 (runs with stable ids, records).
//! * [`measure`]: one stiffness measurement of a model snapshot.
//! * [`runner`]: `reproduce` (resume, shards, progress) and `report`.
//! * [`figures`]: figure outputs (config, JSON, CSV, PNG, SVG, summary.md).

pub mod dynamics;
mod error;
pub mod figures;
pub mod lr_sweep;
pub mod measure;
pub mod prepare;
pub mod progress;
pub mod registry;
pub mod report;
pub mod runner;
pub mod spherical;
pub mod stats;
pub mod store;
pub mod sweep;
pub mod tidy;

pub use error::ExperimentError;

pub type Result<T> = std::result::Result<T, ExperimentError>;
