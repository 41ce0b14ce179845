//! Figures 2-7, drawn from the records of the dynamics runs: loss and stiffness over training
//! (Fig 2), class stiffness matrices at four stages (Figs 3-6), and the CIFAR-100 matrix ordered
//! by super-class with its block score (Fig 7).
//!
//! `results.csv` rows carry the training step in `note` as `step=N` (the `threshold` column is
//! empty: these figures are not tied to loss thresholds); class-matrix cells use
//! `space = "<row class>|<column class>"` and note `step=N stage=<name>`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use stiff_analysis::{superclass_block_score, BlockScore, ClassMatrix, StiffnessKind};
use stiff_plot::{heatmap_figure, line_figure, Heatmap, HeatmapFigure, LineFigure, Panel, SecondaryAxis, Series};

use crate::dynamics::{stages, DynConfig, DynPoint, DynRunRecord, Stage};
use crate::lr_sweep::RunEnd;
use crate::measure::{KindSummary, Measurement};
use crate::store::{write_atomic, write_json};
use crate::tidy::{write_csv, Row};
use crate::{ExperimentError, Result};

const KINDS: [(StiffnessKind, &str); 2] = [(StiffnessKind::Sign, "sign"), (StiffnessKind::Cosine, "cosine")];

fn base_row(r: &DynRunRecord) -> Row {
    Row {
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
    }
}

/// Losses at every evaluation and within/between stiffness (with bootstrap bounds) at every
/// measured step.
pub fn series_rows(r: &DynRunRecord) -> Vec<Row> {
    let base = base_row(r);
    let mut rows =
        vec![Row { metric: "run_steps".into(), value: Some(r.steps as f64), note: end_note(&r.end), ..base.clone() }];
    if let Some(o) = &r.onset {
        rows.push(Row {
            metric: "overfitting_onset_step".into(),
            value: Some(o.best_step as f64),
            note: format!("best validation loss at step {}; declared at step {}", o.best_step, o.detected_step),
            ..base.clone()
        });
    }
    for m in &r.history {
        let at = |metric: &str, value: Option<f64>| Row {
            metric: metric.into(),
            value,
            note: format!("step={}", m.step),
            ..base.clone()
        };
        rows.push(at("images_seen", Some(m.images_seen as f64)));
        rows.push(at("train_loss", Some(m.train_loss)));
        rows.push(at("train_acc", Some(m.train_acc)));
        rows.push(at("val_loss", m.val_loss));
        rows.push(at("val_acc", m.val_acc));
    }
    for p in &r.points {
        let at = |metric: &str, value: Option<f64>| Row {
            metric: metric.into(),
            value,
            note: format!("step={}", p.step),
            ..base.clone()
        };
        for (kind, name) in KINDS {
            let s = p.measurement.kind(kind);
            rows.push(at(&format!("within_{name}_stiffness"), Some(s.within)));
            rows.push(at(&format!("between_{name}_stiffness"), Some(s.between)));
            if let Some(ci) = &s.ci {
                rows.push(at(&format!("within_{name}_stiffness_ci_lo"), Some(ci.within.lo)));
                rows.push(at(&format!("within_{name}_stiffness_ci_hi"), Some(ci.within.hi)));
                rows.push(at(&format!("between_{name}_stiffness_ci_lo"), Some(ci.between.lo)));
                rows.push(at(&format!("between_{name}_stiffness_ci_hi"), Some(ci.between.hi)));
            }
        }
    }
    rows
}

/// One row per class-matrix cell with pairs (cells without pairs have no value and no row).
fn matrix_rows(r: &DynRunRecord, p: &DynPoint, stage: &str, class_names: &[String]) -> Vec<Row> {
    let base = base_row(r);
    let mut rows = Vec::new();
    for (name, cells) in [("sign", &p.measurement.class_sign), ("cosine", &p.measurement.class_cosine)] {
        for (a, row) in cells.iter().enumerate() {
            for (b, v) in row.iter().enumerate() {
                if let Some(v) = v {
                    rows.push(Row {
                        space: format!("{}|{}", class_names[a], class_names[b]),
                        metric: format!("class_{name}_stiffness"),
                        value: Some(*v),
                        note: format!("step={} stage={stage}", p.step),
                        ..base.clone()
                    });
                }
            }
        }
    }
    rows
}

