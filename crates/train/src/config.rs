//! The training configuration (serde, with documented defaults).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// The optimizer, with a constant learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// Plain SGD: `w -= lr * g` (no momentum, no weight decay).
    Sgd {
        /// Learning rate (> 0).
        lr: f64,
    },
    /// Adam (Kingma & Ba, PyTorch's formulation, no weight decay):
    /// `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g^2`,
    /// `w -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)`.
    Adam {
        /// Learning rate (> 0).
        lr: f64,
        /// Default 0.9.
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Default 0.999.
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Default 1e-8.
        #[serde(default = "default_eps")]
        eps: f64,
    },
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

impl OptimizerConfig {
    /// SGD with learning rate `lr`.
    pub fn sgd(lr: f64) -> Self {
        Self::Sgd { lr }
    }

    /// Adam with learning rate `lr` and the default betas (0.9, 0.999) and eps (1e-8).
    pub fn adam(lr: f64) -> Self {
        Self::Adam { lr, beta1: default_beta1(), beta2: default_beta2(), eps: default_eps() }
    }

    /// The (constant) learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            Self::Sgd { lr } | Self::Adam { lr, .. } => lr,
        }
    }

    /// `"sgd"` or `"adam"`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sgd { .. } => "sgd",
            Self::Adam { .. } => "adam",
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return bad(format!("learning rate must be positive and finite, got {lr}"));
        }
        if let Self::Adam { beta1, beta2, eps, .. } = *self {
            if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
                return bad(format!("Adam betas must lie in [0, 1), got ({beta1}, {beta2})"));
            }
            if !(eps.is_finite() && eps > 0.0) {
                return bad(format!("Adam eps must be positive, got {eps}"));
            }
        }
        Ok(())
    }
}

impl Default for OptimizerConfig {
    /// SGD with learning rate 0.1.
    fn default() -> Self {
        Self::sgd(0.1)
    }
}

/// How "the training loss fell below a threshold" is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ThresholdRule {
    /// At each evaluation (every `eval_every` steps), the mean loss on the fixed training
    /// subset. The step found depends on the evaluation cadence and on SGD's step-to-step
    /// swings of the loss. Default (the historical behaviour).
    #[default]
    Evaluated,
    /// After every step, the mean of the last `steps` mini-batch losses (each batch's loss
    /// before its own update). Costs nothing extra, does not depend on `eval_every`, and averages
    /// over SGD's swings; no crossing is declared before `steps` steps have been taken.
    RunningMean {
        /// Window length in optimizer steps.
        steps: u64,
    },
}

/// Extra snapshots after each threshold crossing, so a measurement can be averaged over a
/// window instead of read at one noisy step: `count` snapshots in all (the crossing's own
/// [`crate::SnapshotReason::Threshold`] snapshot is the first), `every` steps apart; the others
/// are [`crate::SnapshotReason::ThresholdWindow`] snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdWindow {
    /// Snapshots per crossing, the crossing included (>= 1).
    pub count: u32,
    /// Steps between them (>= 1).
    pub every: u64,
}

/// Which implementation performs the training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The fast MLP path when it applies (MLP, f32, CPU), else autograd. Default.
    #[default]
    Auto,
    /// candle autograd (any model, dtype and device); the reference implementation.
    Autograd,
    /// The hand-derived MLP step of [`crate::fast_mlp`]; an error for models it cannot train.
    FastMlp,
}

