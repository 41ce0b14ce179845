//! Training dynamics behind Figs 2-7: one network trained with a constant learning rate, its
//! stiffness measured on the fixed validation subset at a schedule of steps (log-spaced, step 0 =
//! initialisation), train/validation loss logged all along, and the onset of overfitting
//! detected (validation loss stops improving while the training loss keeps falling).
//!
//! * Fig 2: FC on a small MNIST training subset, trained well past the onset of overfitting.
//! * Figs 3, 5, 6: class stiffness matrices at four stages (initialisation, early, two late) of
//!   the same kind of run on MNIST (FC, the run of Fig 2), Fashion-MNIST (FC), CIFAR-10 (CNN).
//! * Fig 4: as Fig 3 with the training labels permuted.
//! * Fig 7: CNN on CIFAR-100 early in training: the 100x100 matrix ordered by super-class.
//!
//! Runs are stored like the learning-rate sweep's (`runs/dynamics[-quick]/<id>.json`, resumable);
//! Figs 2 and 3 share their run. [`write_synthetic_cifar`] writes small CIFAR-format folders
//! for testing the CIFAR figures without the real data.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use candle::{DType, Device};
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use stiff_data::DatasetName;
use stiff_models::{Model, ModelConfig, Preset};
use stiff_train::{LabelledData, Metrics, OptimizerConfig, Progress, SnapshotReason, Trainer};

use crate::lr_sweep::{OptimizerKind, RunEnd};
use crate::measure::{measure, MeasureSettings, Measurement};
use crate::prepare::{prepare_with, DataSettings, Prepared};
use crate::progress::SweepProgress;
use crate::runner::ReproduceOptions;
use crate::store::{read_json, RunStore};
use crate::sweep::fmt_lr;
use crate::{ExperimentError, Result};

/// Version of the dynamics run record layout.
pub const RECORD_VERSION: u32 = 1;

/// The figures of this module, in order.
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
    pub figure: String,
    pub quick: bool,
    pub dataset: DatasetName,
    pub preset: Preset,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub seeds: Vec<u64>,
    /// Train on a seeded permutation of the training labels (Fig 4).
    pub permute_labels: bool,
    pub max_steps: u64,
    pub batch_size: usize,
    /// Train/validation loss every this many steps (and at every measured step).
    pub eval_every: u64,
    /// Size of the fixed training and validation subsets on which losses are measured.
    pub eval_subset: usize,
    /// Evaluations without a new best validation loss (while training loss falls) that declare
    /// the onset of overfitting.
    pub overfit_patience: u32,
    /// Steps at which stiffness is measured (0 = initialisation).
    pub schedule: Vec<u64>,
    pub stage_rule: StageRule,
    /// Fig 7: the measured step whose matrix is drawn ("early in training").
    pub focus_step: Option<u64>,
    /// Fig 7: permutations of the super-class block-score test.
    pub block_permutations: usize,
    /// Fig 7: seed of the permutation test.
    pub block_seed: u64,
    pub data: DataSettings,
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
            max_steps,
            batch_size: 32,
            eval_every,
            eval_subset,
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
                max_steps: self.max_steps,
                batch_size: self.batch_size,
                eval_every: self.eval_every,
                eval_subset: self.eval_subset,
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
    pub dataset: DatasetName,
    pub preset: Preset,
    pub optimizer: OptimizerConfig,
    pub seed: u64,
    pub permute_labels: bool,
    pub max_steps: u64,
    pub batch_size: usize,
    pub eval_every: u64,
    pub eval_subset: usize,
    pub overfit_patience: u32,
    pub schedule: Vec<u64>,
    pub data: DataSettings,
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

/// The onset of overfitting as the trainer detected it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Onset {
    /// The evaluation with the lowest validation loss before the detection (the marked onset).
    pub best_step: u64,
    pub best_images_seen: u64,
    /// The step at which the onset was declared (`overfit_patience` evaluations later).
    pub detected_step: u64,
}

