//! The learning-rate sweep behind Figs 8, 9 and 10: fully-connected nets trained with a constant
//! learning rate until the training loss first falls below each of several thresholds; at each
//! threshold, stiffness is measured on the fixed validation subset (class stiffness for Fig 8,
//! distance curves and stiff domain sizes for Figs 9 and 10).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use candle::{DType, Device};
use serde::{Deserialize, Serialize};
use stiff_data::DatasetName;
use stiff_models::{Model, ModelConfig, Preset};
use stiff_train::{LabelledData, OptimizerConfig, Progress, Trainer};

use crate::measure::{measure, MeasureSettings, Measurement};
use crate::prepare::{DataSettings, Prepared};
use crate::store::RunStore;
use crate::sweep::fmt_lr;
use crate::Result;

/// Version of the run record layout.
pub const RECORD_VERSION: u32 = 1;

/// Optimizer family of a sweep (each run gets its own learning rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
}

impl OptimizerKind {
    pub fn with_lr(self, lr: f64) -> OptimizerConfig {
        match self {
            OptimizerKind::Sgd => OptimizerConfig::sgd(lr),
            OptimizerKind::Adam => OptimizerConfig::adam(lr),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
        }
    }
}

impl std::str::FromStr for OptimizerKind {
    type Err = crate::ExperimentError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(Self::Sgd),
            "adam" => Ok(Self::Adam),
            _ => Err(crate::ExperimentError::InvalidArgument(format!("--optimizer `{s}`: expected sgd or adam"))),
        }
    }
}

/// The whole sweep (what `config.json` of Figs 8-10 records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSweepConfig {
    pub quick: bool,
    pub datasets: Vec<DatasetName>,
    pub preset: Preset,
    pub optimizer: OptimizerKind,
    pub lrs: Vec<f64>,
    pub seeds: Vec<u64>,
    /// Training-loss thresholds per dataset (descending).
    pub thresholds: BTreeMap<DatasetName, Vec<f64>>,
    pub max_steps: u64,
    pub batch_size: usize,
    pub eval_every: u64,
    pub train_eval_subset: usize,
    pub data: DataSettings,
    pub measure: MeasureSettings,
}

impl LrSweepConfig {
    /// Defaults (documented in docs/figures.md). SGD: rates 0.01..0.2 on a log grid; Adam: 1e-4..3e-3.
    pub fn new(quick: bool, optimizer: OptimizerKind, seeds: usize) -> Self {
        let lrs = match (optimizer, quick) {
            (OptimizerKind::Sgd, false) => vec![0.01, 0.02, 0.05, 0.1, 0.2],
            (OptimizerKind::Sgd, true) => vec![0.01, 0.1],
            (OptimizerKind::Adam, false) => vec![1e-4, 3e-4, 1e-3, 3e-3],
            (OptimizerKind::Adam, true) => vec![3e-4, 3e-3],
        };
        let thresholds = if quick {
            BTreeMap::from([
                (DatasetName::Mnist, vec![1.0, 0.6, 0.4]),
                (DatasetName::FashionMnist, vec![1.2, 0.9, 0.7]),
            ])
        } else {
            BTreeMap::from([
                (DatasetName::Mnist, vec![0.5, 0.2, 0.1]),
                (DatasetName::FashionMnist, vec![0.7, 0.5, 0.4]),
            ])
        };
        let mut measure = MeasureSettings::default();
        let mut data = DataSettings::for_dataset(DatasetName::Mnist);
        if quick {
            measure.bootstrap_reps = 50;
            data.stiffness_subset = 200;
        }
        Self {
            quick,
            datasets: vec![DatasetName::Mnist, DatasetName::FashionMnist],
            preset: Preset::Fc6,
            optimizer,
            lrs,
            seeds: (0..seeds as u64).collect(),
            thresholds,
            max_steps: if quick { 4_000 } else { 30_000 },
            batch_size: 32,
            eval_every: if quick { 50 } else { 100 },
            train_eval_subset: 1_000,
            data,
            measure,
        }
    }

    /// Every run of the sweep, in a fixed order (dataset, lr, seed).
    pub fn runs(&self) -> Vec<LrRunSpec> {
        let mut out = Vec::new();
        for &dataset in &self.datasets {
            for &lr in &self.lrs {
                for &seed in &self.seeds {
                    out.push(LrRunSpec {
                        dataset,
                        preset: self.preset,
                        optimizer: self.optimizer.with_lr(lr),
                        seed,
                        thresholds: self.thresholds.get(&dataset).cloned().unwrap_or_default(),
                        max_steps: self.max_steps,
                        batch_size: self.batch_size,
                        eval_every: self.eval_every,
                        train_eval_subset: self.train_eval_subset,
                        data: self.data.clone(),
                        measure: self.measure.clone(),
                    });
                }
            }
        }
        out
    }

