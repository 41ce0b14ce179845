//! Figs 3-6: class stiffness matrices (sign, cosine) at four stages of training, and within /
//! between-class stiffness over training with the stages marked, aggregated over the seeds
//! (see [`super::seeds`]).

use std::path::Path;

use stiff_analysis::StiffnessKind;
use stiff_plot::{heatmap_figure, line_figure, Heatmap, HeatmapFigure, LineFigure, Panel, Series};

use super::super::config::{DynConfig, StageRule};
use super::super::model::{seeds_title, steps_text, AcrossSeeds, CurvePoint, StageClaims, StageMean};
use super::super::run::{DynPoint, DynRunRecord};
use super::super::stages::{stages, Stage};
use super::super::summary;
use super::seeds::{across_seeds, across_seeds_plain, mean_curve, mean_matrix, pick};
use super::{cells, matrix_rows, series_rows, symmetric_range, write_config, KINDS};
use crate::stats::intervals_disjoint;
use crate::store::{write_atomic, write_json};
use crate::tidy::{write_csv, Row};
use crate::Result;

/// The point and stage of every seed at each of the four stages (`[stage][seed]`); runs with
/// fewer than four measured stages are left out.
pub(crate) fn stage_points(records: &[DynRunRecord], rule: StageRule) -> Vec<Vec<(&DynPoint, Stage)>> {
    let mut out: Vec<Vec<(&DynPoint, Stage)>> = vec![Vec::new(); 4];
    for r in records {
        let st = stages(r, rule);
        if st.len() == 4 {
            for (slot, s) in out.iter_mut().zip(st) {
                slot.push((&r.points[s.point], s));
            }
        }
    }
    out
}

/// The claims of `kind` over `records` (one per seed); `None` when no run has four stages.
pub fn stage_claims(
    records: &[DynRunRecord],
    rule: StageRule,
    kind: StiffnessKind,
    kname: &str,
) -> Option<StageClaims> {
    let sp = stage_points(records, rule);
    let seeds = sp[0].len();
    if seeds == 0 {
        return None;
    }
    let at = |i: usize, within: bool| sp[i].iter().map(|(p, _)| pick(p, kind, within)).collect::<Vec<_>>();
    let within_init = at(0, true);
    let (between_init, between_late1) = (at(0, false), at(2, false));
    let growth: Vec<f64> = between_late1.iter().zip(&between_init).map(|(l, i)| l.0 - i.0).collect();
    let change = |within: bool| -> Vec<f64> {
        at(3, within).iter().zip(at(2, within)).map(|(l2, l1)| l2.0.abs() - l1.0.abs()).collect()
    };
    let (within_change, between_change) = (across_seeds_plain(&change(true))?, across_seeds_plain(&change(false))?);
    let regresses = |c: &AcrossSeeds| if seeds >= 2 { c.hi().map(|hi| hi < 0.0) } else { Some(c.mean < 0.0) };
    let between_growth = across_seeds_plain(&growth)?;
    let between_grows = if seeds >= 2 {
        between_growth.lo().map(|lo| lo > 0.0)
    } else {
        intervals_disjoint(between_init[0].1, between_late1[0].1).map(|sep| sep && between_growth.mean > 0.0)
    };

    // Fig 4: the seed-mean between-class curve after initialisation.
    let curve = mean_curve(records);
    let after: Vec<(&CurvePoint, &AcrossSeeds)> =
        curve.iter().filter(|c| c.step > 0).filter_map(|c| c.get(kind, false).map(|b| (c, b))).collect();
    let best = after.iter().max_by(|a, b| a.1.mean.total_cmp(&b.1.mean));
    let any_lo_pos = after.iter().map(|(_, b)| b.lo().map(|lo| lo > 0.0)).collect::<Option<Vec<bool>>>();
    let within_at_init = across_seeds(&within_init)?;
    Some(StageClaims {
        runs: records.iter().map(|r| r.id.clone()).collect(),
        kind: kname.into(),
        within_positive_at_init: within_at_init.lo().map(|lo| lo > 0.0),
        within_at_init,
        between_growth,
        between_grows,
        within_regresses: regresses(&within_change),
        within_change,
        between_regresses: regresses(&between_change),
        between_change,
        max_between_step: best.map_or(0, |b| b.0.step),
        max_between_after_init: best.map_or(f64::NAN, |b| b.1.mean),
        max_between_ci_lo: best.and_then(|b| b.1.lo()),
        positive_between_develops: any_lo_pos.map(|v| v.iter().any(|&b| b)),
        between_at_end: across_seeds(&at(3, false))?,
    })
}

/// The four stages over the seeds (empty when no run has four stages).
pub fn stage_means(records: &[DynRunRecord], rule: StageRule) -> Vec<StageMean> {
    stage_points(records, rule)
        .into_iter()
        .filter(|pts| !pts.is_empty())
        .map(|pts| {
            let stiff =
                |kind, within| across_seeds(&pts.iter().map(|(p, _)| pick(p, kind, within)).collect::<Vec<_>>());
            let sign: Vec<&[Vec<Option<f64>>]> = pts.iter().map(|(p, _)| p.measurement.class_sign.as_slice()).collect();
            let cos: Vec<&[Vec<Option<f64>>]> =
                pts.iter().map(|(p, _)| p.measurement.class_cosine.as_slice()).collect();
            StageMean {
                stage: pts[0].1.name.clone(),
                steps: pts.iter().map(|(_, s)| s.step).collect(),
                train_loss: across_seeds_plain(&pts.iter().map(|(p, _)| p.train_loss).collect::<Vec<_>>()),
                val_loss: across_seeds_plain(&pts.iter().filter_map(|(p, _)| p.val_loss).collect::<Vec<_>>()),
                sign_within: stiff(StiffnessKind::Sign, true),
                sign_between: stiff(StiffnessKind::Sign, false),
                cosine_within: stiff(StiffnessKind::Cosine, true),
                cosine_between: stiff(StiffnessKind::Cosine, false),
                class_sign: mean_matrix(&sign),
                class_cosine: mean_matrix(&cos),
            }
        })
        .collect()
}