/// The state at one measured step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynPoint {
    pub step: u64,
    pub images_seen: u64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    pub measurement: Measurement,
}

/// A finished run, as stored in `runs/dynamics[-quick]/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynRunRecord {
    pub record_version: u32,
    pub id: String,
    pub spec: DynRunSpec,
    /// `Completed` (ran its steps) or `Diverged`.
    pub end: RunEnd,
    /// Every evaluation (train/val loss), step 0 included.
    pub history: Vec<Metrics>,
    /// The measured steps, in order.
    pub points: Vec<DynPoint>,
    pub onset: Option<Onset>,
    pub steps: u64,
    pub train_seconds: f64,
    pub measure_seconds: f64,
}

impl DynRunRecord {
    /// The measured point nearest `step` on a log scale (`step + 1` against `s + 1`), ties to the
    /// earlier one; `None` without points.
    pub fn nearest_point(&self, step: u64) -> Option<&DynPoint> {
        let d = |s: u64| ((s as f64 + 1.0).ln() - (step as f64 + 1.0).ln()).abs();
        self.points.iter().min_by(|a, b| d(a.step).total_cmp(&d(b.step)))
    }
}

/// One of the four stages of a class-matrix figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// "init", "early", "late 1", "late 2".
    pub name: String,
    /// Index into the record's points.
    pub point: usize,
    pub step: u64,
    /// The step the rule aimed at (the measured step is the nearest one).
    pub target_step: u64,
}

/// The four stages of `record` under `rule` (fewer when the run has fewer measured points).
pub fn stages(record: &DynRunRecord, rule: StageRule) -> Vec<Stage> {
    let Some(last) = record.points.last() else { return vec![] };
    let idx = |p: &DynPoint| record.points.iter().position(|q| q.step == p.step).unwrap_or(0);
    let run_len = last.step;
    let (early_t, late1_t) = match rule {
        StageRule::AroundOnset => {
            let l1 = record.onset.as_ref().map_or(run_len / 2, |o| o.best_step);
            // Early: training has clearly started, i.e. the training loss has covered a quarter of
            // its way from initialisation to late 1 (a fixed fraction of steps would land in the
            // initial plateau of plain SGD).
            let l1_loss = record.nearest_point(l1).map_or(f64::NAN, |p| p.train_loss);
            let l0_loss = record.points[0].train_loss;
            let goal = l0_loss - 0.25 * (l0_loss - l1_loss);
            let early = record
                .points
                .iter()
                .find(|p| p.step > 0 && p.step <= l1 && p.train_loss <= goal)
                .map_or((l1 / 10).max(1), |p| p.step);
            (early, l1)
        }
        StageRule::Fractions => (((run_len as f64) * 0.02).round().max(1.0) as u64, run_len / 2),
    };
    let mut out = Vec::new();
    for (name, target) in [("init", 0), ("early", early_t), ("late 1", late1_t), ("late 2", run_len)] {
        // Later stages never pick step 0 (init has it).
        let cands: Vec<&DynPoint> = record.points.iter().filter(|p| (target == 0) == (p.step == 0)).collect();
        let d = |s: u64| ((s as f64 + 1.0).ln() - (target as f64 + 1.0).ln()).abs();
        if let Some(p) = cands.into_iter().min_by(|a, b| d(a.step).total_cmp(&d(b.step))) {
            out.push(Stage { name: name.into(), point: idx(p), step: p.step, target_step: target });
        }
    }
    out
}

