//! The shared vocabulary of every pipeline: what `reproduce` takes from the command line, the
//! optimizer choice and how a run ended. It sits below the pipelines and the runner, so both
//! import it and neither imports the other.

use std::path::PathBuf;

use candle::Device;
use serde::{Deserialize, Serialize};
use stiff_train::OptimizerConfig;

use crate::sweep::RunSelection;
use crate::{ExperimentError, Result};

/// Everything `reproduce` takes from the command line. Start from [`ReproduceOptions::new`] (the
/// defaults of `stiff reproduce`) and set the public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReproduceOptions {
    /// A figure name (`stiff list`) or `all`.
    pub figure: String,
    /// Quick (scaled-down) configurations (`--quick`).
    pub quick: bool,
    /// Test scale (implies `quick`): each pipeline shrinks its quick configuration to seconds on
    /// small generated files. Never mixed with real results: the run records say so in their specs.
    pub tiny: bool,
    /// Where the datasets are (`--data-dir`); `None`: `$STIFF_DATA_DIR`, then the user cache.
    pub data_dir: Option<PathBuf>,
    /// Results folder (`--out`).
    pub out: PathBuf,
    /// Device for training and Grams (`--device`; default CPU).
    pub device: Device,
    /// Seeds per configuration; the default is the pipeline's (3 full / 1 quick, dynamics 1).
    pub seeds: Option<usize>,
    /// Optimizer family (`--optimizer`; default SGD).
    pub optimizer: OptimizerKind,
    /// Skip runs already finished in `out` (default true).
    pub resume: bool,
    /// Only list the run ids, run nothing (`--list-runs`).
    pub list_runs: bool,
    /// Which runs of the sweep (`--only`, `--shard`; default all).
    pub selection: RunSelection,
    /// Sweep overrides (`--datasets`, `--lrs`, `--thresholds`, `--eval-every`); the
    /// learning-rate sweep (Figs 8-10) reads them, other pipelines ignore them.
    pub sweep: SweepFlags,
    /// The command line, recorded in each figure's config.
    pub command: String,
}

/// Overrides of a sweep's defaults from the command line; `None` keeps the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepFlags {
    /// Datasets of the sweep (`--datasets`).
    pub datasets: Option<Vec<stiff_data::DatasetName>>,
    /// Learning rates (finite, > 0).
    pub lrs: Option<Vec<f64>>,
    /// Training-loss thresholds applied to every dataset (finite, > 0; sorted descending).
    pub thresholds: Option<Vec<f64>>,
    /// Steps between evaluations (>= 1).
    pub eval_every: Option<u64>,
}

impl SweepFlags {
    /// Parses the comma-separated flag values; each error names its flag.
    pub fn parse(
        datasets: Option<&str>,
        lrs: Option<&str>,
        thresholds: Option<&str>,
        eval_every: Option<u64>,
    ) -> Result<Self> {
        let datasets = datasets
            .map(|s| {
                split_list("--datasets", s)?
                    .into_iter()
                    .map(|d| {
                        d.parse::<stiff_data::DatasetName>()
                            .map_err(|e| ExperimentError::InvalidArgument(format!("--datasets `{d}`: {e}")))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        let lrs = lrs.map(|s| positive_list("--lrs", s)).transpose()?;
        let thresholds = thresholds
            .map(|s| {
                let mut v = positive_list("--thresholds", s)?;
                // The trainer crosses thresholds from the highest down.
                v.sort_by(|a, b| b.total_cmp(a));
                v.dedup();
                Ok::<_, ExperimentError>(v)
            })
            .transpose()?;
        if eval_every == Some(0) {
            return Err(ExperimentError::InvalidArgument("--eval-every must be at least 1".into()));
        }
        Ok(Self { datasets, lrs, thresholds, eval_every })
    }
}

fn split_list<'a>(flag: &str, s: &'a str) -> Result<Vec<&'a str>> {
    let items: Vec<&str> = s.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(ExperimentError::InvalidArgument(format!("{flag} `{s}`: empty item in the comma-separated list")));
    }
    Ok(items)
}

fn positive_list(flag: &str, s: &str) -> Result<Vec<f64>> {
    split_list(flag, s)?
        .into_iter()
        .map(|i| match i.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
            _ => Err(ExperimentError::InvalidArgument(format!("{flag} `{i}`: expected a finite number > 0"))),
        })
        .collect()
}

