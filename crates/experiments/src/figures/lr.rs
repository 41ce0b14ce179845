//! Figures 8, 9 and 10, drawn from the records of the learning-rate sweep.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use stiff_analysis::{Crossing, StiffnessKind};
use stiff_plot::{line_figure, LineFigure, Panel, Series};

use crate::lr_sweep::{LrRunRecord, LrSweepConfig, RunEnd};
use crate::measure::{crossing_distance, Measurement, SpaceCurve};
use crate::stats::{seed_mean, slope, spearman, SeedMean};
use crate::store::{write_atomic, write_json};
use crate::tidy::{write_csv, Row};
use crate::Result;

const KINDS: [(StiffnessKind, &str); 2] = [(StiffnessKind::Sign, "sign"), (StiffnessKind::Cosine, "cosine")];

fn kind_label(kind: StiffnessKind) -> &'static str {
    match kind {
        StiffnessKind::Sign => "sign",
        StiffnessKind::Cosine => "cosine",
    }
}

/// Rows shared by every figure of the sweep: losses, class stiffness and stiff domain sizes.
pub fn tidy_rows(records: &[LrRunRecord]) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in records {
        let base = Row {
            run_id: r.id.clone(),
            dataset: r.spec.dataset.to_string(),
            optimizer: r.spec.optimizer.name().into(),
            lr: r.spec.optimizer.lr(),
            seed: r.spec.seed,
            threshold: None,
            space: String::new(),
            metric: String::new(),
            value: None,
            note: String::new(),
        };
        let end_note = match &r.end {
            RunEnd::Completed => "completed".to_string(),
            RunEnd::StepBudget { steps } => format!("step budget ({steps} steps) ran out before the last threshold"),
            RunEnd::Diverged { step, reason } => format!("diverged at step {step}: {reason}"),
        };
        rows.push(Row { metric: "run_steps".into(), value: Some(r.steps as f64), note: end_note, ..base.clone() });
        for p in &r.points {
            let at = |metric: &str, value: Option<f64>| Row {
                threshold: Some(p.threshold),
                metric: metric.into(),
                value,
                ..base.clone()
            };
            rows.push(at("step", Some(p.step as f64)));
            rows.push(at("images_seen", Some(p.images_seen as f64)));
            rows.push(at("train_loss", Some(p.train_loss)));
            rows.push(at("val_loss", p.val_loss));
            rows.push(at("val_acc", p.val_acc));
            let m = &p.measurement;
            for (kind, name) in KINDS {
                let s = m.kind(kind);
                rows.push(at(&format!("within_{name}_stiffness"), Some(s.within)));
                rows.push(at(&format!("between_{name}_stiffness"), Some(s.between)));
                if let Some(ci) = &s.ci {
                    rows.push(at(&format!("between_{name}_stiffness_ci_lo"), Some(ci.between.lo)));
                    rows.push(at(&format!("between_{name}_stiffness_ci_hi"), Some(ci.between.hi)));
                }
            }
            for c in &m.curves {
                for (metric, crossing) in [
                    ("stiff_domain_sign_first_crossing", &c.sign_first_crossing),
                    ("stiff_domain_sign_linear_fit", &c.sign_fit_crossing),
                    ("stiff_domain_cosine_first_crossing", &c.cos_first_crossing),
                    ("stiff_domain_cosine_linear_fit", &c.cos_fit_crossing),
                ] {
                    rows.push(Row {
                        space: c.space.clone(),
                        note: crossing_note(crossing),
                        ..at(metric, crossing_distance(crossing))
                    });
                }
            }
        }
    }
    rows
}

