//! The dynamics figures' configurations and their runs (stable ids).

use std::path::Path;

use serde::{Deserialize, Serialize};
use stiff_data::DatasetName;
use stiff_models::Preset;
use stiff_train::OptimizerConfig;

use crate::measure::MeasureSettings;
use crate::options::OptimizerKind;
use crate::prepare::DataSettings;
use crate::store::RunStore;
use crate::sweep::fmt_lr;
use crate::training::TrainSpec;
use crate::{ExperimentError, Result};

/// The figures of this pipeline, in order.
pub const DYN_FIGURES: [&str; 6] = ["fig2", "fig3", "fig4", "fig5", "fig6", "fig7"];

/// How the four stages of a class-matrix figure are picked from the measured steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageRule {
    /// init = step 0; late 1 = the measured step nearest the best-validation step of the
    /// overfitting onset (the middle of the run if no onset was detected); early = the first
    /// measured step whose training loss has fallen a quarter of the way from its initial value
    /// to its value at late 1 (a tenth of late 1 if none); late 2 = the last measured step.
    AroundOnset,
    /// init = step 0; early, late 1, late 2 = the measured steps nearest 2%, 50% and 100% of
    /// the run (used with permuted labels, where "overfitting" starts at once).
    Fractions,
}

/// One figure's configuration (what its `config.json` records under `dynamics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynConfig {
    /// Figure name (`fig2` ... `fig7`).
    pub figure: String,
    /// Quick (scaled-down) configuration.
    pub quick: bool,
    /// Dataset trained on and measured.
    pub dataset: DatasetName,
    /// Network preset.
    pub preset: Preset,
    /// Optimizer (SGD or Adam).
    pub optimizer: OptimizerKind,
    /// Learning rate (constant).
    pub lr: f64,
    /// Model seeds, one run each.
    pub seeds: Vec<u64>,
    /// Train on a seeded permutation of the training labels (Fig 4).
    pub permute_labels: bool,
    /// Step budget, batch size, loss-evaluation cadence and subset (written flat, the subset as
    /// `eval_subset`, as dynamics configs and records always were).
    #[serde(flatten, with = "crate::training::dynamics_names")]
    pub train: TrainSpec,
    /// Evaluations without a new best validation loss (while training loss falls) that declare
    /// the onset of overfitting.
    pub overfit_patience: u32,
    /// Steps at which stiffness is measured (0 = initialisation).
    pub schedule: Vec<u64>,
    /// How the four stages (init, early, late 1, late 2) are picked from the measured steps (Figs 3-6).
    pub stage_rule: StageRule,
    /// Fig 7: the measured step whose matrix is drawn ("early in training").
    pub focus_step: Option<u64>,
    /// Fig 7: permutations of the super-class block-score test.
    pub block_permutations: usize,
    /// Fig 7: seed of the permutation test.
    pub block_seed: u64,
    /// Dataset preparation (preprocessing, stiffness subset).
    pub data: DataSettings,
    /// What is measured at each step (bins, bootstrap replicates, ...).
    pub measure: MeasureSettings,
}

