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
//! Figs 2 and 3 share their run.
//!
//! * [`config`]: one configuration per figure and its runs (stable ids).
//! * [`run`]: one run and its record.
//! * [`stages`]: the four stages of the class-matrix figures.
//! * [`model`]: the values over seeds, claims and trajectories the figures compute and their
//!   prose reports.
//! * [`figures`]: Figs 2, 3-6 and 7 (aggregation, claims as numbers, tables, plots).
//! * [`summary`]: their prose.
//!
//! Imports run one way: `figures` → `summary` → `model` (and all of them → `stages` → `run` →
//! `config`).

pub mod config;
pub mod figures;
pub mod model;
pub mod run;
pub mod stages;
pub mod summary;

use std::collections::BTreeMap;
use std::path::Path;

use indicatif::ProgressBar;
use stiff_data::DatasetName;

pub use crate::testdata::write_synthetic_cifar;
pub use config::{default_seeds, log_schedule, DynConfig, DynRunSpec, StageRule, DYN_FIGURES};
pub use run::{run_one, DynPoint, DynRunRecord, Onset, RECORD_VERSION};
pub use stages::{stages, Stage};

use crate::measure::Measurement;
use crate::options::{OptimizerKind, ReproduceOptions, RunEnd};
use crate::pipeline::{FigureInfo, Pipeline};
use crate::prepare::{prepare_with, Prepared};
use crate::store::RunStore;
use crate::{ExperimentError, Result};

/// The training-dynamics pipeline (Figs 2-7).
#[derive(Debug, Clone, Copy)]
pub struct Dynamics;

const FIGURES: &[FigureInfo] = &[
    FigureInfo {
        name: "fig2",
        shows: "train/validation loss and within/between-class stiffness over training (FC, MNIST subset), onset of overfitting marked",
        datasets: &[DatasetName::Mnist],
        time_quick: "~45 s (3 seeds)",
        time_full: "~1.5 min (3 seeds)",
    },
    FigureInfo {
        name: "fig3",
        shows: "class stiffness matrices (sign, cosine) at 4 stages of training, FC on MNIST (fig2's run)",
        datasets: &[DatasetName::Mnist],
        time_quick: "as fig2 (same runs)",
        time_full: "as fig2 (same runs)",
    },
    FigureInfo {
        name: "fig4",
        shows: "as fig3 with permuted training labels, and between-class stiffness over training",
        datasets: &[DatasetName::Mnist],
        time_quick: "~45 s (3 seeds)",
        time_full: "~1.5 min (3 seeds)",
    },
    FigureInfo {
        name: "fig5",
        shows: "class stiffness matrices at 4 stages, FC on Fashion-MNIST",
        datasets: &[DatasetName::FashionMnist],
        time_quick: "~45 s (3 seeds)",
        time_full: "~1.5 min (3 seeds)",
    },
    FigureInfo {
        name: "fig6",
        shows: "class stiffness matrices at 4 stages, CNN on CIFAR-10",
        datasets: &[DatasetName::Cifar10],
        time_quick: "~40 s (generated data)",
        time_full: "not timed (no CIFAR data here)",
    },
    FigureInfo {
        name: "fig7",
        shows: "CIFAR-100 class stiffness early in training, ordered by super-class, with block score and permutation p-value",
        datasets: &[DatasetName::Cifar100],
        time_quick: "~40 s (generated data)",
        time_full: "not timed (no CIFAR data here)",
    },
];