fn crossing_note(c: &Crossing) -> String {
    match c {
        Crossing::Found { .. } => String::new(),
        Crossing::StartsNegative { distance, value } => {
            format!("starts negative ({value:.3} at distance {distance:.3})")
        }
        Crossing::NeverCrosses { reason, .. } => format!("never crosses: {reason}"),
        Crossing::NoData { reason } => format!("no data: {reason}"),
    }
}

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
fn cell_err(c: &Cell) -> f64 {
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
                let (ea, eb) = (cell_err(a), cell_err(b));
                let (ma, mb) = (means[0], means[means.len() - 1]);
                ea.is_finite() && eb.is_finite() && ((ma + ea) < (mb - eb) || (mb + eb) < (ma - ea))
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

fn verdict(trends: &[Trend]) -> (usize, usize, String) {
    let up = trends.iter().filter(|t| t.slope_per_decade.is_some_and(|s| s > 0.0)).count();
    let down = trends.iter().filter(|t| t.slope_per_decade.is_some_and(|s| s < 0.0)).count();
    let text = if up + down == 0 {
        "no verdict: too few learning rates reached the thresholds".to_string()
    } else if up > down {
        format!(
            "supports v1's direction (higher learning rate, higher between-class stiffness) in {up} of {} cases",
            up + down
        )
    } else if down > up {
        format!(
            "supports v2/v3's direction (higher learning rate, lower between-class stiffness) in {down} of {} cases",
            up + down
        )
    } else {
        format!("mixed: {up} cases up, {down} down")
    };
    (up, down, text)
}

fn threshold_colour_label(th: f64) -> String {
    format!("train loss < {th}")
}

fn run_status_table(records: &[LrRunRecord]) -> String {
    let mut s =
        String::from("| run | end | steps | thresholds reached | train s | measure s |\n|---|---|---|---|---|---|\n");
    for r in records {
        let end = match &r.end {
            RunEnd::Completed => "completed".into(),
            RunEnd::StepBudget { steps } => format!("out of steps ({steps})"),
            RunEnd::Diverged { step, reason } => format!("diverged at {step}: {reason}"),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.1} |",
            r.id,
            end,
            r.steps,
            r.points.iter().map(|p| p.threshold.to_string()).collect::<Vec<_>>().join(", "),
            r.train_seconds,
            r.measure_seconds
        );
    }
    s
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

/// Writes `DIR/fig8/`: config, results (JSON + CSV), figure (PNG + SVG), summary.
pub fn write_fig8(dir: &Path, cfg: &LrSweepConfig, records: &[LrRunRecord], command: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::ExperimentError::io(dir, e))?;
    let cells = cells(cfg, records);
    let trends = trends(&cells);
    let (_, _, verdict_text) = verdict(&trends);
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

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Fig 8: between-class stiffness vs learning rate{}\n",
        if cfg.quick { " (quick run)" } else { "" }
    );
    let _ = writeln!(md, "Command: `{command}`\n");
    let _ = writeln!(
        md,
        "**Paper's claim (v1):** at equal training loss, a higher learning rate gives higher between-class stiffness. \
         v2/v3 claim the opposite.\n"
    );
    let _ = writeln!(md, "**This run:** {verdict_text}.\n");
    let _ = writeln!(
        md,
        "Setup: {} on {}, {} with constant learning rates {:?}, batch {}, seeds {:?}; stiffness on {} validation \
         examples (class-balanced, fixed seed), measured the first time the training loss (mean cross-entropy on a \
         fixed {}-example training subset, every {} steps) fell below each threshold. Intervals: {seeds_note}.\n",
        cfg.preset,
        cfg.datasets.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" and "),
        cfg.optimizer.name(),
        cfg.lrs,
        cfg.batch_size,
        cfg.seeds,
        cfg.data.stiffness_subset,
        cfg.train_eval_subset,
        cfg.eval_every
    );
    let _ = writeln!(md, "![fig8](fig8.png)\n");
    let _ = writeln!(md, "## Between-class stiffness (mean ± 95% half-width; `–` = threshold not reached)\n");
    for &ds in &cfg.datasets {
        for (kind, kname) in KINDS {
            let _ = writeln!(md, "### {ds}, {kname} stiffness\n");
            let ths = cfg.thresholds.get(&ds).cloned().unwrap_or_default();
            let _ = writeln!(
                md,
                "| lr | {} |\n|---|{}",
                ths.iter().map(|t| format!("loss < {t}")).collect::<Vec<_>>().join(" | "),
                "---|".repeat(ths.len())
            );
            for &lr in &cfg.lrs {
                let mut line = format!("| {lr} |");
                for &th in &ths {
                    let c = cells.iter().find(|c| {
                        c.dataset == ds.to_string() && c.kind == kind_label(kind) && c.threshold == th && c.lr == lr
                    });
                    let txt = match c.and_then(|c| c.between.as_ref().map(|m| (m, cell_err(c)))) {
                        Some((m, e)) if e.is_finite() => format!(" {:.4} ± {:.4} (n={}) |", m.mean, e, m.n),
                        Some((m, _)) => format!(" {:.4} (n={}) |", m.mean, m.n),
                        None => " – |".into(),
                    };
                    line.push_str(&txt);
                }
                let _ = writeln!(md, "{line}");
            }
            let _ = writeln!(md);
        }
    }
    let _ = writeln!(md, "## Trend with learning rate\n\n| dataset | kind | threshold | slope per decade | Spearman | ends separated |\n|---|---|---|---|---|---|");
    for t in &trends {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            t.dataset,
            t.kind,
            t.threshold,
            fmt_opt(t.slope_per_decade, 4),
            fmt_opt(t.spearman, 2),
            t.ends_separated.map_or("–".into(), |b| if b { "yes" } else { "no" }.to_string())
        );
    }
    let _ = writeln!(md, "\n## Runs\n\n{}", run_status_table(records));
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}