/// Everything that defines a training run. Same config + same model seed + same data + same
/// thread count → bit-identical weights on CPU.
///
/// Build one from [`TrainConfig::default`] and the `with_*` setters (the struct is
/// `#[non_exhaustive]`, so later fields do not break callers):
///
/// ```
/// use stiff_train::{OptimizerConfig, TrainConfig};
/// let cfg = TrainConfig::default().with_optimizer(OptimizerConfig::sgd(0.05)).with_max_steps(500);
/// assert_eq!((cfg.max_steps, cfg.batch_size), (500, 32));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TrainConfig {
    /// Default: SGD, lr 0.1.
    pub optimizer: OptimizerConfig,
    /// Mini-batch size. Default 32. Each epoch is a fresh shuffle; the last partial batch of an
    /// epoch is dropped so every step sees exactly `batch_size` examples.
    pub batch_size: usize,
    /// Seed of the epoch shuffles and of the training-loss evaluation subset. Default 0.
    pub seed: u64,
    /// Stop after this many optimizer steps. Default 10,000.
    pub max_steps: u64,
    /// Also stop after this many full epochs, if set. Default `None`.
    pub max_epochs: Option<u64>,
    /// Measure training and validation loss every this many steps (and at step 0). Default 250.
    pub eval_every: u64,
    /// Size of the fixed, seeded random training subset on which "training loss" (mean
    /// cross-entropy) and training accuracy are measured. Default 2,000 (or the whole training
    /// set if smaller).
    pub train_eval_subset: usize,
    /// Chunk size for evaluation forward passes. Default 1,000.
    pub eval_batch: usize,
    /// Training-loss thresholds; the first time the measured training loss falls below each one,
    /// a [`crate::SnapshotReason::Threshold`] snapshot is taken. Default empty.
    pub thresholds: Vec<f64>,
    /// Stop once the measured training loss is below every threshold (and every threshold
    /// window is complete). Default true (has no effect without thresholds).
    pub stop_at_last_threshold: bool,
    /// How a threshold crossing is decided. Default [`ThresholdRule::Evaluated`].
    pub threshold_rule: ThresholdRule,
    /// Snapshots after each crossing. Default `None` (the crossing's snapshot only).
    pub threshold_window: Option<ThresholdWindow>,
    /// Steps at which to take a [`crate::SnapshotReason::Step`] snapshot (0 = initialisation).
    /// Default empty.
    pub snapshot_steps: Vec<u64>,
    /// Overfitting-onset detection (needs validation data): onset is declared when validation loss
    /// has not improved on its best value for this many consecutive evaluations while the training
    /// loss is below its value at that best evaluation. `None` disables it. Default `Some(5)`.
    pub overfit_patience: Option<u32>,
    /// Stop at the onset of overfitting. Default false.
    pub stop_at_overfit: bool,
    /// A parameter whose magnitude exceeds this (checked at every evaluation) counts as divergence.
    /// Default 1e6.
    pub max_abs_weight: f64,
    /// Where to write checkpoints (one safetensors file, rewritten atomically). Default `None`.
    pub checkpoint_path: Option<PathBuf>,
    /// Checkpoint every this many steps (and at the end of the run) when `checkpoint_path` is set.
    /// `None`: only at the end. Default `None`.
    pub checkpoint_every: Option<u64>,
    /// JSON-lines metrics log; `None` keeps the metrics in memory only. Default `None`.
    pub metrics_path: Option<PathBuf>,
    /// Default [`Backend::Auto`].
    pub backend: Backend,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerConfig::default(),
            batch_size: 32,
            seed: 0,
            max_steps: 10_000,
            max_epochs: None,
            eval_every: 250,
            train_eval_subset: 2_000,
            eval_batch: 1_000,
            thresholds: Vec::new(),
            stop_at_last_threshold: true,
            threshold_rule: ThresholdRule::Evaluated,
            threshold_window: None,
            snapshot_steps: Vec::new(),
            overfit_patience: Some(5),
            stop_at_overfit: false,
            max_abs_weight: 1e6,
            checkpoint_path: None,
            checkpoint_every: None,
            metrics_path: None,
            backend: Backend::Auto,
        }
    }
}

stiff_models::options_setters!(TrainConfig {
    with_optimizer => optimizer: OptimizerConfig,
    with_batch_size => batch_size: usize,
    with_seed => seed: u64,
    with_max_steps => max_steps: u64,
    with_max_epochs => max_epochs: Option<u64>,
    with_eval_every => eval_every: u64,
    with_train_eval_subset => train_eval_subset: usize,
    with_eval_batch => eval_batch: usize,
    with_thresholds => thresholds: Vec<f64>,
    with_stop_at_last_threshold => stop_at_last_threshold: bool,
    with_threshold_rule => threshold_rule: ThresholdRule,
    with_threshold_window => threshold_window: Option<ThresholdWindow>,
    with_snapshot_steps => snapshot_steps: Vec<u64>,
    with_overfit_patience => overfit_patience: Option<u32>,
    with_stop_at_overfit => stop_at_overfit: bool,
    with_max_abs_weight => max_abs_weight: f64,
    with_checkpoint_path => checkpoint_path: Option<PathBuf>,
    with_checkpoint_every => checkpoint_every: Option<u64>,
    with_metrics_path => metrics_path: Option<PathBuf>,
    with_backend => backend: Backend,
});

impl TrainConfig {
    /// Checks the configuration for values that cannot work (names the offending field).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        self.optimizer.validate()?;
        if self.batch_size == 0 {
            return bad("batch_size must be positive".into());
        }
        if self.eval_every == 0 {
            return bad("eval_every must be positive".into());
        }
        if self.train_eval_subset == 0 {
            return bad("train_eval_subset must be positive".into());
        }
        if self.eval_batch == 0 {
            return bad("eval_batch must be positive".into());
        }
        if let Some(t) = self.thresholds.iter().find(|t| !t.is_finite() || **t <= 0.0) {
            return bad(format!("thresholds must be positive and finite, got {t}"));
        }
        if self.threshold_rule == (ThresholdRule::RunningMean { steps: 0 }) {
            return bad("threshold_rule running_mean needs steps >= 1".into());
        }
        if let Some(w) = self.threshold_window {
            if w.count == 0 || w.every == 0 {
                return bad(format!("threshold_window needs count >= 1 and every >= 1, got {w:?}"));
            }
        }
        if self.overfit_patience == Some(0) {
            return bad("overfit_patience must be at least 1 (or null to disable)".into());
        }
        if self.max_abs_weight.is_nan() || self.max_abs_weight <= 0.0 {
            return bad(format!("max_abs_weight must be positive, got {}", self.max_abs_weight));
        }
        if self.checkpoint_every == Some(0) {
            return bad("checkpoint_every must be positive (or null)".into());
        }
        if self.checkpoint_every.is_some() && self.checkpoint_path.is_none() {
            return bad("checkpoint_every is set but checkpoint_path is not".into());
        }
        Ok(())
    }
}
