//! Figs 3-6: class stiffness matrices (sign, cosine) at four stages of training, and within /
//! between-class stiffness over training with the stages marked.

use std::path::Path;

use serde::Serialize;
use stiff_analysis::StiffnessKind;
use stiff_plot::{heatmap_figure, line_figure, Heatmap, HeatmapFigure, LineFigure, Panel, Series};

use super::super::config::DynConfig;
use super::super::run::DynRunRecord;
use super::super::stages::{stages, Stage};
use super::super::summary;
use super::{between_ci, cells, matrix_rows, series_rows, symmetric_range, within_ci, write_config, KINDS};
use crate::measure::KindSummary;
use crate::stats::intervals_disjoint;
use crate::store::{write_atomic, write_json};
use crate::tidy::{write_csv, Row};
use crate::Result;

/// The claims of the stage figures, as numbers.
#[derive(Debug, Clone, Serialize)]
pub struct StageClaims {
    /// Run id.
    pub run: String,
    /// Stiffness kind: `sign` or `cosine`.
    pub kind: String,
    /// Whether within-class stiffness at initialisation is positive (`None`: interval straddles 0).
    pub within_positive_at_init: Option<bool>,
    /// Within-class stiffness at initialisation.
    pub within_at_init: f64,
    /// Between-class at late 1 minus at init; grows = positive with disjoint intervals.
    pub between_growth: f64,
    /// Whether between-class stiffness grows from init to late 1 (`None`: undecided).
    pub between_grows: Option<bool>,
    /// |late 2| < |late 1| for within and between.
    pub within_regresses: bool,
    /// Same for between-class stiffness.
    pub between_regresses: bool,
    /// Permuted labels (Fig 4): the largest between-class value after initialisation, its
    /// interval's lower bound, and whether that bound is ever above 0.
    pub max_between_after_init: f64,
    /// Lower bound of that value's bootstrap interval.
    pub max_between_ci_lo: Option<f64>,
    /// Whether that lower bound is ever above 0.
    pub positive_between_develops: Option<bool>,
    /// Between-class stiffness at the last measured step.
    pub between_at_end: f64,
    /// Its bootstrap 95% interval.
    pub between_at_end_ci: Option<(f64, f64)>,
}

fn stage_claims(r: &DynRunRecord, st: &[Stage], kind: StiffnessKind, kname: &str) -> Option<StageClaims> {
    if st.len() < 4 {
        return None;
    }
    let s = |i: usize| r.points[st[i].point].measurement.kind(kind);
    let (init, late1, late2) = (s(0), s(2), s(3));
    let after: Vec<&KindSummary> = r.points.iter().filter(|p| p.step > 0).map(|p| p.measurement.kind(kind)).collect();
    let best = after.iter().max_by(|a, b| a.between.total_cmp(&b.between));
    let any_lo_pos = after.iter().map(|k| between_ci(k).map(|c| c.0 > 0.0)).collect::<Option<Vec<bool>>>();
    Some(StageClaims {
        run: r.id.clone(),
        kind: kname.into(),
        within_positive_at_init: within_ci(init).map(|c| c.0 > 0.0),
        within_at_init: init.within,
        between_growth: late1.between - init.between,
        between_grows: intervals_disjoint(between_ci(init), between_ci(late1))
            .map(|sep| sep && late1.between > init.between),
        within_regresses: late2.within.abs() < late1.within.abs(),
        between_regresses: late2.between.abs() < late1.between.abs(),
        max_between_after_init: best.map_or(f64::NAN, |k| k.between),
        max_between_ci_lo: best.and_then(|k| between_ci(k).map(|c| c.0)),
        positive_between_develops: any_lo_pos.map(|v| v.iter().any(|&b| b)),
        between_at_end: late2.between,
        between_at_end_ci: between_ci(late2),
    })
}