fn end_note(end: &RunEnd) -> String {
    match end {
        RunEnd::Completed => "completed".into(),
        RunEnd::StepBudget { steps } => format!("stopped at {steps} steps"),
        RunEnd::Diverged { step, reason } => format!("diverged at step {step}: {reason}"),
    }
}

fn kind_summary(m: &Measurement, kind: StiffnessKind) -> &KindSummary {
    m.kind(kind)
}

/// `value [lo, hi]` with the bootstrap interval when there is one.
fn fmt_ci(v: f64, ci: Option<(f64, f64)>) -> String {
    match ci {
        Some((lo, hi)) => format!("{v:.3} [{lo:.3}, {hi:.3}]"),
        None => format!("{v:.3}"),
    }
}

fn within_ci(s: &KindSummary) -> Option<(f64, f64)> {
    s.ci.as_ref().map(|c| (c.within.lo, c.within.hi))
}

fn between_ci(s: &KindSummary) -> Option<(f64, f64)> {
    s.ci.as_ref().map(|c| (c.between.lo, c.between.hi))
}

fn write_config(dir: &Path, cfg: &DynConfig, command: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
    write_json(
        &dir.join("config.json"),
        &serde_json::json!({ "figure": cfg.figure, "command": command, "dynamics": cfg }),
    )
}

fn setup_text(cfg: &DynConfig) -> String {
    format!(
        "Setup: {} on {}{}, {} with constant learning rate {}, batch {}, {} steps, seeds {:?}; training set: {}; \
         train/validation loss (mean cross-entropy on fixed {}-example subsets of the training and test splits) \
         every {} steps; stiffness on {} test examples (class-balanced, fixed seed) at steps {:?}; 95% intervals are \
         class-stratified bootstraps over examples ({} reps). Onset of overfitting: the best validation loss, once it \
         has not improved for {} evaluations while the training loss kept falling.",
        cfg.preset,
        cfg.dataset,
        if cfg.permute_labels { " with permuted training labels" } else { "" },
        cfg.optimizer.name(),
        cfg.lr,
        cfg.batch_size,
        cfg.max_steps,
        cfg.seeds,
        cfg.data.train_subset.map_or("all of the training split".into(), |n| format!(
            "a fixed class-balanced subset of {n} examples (so that the net overfits within minutes)"
        )),
        cfg.eval_subset,
        cfg.eval_every,
        cfg.data.stiffness_subset,
        cfg.schedule,
        cfg.measure.bootstrap_reps,
        cfg.overfit_patience,
    )
}

fn runs_table(records: &[DynRunRecord]) -> String {
    let mut s = String::from(
        "| run | end | steps | onset (best val step) | train s | measure s |\n|---|---|---|---|---|---|\n",
    );
    for r in records {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.1} |",
            r.id,
            end_note(&r.end),
            r.steps,
            r.onset.as_ref().map_or("not detected".into(), |o| o.best_step.to_string()),
            r.train_seconds,
            r.measure_seconds
        );
    }
    s
}

/// The measured-points table of a run.
fn points_table(r: &DynRunRecord) -> String {
    let mut s = String::from(
        "| step | images seen | train loss | val loss | val acc | within sign | between sign | within cosine | between cosine |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in &r.points {
        let (sg, co) = (&p.measurement.sign, &p.measurement.cosine);
        let _ = writeln!(
            s,
            "| {} | {} | {:.4} | {} | {} | {} | {} | {} | {} |",
            p.step,
            p.images_seen,
            p.train_loss,
            p.val_loss.map_or("–".into(), |v| format!("{v:.4}")),
            p.val_acc.map_or("–".into(), |v| format!("{v:.3}")),
            fmt_ci(sg.within, within_ci(sg)),
            fmt_ci(sg.between, between_ci(sg)),
            fmt_ci(co.within, within_ci(co)),
            fmt_ci(co.between, between_ci(co)),
        );
    }
    s
}