/// The representative trained run of Fig 9: MNIST, the learning rate closest to 0.1 (log scale),
/// the first seed, at the lowest threshold it reached.
pub fn fig9_run(cfg: &LrSweepConfig) -> Option<crate::lr_sweep::LrRunSpec> {
    let lr = cfg.lrs.iter().copied().min_by(|a, b| (a.log10() + 1.0).abs().total_cmp(&(b.log10() + 1.0).abs()))?;
    cfg.runs().into_iter().find(|r| {
        r.dataset == stiff_data::DatasetName::Mnist && r.optimizer.lr() == lr && Some(&r.seed) == cfg.seeds.first()
    })
}

fn curve_series(c: &SpaceCurve, kind: StiffnessKind) -> Series {
    let (mean, se, crossing) = match kind {
        StiffnessKind::Sign => (&c.curve.sign_mean, &c.curve.sign_se, &c.sign_first_crossing),
        StiffnessKind::Cosine => (&c.curve.cos_mean, &c.curve.cos_se, &c.cos_first_crossing),
    };
    let mut s =
        Series::new(c.space.clone(), c.curve.centres.clone(), mean.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
            .with_err(se.iter().map(|v| v.map_or(f64::NAN, |e| 1.96 * e)).collect());
    if let Crossing::Found { distance } = crossing {
        s = s.with_marker(*distance, format!("{} {distance:.2}", c.space));
    }
    s
}

/// Writes `DIR/fig9/` from the representative run.
pub fn write_fig9(dir: &Path, cfg: &LrSweepConfig, record: &LrRunRecord, command: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::ExperimentError::io(dir, e))?;
    write_json(
        &dir.join("config.json"),
        &serde_json::json!({ "figure": "fig9", "command": command, "sweep": cfg, "run": record.spec }),
    )?;
    let point = record.points.last();
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({ "figure": "fig9", "run": record.id, "end": record.end, "point": point }),
    )?;
    write_csv(&dir.join("results.csv"), &tidy_rows(std::slice::from_ref(record)))?;
    let mut md = format!(
        "# Fig 9: stiffness vs dot-product distance, per space{}\n\nCommand: `{command}`\n\n\
         **Paper's claim:** stiffness falls with distance in every space, and deeper layers have smaller stiff \
         domains (the curve crosses zero at a smaller distance).\n\n",
        if cfg.quick { " (quick run)" } else { "" }
    );
    let Some(point) = point else {
        md.push_str(&format!("Run `{}` reached no threshold ({:?}): nothing to plot.\n", record.id, record.end));
        write_atomic(&dir.join("summary.md"), md.as_bytes())?;
        return Ok(());
    };
    let curves = &point.measurement.curves;
    let panels = KINDS
        .iter()
        .map(|&(kind, kname)| Panel {
            title: format!("{kname} stiffness, all validation pairs"),
            x_label: "dot-product distance 1 - cos(u, v)".into(),
            y_label: format!("{kname} stiffness"),
            series: curves.iter().map(|c| curve_series(c, kind)).collect(),
            hline: Some(0.0),
            ..Default::default()
        })
        .collect();
    line_figure(
        &LineFigure {
            title: format!(
                "Fig 9: stiffness vs distance, {} on MNIST (run {}, train loss < {})",
                cfg.preset, record.id, point.threshold
            ),
            panels,
            columns: 2,
        },
        &dir.join("fig9"),
    )?;
    // Depth trend over the hidden layers that have a crossing: Spearman rho of (depth, size).
    let hidden: Vec<(f64, f64)> = curves
        .iter()
        .skip(1)
        .enumerate()
        .filter_map(|(i, c)| crossing_distance(&c.sign_first_crossing).map(|d| (i as f64 + 1.0, d)))
        .collect();
    let (depths, sizes): (Vec<f64>, Vec<f64>) = hidden.iter().copied().unzip();
    let rho = spearman(&depths, &sizes);
    let judgement = match rho {
        None => "too few hidden-layer crossings to judge the depth trend".to_string(),
        Some(r) if r < 0.0 => format!(
            "stiff domains shrink with depth (Spearman rho between depth and first-crossing distance = {r:.2}; supports the claim)"
        ),
        Some(r) => format!(
            "stiff domains do not shrink with depth (Spearman rho between depth and first-crossing distance = {r:.2}; does not support the claim)"
        ),
    };
    let _ = writeln!(
        md,
        "**This run** ({}, training loss {:.4} at step {}): {judgement}.\n",
        record.id, point.train_loss, point.step
    );
    let _ = writeln!(md, "![fig9](fig9.png)\n");
    let _ = writeln!(md, "| space | sign: first crossing (v1) | sign: line-fit zero (v3) | cosine: first crossing | cosine: line-fit zero |\n|---|---|---|---|---|");
    for c in curves {
        let f = |x: &Crossing| crossing_distance(x).map_or_else(|| crossing_note(x), |d| format!("{d:.3}"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            c.space,
            f(&c.sign_first_crossing),
            f(&c.sign_fit_crossing),
            f(&c.cos_first_crossing),
            f(&c.cos_fit_crossing)
        );
    }
    let b = &cfg.measure.bins;
    let _ = writeln!(
        md,
        "\nBins: {} equal bins over distance [{}, {}] (the paper gives none); crossings interpolate linearly between bin \
         centres (v1) or take the zero of a least-squares line over the pairs of the initial decline, from distance 0 to the curve's minimum (v3). v1's axis is the cosine, `1 - distance`.",
        b.bins, b.lo, b.hi
    );
    write_atomic(&dir.join("summary.md"), md.as_bytes())
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
    #[derive(Serialize)]
    struct DomainCell {
        dataset: String,
        threshold: f64,
        method: &'static str,
        space: String,
        lr: f64,
        size: Option<SeedMean>,
        no_crossing: usize,
    }
    type Pick = fn(&SpaceCurve) -> &Crossing;
    let methods: [(&str, Pick); 2] =
        [("first crossing (v1)", |c| &c.sign_first_crossing), ("line-fit zero (v3)", |c| &c.sign_fit_crossing)];
    let mut dcells = Vec::new();
    let mut panels = Vec::new();
    let mut md_rows = String::new();
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
                    let _ = writeln!(
                        md_rows,
                        "| {ds} | {mname} | {space} | {lr} | {} | {} |",
                        size.as_ref().map_or("–".into(), |m| format!("{:.3}", m.mean)),
                        vals.iter().filter(|v| v.is_none()).count()
                    );
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
    let mut up = 0;
    let mut down = 0;
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
                match slope(&x, &y) {
                    Some(s) if s > 0.0 => up += 1,
                    Some(s) if s < 0.0 => down += 1,
                    _ => {}
                }
            }
        }
    }
    let verdict = if up + down == 0 {
        "no verdict: too few crossings".to_string()
    } else if up > down {
        format!(
            "supports v1 (larger stiff domains at higher learning rate) in {up} of {} space/method cases",
            up + down
        )
    } else if down > up {
        format!(
            "supports v2/v3 (smaller stiff domains at higher learning rate) in {down} of {} space/method cases",
            up + down
        )
    } else {
        format!("mixed: {up} up, {down} down")
    };
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
    let mut md = format!(
        "# Fig 10: stiff domain size vs learning rate{}\n\nCommand: `{command}`\n\n\
         **Paper's claim (v1):** higher learning rates give larger stiff domains; v2/v3 claim the opposite.\n\n\
         **This run:** {verdict}.\n\nStiff domain size = the dot-product distance at which sign stiffness first \
         crosses zero going outwards (v1), or the zero of a least-squares line (v3), measured at the lowest \
         training-loss threshold of each dataset. `–` = no crossing in any seed (see results.csv notes).\n\n\
         ![fig10](fig10.png)\n\n| dataset | method | space | lr | mean size | seeds without crossing |\n|---|---|---|---|---|---|\n",
        if cfg.quick { " (quick run)" } else { "" }
    );
    md.push_str(&md_rows);
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