/// Trains one spec on prepared data, measuring stiffness at every scheduled step.
pub fn run_one(spec: &DynRunSpec, data: &Prepared, device: &Device, bar: Option<ProgressBar>) -> Result<DynRunRecord> {
    let t0 = Instant::now();
    let cfg = ModelConfig::preset(spec.preset, data.input, data.num_classes());
    let model = Model::new(&cfg, spec.seed, DType::F32, device)?;
    let train_cfg = stiff_train::TrainConfig {
        optimizer: spec.optimizer,
        batch_size: spec.batch_size,
        seed: spec.seed,
        max_steps: spec.max_steps,
        eval_every: spec.eval_every,
        train_eval_subset: spec.eval_subset,
        thresholds: vec![],
        snapshot_steps: spec.schedule.clone(),
        overfit_patience: Some(spec.overfit_patience),
        stop_at_overfit: false,
        ..Default::default()
    };
    let mut measure_seconds = 0.0;
    let mut points = Vec::new();
    let mut onset = None;
    let mut sink = |snap: &stiff_train::Snapshot<'_>| -> std::result::Result<(), stiff_train::SinkError> {
        match snap.reason {
            SnapshotReason::Step { .. } => {
                let tm = Instant::now();
                let m = measure(snap.model, &data.stiff_x, &data.stiff_y, data.num_classes(), &spec.measure)?;
                measure_seconds += tm.elapsed().as_secs_f64();
                points.push(DynPoint {
                    step: snap.step,
                    images_seen: snap.images_seen,
                    train_loss: snap.metrics.train_loss,
                    train_acc: snap.metrics.train_acc,
                    val_loss: snap.metrics.val_loss,
                    val_acc: snap.metrics.val_acc,
                    measurement: m,
                });
            }
            SnapshotReason::OverfittingOnset { best_step } => {
                onset = Some(Onset {
                    best_step,
                    best_images_seen: best_step * spec.batch_size as u64,
                    detected_step: snap.step,
                });
            }
            _ => {}
        }
        Ok(())
    };
    let labels = if spec.permute_labels {
        stiff_data::sampling::permuted_labels(&data.train_y, spec.seed)
    } else {
        data.train_y.clone()
    };
    let train = LabelledData::new(data.train_x.clone(), labels)?;
    let val_idx = stiff_train::eval_subset(data.val_y.len(), spec.eval_subset, 1);
    let val = LabelledData::new(data.val_x.clone(), data.val_y.clone())?.select(&val_idx, device)?;
    let progress = bar.map_or(Progress::Hidden, Progress::Bar);
    let report = Trainer::new(model, train_cfg)?.with_progress(progress).run(&train, Some(&val), &mut sink)?;
    let end = match report.status {
        stiff_train::RunStatus::Diverged { step, reason } => RunEnd::Diverged { step, reason },
        _ => RunEnd::Completed,
    };
    Ok(DynRunRecord {
        record_version: RECORD_VERSION,
        id: spec.id(),
        spec: spec.clone(),
        end,
        history: report.history,
        points,
        onset,
        steps: report.step,
        train_seconds: t0.elapsed().as_secs_f64() - measure_seconds,
        measure_seconds,
    })
}

/// Checks that `dataset` can be found; the error says how to fetch it.
pub fn check_data(figure: &str, dataset: DatasetName, data_dir: Option<&Path>) -> Result<()> {
    stiff_data::locate(dataset, data_dir).map(|_| ()).map_err(|e| {
        ExperimentError::InvalidArgument(format!(
            "{figure} needs {dataset}, which was not found: {e}\nFetch it with `cargo xtask data fetch {dataset}` \
             (or `stiff data fetch {dataset}`), or point --data-dir at a folder holding {dataset}/."
        ))
    })
}

/// The run ids of the dynamics figures `figs` (deduplicated, in order).
pub fn run_ids(figs: &[&str], opts: &ReproduceOptions) -> Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for f in figs {
        for s in DynConfig::new(f, opts.quick, opts.optimizer, opts.seeds.unwrap_or(1).max(1))?.runs() {
            if !ids.contains(&s.id()) {
                ids.push(s.id());
            }
        }
    }
    Ok(ids)
}

