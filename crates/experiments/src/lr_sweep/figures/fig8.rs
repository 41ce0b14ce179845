//! Fig 8: between-class stiffness vs learning rate at three training-loss thresholds.

use std::path::Path;

use stiff_plot::{line_figure, LineFigure, Panel, Series};

use super::super::config::LrSweepConfig;
use super::super::model::{cell_err, kind_label, Cell, Trend, KINDS};
use super::super::run::{LrRunRecord, ThresholdPoint};
use super::super::summary;
use super::{tidy_rows, verdict_label};
use crate::stats::{seed_mean, slope};
use crate::store::{write_atomic, write_json};
use crate::tidy::write_csv;
use crate::Result;
use stiff_analysis::{spearman_permutation, TrendOptions, TrendTest};

fn sd(v: &[f64]) -> Option<f64> {
    if v.len() < 2 {
        return None;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    Some((v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt())
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
                    let pts: Vec<&ThresholdPoint> = runs.iter().filter_map(|r| r.point(th)).collect();
                    let between: Vec<f64> = pts.iter().filter_map(|p| p.window_mean(kind, false)).collect();
                    let within: Vec<f64> = pts.iter().filter_map(|p| p.window_mean(kind, true)).collect();
                    let wsd: Vec<f64> = pts.iter().filter_map(|p| p.window_sd(kind, false)).collect();
                    let missing_seeds = runs.iter().filter(|r| r.point(th).is_none()).map(|r| r.spec.seed).collect();
                    let between_bootstrap = (pts.len() == 1)
                        .then(|| pts[0].measurement.kind(kind).ci.as_ref().map(|c| (c.between.lo, c.between.hi)))
                        .flatten();
                    out.push(Cell {
                        dataset: ds.to_string(),
                        threshold: th,
                        lr,
                        kind: kind_label(kind).into(),
                        between_seed_sd: sd(&between),
                        between_window_sd: (!wsd.is_empty()).then(|| wsd.iter().sum::<f64>() / wsd.len() as f64),
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

/// The trend test of `(lr, value)` observations (see [`Trend`]).
pub fn lr_trend(observations: &[(f64, f64)]) -> Result<(Option<TrendTest>, Option<f64>)> {
    let x: Vec<f64> = observations.iter().map(|o| o.0.log10()).collect();
    let y: Vec<f64> = observations.iter().map(|o| o.1).collect();
    Ok((spearman_permutation(&x, &y, &TrendOptions::default())?, slope(&x, &y)))
}

/// One trend per (dataset, kind, threshold), in the order of the cells.
pub fn trends(cells: &[Cell]) -> Result<Vec<Trend>> {
    let mut keys: Vec<(String, String, f64)> = Vec::new();
    for c in cells {
        let k = (c.dataset.clone(), c.kind.clone(), c.threshold);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(dataset, kind, threshold)| {
            let observations: Vec<(f64, f64)> = cells
                .iter()
                .filter(|c| c.dataset == dataset && c.kind == kind && c.threshold == threshold)
                .flat_map(|c| c.between.iter().flat_map(move |m| m.values.iter().map(move |&v| (c.lr, v))))
                .collect();
            let (test, slope_per_decade) = lr_trend(&observations)?;
            Ok(Trend {
                verdict: verdict_label(test.as_ref()),
                dataset,
                kind,
                threshold,
                observations,
                slope_per_decade,
                test,
            })
        })
        .collect()
}

fn threshold_colour_label(th: f64) -> String {
    format!("train loss < {th}")
}

/// Writes `DIR/fig8/`: config, results (JSON + CSV), figure (PNG + SVG), summary.
pub fn write_fig8(dir: &Path, cfg: &LrSweepConfig, records: &[LrRunRecord], command: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::ExperimentError::io(dir, e))?;
    let cells = cells(cfg, records);
    let trends = trends(&cells)?;
    let verdict_text = summary::fig8_verdict(&trends);
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
        format!("mean over {} seeds of each seed's window mean, 95% t-intervals", cfg.seeds.len())
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

#[cfg(test)]
mod tests {
    use super::super::super::run::{ThresholdPoint, WindowSample};
    use super::*;
    use crate::measure::{KindSummary, Measurement};
    use crate::options::{OptimizerKind, RunEnd};
    use stiff_data::DatasetName;

    fn summary(within: f64, between: f64) -> KindSummary {
        KindSummary { within, between, ci: None }
    }

    /// A record whose window at threshold 0.5 has between-class values `between` (sign and
    /// cosine alike); the crossing's own measurement says `crossing` so a test can tell which
    /// one the figure reads.
    fn record(cfg: &LrSweepConfig, lr: f64, seed: u64, crossing: f64, between: &[f64]) -> LrRunRecord {
        let mut spec = cfg.runs().into_iter().find(|r| r.optimizer.lr() == lr && r.seed == seed).unwrap();
        spec.thresholds = vec![0.5];
        let measurement = Measurement {
            n: 10,
            sign: summary(0.9, crossing),
            cosine: summary(0.9, crossing),
            class_sign: vec![],
            class_cosine: vec![],
            zero_norm_examples: vec![],
            curves: vec![],
            gram_seconds: 0.0,
            analysis_seconds: 0.0,
        };
        let window = between
            .iter()
            .enumerate()
            .map(|(i, &b)| WindowSample {
                index: i as u32,
                step: 100 + 10 * i as u64,
                train_loss: 0.45,
                smoothed_loss: Some(0.49),
                sign: summary(0.9, b),
                cosine: summary(0.9, b),
            })
            .collect();
        LrRunRecord {
            record_version: 2,
            id: spec.id(),
            spec,
            end: RunEnd::Completed,
            points: vec![ThresholdPoint {
                threshold: 0.5,
                step: 100,
                images_seen: 3200,
                train_loss: 0.45,
                smoothed_loss: Some(0.49),
                val_loss: None,
                val_acc: None,
                measurement,
                window,
                pooled_curves: vec![],
            }],
            steps: 140,
            train_seconds: 1.0,
            measure_seconds: 1.0,
        }
    }

    fn sweep(direction: f64, noise: &[f64]) -> (LrSweepConfig, Vec<LrRunRecord>) {
        let mut cfg = LrSweepConfig::new(false, OptimizerKind::Sgd, 3);
        cfg.datasets = vec![DatasetName::Mnist];
        cfg.thresholds = [(DatasetName::Mnist, vec![0.5])].into();
        let mut recs = Vec::new();
        for (i, &lr) in cfg.lrs.clone().iter().enumerate() {
            for seed in 0..3u64 {
                let base = direction * 0.05 * i as f64 + noise[(i * 3 + seed as usize) % noise.len()];
                // The crossing snapshot runs against the trend: only the window mean shows it.
                recs.push(record(&cfg, lr, seed, -direction * i as f64 * 0.1, &[base - 0.01, base, base + 0.01]));
            }
        }
        (cfg, recs)
    }

    #[test]
    fn verdicts_follow_a_known_trend_over_seed_window_means() {
        let noise = [0.004, -0.003, 0.001, -0.002, 0.003];
        for (direction, want) in [(1.0, "supports v1"), (-1.0, "supports v2/v3")] {
            let (cfg, recs) = sweep(direction, &noise);
            let cells = cells(&cfg, &recs);
            let trends = trends(&cells).unwrap();
            assert_eq!(trends.len(), 2, "one trend per kind at one threshold");
            for t in &trends {
                assert_eq!(t.observations.len(), 15, "5 lrs x 3 seeds");
                let test = t.test.as_ref().expect("a test");
                assert!(test.p_value < 0.01 && test.statistic.signum() == direction, "{test:?}");
                assert_eq!(t.verdict, want);
            }
            // A cell's value is the window mean (base), its window SD 0.01.
            let c = &cells[0];
            assert!((c.between_window_sd.unwrap() - 0.01).abs() < 1e-12);
            assert!((c.between.as_ref().unwrap().mean - noise[..3].iter().sum::<f64>() / 3.0).abs() < 1e-12);
        }
        // No trend: values depend on the seed only.
        let mut cfg = LrSweepConfig::new(false, OptimizerKind::Sgd, 3);
        cfg.datasets = vec![DatasetName::Mnist];
        cfg.thresholds = [(DatasetName::Mnist, vec![0.5])].into();
        let recs: Vec<LrRunRecord> = cfg
            .lrs
            .clone()
            .iter()
            .flat_map(|&lr| (0..3u64).map(move |s| (lr, s)))
            .map(|(lr, s)| record(&cfg, lr, s, 0.0, &[0.1 * s as f64]))
            .collect();
        let trends = trends(&cells(&cfg, &recs)).unwrap();
        assert!(trends.iter().all(|t| t.verdict == "inconclusive"), "{trends:?}");
        assert_eq!(verdict_label(None), "inconclusive");
    }
}
