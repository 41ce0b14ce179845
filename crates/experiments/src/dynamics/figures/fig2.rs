//! Fig 2: loss and within/between-class stiffness over training, onset of overfitting marked,
//! and the test of the claim that stiffness falls back after the onset.

use std::path::Path;

use stiff_plot::{line_figure, LineFigure, Panel, SecondaryAxis, Series};

use super::super::config::DynConfig;
use super::super::model::{seeds_title, FallBack};
use super::super::run::{DynPoint, DynRunRecord};
use super::super::summary;
use super::seeds::{across_seeds, across_seeds_plain, mean_curve, mean_history, pick};
use super::{series_rows, write_config, KINDS};
use crate::stats::intervals_disjoint;
use crate::store::{write_atomic, write_json};
use crate::tidy::write_csv;
use crate::Result;

/// The fall-back test over `records` (one per seed) from the seeds with a detected onset;
/// `None` when no seed has one.
pub fn fall_back(records: &[DynRunRecord]) -> Option<Vec<FallBack>> {
    let with_onset: Vec<(&DynRunRecord, &DynPoint, &DynPoint)> = records
        .iter()
        .filter_map(|r| Some((r, r.nearest_point(r.onset.as_ref()?.best_step)?, r.points.last()?)))
        .collect();
    if with_onset.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (kind, kname) in KINDS {
        for which in ["within", "between"] {
            let within = which == "within";
            let onset: Vec<_> = with_onset.iter().map(|(_, at, _)| pick(at, kind, within)).collect();
            let end: Vec<_> = with_onset.iter().map(|(_, _, e)| pick(e, kind, within)).collect();
            let change: Vec<f64> = end.iter().zip(&onset).map(|(e, o)| e.0.abs() - o.0.abs()).collect();
            let peaks: Vec<f64> = with_onset
                .iter()
                .map(|(r, at, _)| {
                    r.points
                        .iter()
                        .filter(|p| p.step <= at.step)
                        .map(|p| pick(p, kind, within).0)
                        .fold(f64::NEG_INFINITY, f64::max)
                })
                .collect();
            let (Some(at_onset), Some(at_end), Some(change)) =
                (across_seeds(&onset), across_seeds(&end), across_seeds_plain(&change))
            else {
                continue;
            };
            let supported = if with_onset.len() >= 2 {
                change.hi().is_some_and(|hi| hi < 0.0)
            } else {
                change.mean < 0.0 && intervals_disjoint(onset[0].1, end[0].1).unwrap_or(false)
            };
            out.push(FallBack {
                kind: kname.into(),
                which: which.into(),
                onset_steps: with_onset.iter().map(|(_, at, _)| at.step).collect(),
                peak_before_onset: peaks.iter().sum::<f64>() / peaks.len() as f64,
                final_steps: with_onset.iter().map(|(_, _, e)| e.step).collect(),
                ratio: at_end.mean / at_onset.mean,
                at_onset,
                at_end,
                change,
                supported,
            });
        }
    }
    Some(out)
}

/// Writes `DIR/fig2/`: seed-mean loss and stiffness vs images seen (95% band), each seed's onset
/// marked, and the fall-back test over the seeds.
pub fn write_fig2(dir: &Path, cfg: &DynConfig, records: &[DynRunRecord], command: &str) -> Result<()> {
    write_config(dir, cfg, command)?;
    let test = fall_back(records);
    let per_seed: Vec<(String, Option<Vec<FallBack>>)> =
        records.iter().map(|r| (r.id.clone(), fall_back(std::slice::from_ref(r)))).collect();
    let curve = mean_curve(records);
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({ "figure": "fig2", "seeds": records.len(), "fall_back": test,
            "seeds_without_onset": records.iter().filter(|r| r.onset.is_none()).map(|r| &r.id).collect::<Vec<_>>(),
            "per_seed_fall_back": per_seed, "over_training": curve,
            "runs": records.iter().map(|r| serde_json::json!({
            "id": r.id, "seed": r.spec.seed, "end": r.end, "steps": r.steps, "onset": r.onset,
            "points": r.points.iter().map(|p| serde_json::json!({"step": p.step, "images_seen": p.images_seen,
                "train_loss": p.train_loss, "val_loss": p.val_loss, "val_acc": p.val_acc,
                "sign": p.measurement.sign, "cosine": p.measurement.cosine})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>() }),
    )?;
    write_csv(&dir.join("results.csv"), &records.iter().flat_map(series_rows).collect::<Vec<_>>())?;

    let hist = mean_history(records);
    let xs_hist: Vec<f64> = hist.iter().map(|h| h.0).collect();
    let px: Vec<f64> = curve.iter().map(|c| c.images_seen as f64).collect();
    let panels = KINDS
        .iter()
        .map(|&(kind, kname)| {
            let mut val = Series::new("validation loss", xs_hist.clone(), hist.iter().map(|h| h.2).collect());
            // One dashed line per seed's onset; one label for all of them.
            let onsets: Vec<f64> =
                records.iter().filter_map(|r| r.onset.as_ref()).map(|o| o.best_images_seen as f64).collect();
            for (i, &x) in onsets.iter().enumerate() {
                let label = match (i, onsets.len()) {
                    (0, 1) => "onset of overfitting".to_string(),
                    (0, n) => format!("onsets of overfitting ({n} seeds)"),
                    _ => String::new(),
                };
                val = val.with_marker(x, label);
            }
            let series = |within: bool| {
                let (y, e): (Vec<f64>, Vec<f64>) = curve
                    .iter()
                    .map(|c| c.get(kind, within).map_or((f64::NAN, f64::NAN), |a| (a.mean, a.half_width())))
                    .unzip();
                Series::new(if within { "within-class" } else { "between-class" }, px.clone(), y).with_err(e)
            };
            Panel {
                title: format!("loss and {kname} stiffness"),
                x_label: "images seen (log scale; step 0 in the table)".into(),
                y_label: "cross-entropy loss (seed mean)".into(),
                log_x: true,
                series: vec![Series::new("training loss", xs_hist.clone(), hist.iter().map(|h| h.1).collect()), val],
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
                "Fig 2: {} on {} ({} training examples, {}){}",
                cfg.preset,
                cfg.dataset,
                cfg.data.train_subset.map_or("all".into(), |n| n.to_string()),
                seeds_title(records.len()),
                if cfg.quick { " [quick]" } else { "" }
            ),
            panels,
            columns: 2,
        },
        &dir.join("fig2"),
    )?;

    let md = summary::fig2(cfg, records, test.as_deref(), &per_seed, &curve, command);
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