/// Whether two intervals are disjoint (`None` when either is missing).
fn separated(a: Option<(f64, f64)>, b: Option<(f64, f64)>) -> Option<bool> {
    let ((alo, ahi), (blo, bhi)) = (a?, b?);
    Some(ahi < blo || bhi < alo)
}

/// The Fig 2 claim for one quantity: its value at the onset vs at the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct FallBack {
    pub kind: String,
    /// "within" or "between".
    pub which: String,
    pub onset_step: u64,
    pub at_onset: f64,
    pub at_onset_ci: Option<(f64, f64)>,
    /// Largest value over the measured steps up to the onset.
    pub peak_before_onset: f64,
    pub final_step: u64,
    pub at_end: f64,
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
                let s = kind_summary(&p.measurement, kind);
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
                supported: v1.abs() < v0.abs() && separated(c0, c1).unwrap_or(false),
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
                        let s = kind_summary(&p.measurement, kind);
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

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Fig 2: loss and class stiffness during training{}\n",
        if cfg.quick { " (quick run)" } else { "" }
    );
    let _ = writeln!(md, "Command: `{command}`\n");
    let _ = writeln!(
        md,
        "**Paper's claim:** within- and between-class stiffness rise during training and fall back toward 0 after \
         the onset of overfitting.\n"
    );
    let _ = writeln!(md, "{}\n", setup_text(cfg));
    for (id, t) in &tests {
        match t {
            None => {
                let _ = writeln!(
                    md,
                    "**Run {id}:** no onset of overfitting was detected, so the claim cannot be tested on it.\n"
                );
            }
            Some(t) => {
                let n_ok = t.iter().filter(|f| f.supported).count();
                let _ = writeln!(
                    md,
                    "**Run {id}:** onset of overfitting (lowest validation loss) at step {}; stiffness falls back toward 0 \
                     after it (|value at end| < |value at onset|, 95% bootstrap intervals disjoint) in {n_ok} of {} \
                     cases: {}.\n",
                    t[0].onset_step,
                    t.len(),
                    if n_ok == t.len() {
                        "supported"
                    } else if n_ok == 0 {
                        "not supported"
                    } else {
                        "partly supported"
                    }
                );
                let _ = writeln!(
                    md,
                    "| kind | which | peak up to onset | at onset (step {}) | at end (step {}) | end / onset | falls back |\n|---|---|---|---|---|---|---|",
                    t[0].onset_step, t[0].final_step
                );
                for f in t {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {:.3} | {} | {} | {:.2} | {} |",
                        f.kind,
                        f.which,
                        f.peak_before_onset,
                        fmt_ci(f.at_onset, f.at_onset_ci),
                        fmt_ci(f.at_end, f.at_end_ci),
                        f.ratio,
                        if f.supported { "yes" } else { "no" }
                    );
                }
                let _ = writeln!(md);
            }
        }
    }
    let _ = writeln!(md, "![fig2](fig2.png)\n");
    let _ = writeln!(md, "## Measured steps (run {})\n\n{}", r.id, points_table(r));
    let _ = writeln!(md, "## Runs\n\n{}", runs_table(records));
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}

/// A symmetric colour range covering every finite value of `mats` (at least +-0.05), rounded up
/// to a multiple of 0.05 so panels of one kind share a scale.
fn symmetric_range(mats: &[Vec<Vec<f64>>]) -> (f64, f64) {
    let m = mats.iter().flatten().flatten().filter(|v| v.is_finite()).fold(0.0f64, |a, v| a.max(v.abs()));
    let r = ((m / 0.05).ceil() * 0.05).clamp(0.05, 1.0);
    (-r, r)
}

