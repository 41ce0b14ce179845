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
//!
//! * [`config`]: the sweep and its runs (stable ids).
//! * [`run`]: one run and its record.
//! * [`model`]: the cells, fits and trends the figure computes and its prose reports.
//! * [`figures`]: domain cells, fits, trends, the plot and the result files.
//! * [`summary`]: the prose.
//!
//! Imports run one way: `figures` → `summary` → `model` (and all of them → `run` → `config`).

pub mod config;
pub mod figures;
pub mod model;
pub mod run;
pub mod summary;

use std::path::Path;

use indicatif::ProgressBar;

pub use config::{SphRunSpec, SphericalConfig, FIGURE};
pub use run::{distance_to_angle, label_agreement_curve, run_one, SphEnd, SphRunRecord, RECORD_VERSION};

use crate::options::{OptimizerKind, ReproduceOptions};
use crate::pipeline::{FigureInfo, Pipeline};
use crate::store::{read_json, write_json, RunStore};
use crate::Result;

/// The spherical-harmonics pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Spherical;

const FIGURES: &[FigureInfo] = &[FigureInfo {
    name: FIGURE,
    shows: "stiff domain size vs the spherical-harmonic target's angular length scale pi/l, and vs learning rate",
    datasets: &[],
    time_quick: "~5 s",
    time_full: "~3.5 min",
}];

/// Shrinks a quick configuration to seconds (tests): 2 degrees, 2 learning rates, a small net.
fn tiny(c: &mut SphericalConfig) {
    c.degrees = vec![1, 3];
    c.lrs = vec![0.05, c.lr];
    c.hidden = vec![32, 32];
    c.n_train = 600;
    c.n_val = 300;
    c.stiffness_subset = 200;
    c.train.max_steps = 200;
    c.train.eval_every = 50;
    c.train.train_eval_subset = 300;
    c.loss_threshold = 0.3;
    c.measure.bins = stiff_analysis::BinSpec { bins: 40, lo: 0.0, hi: 2.0 };
}

impl Pipeline for Spherical {
    type Config = SphericalConfig;
    type Spec = SphRunSpec;
    type Record = SphRunRecord;
    type Cache = ();

    const CONFIG_KEY: &'static str = "sweep";

    fn label(&self) -> &'static str {
        FIGURE
    }

    fn figures(&self) -> &'static [FigureInfo] {
        FIGURES
    }

    fn config(&self, _figure: &str, opts: &ReproduceOptions) -> Result<SphericalConfig> {
        let quick = opts.quick || opts.tiny;
        let mut cfg = SphericalConfig::new(quick, opts.optimizer, opts.seeds_or(if quick { 1 } else { 3 })?);
        if opts.tiny {
            tiny(&mut cfg);
        }
        Ok(cfg)
    }

    fn optimizer(&self, cfg: &SphericalConfig) -> OptimizerKind {
        cfg.optimizer
    }

    fn check(&self, cfg: &SphericalConfig, _opts: &ReproduceOptions) -> Result<()> {
        cfg.validate()
    }

    /// Records the sweep next to its runs, so `report` can redraw from runs alone.
    fn begin(&self, cfg: &SphericalConfig, out: &Path) -> Result<()> {
        write_json(&cfg.sweep_file(out), cfg)
    }

    fn runs(&self, _figure: &str, cfg: &SphericalConfig) -> Vec<SphRunSpec> {
        cfg.runs()
    }

    fn run_id(&self, spec: &SphRunSpec) -> String {
        spec.id()
    }

    fn max_steps(&self, spec: &SphRunSpec) -> u64 {
        spec.train.max_steps
    }

    fn store(&self, cfg: &SphericalConfig, out: &Path) -> RunStore {
        cfg.store(out)
    }

    fn run_one(
        &self,
        spec: &SphRunSpec,
        _: &mut (),
        opts: &ReproduceOptions,
        bar: ProgressBar,
    ) -> Result<SphRunRecord> {
        run_one(spec, &opts.device, Some(bar))
    }

    fn record_spec<'r>(&self, record: &'r SphRunRecord) -> &'r SphRunSpec {
        &record.spec
    }

    fn log_line(&self, record: &SphRunRecord, seconds: f64) -> String {
        let end = match &record.end {
            SphEnd::Fitted => format!("fitted (train loss < {}) at step {}", record.spec.loss_threshold, record.step),
            SphEnd::NotFitted { steps } => format!("NOT fitted in {steps} steps"),
            SphEnd::Diverged { step, reason } => format!("DIVERGED at step {step}: {reason}"),
        };
        let domain = record
            .measurement
            .as_ref()
            .and_then(|m| m.curves.first())
            .and_then(|c| crate::measure::crossing_distance(&c.sign_first_crossing))
            .map_or("no input-space crossing".to_string(), |d| {
                format!("input-space domain {d:.4} ({:.1} deg)", distance_to_angle(d).to_degrees())
            });
        format!(
            "run {} {end}: train loss {}, val acc {}, {domain}, {seconds:.1}s",
            record.id,
            record.train_loss.map_or("–".into(), |v| format!("{v:.3}")),
            record.val_acc.map_or("–".into(), |v| format!("{v:.3}")),
        )
    }

    fn draw(
        &self,
        _figure: &str,
        cfg: &SphericalConfig,
        records: &[SphRunRecord],
        dir: &Path,
        command: &str,
    ) -> Result<()> {
        figures::write_spherical(dir, cfg, records, command)
    }

    /// The sweep files next to the runs (shards write no figure config).
    fn configs_from_runs(&self, _figure: &str, out: &Path) -> Result<Vec<SphericalConfig>> {
        for quick in [false, true] {
            let mut found = Vec::new();
            for opt in OptimizerKind::ALL {
                let path = SphericalConfig::new(quick, opt, 1).sweep_file(out);
                if path.is_file() {
                    let cfg: SphericalConfig = read_json(&path)?;
                    if !cfg.store(out).all::<SphRunRecord>()?.is_empty() {
                        found.push(cfg);
                    }
                }
            }
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Ok(vec![])
    }
}
