//! Stiffness on synthetic data with a known length scale: inputs uniform on the unit sphere
//! `S^2`, 2-class labels from the sign of a random combination of the real spherical harmonics of
//! degree `l` ([`stiff_data::synthetic`]), whose sign pattern varies on an angular scale of about
//! `pi / l`. Fully-connected ReLU nets are trained on targets of increasing degree (and, at one
//! degree, with several learning rates); stiffness vs distance is measured on validation points,
//! and the stiff domain size (both extraction methods) is compared with `pi / l`.
//!
//! On the unit sphere the dot-product distance of two inputs is `d = 1 - cos(theta)`, `theta` the
//! angle between them, so a domain size `d*` converts to the angle `arccos(1 - d*)`.
//!
//! Each run trains until the training loss (mean cross-entropy on a fixed training subset) first
//! falls below [`SphericalConfig::loss_threshold`] and is measured there (`fitted`), or, when the
//! step budget runs out first, is measured at the end and recorded as *not fitted* (it stays in
//! the tables, flagged). A diverged run is recorded without a measurement.
//!
//! Outputs (`OUT/spherical/`): `config.json`, `results.json`, `results.csv`, `spherical.png`,
//! `spherical.svg`, `summary.md`; runs in `OUT/runs/spherical[-quick]/<id>.json`, the sweep in
//! `OUT/runs/spherical[-quick].sweep.json` (so `report` can redraw from runs alone).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle::{DType, Device};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use stiff_analysis::{distance_curve, BinSpec, Crossing, DistanceCurve, PairFilter, StiffnessKind, StiffnessSettings};
use stiff_data::synthetic::{generate, Labelling, SyntheticSpec, TargetKind};
use stiff_models::{ArchSpec, InputShape, Model, ModelConfig};
use stiff_train::{LabelledData, OptimizerConfig, Progress, Trainer};

use crate::lr_sweep::OptimizerKind;
use crate::measure::{measure, MeasureSettings, Measurement};
use crate::progress::SweepProgress;
use crate::runner::ReproduceOptions;
use crate::store::{read_json, write_json, RunStore};
use crate::sweep::fmt_lr;
use crate::{ExperimentError, Result};

/// Name of the figure folder and of the `reproduce` target.
pub const FIGURE: &str = "spherical";

/// Version of the run record layout.
pub const RECORD_VERSION: u32 = 1;

/// The whole experiment (recorded in `config.json`). Defaults: [`SphericalConfig::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SphericalConfig {
    pub quick: bool,
    /// Ambient dimension (3: exact real spherical harmonics).
    pub dim: usize,
    pub target: TargetKind,
    /// Degrees of the degree sweep (trained at [`Self::lr`]).
    pub degrees: Vec<usize>,
    /// Hidden widths of the ReLU MLP `d -> hidden... -> 2`.
    pub hidden: Vec<usize>,
    pub optimizer: OptimizerKind,
    /// Learning rate of the degree sweep.
    pub lr: f64,
    /// Degree of the learning-rate sweep.
    pub lr_sweep_degree: usize,
    /// Learning rates of the learning-rate sweep (the one equal to `lr` is shared with the degree sweep).
    pub lrs: Vec<f64>,
    /// Seeds: each seed draws its own target, points and initialisation.
    pub seeds: Vec<u64>,
    pub n_train: usize,
    pub n_val: usize,
    /// Validation points (the first ones, i.e. uniform on the sphere, not class-balanced) on which
    /// stiffness is measured.
    pub stiffness_subset: usize,
    /// A run is `fitted` when its training loss falls below this.
    pub loss_threshold: f64,
    pub max_steps: u64,
    pub batch_size: usize,
    pub eval_every: u64,
    pub train_eval_subset: usize,
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
            max_steps: if quick { 8_000 } else { 30_000 },
            batch_size: 32,
            eval_every: 100,
            train_eval_subset: if quick { 1_000 } else { 2_000 },
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
            max_steps: self.max_steps,
            batch_size: self.batch_size,
            eval_every: self.eval_every,
            train_eval_subset: self.train_eval_subset,
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

    pub fn store(&self, out: &Path) -> RunStore {
        RunStore::new(out, self.sweep_name())
    }

    /// `OUT/runs/<sweep>.sweep.json`: the config, next to its runs.
    pub fn sweep_file(&self, out: &Path) -> PathBuf {
        out.join("runs").join(format!("{}.sweep.json", self.sweep_name()))
    }
}

