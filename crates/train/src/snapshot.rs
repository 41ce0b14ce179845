//! Snapshots handed to the caller, run outcomes and metrics records.

use serde::{Deserialize, Serialize};
use stiff_models::Model;

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SnapshotReason {
    /// A step listed in [`crate::TrainConfig::snapshot_steps`] (0 = initialisation).
    Step {
        /// The step.
        step: u64,
    },
    /// The measured training loss first fell below this threshold.
    Threshold {
        /// The threshold crossed.
        threshold: f64,
    },
    /// The `index`-th snapshot (1-based; the crossing itself is 0) of the window after the
    /// crossing of `threshold` (see [`crate::ThresholdWindow`]).
    ThresholdWindow {
        /// The threshold whose crossing opened the window.
        threshold: f64,
        /// 1-based position in the window.
        index: u32,
    },
    /// Onset of overfitting detected; `best_step` is the evaluation with the lowest validation loss.
    OverfittingOnset {
        /// Step of the evaluation with the lowest validation loss.
        best_step: u64,
    },
    /// End of the run (not taken when the run diverged).
    Final,
}

impl std::fmt::Display for SnapshotReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Step { step } => write!(f, "step {step}"),
            Self::Threshold { threshold } => write!(f, "training loss below {threshold}"),
            Self::ThresholdWindow { threshold, index } => {
                write!(f, "window snapshot {index} after the loss fell below {threshold}")
            }
            Self::OverfittingOnset { best_step } => {
                write!(f, "overfitting onset (best validation at step {best_step})")
            }
            Self::Final => f.write_str("final"),
        }
    }
}

/// Losses and accuracies measured at one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metrics {
    /// Optimizer steps taken.
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// `step * batch_size`.
    pub images_seen: u64,
    /// Mean cross-entropy over the fixed training evaluation subset.
    pub train_loss: f64,
    /// Accuracy over the same subset.
    pub train_acc: f64,
    /// Mean cross-entropy over the validation data, when given.
    pub val_loss: Option<f64>,
    /// Accuracy over the validation data, when given.
    pub val_acc: Option<f64>,
    /// Mean mini-batch loss since the previous evaluation (`None` at step 0).
    pub batch_loss: Option<f64>,
    /// Wall-clock seconds since the run started (resumed runs continue the count).
    pub elapsed_s: f64,
}

/// What a [`SnapshotSink`] receives. `model` holds the current weights; clone it with
/// [`Model::deep_clone`] to keep it, since training continues to update the same variables.
#[derive(Debug)]
#[non_exhaustive]
pub struct Snapshot<'a> {
    /// Why this snapshot was taken.
    pub reason: SnapshotReason,
    /// Optimizer steps taken.
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// Training examples seen.
    pub images_seen: u64,
    /// The evaluation at this step (training loss on the fixed subset, validation loss, ...).
    pub metrics: &'a Metrics,
    /// The running mean of recent mini-batch losses ([`crate::ThresholdRule::RunningMean`]),
    /// when that rule is in use and its window is full.
    pub smoothed_loss: Option<f64>,
    /// The model with the current weights (shared with the trainer).
    pub model: &'a Model,
}

/// Error type a sink may return; the run stops with [`crate::TrainError::Sink`].
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Receives snapshots during training (e.g. to measure stiffness), without this crate knowing
/// what is measured.
pub trait SnapshotSink {
    /// Called once per snapshot; an error stops the run with [`crate::TrainError::Sink`].
    fn on_snapshot(&mut self, snap: &Snapshot<'_>) -> Result<(), SinkError>;
}

impl<F: FnMut(&Snapshot<'_>) -> Result<(), SinkError>> SnapshotSink for F {
    fn on_snapshot(&mut self, snap: &Snapshot<'_>) -> Result<(), SinkError> {
        self(snap)
    }
}

/// A sink that ignores every snapshot.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSnapshots;

impl SnapshotSink for NoSnapshots {
    fn on_snapshot(&mut self, _: &Snapshot<'_>) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Why a run that did not diverge stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// [`crate::TrainConfig::max_steps`] reached.
    MaxSteps,
    /// [`crate::TrainConfig::max_epochs`] reached.
    MaxEpochs,
    /// The measured training loss fell below every threshold.
    ThresholdsReached,
    /// Overfitting onset with [`crate::TrainConfig::stop_at_overfit`].
    OverfittingOnset,
}

/// The outcome of a run. Divergence is an outcome, not an error, so sweeps carry on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunStatus {
    /// The run stopped by a stop rule.
    Completed {
        /// Which rule.
        stop: StopReason,
    },
    /// Non-finite loss or weights beyond [`crate::TrainConfig::max_abs_weight`] at `step`.
    Diverged {
        /// Step at which divergence was detected.
        step: u64,
        /// What diverged (loss or which weight).
        reason: String,
    },
}

impl RunStatus {
    /// Whether the run diverged.
    pub fn is_diverged(&self) -> bool {
        matches!(self, Self::Diverged { .. })
    }
}

/// A snapshot that was delivered, as recorded in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnapshotRecord {
    /// Why it was taken.
    pub reason: SnapshotReason,
    /// Its step.
    pub step: u64,
}

/// What [`crate::Trainer::run`] returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunReport {
    /// How the run ended.
    pub status: RunStatus,
    /// Steps taken when the run ended.
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// Training examples seen.
    pub images_seen: u64,
    /// Every evaluation of this call (resumed runs: from the resume point on).
    pub history: Vec<Metrics>,
    /// Snapshots delivered to the sink, in order.
    pub snapshots: Vec<SnapshotRecord>,
    /// Optimizer steps per second of this call, excluding evaluations, snapshots and checkpoints.
    pub steps_per_sec: f64,
}

/// One line of the JSON-lines metrics log.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum LogRecord<'a> {
    Eval(&'a Metrics),
    Snapshot { step: u64, reason: SnapshotReason },
    End { step: u64, status: &'a RunStatus },
}
