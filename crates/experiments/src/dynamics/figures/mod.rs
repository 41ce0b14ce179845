//! Figures 2-7, drawn from the records of the dynamics runs: loss and stiffness over training
//! (Fig 2), class stiffness matrices at four stages (Figs 3-6), and the CIFAR-100 matrix ordered
//! by super-class with its block score (Fig 7).
//!
//! `results.csv` rows carry the training step in `note` as `step=N` (the `threshold` column is
//! empty: these figures are not tied to loss thresholds); class-matrix cells use
//! `space = "<row class>|<column class>"` and note `step=N stage=<name>`.

pub mod fig2;
pub mod fig7;
pub mod seeds;
pub mod stages;

use std::path::Path;

use stiff_analysis::StiffnessKind;

use super::config::DynConfig;
use super::model::end_note;
use super::run::{DynPoint, DynRunRecord};
use crate::measure::KindSummary;
use crate::store::write_json;
use crate::tidy::Row;
use crate::{ExperimentError, Result};

pub(crate) const KINDS: [(StiffnessKind, &str); 2] = [(StiffnessKind::Sign, "sign"), (StiffnessKind::Cosine, "cosine")];

pub(crate) fn base_row(r: &DynRunRecord) -> Row {
    Row::for_run(&r.id, r.spec.dataset.to_string(), r.spec.optimizer.name(), r.spec.optimizer.lr(), r.spec.seed)
}

/// Losses at every evaluation and within/between stiffness (with bootstrap bounds) at every
/// measured step.
pub fn series_rows(r: &DynRunRecord) -> Vec<Row> {
    let base = base_row(r);
    let mut rows =
        vec![Row { metric: "run_steps".into(), value: Some(r.steps as f64), note: end_note(&r.end), ..base.clone() }];
    if let Some(o) = &r.onset {
        rows.push(Row {
            metric: "overfitting_onset_step".into(),
            value: Some(o.best_step as f64),
            note: format!("best validation loss at step {}; declared at step {}", o.best_step, o.detected_step),
            ..base.clone()
        });
    }
    for m in &r.history {
        let at = |metric: &str, value: Option<f64>| Row {
            metric: metric.into(),
            value,
            note: format!("step={}", m.step),
            ..base.clone()
        };
        rows.push(at("images_seen", Some(m.images_seen as f64)));
        rows.push(at("train_loss", Some(m.train_loss)));
        rows.push(at("train_acc", Some(m.train_acc)));
        rows.push(at("val_loss", m.val_loss));
        rows.push(at("val_acc", m.val_acc));
    }
    for p in &r.points {
        let at = |metric: &str, value: Option<f64>| Row {
            metric: metric.into(),
            value,
            note: format!("step={}", p.step),
            ..base.clone()
        };
        for (kind, name) in KINDS {
            let s = p.measurement.kind(kind);
            rows.push(at(&format!("within_{name}_stiffness"), Some(s.within)));
            rows.push(at(&format!("between_{name}_stiffness"), Some(s.between)));
            if let Some(ci) = &s.ci {
                rows.push(at(&format!("within_{name}_stiffness_ci_lo"), Some(ci.within.lo)));
                rows.push(at(&format!("within_{name}_stiffness_ci_hi"), Some(ci.within.hi)));
                rows.push(at(&format!("between_{name}_stiffness_ci_lo"), Some(ci.between.lo)));
                rows.push(at(&format!("between_{name}_stiffness_ci_hi"), Some(ci.between.hi)));
            }
        }
    }
    rows
}

/// One row per class-matrix cell with pairs (cells without pairs have no value and no row).
pub(crate) fn matrix_rows(r: &DynRunRecord, p: &DynPoint, stage: &str, class_names: &[String]) -> Vec<Row> {
    let base = base_row(r);
    let mut rows = Vec::new();
    for (name, cells) in [("sign", &p.measurement.class_sign), ("cosine", &p.measurement.class_cosine)] {
        for (a, row) in cells.iter().enumerate() {
            for (b, v) in row.iter().enumerate() {
                if let Some(v) = v {
                    rows.push(Row {
                        space: format!("{}|{}", class_names[a], class_names[b]),
                        metric: format!("class_{name}_stiffness"),
                        value: Some(*v),
                        note: format!("step={} stage={stage}", p.step),
                        ..base.clone()
                    });
                }
            }
        }
    }
    rows
}

pub(crate) fn within_ci(s: &KindSummary) -> Option<(f64, f64)> {
    s.ci.as_ref().map(|c| (c.within.lo, c.within.hi))
}

pub(crate) fn between_ci(s: &KindSummary) -> Option<(f64, f64)> {
    s.ci.as_ref().map(|c| (c.between.lo, c.between.hi))
}

pub(crate) fn write_config(dir: &Path, cfg: &DynConfig, command: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
    write_json(
        &dir.join("config.json"),
        &serde_json::json!({ "figure": cfg.figure, "command": command, "dynamics": cfg }),
    )
}

/// A symmetric colour range covering every finite value of `mats` (at least +-0.05), rounded up
/// to a multiple of 0.05 so panels of one kind share a scale.
pub(crate) fn symmetric_range(mats: &[Vec<Vec<f64>>]) -> (f64, f64) {
    let m = mats.iter().flatten().flatten().filter(|v| v.is_finite()).fold(0.0f64, |a, v| a.max(v.abs()));
    let r = ((m / 0.05).ceil() * 0.05).clamp(0.05, 1.0);
    (-r, r)
}

pub(crate) fn cells(m: &[Vec<Option<f64>>]) -> Vec<Vec<f64>> {
    m.iter().map(|r| r.iter().map(|v| v.unwrap_or(f64::NAN)).collect()).collect()
}