    /// The store of this sweep's runs (quick and full runs never mix).
    pub fn store(&self, out: &Path) -> RunStore {
        RunStore::new(out, if self.quick { "lr-sweep-quick" } else { "lr-sweep" })
    }
}

/// One training run of the sweep. Two runs with equal specs are the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrRunSpec {
    pub dataset: DatasetName,
    pub preset: Preset,
    pub optimizer: OptimizerConfig,
    pub seed: u64,
    pub thresholds: Vec<f64>,
    pub max_steps: u64,
    pub batch_size: usize,
    pub eval_every: u64,
    pub train_eval_subset: usize,
    pub data: DataSettings,
    pub measure: MeasureSettings,
}

impl LrRunSpec {
    /// Stable id, e.g. `mnist-fc6-sgd-lr0.05-s0`.
    pub fn id(&self) -> String {
        format!(
            "{}-{}-{}-lr{}-s{}",
            self.dataset,
            self.preset,
            self.optimizer.name(),
            fmt_lr(self.optimizer.lr()),
            self.seed
        )
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunEnd {
    /// Every threshold was reached.
    Completed,
    /// The step budget ran out before the last threshold.
    StepBudget { steps: u64 },
    /// The loss or the weights became non-finite / exploded.
    Diverged { step: u64, reason: String },
}

/// The state at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdPoint {
    pub threshold: f64,
    pub step: u64,
    pub images_seen: u64,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    pub measurement: Measurement,
}

/// A finished run, as stored in `runs/<sweep>/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrRunRecord {
    pub record_version: u32,
    pub id: String,
    pub spec: LrRunSpec,
    pub end: RunEnd,
    /// Thresholds reached, in the order reached.
    pub points: Vec<ThresholdPoint>,
    pub steps: u64,
    pub train_seconds: f64,
    pub measure_seconds: f64,
}

impl LrRunRecord {
    pub fn point(&self, threshold: f64) -> Option<&ThresholdPoint> {
        self.points.iter().find(|p| p.threshold == threshold)
    }
}

/// Runs one spec on prepared data: trains, measures at each threshold, returns the record.
pub fn run_one(
    spec: &LrRunSpec,
    data: &Prepared,
    device: &Device,
    bar: Option<indicatif::ProgressBar>,
) -> Result<LrRunRecord> {
    let t0 = Instant::now();
    let cfg = ModelConfig::preset(spec.preset, data.input, data.num_classes());
    let model = Model::new(&cfg, spec.seed, DType::F32, device)?;
    let train_cfg = stiff_train::TrainConfig {
        optimizer: spec.optimizer,
        batch_size: spec.batch_size,
        seed: spec.seed,
        max_steps: spec.max_steps,
        eval_every: spec.eval_every,
        train_eval_subset: spec.train_eval_subset,
        thresholds: spec.thresholds.clone(),
        stop_at_last_threshold: true,
        overfit_patience: None,
        ..Default::default()
    };
    let mut measure_seconds = 0.0;
    let mut points = Vec::new();
    let mut sink = |snap: &stiff_train::Snapshot<'_>| -> std::result::Result<(), stiff_train::SinkError> {
        if let stiff_train::SnapshotReason::Threshold { threshold } = snap.reason {
            let tm = Instant::now();
            let m = measure(snap.model, &data.stiff_x, &data.stiff_y, data.num_classes(), &spec.measure)?;
            measure_seconds += tm.elapsed().as_secs_f64();
            points.push(ThresholdPoint {
                threshold,
                step: snap.step,
                images_seen: snap.images_seen,
                train_loss: snap.metrics.train_loss,
                val_loss: snap.metrics.val_loss,
                val_acc: snap.metrics.val_acc,
                measurement: m,
            });
        }
        Ok(())
    };
    let train = LabelledData::new(data.train_x.clone(), data.train_y.clone())?;
    // Validation loss on a fixed subset: the full split would cost more than the training itself.
    let val_idx = stiff_train::eval_subset(data.val_y.len(), spec.train_eval_subset, 1);
    let val = LabelledData::new(data.val_x.clone(), data.val_y.clone())?.select(&val_idx, device)?;
    let progress = bar.map_or(Progress::Hidden, Progress::Bar);
    let outcome = Trainer::new(model, train_cfg)?.with_progress(progress).run(&train, Some(&val), &mut sink)?;
    let end = match outcome.status {
        stiff_train::RunStatus::Diverged { step, reason } => RunEnd::Diverged { step, reason },
        _ if points.len() == spec.thresholds.len() => RunEnd::Completed,
        _ => RunEnd::StepBudget { steps: outcome.step },
    };
    Ok(LrRunRecord {
        record_version: RECORD_VERSION,
        id: spec.id(),
        spec: spec.clone(),
        end,
        points,
        steps: outcome.step,
        train_seconds: t0.elapsed().as_secs_f64() - measure_seconds,
        measure_seconds,
    })
}
