//! The spherical sweep's configuration (degree sweep and learning-rate sweep) and its runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stiff_analysis::BinSpec;
use stiff_data::synthetic::{Labelling, SyntheticSpec, TargetKind};
use stiff_train::OptimizerConfig;

use crate::measure::MeasureSettings;
use crate::options::OptimizerKind;
use crate::store::RunStore;
use crate::sweep::fmt_lr;
use crate::training::TrainSpec;
use crate::{ExperimentError, Result};

/// Name of the figure folder and of the `reproduce` target.
pub const FIGURE: &str = "spherical";

/// The whole experiment (recorded in `config.json`). Defaults: [`SphericalConfig::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SphericalConfig {
    /// Quick (scaled-down) configuration.
    pub quick: bool,
    /// Ambient dimension (3: exact real spherical harmonics).
    pub dim: usize,
    /// How the target labels are made from the harmonic.
    pub target: TargetKind,
    /// Degrees of the degree sweep (trained at [`Self::lr`]).
    pub degrees: Vec<usize>,
    /// Hidden widths of the ReLU MLP `d -> hidden... -> 2`.
    pub hidden: Vec<usize>,
    /// Optimizer (SGD or Adam).
    pub optimizer: OptimizerKind,
    /// Learning rate of the degree sweep.
    pub lr: f64,
    /// Degree of the learning-rate sweep.
    pub lr_sweep_degree: usize,
    /// Learning rates of the learning-rate sweep (the one equal to `lr` is shared with the degree sweep).
    pub lrs: Vec<f64>,
    /// Seeds: each seed draws its own target, points and initialisation.
    pub seeds: Vec<u64>,
    /// Training points per run.
    pub n_train: usize,
    /// Validation points per run.
    pub n_val: usize,
    /// Validation points (the first ones, i.e. uniform on the sphere, not class-balanced) on which
    /// stiffness is measured.
    pub stiffness_subset: usize,
    /// A run is `fitted` when its training loss falls below this.
    pub loss_threshold: f64,
    /// Step budget, batch size, loss-evaluation cadence and subset (written flat, as before).
    #[serde(flatten)]
    pub train: TrainSpec,
    /// Measurement settings.
    pub measure: MeasureSettings,
}

impl SphericalConfig {
    /// Defaults (documented in docs/figures.md, "Spherical harmonics"):
    ///
    /// | | full | quick |
    /// |---|---|---|
    /// | degrees | 1..=8 | 1, 2, 4 |
    /// | MLP hidden | 256-256-256 | 256-256-256 |
    /// | lr (SGD / Adam) | 0.1 / 1e-3 | same |
    /// | lr sweep at l = 3 (SGD / Adam) | 0.02, 0.05, 0.1, 0.2 / 3e-4, 1e-3, 3e-3 | 0.03, 0.1 / 3e-4, 1e-3 |
    /// | train / val points | 20,000 / 5,000 | 5,000 / 1,500 |
    /// | stiffness subset | 1,000 | 1,000 |
    /// | loss threshold | 0.1 | 0.2 |
    /// | step budget | 30,000 | 8,000 |
    /// | distance bins | 200 over [0, 2] | 200 over [0, 2] |
    pub fn new(quick: bool, optimizer: OptimizerKind, seeds: usize) -> Self {
        let (lr, lrs) = match (optimizer, quick) {
            (OptimizerKind::Sgd, false) => (0.1, vec![0.02, 0.05, 0.1, 0.2]),
            (OptimizerKind::Sgd, true) => (0.1, vec![0.03, 0.1]),
            (OptimizerKind::Adam, false) => (1e-3, vec![3e-4, 1e-3, 3e-3]),
            (OptimizerKind::Adam, true) => (1e-3, vec![3e-4, 1e-3]),
        };
        let measure = MeasureSettings {
            // On S^2 the distance 1 - cos(theta) of two uniform points is uniform on [0, 2], so
            // equal bins hold equal pair counts; fine bins resolve the small domains of high l.
            bins: BinSpec { bins: 200, lo: 0.0, hi: 2.0 },
            bootstrap_reps: 0,
            ..MeasureSettings::default()
        };
        Self {
            quick,
            dim: 3,
            target: TargetKind::RealHarmonics,
            degrees: if quick { vec![1, 2, 4] } else { (1..=8).collect() },
            hidden: vec![256, 256, 256],
            optimizer,
            lr,
            lr_sweep_degree: 3,
            lrs,
            seeds: (0..seeds as u64).collect(),
            n_train: if quick { 5_000 } else { 20_000 },
            n_val: if quick { 1_500 } else { 5_000 },
            stiffness_subset: 1_000,
            loss_threshold: if quick { 0.2 } else { 0.1 },
            train: TrainSpec {
                max_steps: if quick { 8_000 } else { 30_000 },
                batch_size: 32,
                eval_every: 100,
                train_eval_subset: if quick { 1_000 } else { 2_000 },
            },
            measure,
        }
    }