/// `0` and about `per_decade` log-spaced steps per decade from `first` to `last` (both included).
pub fn log_schedule(first: u64, last: u64, per_decade: u32) -> Vec<u64> {
    let mut out = vec![0];
    if last == 0 {
        return out;
    }
    let first = first.clamp(1, last);
    let (lo, hi) = ((first as f64).log10(), (last as f64).log10());
    let n = ((hi - lo) * per_decade as f64).ceil().max(1.0) as u32;
    for i in 0..=n {
        let s = 10f64.powf(lo + (hi - lo) * i as f64 / n as f64).round() as u64;
        out.push(s.clamp(first, last));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Default number of seeds of `figure` (`--seeds N` overrides): 3 for Figs 2-5, whose verdicts
/// are decided across seeds (one seed's verdict can hinge on rounding: a change of summation
/// order in the SGD step flipped the one-seed quick Fig 4 verdict); 1 for the CIFAR Figs 6-7.
pub fn default_seeds(figure: &str) -> usize {
    match figure {
        "fig2" | "fig3" | "fig4" | "fig5" => 3,
        _ => 1,
    }
}

impl DynConfig {
    /// Defaults of `figure` (documented in docs/figures.md). `seeds`: how many seeds (runs).
    pub fn new(figure: &str, quick: bool, optimizer: OptimizerKind, seeds: usize) -> Result<Self> {
        let lr = match optimizer {
            OptimizerKind::Sgd => 0.05,
            OptimizerKind::Adam => 1e-3,
        };
        let mut measure = MeasureSettings {
            distance_curves: false,
            bootstrap_reps: if quick { 20 } else { 50 },
            ..Default::default()
        };
        measure.bootstrap_seed = 0;
        let (dataset, preset) = match figure {
            "fig2" | "fig3" | "fig4" => (DatasetName::Mnist, Preset::Fc6),
            "fig5" => (DatasetName::FashionMnist, Preset::Fc6),
            "fig6" => (DatasetName::Cifar10, if quick { Preset::Cnn4 } else { Preset::Cnn5 }),
            "fig7" => (DatasetName::Cifar100, if quick { Preset::Cnn4 } else { Preset::Cnn5 }),
            f => {
                return Err(ExperimentError::InvalidArgument(format!(
                    "unknown dynamics figure `{f}`: expected one of {}",
                    DYN_FIGURES.join(", ")
                )))
            }
        };
        let mut data = DataSettings::for_dataset(dataset);
        let cifar = matches!(dataset, DatasetName::Cifar10 | DatasetName::Cifar100);
        // Small training subsets make the net overfit within minutes (documented).
        let (max_steps, eval_every, eval_subset, schedule, focus_step);
        if !cifar {
            data.train_subset = Some(if quick { 2_000 } else { 4_000 });
            if quick {
                data.stiffness_subset = 200;
            }
            max_steps = if quick { 3_000 } else { 10_000 };
            eval_every = if quick { 50 } else { 100 };
            eval_subset = if quick { 1_000 } else { 2_000 };
            schedule = log_schedule(10, max_steps, 6);
            focus_step = None;
        } else if dataset == DatasetName::Cifar10 {
            if quick {
                // Sized for the generated test folders (30 train, 10 test images per class).
                data.train_subset = None;
                data.stiffness_subset = 50;
                max_steps = 120;
                eval_every = 10;
                eval_subset = 100;
                schedule = log_schedule(5, max_steps, 3);
            } else {
                data.train_subset = Some(5_000);
                max_steps = 6_000;
                eval_every = 100;
                eval_subset = 2_000;
                schedule = log_schedule(10, max_steps, 5);
            }
            focus_step = None;
        } else if quick {
            // 100 classes: 5 train and 3 test images per class in the generated folders.
            data.train_subset = None;
            data.stiffness_subset = 200;
            max_steps = 60;
            eval_every = 10;
            eval_subset = 300;
            schedule = log_schedule(5, max_steps, 2);
            focus_step = Some(max_steps);
        } else {
            data.train_subset = None;
            max_steps = 1_500;
            eval_every = 100;
            eval_subset = 2_000;
            schedule = log_schedule(10, max_steps, 3);
            focus_step = Some(max_steps);
        }
        Ok(Self {
            figure: figure.to_string(),
            quick,
            dataset,
            preset,
            optimizer,
            lr,
            seeds: (0..seeds as u64).collect(),
            permute_labels: figure == "fig4",
            train: TrainSpec { max_steps, batch_size: 32, eval_every, train_eval_subset: eval_subset },
            overfit_patience: 5,
            schedule,
            stage_rule: if figure == "fig4" { StageRule::Fractions } else { StageRule::AroundOnset },
            focus_step,
            block_permutations: 1_000,
            block_seed: 0,
            data,
            measure,
        })
    }

    /// One run per seed. Figs 2 and 3 produce equal specs, hence share their runs.
    pub fn runs(&self) -> Vec<DynRunSpec> {
        self.seeds
            .iter()
            .map(|&seed| DynRunSpec {
                dataset: self.dataset,
                preset: self.preset,
                optimizer: self.optimizer.with_lr(self.lr),
                seed,
                permute_labels: self.permute_labels,
                train: self.train,
                overfit_patience: self.overfit_patience,
                schedule: self.schedule.clone(),
                data: self.data.clone(),
                measure: self.measure.clone(),
            })
            .collect()
    }

    /// The store of the dynamics runs (quick and full runs never mix).
    pub fn store(&self, out: &Path) -> RunStore {
        RunStore::new(out, if self.quick { "dynamics-quick" } else { "dynamics" })
    }

    /// Class names of the dataset, in label order.
    pub fn class_names(&self) -> Vec<String> {
        self.dataset.class_names().iter().map(|s| s.to_string()).collect()
    }
}

/// One training run. Two runs with equal specs are the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynRunSpec {
    /// Dataset.
    pub dataset: DatasetName,
    /// Network preset.
    pub preset: Preset,
    /// Optimizer with its learning rate.
    pub optimizer: OptimizerConfig,
    /// Model seed (also seeds the batch order and the label permutation).
    pub seed: u64,
    /// Train on permuted labels (Fig 4).
    pub permute_labels: bool,
    /// Step budget, batch size, loss-evaluation cadence and subset (written flat, the subset as
    /// `eval_subset`, as dynamics configs and records always were).
    #[serde(flatten, with = "crate::training::dynamics_names")]
    pub train: TrainSpec,
    /// Overfitting patience (evaluations).
    pub overfit_patience: u32,
    /// Steps at which stiffness is measured.
    pub schedule: Vec<u64>,
    /// Dataset preparation.
    pub data: DataSettings,
    /// Measurement settings.
    pub measure: MeasureSettings,
}

impl DynRunSpec {
    /// Stable id, e.g. `mnist-fc6-sgd-lr0.05-train4000-s0` (`-permuted` for Fig 4).
    pub fn id(&self) -> String {
        format!(
            "{}-{}-{}-lr{}-train{}{}-s{}",
            self.dataset,
            self.preset,
            self.optimizer.name(),
            fmt_lr(self.optimizer.lr()),
            self.data.train_subset.map_or("all".to_string(), |n| n.to_string()),
            if self.permute_labels { "-permuted" } else { "" },
            self.seed
        )
    }
}
