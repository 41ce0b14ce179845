//! The one pattern every figure family follows.
//!
//! A [`Pipeline`] says what its figures are, how the command-line flags become its
//! configuration, which runs (with stable ids) a figure needs, how to run one, and how finished
//! run records become a figure folder. The runner ([`crate::runner`]) does everything else the
//! same way for every pipeline: `--list-runs`, `--only`, `--shard`, resume, progress, the run
//! store, `report`, `index.md` and `OUT/skipped.md`. The registry ([`crate::registry`]) is the
//! one list of pipelines; nothing else names them.

use std::path::Path;

use indicatif::ProgressBar;
use serde::{de::DeserializeOwned, Serialize};
use stiff_data::DatasetName;

use crate::options::{OptimizerKind, ReproduceOptions};
use crate::store::RunStore;
use crate::Result;

/// One reproducible figure, as `stiff list` shows it.
#[derive(Debug, Clone, Copy)]
pub struct FigureInfo {
    /// The `reproduce` target and the folder under `OUT`.
    pub name: &'static str,
    /// One line on what the figure shows (`stiff list`, `index.md`).
    pub shows: &'static str,
    /// The datasets it needs (empty: generated data); `all` skips a figure whose data is missing.
    pub datasets: &'static [DatasetName],
    /// Expected wall time on 2 CPU cores: quick, full.
    pub time_quick: &'static str,
    /// Expected wall time of the full configuration.
    pub time_full: &'static str,
}

impl FigureInfo {
    /// The data column of `stiff list`.
    pub fn data_label(&self) -> String {
        if self.datasets.is_empty() {
            "none (generated)".into()
        } else {
            self.datasets.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        }
    }
}

/// A figure family: its config, its runs, how to run one, how records become figures.
///
/// Records are stored as `OUT/runs/<store>/<run id>.json`; a run counts as finished when its
/// record parses and holds the same spec (two equal specs are the same run).
pub trait Pipeline: Sync {
    /// What a figure's `config.json` records under [`Pipeline::CONFIG_KEY`].
    type Config: Clone + Serialize + DeserializeOwned;
    /// One run; equal specs are the same run.
    type Spec: Clone + PartialEq + Serialize + DeserializeOwned;
    /// A finished run.
    type Record: Serialize + DeserializeOwned;
    /// State kept across the runs of one invocation (prepared datasets).
    type Cache: Default;

    /// The key of the configuration in `OUT/<fig>/config.json`.
    const CONFIG_KEY: &'static str;

    /// Label of the sweep's progress bar.
    fn label(&self) -> &'static str;
    /// The figures, in order.
    fn figures(&self) -> &'static [FigureInfo];
    /// The configuration of `figure` for these flags (`quick`, `tiny`, `seeds`, `optimizer`).
    fn config(&self, figure: &str, opts: &ReproduceOptions) -> Result<Self::Config>;
    /// The optimizer of a configuration (it picks the figure folder, see [`crate::options::figure_dir`]).
    fn optimizer(&self, cfg: &Self::Config) -> OptimizerKind;
    /// Checks made before planning (values, data present); `opts.list_runs` needs no data.
    fn check(&self, _cfg: &Self::Config, _opts: &ReproduceOptions) -> Result<()> {
        Ok(())
    }
    /// Called once runs are about to start (after `--list-runs` returned), e.g. to record the sweep.
    fn begin(&self, _cfg: &Self::Config, _out: &Path) -> Result<()> {
        Ok(())
    }
    /// The runs `figure` needs, in sweep order.
    fn runs(&self, figure: &str, cfg: &Self::Config) -> Vec<Self::Spec>;
    /// Stable id of a run (its record's file name).
    fn run_id(&self, spec: &Self::Spec) -> String;
    /// The step budget of a run (the length of its progress bar).
    fn max_steps(&self, spec: &Self::Spec) -> u64;
    /// The store of a configuration's runs.
    fn store(&self, cfg: &Self::Config, out: &Path) -> RunStore;
    /// Runs one spec.
    fn run_one(
        &self,
        spec: &Self::Spec,
        cache: &mut Self::Cache,
        opts: &ReproduceOptions,
        bar: ProgressBar,
    ) -> Result<Self::Record>;
    /// The spec a record was run with.
    fn record_spec<'r>(&self, record: &'r Self::Record) -> &'r Self::Spec;
    /// The log line of a finished run (`seconds`: its wall time).
    fn log_line(&self, record: &Self::Record, seconds: f64) -> String;
    /// Writes the figure folder `dir` from the finished records of its runs (in run order).
    fn draw(&self, figure: &str, cfg: &Self::Config, records: &[Self::Record], dir: &Path, command: &str)
        -> Result<()>;
    /// The configurations of `figure` whose runs are stored in `out` (for `report` on a folder
    /// filled by shards, which write no figure config); one per optimizer found.
    fn configs_from_runs(&self, figure: &str, out: &Path) -> Result<Vec<Self::Config>>;
}

/// What the runner and the registry see of a pipeline (object safe; implemented for every
/// [`Pipeline`] in [`crate::runner`]).
pub trait AnyPipeline: Sync {
    /// The pipeline's type with its module path (`stiff_experiments::<module>::<Type>`): the
    /// layering test finds each pipeline's folder from it, so no list of pipeline names is kept
    /// outside the registry.
    fn type_path(&self) -> &'static str;
    /// The figures this pipeline draws.
    fn figures(&self) -> &'static [FigureInfo];
    /// The run ids of `figs` (deduplicated, sweep order).
    fn run_ids(&self, figs: &[&str], opts: &ReproduceOptions) -> Result<Vec<String>>;
    /// Runs (or resumes) the selected runs of `figs`, then draws them (unless partial).
    fn reproduce(&self, figs: &[&str], opts: &ReproduceOptions) -> Result<()>;
    /// Redraws every figure with a config or stored runs in `out`; returns how many were drawn.
    fn report(&self, out: &Path) -> Result<usize>;
}
