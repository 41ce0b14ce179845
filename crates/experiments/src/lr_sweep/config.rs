//! The learning-rate sweep's configuration and its runs (stable ids).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use stiff_data::DatasetName;
use stiff_models::Preset;
use stiff_train::{OptimizerConfig, ThresholdRule, ThresholdWindow};

use crate::measure::MeasureSettings;
use crate::options::OptimizerKind;
use crate::prepare::DataSettings;
use crate::store::RunStore;
use crate::sweep::fmt_lr;
use crate::training::TrainSpec;

/// The whole sweep (what `config.json` of Figs 8-10 records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSweepConfig {
    /// Quick (scaled-down) configuration.
    pub quick: bool,
    /// Datasets swept.
    pub datasets: Vec<DatasetName>,
    /// Network preset.
    pub preset: Preset,
    /// Optimizer (SGD or Adam).
    pub optimizer: OptimizerKind,
    /// Learning rates swept.
    pub lrs: Vec<f64>,
    /// Model seeds per learning rate.
    pub seeds: Vec<u64>,
    /// Training-loss thresholds per dataset (descending).
    pub thresholds: BTreeMap<DatasetName, Vec<f64>>,
    /// Step budget, batch size, loss-evaluation cadence and subset (written flat, as before).
    #[serde(flatten)]
    pub train: TrainSpec,
    /// How a crossing is decided. Default: running mean of 200 mini-batch losses (quick: 50),
    /// independent of `eval_every` (docs/figures.md, "Measurement protocol").
    pub threshold_rule: ThresholdRule,
    /// Snapshots measured per crossing (the crossing included). Default 5, 20 steps apart
    /// (quick: 3, 10 apart); a seed's value is their mean.
    pub window: ThresholdWindow,
    /// Dataset preparation.
    pub data: DataSettings,
    /// Measurement settings.
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
            train: TrainSpec {
                max_steps: if quick { 4_000 } else { 30_000 },
                batch_size: 32,
                eval_every: if quick { 50 } else { 100 },
                train_eval_subset: 1_000,
            },
            threshold_rule: ThresholdRule::RunningMean { steps: if quick { 50 } else { 200 } },
            window: if quick {
                ThresholdWindow { count: 3, every: 10 }
            } else {
                ThresholdWindow { count: 5, every: 20 }
            },
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
                        train: self.train,
                        threshold_rule: self.threshold_rule,
                        window: self.window,
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
    /// Dataset.
    pub dataset: DatasetName,
    /// Network preset.
    pub preset: Preset,
    /// Optimizer with its learning rate.
    pub optimizer: OptimizerConfig,
    /// Model seed.
    pub seed: u64,
    /// Training-loss thresholds (descending).
    pub thresholds: Vec<f64>,
    /// Step budget, batch size, loss-evaluation cadence and subset (written flat, as before).
    #[serde(flatten)]
    pub train: TrainSpec,
    /// No serde default: records of the legacy protocol (first evaluation below) do not parse
    /// as runs of this one, so they are rerun rather than mixed in.
    pub threshold_rule: ThresholdRule,
    /// Snapshots measured per crossing.
    pub window: ThresholdWindow,
    /// Dataset preparation.
    pub data: DataSettings,
    /// Measurement settings.
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

/// The learning rate of Fig 9: the sweep's rate closest to 0.1 (log scale).
pub fn fig9_lr(cfg: &LrSweepConfig) -> Option<f64> {
    cfg.lrs.iter().copied().min_by(|a, b| (a.log10() + 1.0).abs().total_cmp(&(b.log10() + 1.0).abs()))
}

/// The runs of Fig 9: every dataset and seed at [`fig9_lr`]. The first (first dataset, first
/// seed) is drawn; all of them enter the depth-trend test.
pub fn fig9_runs(cfg: &LrSweepConfig) -> Vec<LrRunSpec> {
    let Some(lr) = fig9_lr(cfg) else { return vec![] };
    cfg.runs().into_iter().filter(|r| r.optimizer.lr() == lr).collect()
}