/// Seed-mean within/between stiffness over training with its interval as a band (one panel
/// per kind), the stages of the first seed marked.
fn over_training_figure(dir: &Path, cfg: &DynConfig, records: &[DynRunRecord], curve: &[CurvePoint]) -> Result<()> {
    let px: Vec<f64> = curve.iter().map(|c| c.images_seen as f64).collect();
    let st = stages(&records[0], cfg.stage_rule);
    let panels = KINDS
        .iter()
        .map(|&(kind, kname)| {
            let get = |within: bool| -> (Vec<f64>, Vec<f64>) {
                curve
                    .iter()
                    .map(|c| c.get(kind, within).map_or((f64::NAN, f64::NAN), |a| (a.mean, a.half_width())))
                    .unzip()
            };
            let (wy, we) = get(true);
            let (by, be) = get(false);
            let mut between = Series::new("between-class", px.clone(), by).with_err(be);
            for s in st.iter().filter(|s| s.step > 0) {
                between = between.with_marker(records[0].points[s.point].images_seen as f64, s.name.clone());
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
                "{}: stiffness over training, {} on {}{} ({}; stages: seed {})",
                cfg.figure,
                cfg.preset,
                cfg.dataset,
                if cfg.permute_labels { ", permuted labels" } else { "" },
                seeds_title(records.len()),
                records[0].spec.seed
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
    let mut rows: Vec<Row> = records.iter().flat_map(series_rows).collect();
    let mut per_seed_claims = Vec::new();
    for rec in records {
        for stage in &stages(rec, cfg.stage_rule) {
            rows.extend(matrix_rows(rec, &rec.points[stage.point], &stage.name, &names));
        }
        for (kind, kname) in KINDS {
            per_seed_claims.extend(stage_claims(std::slice::from_ref(rec), cfg.stage_rule, kind, kname));
        }
    }
    let claims: Vec<StageClaims> =
        KINDS.iter().filter_map(|&(kind, kname)| stage_claims(records, cfg.stage_rule, kind, kname)).collect();
    let means = stage_means(records, cfg.stage_rule);
    let curve = mean_curve(records);
    write_csv(&dir.join("results.csv"), &rows)?;
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({ "figure": cfg.figure, "class_names": names, "seeds": records.len(),
            "claims": claims, "per_seed_claims": per_seed_claims, "stages": means, "over_training": curve,
            "runs": records.iter().map(|rec| {
                let s = stages(rec, cfg.stage_rule);
                serde_json::json!({ "id": rec.id, "seed": rec.spec.seed, "end": rec.end, "onset": rec.onset,
                    "stages": s.iter().map(|stage| { let p = &rec.points[stage.point]; serde_json::json!({
                        "stage": stage, "images_seen": p.images_seen, "train_loss": p.train_loss, "val_loss": p.val_loss,
                        "val_acc": p.val_acc, "sign": p.measurement.sign, "cosine": p.measurement.cosine,
                        "class_sign": p.measurement.class_sign, "class_cosine": p.measurement.class_cosine }) }).collect::<Vec<_>>(),
                    "between_over_training": rec.points.iter().map(|p| serde_json::json!({"step": p.step,
                        "sign": p.measurement.sign.between, "cosine": p.measurement.cosine.between})).collect::<Vec<_>>() })
            }).collect::<Vec<_>>() }),
    )?;

    // Heatmaps of the seed-mean matrices: row 1 sign, row 2 cosine; one colour scale per kind
    // across the stages.
    let mut panels = Vec::new();
    for (kind, kname) in KINDS {
        let mats: Vec<Vec<Vec<f64>>> = means
            .iter()
            .map(|s| cells(if kind == StiffnessKind::Sign { &s.class_sign } else { &s.class_cosine }))
            .collect();
        let range = symmetric_range(&mats);
        for (s, values) in means.iter().zip(mats) {
            panels.push(Heatmap {
                title: format!(
                    "{kname}, {} (step {}, train loss {:.3})",
                    s.stage,
                    steps_text(&s.steps),
                    s.train_loss.as_ref().map_or(f64::NAN, |l| l.mean)
                ),
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
                "Fig {fig_no}: class stiffness matrices, {} on {}{} ({}){}",
                cfg.preset,
                cfg.dataset,
                if cfg.permute_labels { " with permuted training labels" } else { "" },
                if records.len() >= 2 {
                    format!("cell means of {} seeds", records.len())
                } else {
                    format!("run {}", records[0].id)
                },
                if cfg.quick { " [quick]" } else { "" }
            ),
            panels,
            columns: means.len().max(1),
        },
        &dir.join(&cfg.figure),
    )?;
    over_training_figure(dir, cfg, records, &curve)?;

    let md = summary::stages(cfg, records, &claims, &means, &curve, command);
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