/// One training run. Two runs with equal specs are the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SphRunSpec {
    pub data: SyntheticSpec,
    pub hidden: Vec<usize>,
    pub optimizer: OptimizerConfig,
    /// Model initialisation and batch-order seed (the data seed is `data.seed`).
    pub seed: u64,
    pub loss_threshold: f64,
    pub max_steps: u64,
    pub batch_size: usize,
    pub eval_every: u64,
    pub train_eval_subset: usize,
    pub stiffness_subset: usize,
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

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SphEnd {
    /// The training loss fell below the threshold; measured there.
    Fitted,
    /// The step budget ran out first; measured at the end, flagged.
    NotFitted { steps: u64 },
    /// Non-finite loss or exploding weights; not measured.
    Diverged { step: u64, reason: String },
}

/// A finished run (`runs/<sweep>/<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SphRunRecord {
    pub record_version: u32,
    pub id: String,
    pub spec: SphRunSpec,
    pub end: SphEnd,
    /// Steps when measured (or when the run ended, if diverged).
    pub step: u64,
    pub train_loss: Option<f64>,
    pub train_acc: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    /// Share of positive labels in the training split (sign labels need not be balanced for even l).
    pub positive_fraction: f64,
    pub measurement: Option<Measurement>,
    /// Label agreement `s_i s_j` (`s = +-1`) vs input distance over the stiffness subset: the
    /// reference the input-space stiffness curve is compared with (independent of the network).
    pub label_curve: DistanceCurve,
    /// Its first zero crossing: beyond it two points more often have different labels.
    pub label_crossing: Crossing,
    pub train_seconds: f64,
    pub measure_seconds: f64,
}

impl SphRunRecord {
    pub fn fitted(&self) -> bool {
        matches!(self.end, SphEnd::Fitted)
    }
}

/// Runs one spec: generates its data, trains, measures, returns the record.
pub fn run_one(spec: &SphRunSpec, device: &Device, bar: Option<ProgressBar>) -> Result<SphRunRecord> {
    let t0 = Instant::now();
    let ds = generate(&spec.data)?;
    let k = ds.num_classes();
    let (c, h, w) = ds.input_shape();
    let cfg = ModelConfig::new(ArchSpec::Mlp { hidden: spec.hidden.clone() }, InputShape::new(c, h, w), k);
    let model = Model::new(&cfg, spec.seed, DType::F32, device)?;
    let train_x = ds.train.images.to_device(device)?;
    let val_x = ds.test.images.to_device(device)?;
    let m = spec.stiffness_subset.min(ds.test.len());
    let stiff_x = val_x.narrow(0, 0, m)?;
    let stiff_y: Vec<u32> = ds.test.labels[..m].to_vec();
    let label_curve = label_agreement_curve(&stiff_x, &stiff_y, &spec.measure.bins)?;
    let label_crossing = label_curve.first_zero_crossing(StiffnessKind::Sign);
    let train_cfg = stiff_train::TrainConfig {
        optimizer: spec.optimizer,
        batch_size: spec.batch_size,
        seed: spec.seed,
        max_steps: spec.max_steps,
        eval_every: spec.eval_every,
        train_eval_subset: spec.train_eval_subset,
        thresholds: vec![spec.loss_threshold],
        stop_at_last_threshold: true,
        overfit_patience: None,
        ..Default::default()
    };
    struct Taken {
        fitted: bool,
        step: u64,
        metrics: stiff_train::Metrics,
        measurement: Measurement,
    }
    let mut taken: Option<Taken> = None;
    let mut measure_seconds = 0.0;
    let mut sink = |snap: &stiff_train::Snapshot<'_>| -> std::result::Result<(), stiff_train::SinkError> {
        let fitted = match snap.reason {
            stiff_train::SnapshotReason::Threshold { .. } => true,
            // The final snapshot follows the threshold one in a fitted run; measure it only when
            // the threshold was never reached.
            stiff_train::SnapshotReason::Final if taken.is_none() => false,
            _ => return Ok(()),
        };
        let tm = Instant::now();
        let measurement = measure(snap.model, &stiff_x, &stiff_y, k, &spec.measure)?;
        measure_seconds += tm.elapsed().as_secs_f64();
        taken = Some(Taken { fitted, step: snap.step, metrics: snap.metrics.clone(), measurement });
        Ok(())
    };
    let train = LabelledData::new(train_x, ds.train.labels.clone())?;
    let val_idx = stiff_train::eval_subset(ds.test.len(), spec.train_eval_subset, 1);
    let val = LabelledData::new(val_x, ds.test.labels.clone())?.select(&val_idx, device)?;
    let progress = bar.map_or(Progress::Hidden, Progress::Bar);
    let outcome = Trainer::new(model, train_cfg)?.with_progress(progress).run(&train, Some(&val), &mut sink)?;
    let positive_fraction = ds.train.labels.iter().filter(|&&l| l == 1).count() as f64 / ds.train.len().max(1) as f64;
    let last = outcome.history.last();
    let (end, step, metrics, measurement) = match (outcome.status, taken) {
        (stiff_train::RunStatus::Diverged { step, reason }, _) => {
            (SphEnd::Diverged { step, reason }, step, last.cloned(), None)
        }
        (_, Some(t)) => {
            let end = if t.fitted { SphEnd::Fitted } else { SphEnd::NotFitted { steps: outcome.step } };
            (end, t.step, Some(t.metrics), Some(t.measurement))
        }
        (_, None) => {
            return Err(ExperimentError::Format(format!(
                "run {}: training ended without a final snapshot (nothing measured)",
                spec.id()
            )))
        }
    };
    Ok(SphRunRecord {
        record_version: RECORD_VERSION,
        id: spec.id(),
        spec: spec.clone(),
        end,
        step,
        train_loss: metrics.as_ref().map(|m| m.train_loss),
        train_acc: metrics.as_ref().map(|m| m.train_acc),
        val_loss: metrics.as_ref().and_then(|m| m.val_loss),
        val_acc: metrics.as_ref().and_then(|m| m.val_acc),
        positive_fraction,
        measurement,
        label_curve,
        label_crossing,
        train_seconds: t0.elapsed().as_secs_f64() - measure_seconds,
        measure_seconds,
    })
}

