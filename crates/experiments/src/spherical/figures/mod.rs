//! The spherical-harmonics figure: domain cells, length-scale fits and learning-rate trends
//! (computed in [`cells`], typed in `model`), the plot (in [`plot`]) and the result files; prose
//! is in `summary`.

pub mod cells;
pub mod plot;

use std::f64::consts::PI;
use std::path::Path;

use super::config::{SphericalConfig, FIGURE};
use super::model::{cells_of, DomainCell, LengthScaleFit, LrTrend, METHODS};
use super::run::{distance_to_angle, SphEnd, SphRunRecord};
use super::summary;
use crate::measure::{crossing_distance, crossing_note};
use crate::stats::{slope, spearman};
use crate::store::{write_atomic, write_json};
use crate::tidy::{write_csv, Row};
use crate::{ExperimentError, Result};
use cells::{domain_cell, length_scale_fit};

pub(crate) fn end_note(r: &SphRunRecord) -> String {
    match &r.end {
        SphEnd::Fitted => format!("fitted: train loss < {} at step {}", r.spec.loss_threshold, r.step),
        SphEnd::NotFitted { steps } => {
            format!(
                "NOT fitted: train loss never fell below {} in {steps} steps; measured at the end",
                r.spec.loss_threshold
            )
        }
        SphEnd::Diverged { step, reason } => format!("diverged at step {step}: {reason}; not measured"),
    }
}

/// Tidy rows: run status, losses, class stiffness, and stiff domain sizes per space (distance
/// and angle) by both methods and both stiffness kinds. Stiffness rows are written only with a
/// finite value (the CSV checker requires one).
pub fn tidy_rows(records: &[SphRunRecord]) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in records {
        let base = Row {
            threshold: r.fitted().then_some(r.spec.loss_threshold),
            ..Row::for_run(&r.id, r.spec.data.name(), r.spec.optimizer.name(), r.spec.optimizer.lr(), r.spec.seed)
        };
        let row = |metric: &str, value: Option<f64>| Row { metric: metric.into(), value, ..base.clone() };
        let l = r.spec.data.degree;
        rows.push(Row { note: end_note(r), ..row("run_steps", Some(r.step as f64)) });
        rows.push(row("fitted", Some(if r.fitted() { 1.0 } else { 0.0 })));
        rows.push(row("degree", Some(l as f64)));
        rows.push(row("characteristic_angle_rad", Some(PI / l as f64)));
        rows.push(row(
            "target_correlation_zero_rad",
            stiff_data::synthetic::profile_first_zero(r.spec.data.dim, l).ok().flatten(),
        ));
        rows.push(row("positive_fraction", Some(r.positive_fraction)));
        let ld = crossing_distance(&r.label_crossing);
        let lnote = crossing_note(&r.label_crossing, 4);
        rows.push(Row { space: "input".into(), note: lnote.clone(), ..row("label_agreement_zero", ld) });
        rows.push(Row {
            space: "input".into(),
            note: lnote,
            ..row("label_agreement_zero_angle_rad", ld.map(distance_to_angle))
        });
        rows.push(row("train_loss", r.train_loss));
        rows.push(row("train_acc", r.train_acc));
        rows.push(row("val_loss", r.val_loss));
        rows.push(row("val_acc", r.val_acc));
        let Some(m) = &r.measurement else { continue };
        for (name, s) in [("sign", &m.sign), ("cosine", &m.cosine)] {
            for (which, v) in [("within", s.within), ("between", s.between)] {
                if v.is_finite() {
                    rows.push(row(&format!("{which}_{name}_stiffness"), Some(v)));
                }
            }
        }
        for c in &m.curves {
            for (metric, crossing) in [
                ("stiff_domain_sign_first_crossing", &c.sign_first_crossing),
                ("stiff_domain_sign_linear_fit", &c.sign_fit_crossing),
                ("stiff_domain_cosine_first_crossing", &c.cos_first_crossing),
                ("stiff_domain_cosine_linear_fit", &c.cos_fit_crossing),
            ] {
                let d = crossing_distance(crossing);
                let note = crossing_note(crossing, 4);
                rows.push(Row { space: c.space.clone(), note: note.clone(), ..row(metric, d) });
                rows.push(Row {
                    space: c.space.clone(),
                    note,
                    ..row(&format!("{metric}_angle_rad"), d.map(distance_to_angle))
                });
            }
        }
    }
    rows
}

