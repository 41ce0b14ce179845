//! # stiff-train
//!
//! The training loop of the stiffness experiments: plain SGD or Adam with a constant learning
//! rate, shuffled mini-batches (batch 32 by default) from a seed, and the bookkeeping the paper's
//! figures need:
//!
//! * **Training loss** is the mean cross-entropy over a fixed, seeded random subset of the
//!   training set ([`TrainConfig::train_eval_subset`], default 2,000 examples), measured every
//!   [`TrainConfig::eval_every`] steps together with validation loss and accuracy. The running mean
//!   of mini-batch losses is logged too, but never used for decisions.
//! * **Snapshots** ([`Snapshot`], delivered to a [`SnapshotSink`]) at chosen steps (0 =
//!   initialisation), when the measured training loss first falls below each threshold, at the
//!   onset of overfitting, and at the end. The sink receives the model and metrics; this crate
//!   knows nothing about what is measured there.
//! * **Stop rules**: maximum steps, maximum epochs, all thresholds crossed, overfitting onset.
//! * **Divergence** (non-finite loss, non-finite or exploding weights) ends the run with
//!   [`RunStatus::Diverged`]; it is an outcome, not an error.
//! * **Checkpoints** ([`checkpoint`]) hold weights, Adam moments, step/epoch/position and the
//!   threshold bookkeeping; a resumed run continues bit-identically.
//! * **Metrics** as JSON lines ([`TrainConfig::metrics_path`]) and an `indicatif` progress bar.
//!
//! Two step implementations: the candle-autograd reference ([`AutogradStep`], any model, dtype
//! and device) and a hand-derived fast path for MLPs on CPU in f32 ([`fast_mlp::FastMlp`]), used
//! automatically when it applies ([`Backend`]). Both are deterministic: same seed, same thread
//! count → bit-identical weights.
//!
//! ```no_run
//! use candle::{DType, Device, Tensor};
//! use stiff_models::{InputShape, Model, ModelConfig, Preset};
//! use stiff_train::{LabelledData, NoSnapshots, OptimizerConfig, TrainConfig, Trainer};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (x, y, xv, yv): (Tensor, Vec<u32>, Tensor, Vec<u32>) = todo!();
//! let cfg = ModelConfig::preset(Preset::Fc6, InputShape::new(1, 28, 28), 10);
//! let model = Model::new(&cfg, 0, DType::F32, &Device::Cpu)?;
//! let train = TrainConfig::default().with_optimizer(OptimizerConfig::sgd(0.1)).with_thresholds(vec![0.5, 0.2]);
//! let mut trainer = Trainer::new(model, train)?;
//! let report = trainer.run(&LabelledData::new(x, y)?, Some(&LabelledData::new(xv, yv)?), &mut NoSnapshots)?;
//! println!("{:?} after {} steps", report.status, report.step);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod checkpoint;
mod config;
mod data;
mod error;
pub mod fast_mlp;
mod optim;
mod snapshot;
mod trainer;

pub use checkpoint::{
    load_checkpoint, load_model, save_checkpoint, Checkpoint, OverfitTracker, PendingWindow, TrainState,
};
pub use config::{Backend, OptimizerConfig, ThresholdRule, ThresholdWindow, TrainConfig};
pub use data::{epoch_order, eval_subset, LabelledData};
pub use error::{Result, TrainError};
pub use optim::AutogradStep;
pub use snapshot::{
    Metrics, NoSnapshots, RunReport, RunStatus, SinkError, Snapshot, SnapshotReason, SnapshotRecord, SnapshotSink,
    StopReason,
};
pub use trainer::{Progress, Trainer};

/// Version of what this crate writes: the `schema_version` field on every line of the metrics log
/// and the `stiff.schema_version` metadata of training checkpoints (see `docs/formats.md`).
pub const SCHEMA_VERSION: u32 = 1;

/// The crate README's examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