/// Runs (or resumes) the runs of the dynamics figures `figs`, then draws them.
pub fn reproduce(figs: &[&str], opts: &ReproduceOptions) -> Result<()> {
    let seeds = opts.seeds.unwrap_or(1);
    if seeds == 0 {
        return Err(ExperimentError::InvalidArgument("--seeds must be at least 1".into()));
    }
    let cfgs: Vec<DynConfig> =
        figs.iter().map(|f| DynConfig::new(f, opts.quick, opts.optimizer, seeds)).collect::<Result<_>>()?;
    if !opts.list_runs {
        for c in &cfgs {
            check_data(&c.figure, c.dataset, opts.data_dir.as_deref())?;
        }
    }
    let store = cfgs[0].store(&opts.out);
    let mut specs: Vec<DynRunSpec> = Vec::new();
    for c in &cfgs {
        for s in c.runs() {
            if !specs.contains(&s) {
                specs.push(s);
            }
        }
    }
    let done = |s: &DynRunSpec| store.get::<DynRunRecord>(&s.id()).is_some_and(|r| &r.spec == s);
    let Some(todo) = crate::sweep::plan(&figs.join("+"), &specs, DynRunSpec::id, done, opts)? else { return Ok(()) };
    run_specs(&todo, opts, &store)?;
    if crate::sweep::is_partial(opts) {
        return Ok(());
    }
    for c in &cfgs {
        draw(c, &opts.out, &opts.command)?;
        eprintln!("wrote {}", opts.out.join(&c.figure).display());
    }
    Ok(())
}

fn run_specs(todo: &[&DynRunSpec], opts: &ReproduceOptions, store: &RunStore) -> Result<()> {
    if todo.is_empty() {
        return Ok(());
    }
    let progress = SweepProgress::new("dynamics", todo.len());
    // Prepared data per (dataset, settings): Figs 2 and 4 share theirs.
    let mut data: BTreeMap<String, Prepared> = BTreeMap::new();
    // Small generated CIFAR-format folders pass in quick mode; full runs insist on official counts.
    let load = if opts.quick { stiff_data::LoadOptions::lenient() } else { stiff_data::LoadOptions::default() };
    for spec in todo {
        let key = format!(
            "{}:{}",
            spec.dataset,
            serde_json::to_string(&spec.data).map_err(|e| ExperimentError::Format(e.to_string()))?
        );
        if let std::collections::btree_map::Entry::Vacant(slot) = data.entry(key.clone()) {
            slot.insert(prepare_with(spec.dataset, opts.data_dir.as_deref(), &spec.data, &opts.device, &load)?);
        }
        let run_bar = progress.start_run(spec.id(), spec.max_steps);
        let t = Instant::now();
        let record = run_one(spec, &data[&key], &opts.device, Some(run_bar.clone()))?;
        store.put(&record.id, &record)?;
        let first = record.points.first().map(|p| &p.measurement);
        let last = record.points.last().map(|p| &p.measurement);
        let fmt = |m: Option<&Measurement>| {
            m.map_or("–".into(), |m| format!("within {:.3} between {:.3}", m.sign.within, m.sign.between))
        };
        let line = format!(
            "run {} {}: {} steps, {} measurements, {:.1}s train + {:.1}s measure; onset {}; sign stiffness at init {}, at end {}",
            record.id,
            match &record.end {
                RunEnd::Diverged { step, reason } => format!("DIVERGED at step {step}: {reason}"),
                _ => "completed".into(),
            },
            record.steps,
            record.points.len(),
            record.train_seconds,
            record.measure_seconds,
            record.onset.as_ref().map_or("not detected".into(), |o| format!("at step {} (detected {})", o.best_step, o.detected_step)),
            fmt(first),
            fmt(last),
        );
        progress.finish_run(&run_bar, format!("{line} [{:.1}s]", t.elapsed().as_secs_f64()));
    }
    progress.finish();
    Ok(())
}