    /// Checks values that cannot work (names the field).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ExperimentError::InvalidArgument(format!("spherical config: {m}")));
        if self.degrees.is_empty() {
            return bad("no degrees".into());
        }
        if self.seeds.is_empty() {
            return bad("no seeds (--seeds must be at least 1)".into());
        }
        if self.stiffness_subset < 2 || self.stiffness_subset > self.n_val {
            return bad(format!("stiffness_subset {} must be in 2..={} (n_val)", self.stiffness_subset, self.n_val));
        }
        if !(self.loss_threshold.is_finite() && self.loss_threshold > 0.0) {
            return bad(format!("loss_threshold {} must be positive", self.loss_threshold));
        }
        for spec in self.runs() {
            spec.data.validate()?;
        }
        Ok(())
    }

    fn run(&self, degree: usize, lr: f64, seed: u64) -> SphRunSpec {
        SphRunSpec {
            data: SyntheticSpec {
                dim: self.dim,
                degree,
                target: self.target,
                labels: Labelling::Sign,
                n_train: self.n_train,
                n_test: self.n_val,
                seed,
            },
            hidden: self.hidden.clone(),
            optimizer: self.optimizer.with_lr(lr),
            seed,
            loss_threshold: self.loss_threshold,
            train: self.train,
            stiffness_subset: self.stiffness_subset,
            measure: self.measure.clone(),
        }
    }

    /// The degree sweep's runs (degree, seed order).
    pub fn degree_runs(&self) -> Vec<SphRunSpec> {
        self.degrees.iter().flat_map(|&l| self.seeds.iter().map(move |&s| self.run(l, self.lr, s))).collect()
    }

    /// The learning-rate sweep's runs (lr, seed order).
    pub fn lr_runs(&self) -> Vec<SphRunSpec> {
        self.lrs.iter().flat_map(|&lr| self.seeds.iter().map(move |&s| self.run(self.lr_sweep_degree, lr, s))).collect()
    }

    /// Every run, degree sweep first, without duplicates.
    pub fn runs(&self) -> Vec<SphRunSpec> {
        let mut out: Vec<SphRunSpec> = Vec::new();
        for s in self.degree_runs().into_iter().chain(self.lr_runs()) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// `spherical` or `spherical-quick` (quick and full runs never mix).
    pub fn sweep_name(&self) -> &'static str {
        if self.quick {
            "spherical-quick"
        } else {
            "spherical"
        }
    }

    /// The run store of this sweep (`OUT/runs/<sweep>/`).
    pub fn store(&self, out: &Path) -> RunStore {
        RunStore::new(out, self.sweep_name())
    }

    /// `OUT/runs/<sweep>.sweep.json`: the config, next to its runs.
    pub fn sweep_file(&self, out: &Path) -> PathBuf {
        // One file per optimizer: sweeps of different optimizers share the run folder, not the file.
        let name = crate::options::figure_dir(self.sweep_name(), self.optimizer);
        out.join("runs").join(format!("{name}.sweep.json"))
    }
}

/// One training run. Two runs with equal specs are the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SphRunSpec {
    /// The generated data (dimension, degree, target, sizes, seed).
    pub data: SyntheticSpec,
    /// Hidden widths of the MLP.
    pub hidden: Vec<usize>,
    /// Optimizer with its learning rate.
    pub optimizer: OptimizerConfig,
    /// Model initialisation and batch-order seed (the data seed is `data.seed`).
    pub seed: u64,
    /// Training loss below which the run counts as fitted (and stops).
    pub loss_threshold: f64,
    /// Step budget, batch size, loss-evaluation cadence and subset (written flat, as before).
    #[serde(flatten)]
    pub train: TrainSpec,
    /// Validation points on which stiffness is measured.
    pub stiffness_subset: usize,
    /// Measurement settings.
    pub measure: MeasureSettings,
}

impl SphRunSpec {
    /// Stable id, e.g. `sph-d3-l4-sgd-lr0.1-s0`.
    pub fn id(&self) -> String {
        let t = match self.data.target {
            TargetKind::RealHarmonics => String::new(),
            TargetKind::ZonalSum { directions } => format!("-zonal{directions}"),
        };
        format!(
            "sph-d{}-l{}{t}-{}-lr{}-s{}",
            self.data.dim,
            self.data.degree,
            self.optimizer.name(),
            fmt_lr(self.optimizer.lr()),
            self.seed
        )
    }
}