/// Within/between stiffness over training (one panel per kind), for the stage figures.
fn over_training_figure(dir: &Path, cfg: &DynConfig, r: &DynRunRecord, st: &[Stage]) -> Result<()> {
    let px: Vec<f64> = r.points.iter().map(|p| p.images_seen as f64).collect();
    let panels = KINDS
        .iter()
        .map(|&(kind, kname)| {
            let get = |within: bool| {
                let (y, e): (Vec<f64>, Vec<f64>) = r
                    .points
                    .iter()
                    .map(|p| {
                        let s = p.measurement.kind(kind);
                        let (v, ci) = if within { (s.within, within_ci(s)) } else { (s.between, between_ci(s)) };
                        (v, ci.map_or(f64::NAN, |(lo, hi)| (hi - lo) / 2.0))
                    })
                    .unzip();
                (y, e)
            };
            let (wy, we) = get(true);
            let (by, be) = get(false);
            let mut between = Series::new("between-class", px.clone(), by).with_err(be);
            for s in st.iter().filter(|s| s.step > 0) {
                between = between.with_marker(r.points[s.point].images_seen as f64, s.name.clone());
            }
            Panel {
                title: format!("{kname} stiffness over training"),
                x_label: "images seen (log scale)".into(),
                y_label: format!("{kname} stiffness"),
                log_x: true,
                series: vec![Series::new("within-class", px.clone(), wy).with_err(we), between],
                hline: Some(0.0),
                ..Default::default()
            }
        })
        .collect();
    line_figure(
        &LineFigure {
            title: format!(
                "{}: class stiffness over training, {} on {}{} (run {})",
                cfg.figure,
                cfg.preset,
                cfg.dataset,
                if cfg.permute_labels { ", permuted labels" } else { "" },
                r.id
            ),
            panels,
            columns: 2,
        },
        &dir.join(format!("{}_over_training", cfg.figure)),
    )?;
    Ok(())
}

/// Writes `DIR/<fig>/` for Figs 3-6: class matrices (sign, cosine) at four stages.
pub fn write_stages(dir: &Path, cfg: &DynConfig, records: &[DynRunRecord], command: &str) -> Result<()> {
    write_config(dir, cfg, command)?;
    let names = cfg.class_names();
    let r = &records[0];
    let st = stages(r, cfg.stage_rule);
    let mut rows: Vec<Row> = records.iter().flat_map(series_rows).collect();
    let mut claims = Vec::new();
    for rec in records {
        let s = stages(rec, cfg.stage_rule);
        for stage in &s {
            rows.extend(matrix_rows(rec, &rec.points[stage.point], &stage.name, &names));
        }
        for (kind, kname) in KINDS {
            claims.extend(stage_claims(rec, &s, kind, kname));
        }
    }
    write_csv(&dir.join("results.csv"), &rows)?;
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({ "figure": cfg.figure, "class_names": names, "claims": claims,
            "runs": records.iter().map(|rec| {
                let s = stages(rec, cfg.stage_rule);
                serde_json::json!({ "id": rec.id, "end": rec.end, "onset": rec.onset,
                    "stages": s.iter().map(|stage| { let p = &rec.points[stage.point]; serde_json::json!({
                        "stage": stage, "images_seen": p.images_seen, "train_loss": p.train_loss, "val_loss": p.val_loss,
                        "val_acc": p.val_acc, "sign": p.measurement.sign, "cosine": p.measurement.cosine,
                        "class_sign": p.measurement.class_sign, "class_cosine": p.measurement.class_cosine }) }).collect::<Vec<_>>(),
                    "between_over_training": rec.points.iter().map(|p| serde_json::json!({"step": p.step,
                        "sign": p.measurement.sign.between, "cosine": p.measurement.cosine.between})).collect::<Vec<_>>() })
            }).collect::<Vec<_>>() }),
    )?;

    // Heatmaps: row 1 sign, row 2 cosine; one colour scale per kind across the stages.
    let mut panels = Vec::new();
    for (kind, kname) in KINDS {
        let mats: Vec<Vec<Vec<f64>>> = st
            .iter()
            .map(|s| {
                let m = &r.points[s.point].measurement;
                cells(if kind == StiffnessKind::Sign { &m.class_sign } else { &m.class_cosine })
            })
            .collect();
        let range = symmetric_range(&mats);
        for (s, values) in st.iter().zip(mats) {
            let p = &r.points[s.point];
            panels.push(Heatmap {
                title: format!("{kname}, {} (step {}, train loss {:.3})", s.name, s.step, p.train_loss),
                values,
                row_labels: names.clone(),
                col_labels: names.clone(),
                range,
                group_boundaries: vec![],
            });
        }
    }
    let fig_no = cfg.figure.trim_start_matches("fig");
    heatmap_figure(
        &HeatmapFigure {
            title: format!(
                "Fig {fig_no}: class stiffness matrices, {} on {}{} (run {}){}",
                cfg.preset,
                cfg.dataset,
                if cfg.permute_labels { " with permuted training labels" } else { "" },
                r.id,
                if cfg.quick { " [quick]" } else { "" }
            ),
            panels,
            columns: st.len().max(1),
        },
        &dir.join(&cfg.figure),
    )?;
    over_training_figure(dir, cfg, r, &st)?;

    let md = summary::stages(cfg, records, &claims, &st, command);
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
