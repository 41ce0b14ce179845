//! Fig 10: stiff domain size (zero crossing) vs learning rate, per space, both extractions.
//! Sizes come from each seed's pooled window curves at the dataset's lowest threshold; a curve
//! that never crosses zero is a right-censored observation (the domain is larger than the
//! largest distance read), counted and used as such in the censored Kendall trend test.

use std::path::Path;

use stiff_analysis::{censored_kendall_permutation, TrendOptions};
use stiff_plot::{line_figure, LineFigure, Panel, Series};

use super::super::config::LrSweepConfig;
use super::super::model::{DomainCell, DomainTrend};
use super::super::run::LrRunRecord;
use super::super::summary;
use super::{censored_median, point_curves, tidy_rows, verdict_label, METHODS};
use crate::stats::seed_mean;
use crate::store::{write_atomic, write_json};
use crate::tidy::write_csv;
use crate::Result;

/// Cells of every (dataset, method, space, lr) at each dataset's lowest threshold.
pub fn domain_cells(cfg: &LrSweepConfig, records: &[LrRunRecord], spaces: &[String]) -> Vec<DomainCell> {
    let mut out = Vec::new();
    for &ds in &cfg.datasets {
        let th = cfg.thresholds.get(&ds).and_then(|t| t.last().copied()).unwrap_or(f64::NAN);
        for (mname, pick) in METHODS {
            for space in spaces {
                for &lr in &cfg.lrs {
                    let runs: Vec<&LrRunRecord> = records
                        .iter()
                        .filter(|r| {
                            r.spec.dataset == ds && r.spec.optimizer.lr() == lr && cfg.seeds.contains(&r.spec.seed)
                        })
                        .collect();
                    let reached: Vec<_> = runs.iter().filter_map(|r| r.point(th)).collect();
                    let obs: Vec<Option<(f64, bool)>> = reached
                        .iter()
                        .map(|p| {
                            point_curves(p).iter().find(|c| &c.space == space).and_then(|c| pick(c).as_observation())
                        })
                        .collect();
                    let observations: Vec<(f64, bool)> = obs.iter().flatten().copied().collect();
                    let censored = observations.iter().filter(|o| o.1).count();
                    let mean = if censored == 0 {
                        seed_mean(&observations.iter().map(|o| o.0).collect::<Vec<_>>())
                    } else {
                        None
                    };
                    out.push(DomainCell {
                        dataset: ds.to_string(),
                        threshold: th,
                        method: mname,
                        space: space.clone(),
                        lr,
                        median: censored_median(&observations),
                        mean,
                        censored,
                        no_data: obs.iter().filter(|o| o.is_none()).count(),
                        not_reached: runs.len() - reached.len(),
                        observations,
                    });
                }
            }
        }
    }
    out
}

/// One censored Kendall test of size vs log10(lr) per (dataset, method, space).
pub fn domain_trends(cells: &[DomainCell]) -> Result<Vec<DomainTrend>> {
    let mut keys: Vec<(String, &'static str, String)> = Vec::new();
    for c in cells {
        let k = (c.dataset.clone(), c.method, c.space.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(dataset, method, space)| {
            let (mut x, mut y, mut cens) = (Vec::new(), Vec::new(), Vec::new());
            for c in cells.iter().filter(|c| c.dataset == dataset && c.method == method && c.space == space) {
                for &(v, cz) in &c.observations {
                    x.push(c.lr.log10());
                    y.push(v);
                    cens.push(cz);
                }
            }
            let test = censored_kendall_permutation(&x, &y, &cens, &TrendOptions::default())?;
            Ok(DomainTrend { verdict: verdict_label(test.as_ref()), dataset, method, space, test })
        })
        .collect()
}

/// Spaces present (input, layer1, ...), from any record.
pub(crate) fn spaces_of(records: &[LrRunRecord]) -> Vec<String> {
    records
        .iter()
        .flat_map(|r| r.points.iter())
        .next()
        .map(|p| point_curves(p).iter().map(|c| c.space.clone()).collect())
        .unwrap_or_default()
}

/// Writes `DIR/fig10/`: stiff domain size vs learning rate, per space, both extraction methods.
pub fn write_fig10(dir: &Path, cfg: &LrSweepConfig, records: &[LrRunRecord], command: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::ExperimentError::io(dir, e))?;
    write_json(&dir.join("config.json"), &serde_json::json!({ "figure": "fig10", "command": command, "sweep": cfg }))?;
    write_csv(&dir.join("results.csv"), &tidy_rows(records))?;
    let spaces = spaces_of(records);
    let dcells = domain_cells(cfg, records, &spaces);
    let trends = domain_trends(&dcells)?;
    let mut panels = Vec::new();
    for &ds in &cfg.datasets {
        let th = cfg.thresholds.get(&ds).and_then(|t| t.last().copied()).unwrap_or(f64::NAN);
        for (mname, _) in METHODS {
            let series = spaces
                .iter()
                .map(|space| {
                    let sel: Vec<&DomainCell> = dcells
                        .iter()
                        .filter(|c| c.dataset == ds.to_string() && c.method == mname && &c.space == space)
                        .collect();
                    // The median (a lower bound where censored) is drawn; the mean only exists
                    // without censoring, so it cannot be drawn for every point.
                    Series::new(
                        space.clone(),
                        sel.iter().map(|c| c.lr).collect(),
                        sel.iter().map(|c| c.median.map_or(f64::NAN, |m| m.0)).collect(),
                    )
                })
                .collect();
            panels.push(Panel {
                title: format!("{ds}: {mname}, train loss < {th} (median over seeds)"),
                x_label: format!("learning rate ({})", cfg.optimizer.name()),
                y_label: "stiff domain size (distance)".into(),
                log_x: true,
                series,
                ..Default::default()
            });
        }
    }
    let verdict = summary::fig10_verdict(&trends);
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({ "figure": "fig10", "cells": dcells, "trends": trends, "verdict": verdict,
            "min_pairs": cfg.measure.min_pairs }),
    )?;
    line_figure(
        &LineFigure {
            title: format!("Fig 10: stiff domain size vs learning rate, {} (sign stiffness)", cfg.preset),
            panels,
            columns: 2,
        },
        &dir.join("fig10"),
    )?;
    let md = summary::fig10(cfg, &dcells, &trends, &verdict, command);
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