/// Draws one dynamics figure from the finished runs of `cfg` in `out`.
pub fn draw(cfg: &DynConfig, out: &Path, command: &str) -> Result<()> {
    let store = cfg.store(out);
    let specs = cfg.runs();
    let records: Vec<DynRunRecord> =
        specs.iter().filter_map(|s| store.get::<DynRunRecord>(&s.id()).filter(|r| &r.spec == s)).collect();
    if records.is_empty() {
        return Err(ExperimentError::InvalidArgument(format!(
            "{}: none of its {} runs is finished in {}",
            cfg.figure,
            specs.len(),
            out.display()
        )));
    }
    if records.len() < specs.len() {
        eprintln!(
            "{}: {} of {} runs are not finished yet; drawing from the rest",
            cfg.figure,
            specs.len() - records.len(),
            specs.len()
        );
    }
    let dir = out.join(&cfg.figure);
    use crate::figures::dynamics as f;
    match cfg.figure.as_str() {
        "fig2" => f::write_fig2(&dir, cfg, &records, command),
        "fig7" => f::write_fig7(&dir, cfg, &records, command),
        _ => f::write_stages(&dir, cfg, &records, command),
    }
}

/// Redraws every dynamics figure whose `config.json` is in `out`, or whose runs are stored
/// there (shards write no config). Returns how many were drawn.
pub fn report(out: &Path) -> Result<usize> {
    let mut drawn = 0;
    for fig in DYN_FIGURES {
        let cfg_path = out.join(fig).join("config.json");
        let found = if cfg_path.is_file() {
            let v: serde_json::Value = read_json(&cfg_path)?;
            let cfg: DynConfig = serde_json::from_value(v["dynamics"].clone())
                .map_err(|e| ExperimentError::Format(format!("{}: {e}", cfg_path.display())))?;
            Some((cfg, v["command"].as_str().unwrap_or("").to_string()))
        } else {
            config_from_runs(fig, out)?.map(|c| (c, "cargo xtask report".to_string()))
        };
        if let Some((cfg, command)) = found {
            draw(&cfg, out, &command)?;
            drawn += 1;
        }
    }
    Ok(drawn)
}

/// The default configuration of `fig` whose runs are stored in `out` (quick or full, with the
/// seeds found), if any.
fn config_from_runs(fig: &str, out: &Path) -> Result<Option<DynConfig>> {
    for quick in [false, true] {
        for opt in [OptimizerKind::Sgd, OptimizerKind::Adam] {
            let mut cfg = DynConfig::new(fig, quick, opt, 1)?;
            let records: Vec<DynRunRecord> = cfg.store(out).all()?;
            let base = cfg.runs().remove(0);
            let mut seeds: Vec<u64> = records
                .iter()
                .filter(|r| DynRunSpec { seed: base.seed, ..r.spec.clone() } == base)
                .map(|r| r.spec.seed)
                .collect();
            if seeds.is_empty() {
                continue;
            }
            seeds.sort_unstable();
            seeds.dedup();
            cfg.seeds = seeds;
            return Ok(Some(cfg));
        }
    }
    Ok(None)
}

