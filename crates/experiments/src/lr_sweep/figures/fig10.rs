//! Fig 10: stiff domain size (zero crossing) vs learning rate, per space, both extractions.

use std::path::Path;

use serde::Serialize;
use stiff_analysis::Crossing;
use stiff_plot::{line_figure, LineFigure, Panel, Series};

use super::super::config::LrSweepConfig;
use super::super::run::LrRunRecord;
use super::super::summary;
use super::tidy_rows;
use crate::measure::{crossing_distance, SpaceCurve};
use crate::stats::{direction_votes, seed_mean, slope, SeedMean};
use crate::store::{write_atomic, write_json};
use crate::tidy::write_csv;
use crate::Result;

#[derive(Serialize)]
/// Stiff domain size of one (dataset, method, space, lr) over seeds.
pub struct DomainCell {
    pub dataset: String,
    pub threshold: f64,
    pub method: &'static str,
    pub space: String,
    pub lr: f64,
    pub size: Option<SeedMean>,
    pub no_crossing: usize,
}

/// Writes `DIR/fig10/`: stiff domain size vs learning rate, per space, both extraction methods.
pub fn write_fig10(dir: &Path, cfg: &LrSweepConfig, records: &[LrRunRecord], command: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::ExperimentError::io(dir, e))?;
    write_json(&dir.join("config.json"), &serde_json::json!({ "figure": "fig10", "command": command, "sweep": cfg }))?;
    write_csv(&dir.join("results.csv"), &tidy_rows(records))?;
    // Spaces present (input, layer1, ...), from any record.
    let spaces: Vec<String> = records
        .iter()
        .flat_map(|r| r.points.iter())
        .next()
        .map(|p| p.measurement.curves.iter().map(|c| c.space.clone()).collect())
        .unwrap_or_default();
    type Pick = fn(&SpaceCurve) -> &Crossing;
    let methods: [(&str, Pick); 2] =
        [("first crossing (v1)", |c| &c.sign_first_crossing), ("line-fit zero (v3)", |c| &c.sign_fit_crossing)];
    let mut dcells = Vec::new();
    let mut panels = Vec::new();
    for &ds in &cfg.datasets {
        let th = cfg.thresholds.get(&ds).and_then(|t| t.last().copied()).unwrap_or(f64::NAN);
        for (mname, pick) in methods {
            let mut series = Vec::new();
            for space in &spaces {
                let mut xs = Vec::new();
                let mut ys = Vec::new();
                let mut es = Vec::new();
                for &lr in &cfg.lrs {
                    let vals: Vec<Option<f64>> = records
                        .iter()
                        .filter(|r| r.spec.dataset == ds && r.spec.optimizer.lr() == lr)
                        .filter_map(|r| r.point(th))
                        .filter_map(|p| p.measurement.curves.iter().find(|c| &c.space == space))
                        .map(|c| crossing_distance(pick(c)))
                        .collect();
                    let found: Vec<f64> = vals.iter().flatten().copied().collect();
                    let size = seed_mean(&found);
                    xs.push(lr);
                    ys.push(size.as_ref().map_or(f64::NAN, |m| m.mean));
                    es.push(size.as_ref().and_then(|m| m.half_width).unwrap_or(f64::NAN));
                    dcells.push(DomainCell {
                        dataset: ds.to_string(),
                        threshold: th,
                        method: mname,
                        space: space.clone(),
                        lr,
                        no_crossing: vals.iter().filter(|v| v.is_none()).count(),
                        size,
                    });
                }
                series.push(Series::new(space.clone(), xs, ys).with_err(es));
            }
            panels.push(Panel {
                title: format!("{ds}: {mname}, train loss < {th}"),
                x_label: format!("learning rate ({})", cfg.optimizer.name()),
                y_label: "stiff domain size (distance)".into(),
                log_x: true,
                series,
                ..Default::default()
            });
        }
    }
    // Direction per dataset x method x space: slope of size vs log10 lr.
    let mut slopes = Vec::new();
    for ds in &cfg.datasets {
        for (mname, _) in methods {
            for space in &spaces {
                let sel: Vec<&DomainCell> = dcells
                    .iter()
                    .filter(|c| {
                        c.dataset == ds.to_string() && c.method == mname && &c.space == space && c.size.is_some()
                    })
                    .collect();
                let x: Vec<f64> = sel.iter().map(|c| c.lr.log10()).collect();
                let y: Vec<f64> = sel.iter().map(|c| c.size.as_ref().map_or(f64::NAN, |m| m.mean)).collect();
                slopes.push(slope(&x, &y));
            }
        }
    }
    let (up, down) = direction_votes(slopes);
    let verdict = summary::fig10_verdict(up, down);
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({ "figure": "fig10", "cells": dcells, "verdict": verdict }),
    )?;
    line_figure(
        &LineFigure {
            title: format!("Fig 10: stiff domain size vs learning rate, {} (sign stiffness)", cfg.preset),
            panels,
            columns: 2,
        },
        &dir.join("fig10"),
    )?;
    let md = summary::fig10(cfg, &dcells, &verdict, command);
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
