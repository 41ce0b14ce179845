//! The learning-rate sweep behind Figs 8, 9 and 10: fully-connected nets trained with a constant
//! learning rate until the training loss first falls below each of several thresholds; at each
//! threshold, stiffness is measured on the fixed validation subset (class stiffness for Fig 8,
//! distance curves and stiff domain sizes for Figs 9 and 10). The three figures share one sweep
//! (`runs/lr-sweep[-quick]/<id>.json`); Fig 9 draws one representative run of it.
//!
//! * [`config`]: the sweep and its runs (stable ids).
//! * [`run`]: one run and its record.
//! * [`model`]: the cells and trends the figures compute and their prose reports.
//! * [`figures`]: Figs 8, 9, 10 (aggregation, statistics, tables, plots).
//! * [`summary`]: their prose.
//!
//! Imports run one way: `figures` → `summary` → `model` (and all of them → `run` → `config`).

pub mod config;
pub mod figures;
pub mod model;
pub mod run;
pub mod summary;

use std::collections::BTreeMap;
use std::path::Path;

use indicatif::ProgressBar;
use stiff_data::DatasetName;

pub use config::{fig9_lr, fig9_runs, LrRunSpec, LrSweepConfig};
pub use run::{run_one, LrRunRecord, ThresholdPoint, WindowSample, RECORD_VERSION};

use crate::options::{OptimizerKind, ReproduceOptions, RunEnd, SweepFlags};
use crate::pipeline::{FigureInfo, Pipeline};
use crate::prepare::{prepare_with, DataSettings, Prepared};
use crate::store::RunStore;
use crate::{ExperimentError, Result};

/// The learning-rate sweep pipeline (Figs 8-10).
#[derive(Debug, Clone, Copy)]
pub struct LrSweep;

const FIGURES: &[FigureInfo] = &[
    FigureInfo {
        name: "fig8",
        shows: "between-class stiffness vs learning rate at three training-loss thresholds (FC net)",
        datasets: &[DatasetName::Mnist, DatasetName::FashionMnist],
        time_quick: "~2 min",
        time_full: "~10-15 min",
    },
    FigureInfo {
        name: "fig9",
        shows: "stiffness vs distance in input space and every layer; depth trend of stiff domains over seeds",
        datasets: &[DatasetName::Mnist],
        time_quick: "~30 s (reuses fig8's runs at lr 0.1)",
        time_full: "~2 min (reuses fig8's runs at lr 0.1)",
    },
    FigureInfo {
        name: "fig10",
        shows: "stiff domain size (zero crossing) vs learning rate, per space, v1 and v3 extraction",
        datasets: &[DatasetName::Mnist, DatasetName::FashionMnist],
        time_quick: "as fig8 (same runs)",
        time_full: "as fig8 (same runs)",
    },
];

/// Shrinks a quick sweep to seconds on small generated files (tests).
fn tiny(cfg: &mut LrSweepConfig) {
    cfg.train.max_steps = 40;
    cfg.train.eval_every = 10;
    cfg.train.train_eval_subset = 50;
    cfg.data.stiffness_subset = 40;
    cfg.measure.bootstrap_reps = 5;
    cfg.measure.min_pairs = 5;
    cfg.threshold_rule = stiff_train::ThresholdRule::RunningMean { steps: 3 };
    cfg.window = stiff_train::ThresholdWindow { count: 2, every: 3 };
    for t in cfg.thresholds.values_mut() {
        *t = vec![5.0, 2.2];
    }
}

/// Seeds when `--seeds` is not given: 5 (full; docs/figures.md), 2 quick (the fewest that give
/// the trend tests a seed spread to work with), 1 at test scale.
fn default_seeds(opts: &ReproduceOptions) -> usize {
    if opts.tiny {
        1
    } else if opts.quick {
        2
    } else {
        5
    }
}

/// Applies `--datasets`, `--lrs`, `--thresholds`, `--eval-every` to a sweep.
fn apply_flags(cfg: &mut LrSweepConfig, flags: &SweepFlags) -> Result<()> {
    if let Some(ds) = &flags.datasets {
        let mut ds = ds.clone();
        ds.dedup();
        cfg.datasets = ds;
    }
    if let Some(lrs) = &flags.lrs {
        let mut lrs = lrs.clone();
        lrs.sort_by(f64::total_cmp);
        lrs.dedup();
        cfg.lrs = lrs;
    }
    if let Some(th) = &flags.thresholds {
        cfg.thresholds = cfg.datasets.iter().map(|&d| (d, th.clone())).collect();
    }
    if let Some(e) = flags.eval_every {
        cfg.train.eval_every = e;
    }
    for d in &cfg.datasets {
        if cfg.thresholds.get(d).is_none_or(|t| t.is_empty()) {
            return Err(ExperimentError::InvalidArgument(format!(
                "--datasets: {d} has no default loss thresholds; give them with --thresholds"
            )));
        }
    }
    cfg.thresholds.retain(|d, _| cfg.datasets.contains(d));
    Ok(())
}

impl Pipeline for LrSweep {
    type Config = LrSweepConfig;
    type Spec = LrRunSpec;
    type Record = LrRunRecord;
    /// Prepared data per dataset.
    type Cache = BTreeMap<DatasetName, Prepared>;

    const CONFIG_KEY: &'static str = "sweep";