/// Shrinks a quick configuration to seconds on small generated files (tests).
fn tiny(cfg: &mut DynConfig) {
    cfg.measure.bootstrap_reps = 5;
    cfg.block_permutations = 50;
    match cfg.dataset {
        DatasetName::Mnist | DatasetName::FashionMnist => {
            cfg.data.train_subset = None;
            cfg.data.stiffness_subset = 40;
            cfg.train.max_steps = 60;
            cfg.train.eval_every = 10;
            cfg.train.train_eval_subset = 50;
            cfg.schedule = log_schedule(5, cfg.train.max_steps, 2);
        }
        DatasetName::Cifar10 => {
            cfg.train.max_steps = 40;
            cfg.schedule = log_schedule(5, cfg.train.max_steps, 2);
        }
        DatasetName::Cifar100 => {}
    }
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

impl Pipeline for Dynamics {
    type Config = DynConfig;
    type Spec = DynRunSpec;
    type Record = DynRunRecord;
    /// Prepared data per (dataset, settings): Figs 2 and 4 share theirs.
    type Cache = BTreeMap<String, Prepared>;

    const CONFIG_KEY: &'static str = "dynamics";

    fn label(&self) -> &'static str {
        "dynamics"
    }

    fn figures(&self) -> &'static [FigureInfo] {
        FIGURES
    }

    fn config(&self, figure: &str, opts: &ReproduceOptions) -> Result<DynConfig> {
        let mut cfg =
            DynConfig::new(figure, opts.quick || opts.tiny, opts.optimizer, opts.seeds_or(default_seeds(figure))?)?;
        if opts.tiny {
            tiny(&mut cfg);
        }
        Ok(cfg)
    }

    fn optimizer(&self, cfg: &DynConfig) -> OptimizerKind {
        cfg.optimizer
    }

    fn check(&self, cfg: &DynConfig, opts: &ReproduceOptions) -> Result<()> {
        if opts.list_runs {
            return Ok(());
        }
        check_data(&cfg.figure, cfg.dataset, opts.data_dir.as_deref())
    }

    fn runs(&self, _figure: &str, cfg: &DynConfig) -> Vec<DynRunSpec> {
        cfg.runs()
    }

    fn run_id(&self, spec: &DynRunSpec) -> String {
        spec.id()
    }

    fn max_steps(&self, spec: &DynRunSpec) -> u64 {
        spec.train.max_steps
    }

    fn store(&self, cfg: &DynConfig, out: &Path) -> RunStore {
        cfg.store(out)
    }

    fn run_one(
        &self,
        spec: &DynRunSpec,
        cache: &mut Self::Cache,
        opts: &ReproduceOptions,
        bar: ProgressBar,
    ) -> Result<DynRunRecord> {
        let key = format!(
            "{}:{}",
            spec.dataset,
            serde_json::to_string(&spec.data).map_err(|e| ExperimentError::Format(e.to_string()))?
        );
        if let std::collections::btree_map::Entry::Vacant(slot) = cache.entry(key.clone()) {
            // Small generated CIFAR-format folders pass in quick mode; full runs insist on official counts.
            let quick = opts.quick || opts.tiny;
            let load = if quick { stiff_data::LoadOptions::lenient() } else { stiff_data::LoadOptions::default() };
            slot.insert(prepare_with(spec.dataset, opts.data_dir.as_deref(), &spec.data, &opts.device, &load)?);
        }
        run_one(spec, &cache[&key], &opts.device, Some(bar))
    }

    fn record_spec<'r>(&self, record: &'r DynRunRecord) -> &'r DynRunSpec {
        &record.spec
    }

    fn log_line(&self, record: &DynRunRecord, seconds: f64) -> String {
        let first = record.points.first().map(|p| &p.measurement);
        let last = record.points.last().map(|p| &p.measurement);
        let fmt = |m: Option<&Measurement>| {
            m.map_or("–".into(), |m| format!("within {:.3} between {:.3}", m.sign.within, m.sign.between))
        };
        format!(
            "run {} {}: {} steps, {} measurements, {:.1}s train + {:.1}s measure; onset {}; sign stiffness at init {}, at end {} [{seconds:.1}s]",
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
        )
    }

    fn draw(&self, figure: &str, cfg: &DynConfig, records: &[DynRunRecord], dir: &Path, command: &str) -> Result<()> {
        if records.is_empty() {
            return Err(ExperimentError::InvalidArgument(format!(
                "{figure}: none of its {} runs is finished in {}",
                cfg.seeds.len(),
                dir.parent().unwrap_or(dir).display()
            )));
        }
        match figure {
            "fig2" => figures::fig2::write_fig2(dir, cfg, records, command),
            "fig7" => figures::fig7::write_fig7(dir, cfg, records, command),
            _ => figures::stages::write_stages(dir, cfg, records, command),
        }
    }

    fn configs_from_runs(&self, figure: &str, out: &Path) -> Result<Vec<DynConfig>> {
        for quick in [false, true] {
            let mut found = Vec::new();
            for opt in OptimizerKind::ALL {
                let mut cfg = DynConfig::new(figure, quick, opt, 1)?;
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
                found.push(cfg);
            }
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Ok(vec![])
    }
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
