//! Fig 2: loss and within/between-class stiffness over training, onset of overfitting marked,
//! and the test of the claim that stiffness falls back after the onset.

use std::path::Path;

use serde::Serialize;
use stiff_plot::{line_figure, LineFigure, Panel, SecondaryAxis, Series};

use super::super::config::DynConfig;
use super::super::run::{DynPoint, DynRunRecord};
use super::super::summary;
use super::{between_ci, series_rows, within_ci, write_config, KINDS};
use crate::stats::intervals_disjoint;
use crate::store::{write_atomic, write_json};
use crate::tidy::write_csv;
use crate::Result;

/// The Fig 2 claim for one quantity: its value at the onset vs at the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct FallBack {
    /// Stiffness kind: `sign` or `cosine`.
    pub kind: String,
    /// "within" or "between".
    pub which: String,
    /// Step of the overfitting onset.
    pub onset_step: u64,
    /// Value at the onset.
    pub at_onset: f64,
    /// Its bootstrap 95% interval.
    pub at_onset_ci: Option<(f64, f64)>,
    /// Largest value over the measured steps up to the onset.
    pub peak_before_onset: f64,
    /// Last measured step.
    pub final_step: u64,
    /// Value at the last measured step.
    pub at_end: f64,
    /// Its bootstrap 95% interval.
    pub at_end_ci: Option<(f64, f64)>,
    /// `at_end / at_onset`.
    pub ratio: f64,
    /// |end| < |onset| with disjoint intervals.
    pub supported: bool,
}

fn fall_back(r: &DynRunRecord) -> Option<Vec<FallBack>> {
    let onset = r.onset.as_ref()?;
    let at = r.nearest_point(onset.best_step)?;
    let end = r.points.last()?;
    let mut out = Vec::new();
    for (kind, kname) in KINDS {
        for which in ["within", "between"] {
            let pick = |p: &DynPoint| {
                let s = p.measurement.kind(kind);
                if which == "within" {
                    (s.within, within_ci(s))
                } else {
                    (s.between, between_ci(s))
                }
            };
            let (v0, c0) = pick(at);
            let (v1, c1) = pick(end);
            let peak =
                r.points.iter().filter(|p| p.step <= at.step).map(|p| pick(p).0).fold(f64::NEG_INFINITY, f64::max);
            out.push(FallBack {
                kind: kname.into(),
                which: which.into(),
                onset_step: at.step,
                at_onset: v0,
                at_onset_ci: c0,
                peak_before_onset: peak,
                final_step: end.step,
                at_end: v1,
                at_end_ci: c1,
                ratio: v1 / v0,
                supported: v1.abs() < v0.abs() && intervals_disjoint(c0, c1).unwrap_or(false),
            });
        }
    }
    Some(out)
}

/// Writes `DIR/fig2/`: loss and stiffness vs images seen, onset marked, and the fall-back test.
pub fn write_fig2(dir: &Path, cfg: &DynConfig, records: &[DynRunRecord], command: &str) -> Result<()> {
    write_config(dir, cfg, command)?;
    let r = &records[0];
    let tests: Vec<(String, Option<Vec<FallBack>>)> = records.iter().map(|r| (r.id.clone(), fall_back(r))).collect();
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({ "figure": "fig2", "runs": records.iter().map(|r| serde_json::json!({
            "id": r.id, "end": r.end, "steps": r.steps, "onset": r.onset,
            "points": r.points.iter().map(|p| serde_json::json!({"step": p.step, "images_seen": p.images_seen,
                "train_loss": p.train_loss, "val_loss": p.val_loss, "val_acc": p.val_acc,
                "sign": p.measurement.sign, "cosine": p.measurement.cosine})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(), "fall_back": tests }),
    )?;
    write_csv(&dir.join("results.csv"), &records.iter().flat_map(series_rows).collect::<Vec<_>>())?;

    let xs_hist: Vec<f64> = r.history.iter().map(|m| m.images_seen as f64).collect();
    let onset_x = r.onset.as_ref().map(|o| o.best_images_seen as f64);
    let panels = KINDS
        .iter()
        .map(|&(kind, kname)| {
            let mut val = Series::new(
                "validation loss",
                xs_hist.clone(),
                r.history.iter().map(|m| m.val_loss.unwrap_or(f64::NAN)).collect(),
            );
            if let Some(x) = onset_x {
                val = val.with_marker(x, "onset of overfitting");
            }
            let px: Vec<f64> = r.points.iter().map(|p| p.images_seen as f64).collect();
            let series = |within: bool| {
                let (label, y, e): (&str, Vec<f64>, Vec<f64>) = {
                    let get = |p: &DynPoint| {
                        let s = p.measurement.kind(kind);
                        let (v, ci) = if within { (s.within, within_ci(s)) } else { (s.between, between_ci(s)) };
                        (v, ci.map_or(f64::NAN, |(lo, hi)| (hi - lo) / 2.0))
                    };
                    let (y, e) = r.points.iter().map(get).unzip();
                    (if within { "within-class" } else { "between-class" }, y, e)
                };
                Series::new(label, px.clone(), y).with_err(e)
            };
            Panel {
                title: format!("loss and {kname} stiffness"),
                x_label: "images seen (log scale; step 0 in the table)".into(),
                y_label: "cross-entropy loss".into(),
                log_x: true,
                series: vec![
                    Series::new("training loss", xs_hist.clone(), r.history.iter().map(|m| m.train_loss).collect()),
                    val,
                ],
                secondary: Some(SecondaryAxis {
                    label: format!("{kname} stiffness (validation subset)"),
                    series: vec![series(true), series(false)],
                    y_range: None,
                    hline: Some(0.0),
                }),
                ..Default::default()
            }
        })
        .collect();
    line_figure(
        &LineFigure {
            title: format!(
                "Fig 2: {} on {} ({} training examples, run {}){}",
                cfg.preset,
                cfg.dataset,
                cfg.data.train_subset.map_or("all".into(), |n| n.to_string()),
                r.id,
                if cfg.quick { " [quick]" } else { "" }
            ),
            panels,
            columns: 2,
        },
        &dir.join("fig2"),
    )?;

    let md = summary::fig2(cfg, records, &tests, command);
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