fn cells(m: &[Vec<Option<f64>>]) -> Vec<Vec<f64>> {
    m.iter().map(|r| r.iter().map(|v| v.unwrap_or(f64::NAN)).collect()).collect()
}

/// The claims of the stage figures, as numbers.
#[derive(Debug, Clone, Serialize)]
pub struct StageClaims {
    pub run: String,
    pub kind: String,
    pub within_positive_at_init: Option<bool>,
    pub within_at_init: f64,
    /// Between-class at late 1 minus at init; grows = positive with disjoint intervals.
    pub between_growth: f64,
    pub between_grows: Option<bool>,
    /// |late 2| < |late 1| for within and between.
    pub within_regresses: bool,
    pub between_regresses: bool,
    /// Permuted labels (Fig 4): the largest between-class value after initialisation, its
    /// interval's lower bound, and whether that bound is ever above 0.
    pub max_between_after_init: f64,
    pub max_between_ci_lo: Option<f64>,
    pub positive_between_develops: Option<bool>,
    pub between_at_end: f64,
    pub between_at_end_ci: Option<(f64, f64)>,
}

fn stage_claims(r: &DynRunRecord, st: &[Stage], kind: StiffnessKind, kname: &str) -> Option<StageClaims> {
    if st.len() < 4 {
        return None;
    }
    let s = |i: usize| kind_summary(&r.points[st[i].point].measurement, kind);
    let (init, late1, late2) = (s(0), s(2), s(3));
    let after: Vec<&KindSummary> =
        r.points.iter().filter(|p| p.step > 0).map(|p| kind_summary(&p.measurement, kind)).collect();
    let best = after.iter().max_by(|a, b| a.between.total_cmp(&b.between));
    let any_lo_pos = after.iter().map(|k| between_ci(k).map(|c| c.0 > 0.0)).collect::<Option<Vec<bool>>>();
    Some(StageClaims {
        run: r.id.clone(),
        kind: kname.into(),
        within_positive_at_init: within_ci(init).map(|c| c.0 > 0.0),
        within_at_init: init.within,
        between_growth: late1.between - init.between,
        between_grows: separated(between_ci(init), between_ci(late1)).map(|sep| sep && late1.between > init.between),
        within_regresses: late2.within.abs() < late1.within.abs(),
        between_regresses: late2.between.abs() < late1.between.abs(),
        max_between_after_init: best.map_or(f64::NAN, |k| k.between),
        max_between_ci_lo: best.and_then(|k| between_ci(k).map(|c| c.0)),
        positive_between_develops: any_lo_pos.map(|v| v.iter().any(|&b| b)),
        between_at_end: late2.between,
        between_at_end_ci: between_ci(late2),
    })
}

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "–",
    }
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
                        let s = kind_summary(&p.measurement, kind);
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

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Fig {fig_no}: class stiffness at four stages of training, {} on {}{}{}\n",
        cfg.preset,
        cfg.dataset,
        if cfg.permute_labels { " with permuted labels" } else { "" },
        if cfg.quick { " (quick run)" } else { "" }
    );
    let _ = writeln!(md, "Command: `{command}`\n");
    if cfg.permute_labels {
        let _ = writeln!(
            md,
            "**Paper's claim:** with permuted training labels no positive between-class stiffness develops; the \
             off-diagonal entries go slightly negative.\n"
        );
        for c in &claims {
            let _ = writeln!(
                md,
                "**Run {}, {} stiffness:** largest between-class value after initialisation {:.4} (95% lower bound {}); \
                 a between-class value significantly above 0 develops: {} → claim {}. Between-class at the end of the \
                 run: {} ({}).\n",
                c.run,
                c.kind,
                c.max_between_after_init,
                c.max_between_ci_lo.map_or("–".into(), |v| format!("{v:.4}")),
                yes_no(c.positive_between_develops),
                match c.positive_between_develops {
                    Some(false) => "supported",
                    Some(true) => "not supported",
                    None => "not testable (no intervals)",
                },
                fmt_ci(c.between_at_end, c.between_at_end_ci),
                match c.between_at_end_ci {
                    Some((_, hi)) if hi < 0.0 => "significantly negative, as the paper says",
                    Some((lo, _)) if lo > 0.0 => "significantly positive",
                    Some(_) => "not distinguishable from 0",
                    None => "no interval",
                }
            );
        }
    } else {
        let _ = writeln!(
            md,
            "**Paper's claims:** within-class stiffness is positive from initialisation; between-class stiffness \
             grows with training; both regress toward 0 late in training (after the onset of overfitting).\n"
        );
        let _ = writeln!(
            md,
            "| run | kind | within > 0 at init (95% lower bound > 0) | between grows init → late 1 (intervals disjoint) | within regresses late 1 → late 2 | between regresses late 1 → late 2 |\n|---|---|---|---|---|---|"
        );
        for c in &claims {
            let _ = writeln!(
                md,
                "| {} | {} | {} ({:.3}) | {} ({:+.3}) | {} | {} |",
                c.run,
                c.kind,
                yes_no(c.within_positive_at_init),
                c.within_at_init,
                yes_no(c.between_grows),
                c.between_growth,
                yes_no(Some(c.within_regresses)),
                yes_no(Some(c.between_regresses)),
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "{}\n", setup_text(cfg));
    let _ = writeln!(
        md,
        "Stages ({}): {}. Colour scale: one symmetric range per stiffness kind across the four stages, centred on 0.\n",
        match cfg.stage_rule {
            crate::dynamics::StageRule::AroundOnset =>
                "init = step 0; late 1 = the measured step nearest the onset of overfitting (middle of the run if none); early = the first measured step whose training loss has fallen a quarter of the way from its initial value to its value at late 1; late 2 = the last step",
            crate::dynamics::StageRule::Fractions => "init = step 0; early, late 1, late 2 = the measured steps nearest 2%, 50%, 100% of the run",
        },
        st.iter().map(|s| format!("{} = step {}", s.name, s.step)).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(md, "![{0}]({0}.png)\n\n![over training]({0}_over_training.png)\n", cfg.figure);
    let _ = writeln!(md, "## Stages (run {})\n", r.id);
    let _ = writeln!(
        md,
        "| stage | step | train loss | val loss | within sign | between sign | within cosine | between cosine |\n|---|---|---|---|---|---|---|---|"
    );
    for s in &st {
        let p = &r.points[s.point];
        let (sg, co) = (&p.measurement.sign, &p.measurement.cosine);
        let _ = writeln!(
            md,
            "| {} | {} | {:.4} | {} | {} | {} | {} | {} |",
            s.name,
            s.step,
            p.train_loss,
            p.val_loss.map_or("–".into(), |v| format!("{v:.4}")),
            fmt_ci(sg.within, within_ci(sg)),
            fmt_ci(sg.between, between_ci(sg)),
            fmt_ci(co.within, within_ci(co)),
            fmt_ci(co.between, between_ci(co)),
        );
    }
    let _ = writeln!(md, "\n## All measured steps (run {})\n\n{}", r.id, points_table(r));
    let _ = writeln!(md, "## Runs\n\n{}", runs_table(records));
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}

/// A class matrix from stored cells (for the block score).
fn class_matrix(m: &[Vec<Option<f64>>]) -> ClassMatrix {
    let k = m.len();
    let mut values = ndarray::Array2::<f64>::zeros((k, k));
    let mut counts = ndarray::Array2::<u64>::zeros((k, k));
    let (mut ws, mut wn, mut bs, mut bn) = (0.0, 0usize, 0.0, 0usize);
    for (a, row) in m.iter().enumerate() {
        for (b, v) in row.iter().enumerate() {
            if let Some(v) = v {
                values[[a, b]] = *v;
                counts[[a, b]] = 1;
                if a == b {
                    ws += v;
                    wn += 1;
                } else {
                    bs += v;
                    bn += 1;
                }
            }
        }
    }
    ClassMatrix {
        values,
        counts,
        within: ws / wn.max(1) as f64,
        between: bs / bn.max(1) as f64,
        within_cells: wn,
        between_cells: bn,
    }
}

/// Fine classes sorted by (super-class, fine index): the order of Fig 7's axes.
pub fn superclass_order(fine_to_coarse: &[u8]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..fine_to_coarse.len()).collect();
    idx.sort_by_key(|&i| (fine_to_coarse[i], i));
    idx
}

/// Writes `DIR/fig7/`: the CIFAR-100 matrix at the focus step ordered by super-class, block scores.
pub fn write_fig7(dir: &Path, cfg: &DynConfig, records: &[DynRunRecord], command: &str) -> Result<()> {
    write_config(dir, cfg, command)?;
    let f2c = stiff_data::classes::CIFAR100_FINE_TO_COARSE;
    let coarse: Vec<u32> = f2c.iter().map(|&c| u32::from(c)).collect();
    let names = cfg.class_names();
    let coarse_names: Vec<String> =
        stiff_data::classes::CIFAR100_COARSE_CLASSES.iter().map(|s| s.to_string()).collect();
    let order = superclass_order(&f2c);
    let r = &records[0];
    let focus = cfg.focus_step.unwrap_or(cfg.max_steps);
    let p = r
        .nearest_point(focus)
        .ok_or_else(|| ExperimentError::InvalidArgument(format!("fig7: run {} has no measured step", r.id)))?;
    let block = |m: &Measurement, kind: StiffnessKind| -> Result<BlockScore> {
        let cells = if kind == StiffnessKind::Sign { &m.class_sign } else { &m.class_cosine };
        Ok(superclass_block_score(&class_matrix(cells), &coarse, cfg.block_permutations, cfg.block_seed)?)
    };
    let focus_scores: Vec<(String, BlockScore)> =
        KINDS.iter().map(|&(k, n)| Ok((n.to_string(), block(&p.measurement, k)?))).collect::<Result<_>>()?;
    // Scores at every measured step after init, fewer permutations (a trajectory, not the test).
    #[derive(Serialize)]
    struct Traj {
        step: u64,
        images_seen: u64,
        train_loss: f64,
        sign: f64,
        sign_p: f64,
        cosine: f64,
        cosine_p: f64,
    }
    let mut traj = Vec::new();
    for q in &r.points {
        let (s, c) = (block(&q.measurement, StiffnessKind::Sign)?, block(&q.measurement, StiffnessKind::Cosine)?);
        traj.push(Traj {
            step: q.step,
            images_seen: q.images_seen,
            train_loss: q.train_loss,
            sign: s.observed,
            sign_p: s.p_value,
            cosine: c.observed,
            cosine_p: c.p_value,
        });
    }
    let mut rows: Vec<Row> = records.iter().flat_map(series_rows).collect();
    rows.extend(matrix_rows(r, p, "focus", &names));
    for (kname, b) in &focus_scores {
        let base = Row { note: format!("step={}", p.step), ..base_row(r) };
        rows.push(Row { metric: format!("superclass_block_score_{kname}"), value: Some(b.observed), ..base.clone() });
        rows.push(Row { metric: format!("superclass_block_p_value_{kname}"), value: Some(b.p_value), ..base.clone() });
        rows.push(Row {
            metric: format!("same_superclass_mean_{kname}_stiffness"),
            value: Some(b.same_super_mean),
            ..base.clone()
        });
        rows.push(Row {
            metric: format!("cross_superclass_mean_{kname}_stiffness"),
            value: Some(b.cross_super_mean),
            ..base
        });
    }
    write_csv(&dir.join("results.csv"), &rows)?;
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({ "figure": "fig7", "run": r.id, "end": r.end, "focus_step": p.step,
            "train_loss": p.train_loss, "val_loss": p.val_loss, "val_acc": p.val_acc,
            "sign": p.measurement.sign, "cosine": p.measurement.cosine,
            "block_scores": focus_scores.iter().map(|(k, b)| serde_json::json!({"kind": k, "score": b})).collect::<Vec<_>>(),
            "trajectory": traj, "order": order, "class_sign": p.measurement.class_sign, "class_cosine": p.measurement.class_cosine }),
    )?;

    let reorder = |m: &[Vec<Option<f64>>]| -> Vec<Vec<f64>> {
        order.iter().map(|&a| order.iter().map(|&b| m[a][b].unwrap_or(f64::NAN)).collect()).collect()
    };
    let labels: Vec<String> = order.iter().map(|&i| names[i].clone()).collect();
    let bounds: Vec<usize> = (1..coarse_names.len()).map(|g| g * order.len() / coarse_names.len()).collect();
    let panels = KINDS
        .iter()
        .zip(&focus_scores)
        .map(|(&(kind, kname), (_, b))| {
            let values = reorder(if kind == StiffnessKind::Sign {
                &p.measurement.class_sign
            } else {
                &p.measurement.class_cosine
            });
            // Diagonal cells (self-class) dominate the scale; the range follows the off-diagonal.
            let off: Vec<Vec<f64>> = values
                .iter()
                .enumerate()
                .map(|(i, row)| row.iter().enumerate().map(|(j, v)| if i == j { f64::NAN } else { *v }).collect())
                .collect();
            Heatmap {
                title: format!("{kname}: block score {:.4}, p = {:.3}", b.observed, b.p_value),
                range: symmetric_range(&[off]),
                values,
                row_labels: labels.clone(),
                col_labels: labels.clone(),
                group_boundaries: bounds.clone(),
            }
        })
        .collect();
    heatmap_figure(
        &HeatmapFigure {
            title: format!(
                "Fig 7: CIFAR-100 class stiffness at step {} ({} , run {}), ordered by super-class{}",
                p.step,
                cfg.preset,
                r.id,
                if cfg.quick { " [quick]" } else { "" }
            ),
            panels,
            columns: 2,
        },
        &dir.join("fig7"),
    )?;

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Fig 7: CIFAR-100 class stiffness by super-class{}\n",
        if cfg.quick { " (quick run)" } else { "" }
    );
    let _ = writeln!(md, "Command: `{command}`\n");
    let _ = writeln!(
        md,
        "**Paper's claim:** early in training the 100 x 100 class stiffness matrix is block-structured by the 20 \
         super-classes (5 fine classes each), although the net never sees super-class labels.\n"
    );
    for (kname, b) in &focus_scores {
        let _ = writeln!(
            md,
            "**{kname} stiffness at step {}:** mean over pairs of different classes in the same super-class {:.4} vs \
             across super-classes {:.4}; block score {:.4} (null mean {:.4}, sd {:.4}), one-sided permutation p = {:.4} \
             ({} shuffles of the fine→super-class assignment): {}.\n",
            p.step,
            b.same_super_mean,
            b.cross_super_mean,
            b.observed,
            b.null_mean,
            b.null_sd,
            b.p_value,
            b.permutations,
            if b.p_value < 0.05 && b.observed > 0.0 { "supported (p < 0.05)" } else { "not supported at p < 0.05" }
        );
    }
    let _ = writeln!(md, "{}\n", setup_text(cfg));
    let _ = writeln!(
        md,
        "The matrix shown is the one at the measured step nearest step {focus} (\"early in training\"). Axes: fine \
         classes sorted by super-class (every 5th name shown), lines at super-class boundaries; the colour range \
         follows the off-diagonal cells (the diagonal is saturated).\n\n![fig7](fig7.png)\n"
    );
    let _ = writeln!(
        md,
        "## Block score over training\n\n| step | train loss | sign score | sign p | cosine score | cosine p |\n|---|---|---|---|---|---|"
    );
    for t in &traj {
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
            t.step, t.train_loss, t.sign, t.sign_p, t.cosine, t.cosine_p
        );
    }
    let _ = writeln!(md, "\n## Runs\n\n{}", runs_table(records));
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
