//! Fig 8: between-class stiffness vs learning rate at three training-loss thresholds.

use std::path::Path;

use serde::Serialize;
use stiff_plot::{line_figure, LineFigure, Panel, Series};

use super::super::config::LrSweepConfig;
use super::super::run::LrRunRecord;
use super::super::summary;
use super::{kind_label, tidy_rows, KINDS};
use crate::measure::Measurement;
use crate::stats::{direction_votes, intervals_separated, seed_mean, slope, spearman, SeedMean};
use crate::store::{write_atomic, write_json};
use crate::tidy::write_csv;
use crate::Result;

/// Aggregate of one (dataset, threshold, lr) cell over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub dataset: String,
    pub threshold: f64,
    pub lr: f64,
    pub kind: String,
    pub between: Option<SeedMean>,
    pub within: Option<SeedMean>,
    /// Seeds that did not reach this threshold (diverged or out of steps).
    pub missing_seeds: Vec<u64>,
    /// With a single seed: the bootstrap interval over examples of that run.
    pub between_bootstrap: Option<(f64, f64)>,
}

fn cells(cfg: &LrSweepConfig, records: &[LrRunRecord]) -> Vec<Cell> {
    let mut out = Vec::new();
    for &ds in &cfg.datasets {
        let ths = cfg.thresholds.get(&ds).cloned().unwrap_or_default();
        for (kind, _) in KINDS {
            for &th in &ths {
                for &lr in &cfg.lrs {
                    let runs: Vec<&LrRunRecord> = records
                        .iter()
                        .filter(|r| {
                            r.spec.dataset == ds && r.spec.optimizer.lr() == lr && cfg.seeds.contains(&r.spec.seed)
                        })
                        .collect();
                    let pts: Vec<&Measurement> =
                        runs.iter().filter_map(|r| r.point(th)).map(|p| &p.measurement).collect();
                    let between: Vec<f64> = pts.iter().map(|m| m.kind(kind).between).collect();
                    let within: Vec<f64> = pts.iter().map(|m| m.kind(kind).within).collect();
                    let missing_seeds = runs.iter().filter(|r| r.point(th).is_none()).map(|r| r.spec.seed).collect();
                    let between_bootstrap = (pts.len() == 1)
                        .then(|| pts[0].kind(kind).ci.as_ref().map(|c| (c.between.lo, c.between.hi)))
                        .flatten();
                    out.push(Cell {
                        dataset: ds.to_string(),
                        threshold: th,
                        lr,
                        kind: kind_label(kind).into(),
                        between: seed_mean(&between),
                        within: seed_mean(&within),
                        missing_seeds,
                        between_bootstrap,
                    });
                }
            }
        }
    }
    out
}

/// Half-width of the interval drawn for a cell: across seeds, or the bootstrap with one seed.
pub(crate) fn cell_err(c: &Cell) -> f64 {
    match (&c.between, c.between_bootstrap) {
        (Some(m), _) if m.half_width.is_some() => m.half_width.unwrap_or(f64::NAN),
        (Some(_), Some((lo, hi))) => (hi - lo) / 2.0,
        _ => f64::NAN,
    }
}

/// Direction of between-class stiffness with learning rate, per (dataset, kind, threshold).
#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    pub dataset: String,
    pub kind: String,
    pub threshold: f64,
    /// Learning rates with data, and the seed means there.
    pub lrs: Vec<f64>,
    pub means: Vec<f64>,
    /// Least-squares slope of the mean against log10(lr).
    pub slope_per_decade: Option<f64>,
    pub spearman: Option<f64>,
    /// Whether the intervals at the lowest and highest learning rate do not overlap.
    pub ends_separated: Option<bool>,
}