impl ReproduceOptions {
    /// Defaults for `figure` into `out`: not quick, CPU, SGD, resume, every run.
    pub fn new(figure: &str, out: impl Into<PathBuf>) -> Self {
        Self {
            figure: figure.to_string(),
            quick: false,
            tiny: false,
            data_dir: None,
            out: out.into(),
            device: Device::Cpu,
            seeds: None,
            optimizer: OptimizerKind::Sgd,
            resume: true,
            list_runs: false,
            selection: RunSelection::default(),
            sweep: SweepFlags::default(),
            command: String::new(),
        }
    }

    /// `--seeds`, or `default`; zero is an error.
    pub fn seeds_or(&self, default: usize) -> Result<usize> {
        match self.seeds.unwrap_or(default) {
            0 => Err(ExperimentError::InvalidArgument("--seeds must be at least 1".into())),
            n => Ok(n),
        }
    }
}

/// Parses `cpu` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(n) = s.strip_prefix("cuda:").or(if s == "cuda" { Some("0") } else { None }) else {
        return Err(ExperimentError::InvalidArgument(format!("--device `{s}`: expected cpu or cuda:N")));
    };
    let n: usize = n.parse().map_err(|_| ExperimentError::InvalidArgument(format!("--device `{s}`: bad GPU index")))?;
    if !candle::utils::cuda_is_available() {
        return Err(ExperimentError::InvalidArgument(format!(
            "--device {s}: this build has no CUDA support; build with the `cuda` feature (`cargo xtask build-cuda`)"
        )));
    }
    Ok(Device::new_cuda(n)?)
}

/// Optimizer family of a sweep (each run gets its own learning rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Plain SGD.
    Sgd,
    /// Adam with PyTorch's defaults.
    Adam,
}

impl OptimizerKind {
    /// Every kind, the default (SGD) first.
    pub const ALL: [OptimizerKind; 2] = [OptimizerKind::Sgd, OptimizerKind::Adam];

    /// The optimizer configuration of this kind at learning rate `lr`.
    pub fn with_lr(self, lr: f64) -> OptimizerConfig {
        match self {
            OptimizerKind::Sgd => OptimizerConfig::sgd(lr),
            OptimizerKind::Adam => OptimizerConfig::adam(lr),
        }
    }

    /// The name in run ids and folders (`sgd`, `adam`).
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
        }
    }

    /// The kind of a run's optimizer config (by name; unknown names are SGD).
    pub fn of(cfg: &OptimizerConfig) -> Self {
        if cfg.name() == "adam" {
            OptimizerKind::Adam
        } else {
            OptimizerKind::Sgd
        }
    }
}

impl std::str::FromStr for OptimizerKind {
    type Err = ExperimentError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(Self::Sgd),
            "adam" => Ok(Self::Adam),
            _ => Err(ExperimentError::InvalidArgument(format!("--optimizer `{s}`: expected sgd or adam"))),
        }
    }
}

/// The folder of `figure` under `OUT`: `fig8` for the default optimizer (SGD), `fig8-adam` for
/// another, so sweeps with different optimizers in one `--out` never overwrite each other.
pub fn figure_dir(figure: &str, optimizer: OptimizerKind) -> String {
    match optimizer {
        OptimizerKind::Sgd => figure.to_string(),
        other => format!("{figure}-{}", other.name()),
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunEnd {
    /// Every threshold was reached (or, for runs without thresholds, every step was run).
    Completed,
    /// The step budget ran out before the last threshold.
    StepBudget {
        /// Steps taken.
        steps: u64,
    },
    /// The loss or the weights became non-finite / exploded.
    Diverged {
        /// Step at which divergence was detected.
        step: u64,
        /// What diverged.
        reason: String,
    },
}