/// Writes `DIR/` (normally `OUT/spherical/`): config, results (JSON + CSV), figure, summary.
pub fn write_spherical(dir: &Path, cfg: &SphericalConfig, records: &[SphRunRecord], command: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
    write_json(&dir.join("config.json"), &serde_json::json!({ "figure": FIGURE, "command": command, "sweep": cfg }))?;
    write_csv(&dir.join("results.csv"), &tidy_rows(records))?;

    let spaces: Vec<String> = records
        .iter()
        .find_map(|r| r.measurement.as_ref())
        .map(|m| m.curves.iter().map(|c| c.space.clone()).collect())
        .unwrap_or_else(|| vec!["input".into()]);
    let in_cell = |r: &SphRunRecord, l: usize, lr: f64| {
        r.spec.data.degree == l && r.spec.optimizer.lr() == lr && cfg.seeds.contains(&r.spec.seed)
    };
    // Degree sweep cells, per space and method.
    let mut degree_cells: Vec<DomainCell> = Vec::new();
    for space in &spaces {
        for (mname, pick) in METHODS {
            for &l in &cfg.degrees {
                let runs: Vec<&SphRunRecord> = records.iter().filter(|r| in_cell(r, l, cfg.lr)).collect();
                degree_cells.push(domain_cell(&runs, space, mname, pick, l, cfg.lr, cfg.dim));
            }
        }
    }
    let mut lr_cells: Vec<DomainCell> = Vec::new();
    for space in &spaces {
        for (mname, pick) in METHODS {
            for &lr in &cfg.lrs {
                let l = cfg.lr_sweep_degree;
                let runs: Vec<&SphRunRecord> = records.iter().filter(|r| in_cell(r, l, lr)).collect();
                lr_cells.push(domain_cell(&runs, space, mname, pick, l, lr, cfg.dim));
            }
        }
    }
    let fits: Vec<LengthScaleFit> = spaces
        .iter()
        .flat_map(|s| METHODS.iter().map(move |(m, _)| (s.clone(), *m)))
        .filter_map(|(s, m)| {
            let cs = cells_of(&degree_cells, &s, m);
            length_scale_fit(&cs.iter().collect::<Vec<_>>())
        })
        .collect();
    let lr_trends: Vec<LrTrend> = spaces
        .iter()
        .flat_map(|s| METHODS.iter().map(move |(m, _)| (s.clone(), *m)))
        .map(|(space, method)| {
            let cs: Vec<DomainCell> =
                cells_of(&lr_cells, &space, method).into_iter().filter(|c| c.distance.is_some()).collect();
            let lrs: Vec<f64> = cs.iter().map(|c| c.lr).collect();
            let distances: Vec<f64> = cs.iter().map(|c| c.distance.as_ref().map_or(f64::NAN, |m| m.mean)).collect();
            let logs: Vec<f64> = lrs.iter().map(|l| l.log10()).collect();
            LrTrend {
                slope_per_decade: slope(&logs, &distances),
                spearman: spearman(&logs, &distances),
                space,
                method: method.into(),
                lrs,
                distances,
            }
        })
        .collect();
    let headline = fits.iter().find(|f| f.space == "input" && f.method == METHODS[0].0);
    let gap = degree_cells
        .iter()
        .filter(|c| c.space == "input" && c.method == METHODS[0].0)
        .filter_map(|c| c.max_curve_gap)
        .fold(None, |acc: Option<f64>, g| Some(acc.map_or(g, |a: f64| a.max(g))));
    let verdict = summary::verdict_text(headline, gap);
    let curves: Vec<serde_json::Value> = records
        .iter()
        .filter_map(|r| {
            r.measurement.as_ref().map(|m| {
                serde_json::json!({ "run": r.id, "degree": r.spec.data.degree, "lr": r.spec.optimizer.lr(),
                    "seed": r.spec.seed, "fitted": r.fitted(), "curves": m.curves })
            })
        })
        .collect();
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({
            "figure": FIGURE,
            "verdict": verdict,
            "length_scale_fits": fits,
            "degree_cells": degree_cells,
            "lr_cells": lr_cells,
            "lr_trends": lr_trends,
            "runs": records.iter().map(|r| serde_json::json!({
                "id": r.id, "end": r.end, "step": r.step, "train_loss": r.train_loss, "train_acc": r.train_acc,
                "val_acc": r.val_acc, "positive_fraction": r.positive_fraction,
                "train_seconds": r.train_seconds, "measure_seconds": r.measure_seconds })).collect::<Vec<_>>(),
            "distance_curves": curves,
        }),
    )?;

    plot::draw_figure(dir, cfg, records, &spaces, &degree_cells, &lr_cells)?;

    let md = summary::summary(cfg, records, &spaces, &degree_cells, &lr_cells, &fits, &lr_trends, &verdict, command);
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