/// Label agreement vs input distance, through the stiffness machinery: with the "Gram"
/// `K = s s^T` (`s_i = +1` for class 1, `-1` for class 0), sign and cosine stiffness of a pair are
/// both `s_i s_j`. For 2-class cross-entropy, `g_i . g_j = s_i s_j |r_i r_j| (grad z_i . grad z_j)`
/// (`r` the residual, `z` the logit difference), so input-space sign stiffness equals label
/// agreement wherever the tangent kernel `grad z_i . grad z_j` is positive.
///
/// * `x`: `(N, 1, 1, d)` inputs, `labels`: `(N)` in {0, 1}.
pub fn label_agreement_curve(x: &candle::Tensor, labels: &[u32], bins: &BinSpec) -> Result<DistanceCurve> {
    let s: Vec<f64> = labels.iter().map(|&l| if l == 1 { 1.0 } else { -1.0 }).collect();
    let k = ndarray::Array2::from_shape_fn((s.len(), s.len()), |(i, j)| s[i] * s[j]);
    let reps = crate::measure::to_array2_f32(x)?;
    let curve = distance_curve(k.view(), reps.view(), labels, PairFilter::All, bins, &StiffnessSettings::default())?;
    Ok(curve.with_space("input"))
}

/// `reproduce spherical`: the default configuration for `opts` (quick or full, optimizer, seeds).
/// `opts.figure` and `opts.data_dir` are not used (the data are generated).
pub fn reproduce_spherical(opts: &ReproduceOptions) -> Result<()> {
    let seeds = opts.seeds.unwrap_or(if opts.quick { 1 } else { 3 });
    if seeds == 0 {
        return Err(ExperimentError::InvalidArgument("--seeds must be at least 1".into()));
    }
    reproduce_spherical_with(opts, &SphericalConfig::new(opts.quick, opts.optimizer, seeds))
}

/// [`reproduce_spherical`] with an explicit configuration (tests shrink it). Honours
/// `opts.out`, `device`, `resume`, `list_runs`, `selection` and `command`.
pub fn reproduce_spherical_with(opts: &ReproduceOptions, cfg: &SphericalConfig) -> Result<()> {
    cfg.validate()?;
    let store = cfg.store(&opts.out);
    let specs = cfg.runs();
    let done = |s: &SphRunSpec| store.get::<SphRunRecord>(&s.id()).is_some_and(|r| &r.spec == s);
    let Some(todo) = crate::sweep::plan(FIGURE, &specs, SphRunSpec::id, done, opts)? else { return Ok(()) };
    write_json(&cfg.sweep_file(&opts.out), cfg)?;
    run_specs(&todo, &opts.device, &store)?;
    if crate::sweep::is_partial(opts) {
        return Ok(());
    }
    draw(cfg, &opts.out, &opts.command)?;
    eprintln!("wrote {}", opts.out.join(FIGURE).display());
    crate::report::write_index(&opts.out)
}