    fn label(&self) -> &'static str {
        "sweep"
    }

    fn figures(&self) -> &'static [FigureInfo] {
        FIGURES
    }

    fn config(&self, _figure: &str, opts: &ReproduceOptions) -> Result<LrSweepConfig> {
        let quick = opts.quick || opts.tiny;
        let mut cfg = LrSweepConfig::new(quick, opts.optimizer, opts.seeds_or(default_seeds(opts))?);
        if opts.tiny {
            tiny(&mut cfg);
        }
        apply_flags(&mut cfg, &opts.sweep)?;
        Ok(cfg)
    }

    fn optimizer(&self, cfg: &LrSweepConfig) -> OptimizerKind {
        cfg.optimizer
    }

    fn runs(&self, figure: &str, cfg: &LrSweepConfig) -> Vec<LrRunSpec> {
        match figure {
            "fig9" => fig9_runs(cfg),
            _ => cfg.runs(),
        }
    }

    fn run_id(&self, spec: &LrRunSpec) -> String {
        spec.id()
    }

    fn max_steps(&self, spec: &LrRunSpec) -> u64 {
        spec.train.max_steps
    }

    fn store(&self, cfg: &LrSweepConfig, out: &Path) -> RunStore {
        cfg.store(out)
    }

    fn run_one(
        &self,
        spec: &LrRunSpec,
        cache: &mut Self::Cache,
        opts: &ReproduceOptions,
        bar: ProgressBar,
    ) -> Result<LrRunRecord> {
        if let std::collections::btree_map::Entry::Vacant(slot) = cache.entry(spec.dataset) {
            let mut s = spec.data.clone();
            if s.stiffness_subset == 0 {
                s = DataSettings::for_dataset(spec.dataset);
            }
            // Small generated files pass at test scale only; real runs insist on official counts.
            let load = if opts.tiny { stiff_data::LoadOptions::lenient() } else { stiff_data::LoadOptions::default() };
            slot.insert(prepare_with(spec.dataset, opts.data_dir.as_deref(), &s, &opts.device, &load)?);
        }
        run_one(spec, &cache[&spec.dataset], &opts.device, Some(bar))
    }

    fn record_spec<'r>(&self, record: &'r LrRunRecord) -> &'r LrRunSpec {
        &record.spec
    }

    fn log_line(&self, record: &LrRunRecord, seconds: f64) -> String {
        let end = match &record.end {
            RunEnd::Completed => "completed".to_string(),
            RunEnd::StepBudget { steps } => format!("out of steps at {steps}"),
            RunEnd::Diverged { step, reason } => format!("DIVERGED at step {step}: {reason}"),
        };
        format!(
            "run {} {end}: {} thresholds reached in {} steps, {seconds:.1}s ({})",
            record.id,
            record.points.len(),
            record.steps,
            record
                .points
                .iter()
                .map(|p| format!(
                    "<{}: between sign {:.3} (window mean {:.3} over {}), cos {:.3}",
                    p.threshold,
                    p.measurement.sign.between,
                    p.window_mean(stiff_analysis::StiffnessKind::Sign, false).unwrap_or(f64::NAN),
                    p.window.len(),
                    p.measurement.cosine.between
                ))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    fn draw(
        &self,
        figure: &str,
        cfg: &LrSweepConfig,
        records: &[LrRunRecord],
        dir: &Path,
        command: &str,
    ) -> Result<()> {
        match figure {
            "fig8" => figures::fig8::write_fig8(dir, cfg, records, command),
            "fig10" => figures::fig10::write_fig10(dir, cfg, records, command),
            _ => match records.first() {
                Some(_) => figures::fig9::write_fig9(dir, cfg, records, command),
                None => Err(ExperimentError::InvalidArgument(format!(
                    "{figure}: its runs are not finished in {}",
                    dir.parent().unwrap_or(dir).display()
                ))),
            },
        }
    }

    fn configs_from_runs(&self, _figure: &str, out: &Path) -> Result<Vec<LrSweepConfig>> {
        for (sweep, quick) in [("lr-sweep", false), ("lr-sweep-quick", true)] {
            let records: Vec<LrRunRecord> = RunStore::new(out, sweep).all()?;
            if records.is_empty() {
                continue;
            }
            // One sweep per optimizer found, with the seeds found.
            let mut cfgs = Vec::new();
            for opt in OptimizerKind::ALL {
                let mut seeds: Vec<u64> = records
                    .iter()
                    .filter(|r| OptimizerKind::of(&r.spec.optimizer) == opt)
                    .map(|r| r.spec.seed)
                    .collect();
                if seeds.is_empty() {
                    continue;
                }
                seeds.sort();
                seeds.dedup();
                let mut cfg = LrSweepConfig::new(quick, opt, seeds.len());
                cfg.seeds = seeds;
                // The sweep's settings as the records ran them (flags may have changed them).
                let mine: Vec<&LrRunRecord> =
                    records.iter().filter(|r| OptimizerKind::of(&r.spec.optimizer) == opt).collect();
                let mut lrs: Vec<f64> = mine.iter().map(|r| r.spec.optimizer.lr()).collect();
                lrs.sort_by(f64::total_cmp);
                lrs.dedup();
                cfg.lrs = lrs;
                let mut datasets: Vec<DatasetName> = mine.iter().map(|r| r.spec.dataset).collect();
                datasets.sort();
                datasets.dedup();
                cfg.thresholds = mine.iter().map(|r| (r.spec.dataset, r.spec.thresholds.clone())).collect();
                cfg.datasets = datasets;
                let s = &mine[0].spec;
                cfg.train = s.train;
                cfg.threshold_rule = s.threshold_rule;
                cfg.window = s.window;
                cfg.data = s.data.clone();
                cfg.measure = s.measure.clone();
                cfgs.push(cfg);
            }
            return Ok(cfgs);
        }
        Ok(vec![])
    }
}