fn trends(cells: &[Cell]) -> Vec<Trend> {
    let mut keys: Vec<(String, String, f64)> = Vec::new();
    for c in cells {
        let k = (c.dataset.clone(), c.kind.clone(), c.threshold);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(dataset, kind, threshold)| {
            let sel: Vec<&Cell> = cells
                .iter()
                .filter(|c| c.dataset == dataset && c.kind == kind && c.threshold == threshold && c.between.is_some())
                .collect();
            let lrs: Vec<f64> = sel.iter().map(|c| c.lr).collect();
            let means: Vec<f64> = sel.iter().map(|c| c.between.as_ref().map_or(f64::NAN, |m| m.mean)).collect();
            let logs: Vec<f64> = lrs.iter().map(|l| l.log10()).collect();
            let ends_separated = (sel.len() >= 2).then(|| {
                let (a, b) = (sel[0], sel[sel.len() - 1]);
                intervals_separated((means[0], cell_err(a)), (means[means.len() - 1], cell_err(b)))
            });
            Trend {
                slope_per_decade: slope(&logs, &means),
                spearman: spearman(&logs, &means),
                dataset,
                kind,
                threshold,
                lrs,
                means,
                ends_separated,
            }
        })
        .collect()
}

fn threshold_colour_label(th: f64) -> String {
    format!("train loss < {th}")
}

/// Trends up and down with learning rate (by the sign of the slope).
fn votes(trends: &[Trend]) -> (usize, usize) {
    direction_votes(trends.iter().map(|t| t.slope_per_decade))
}

/// Writes `DIR/fig8/`: config, results (JSON + CSV), figure (PNG + SVG), summary.
pub fn write_fig8(dir: &Path, cfg: &LrSweepConfig, records: &[LrRunRecord], command: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::ExperimentError::io(dir, e))?;
    let cells = cells(cfg, records);
    let trends = trends(&cells);
    let (up, down) = votes(&trends);
    let verdict_text = summary::fig8_verdict(up, down);
    write_json(&dir.join("config.json"), &serde_json::json!({ "figure": "fig8", "command": command, "sweep": cfg }))?;
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({ "figure": "fig8", "cells": cells, "trends": trends, "verdict": verdict_text,
            "runs": records.iter().map(|r| serde_json::json!({"id": r.id, "end": r.end, "steps": r.steps})).collect::<Vec<_>>() }),
    )?;
    write_csv(&dir.join("results.csv"), &tidy_rows(records))?;

    let mut panels = Vec::new();
    for &ds in &cfg.datasets {
        for (kind, kname) in KINDS {
            let ths = cfg.thresholds.get(&ds).cloned().unwrap_or_default();
            let series = ths
                .iter()
                .map(|&th| {
                    let sel: Vec<&Cell> = cells
                        .iter()
                        .filter(|c| c.dataset == ds.to_string() && c.kind == kind_label(kind) && c.threshold == th)
                        .collect();
                    Series::new(
                        threshold_colour_label(th),
                        sel.iter().map(|c| c.lr).collect(),
                        sel.iter().map(|c| c.between.as_ref().map_or(f64::NAN, |m| m.mean)).collect(),
                    )
                    .with_err(sel.iter().map(|c| cell_err(c)).collect())
                })
                .collect();
            panels.push(Panel {
                title: format!("{ds}: {kname} stiffness"),
                x_label: format!("learning rate ({})", cfg.optimizer.name()),
                y_label: "between-class stiffness".into(),
                log_x: true,
                series,
                hline: Some(0.0),
                ..Default::default()
            });
        }
    }
    let seeds_note = if cfg.seeds.len() > 1 {
        format!("mean of {} seeds, 95% t-intervals", cfg.seeds.len())
    } else {
        "1 seed, 95% bootstrap intervals over examples".into()
    };
    line_figure(
        &LineFigure {
            title: format!(
                "Fig 8: between-class stiffness vs learning rate, {} ({seeds_note}){}",
                cfg.preset,
                if cfg.quick { " [quick]" } else { "" }
            ),
            panels,
            columns: 2,
        },
        &dir.join("fig8"),
    )?;

    let md = summary::fig8(cfg, records, &cells, &trends, &verdict_text, &seeds_note, command);
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