/// Writes a small data folder in the official CIFAR binary formats under `root`:
/// `cifar10/data_batch_{1..5}.bin` + `test_batch.bin` (records: 1 label byte + 3072 pixels) and
/// `cifar100/train.bin` + `test.bin` (coarse byte, fine byte, 3072 pixels).
///
/// * CIFAR-10: `train_per_class` images per class spread over the 5 train files, `test_per_class`
///   in the test file.
/// * CIFAR-100: `c100_train_per_class` and `c100_test_per_class` per fine class.
///
/// Images are class-dependent plane waves (orientation and colour set by the class; for
/// CIFAR-100 mostly by the super-class, so super-class blocks are learnable) plus seeded noise.
pub fn write_synthetic_cifar(
    root: &Path,
    train_per_class: usize,
    test_per_class: usize,
    c100_train_per_class: usize,
    c100_test_per_class: usize,
    seed: u64,
) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // pattern(key) -> (angle, frequency, channel phase offsets)
    let image = |rng: &mut ChaCha8Rng, major: usize, minor: Option<usize>| -> Vec<u8> {
        let a = major as f64 * 0.61;
        let f = 1.0 + (major % 4) as f64;
        let (b, g) = minor.map_or((0.0, 0.0), |m| (m as f64 * 1.3, 2.0 + (m % 3) as f64));
        let mut px = vec![0u8; 3 * 32 * 32];
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let (xf, yf) = (x as f64 / 32.0, y as f64 / 32.0);
                    let base = (std::f64::consts::TAU * f * (xf * a.cos() + yf * a.sin()) + c as f64 * (1.0 + a)).sin();
                    let fine = if minor.is_some() {
                        (std::f64::consts::TAU * g * (xf * b.cos() + yf * b.sin()) + c as f64).sin()
                    } else {
                        0.0
                    };
                    let v = 128.0 + 70.0 * base + 30.0 * fine + rng.random_range(-40.0..40.0);
                    px[c * 1024 + y * 32 + x] = v.clamp(0.0, 255.0) as u8;
                }
            }
        }
        px
    };
    let write = |path: &Path, bytes: &[u8]| -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
        let mut f = std::fs::File::create(path).map_err(|e| ExperimentError::io(path, e))?;
        f.write_all(bytes).map_err(|e| ExperimentError::io(path, e))
    };
    // CIFAR-10: interleave classes so every train file holds every class.
    let c10 = root.join("cifar10");
    let mut batches: Vec<Vec<u8>> = vec![Vec::new(); 5];
    for i in 0..train_per_class {
        for class in 0..10usize {
            let b = &mut batches[(i * 10 + class) % 5];
            b.push(class as u8);
            b.extend(image(&mut rng, class, None));
        }
    }
    for (i, b) in batches.iter().enumerate() {
        write(&c10.join(format!("data_batch_{}.bin", i + 1)), b)?;
    }
    let mut test = Vec::new();
    for _ in 0..test_per_class {
        for class in 0..10usize {
            test.push(class as u8);
            test.extend(image(&mut rng, class, None));
        }
    }
    write(&c10.join("test_batch.bin"), &test)?;
    // CIFAR-100: the super-class sets the main pattern, the fine class a weaker one.
    let c100 = root.join("cifar100");
    for (name, per) in [("train.bin", c100_train_per_class), ("test.bin", c100_test_per_class)] {
        let mut bytes = Vec::new();
        for _ in 0..per {
            for fine in 0..100usize {
                let coarse = stiff_data::classes::CIFAR100_FINE_TO_COARSE[fine];
                bytes.push(coarse);
                bytes.push(fine as u8);
                bytes.extend(image(&mut rng, coarse as usize, Some(fine)));
            }
        }
        write(&c100.join(name), &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_schedule_is_sorted_bounded_and_starts_at_zero() {
        let s = log_schedule(10, 10_000, 3);
        assert_eq!(s.first(), Some(&0));
        assert_eq!(s.last(), Some(&10_000));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        // 10, 22, 46, 100, 215, 464, 1000, 2154, 4642, 10000: 3 per decade over 3 decades.
        assert_eq!(s, vec![0, 10, 22, 46, 100, 215, 464, 1000, 2154, 4642, 10_000]);
        assert_eq!(log_schedule(5, 0, 3), vec![0]);
    }

    #[test]
    fn figs_2_and_3_share_their_run_and_fig4_does_not() {
        let f2 = DynConfig::new("fig2", false, OptimizerKind::Sgd, 1).unwrap().runs();
        let f3 = DynConfig::new("fig3", false, OptimizerKind::Sgd, 1).unwrap().runs();
        let f4 = DynConfig::new("fig4", false, OptimizerKind::Sgd, 1).unwrap().runs();
        assert_eq!(f2, f3);
        assert_ne!(f2[0].id(), f4[0].id());
        assert_eq!(f2[0].id(), "mnist-fc6-sgd-lr0.05-train4000-s0");
        assert!(DynConfig::new("fig9", false, OptimizerKind::Sgd, 1).is_err());
    }
}