fn run_specs(todo: &[&SphRunSpec], device: &Device, store: &RunStore) -> Result<()> {
    if todo.is_empty() {
        return Ok(());
    }
    let progress = SweepProgress::new(FIGURE, todo.len());
    for spec in todo {
        let run_bar = progress.start_run(spec.id(), spec.max_steps);
        let t = Instant::now();
        let record = run_one(spec, device, Some(run_bar.clone()))?;
        store.put(&record.id, &record)?;
        let end = match &record.end {
            SphEnd::Fitted => format!("fitted (train loss < {}) at step {}", spec.loss_threshold, record.step),
            SphEnd::NotFitted { steps } => format!("NOT fitted in {steps} steps"),
            SphEnd::Diverged { step, reason } => format!("DIVERGED at step {step}: {reason}"),
        };
        let domain = record
            .measurement
            .as_ref()
            .and_then(|m| m.curves.first())
            .and_then(|c| crate::measure::crossing_distance(&c.sign_first_crossing))
            .map_or("no input-space crossing".to_string(), |d| {
                format!("input-space domain {d:.4} ({:.1} deg)", (1.0 - d).clamp(-1.0, 1.0).acos().to_degrees())
            });
        let line = format!(
            "run {} {end}: train loss {}, val acc {}, {domain}, {:.1}s",
            record.id,
            record.train_loss.map_or("–".into(), |v| format!("{v:.3}")),
            record.val_acc.map_or("–".into(), |v| format!("{v:.3}")),
            t.elapsed().as_secs_f64()
        );
        progress.finish_run(&run_bar, line);
    }
    progress.finish();
    Ok(())
}

/// Draws the figure from the finished runs of `cfg` in `out`.
fn draw(cfg: &SphericalConfig, out: &Path, command: &str) -> Result<()> {
    let store = cfg.store(out);
    let specs = cfg.runs();
    let records: Vec<SphRunRecord> =
        specs.iter().filter_map(|s| store.get::<SphRunRecord>(&s.id()).filter(|r| &r.spec == s)).collect();
    let missing = specs.len() - records.len();
    if missing > 0 {
        eprintln!("{FIGURE}: {missing} of {} runs are not finished yet; drawing from the rest", specs.len());
    }
    crate::figures::spherical::write_spherical(&out.join(FIGURE), cfg, &records, command)
}

/// `report`: redraws `OUT/spherical/` from the stored runs and rewrites `OUT/index.md`. Returns
/// false (and writes nothing) when there are no finished runs (neither a figure config nor a
/// sweep file with runs).
pub fn report_spherical(out: &Path) -> Result<bool> {
    let fig_cfg = out.join(FIGURE).join("config.json");
    let (cfg, command) = if fig_cfg.is_file() {
        let v: serde_json::Value = read_json(&fig_cfg)?;
        let cfg: SphericalConfig = serde_json::from_value(v["sweep"].clone())
            .map_err(|e| ExperimentError::Format(format!("{}: {e}", fig_cfg.display())))?;
        (cfg, v["command"].as_str().unwrap_or("cargo xtask report").to_string())
    } else {
        // Shards never draw; the sweep file next to the runs says what the sweep was.
        let mut found = None;
        for quick in [false, true] {
            let probe = SphericalConfig::new(quick, OptimizerKind::Sgd, 1);
            let path = probe.sweep_file(out);
            if path.is_file() {
                let cfg: SphericalConfig = read_json(&path)?;
                if !cfg.store(out).all::<SphRunRecord>()?.is_empty() {
                    found = Some(cfg);
                    break;
                }
            }
        }
        match found {
            Some(cfg) => (cfg, "cargo xtask report".to_string()),
            None => return Ok(false),
        }
    };
    if cfg.store(out).all::<SphRunRecord>()?.is_empty() {
        return Ok(false);
    }
    draw(&cfg, out, &command)?;
    crate::report::write_index(out)?;
    Ok(true)
}

/// Input-space distance `1 - cos(theta)` to the angle `theta` in radians.
pub fn distance_to_angle(d: f64) -> f64 {
    (1.0 - d).clamp(-1.0, 1.0).acos()
}
