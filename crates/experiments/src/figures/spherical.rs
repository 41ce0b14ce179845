//! The spherical-harmonics figure: stiff domain size vs the target's angular length scale `pi / l`,
//! and vs learning rate at a fixed degree, drawn from the records of [`crate::spherical`].

use std::f64::consts::PI;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use stiff_analysis::Crossing;
use stiff_plot::{line_figure, LineFigure, Panel, Series};

use crate::measure::{crossing_distance, SpaceCurve};
use crate::spherical::{distance_to_angle, SphEnd, SphRunRecord, SphericalConfig, FIGURE};
use crate::stats::{seed_mean, slope, spearman, SeedMean};
use crate::store::{write_atomic, write_json};
use crate::tidy::{write_csv, Row};
use crate::{ExperimentError, Result};

type Pick = fn(&SpaceCurve) -> &Crossing;

/// The two extraction methods on sign stiffness (the paper's v1 quantity), plus cosine stiffness.
/// The last entry (cosine stiffness, first crossing) weights pairs by gradient magnitudes, so
/// unlike sign stiffness it is not fixed by the labels alone.
const METHODS: [(&str, Pick); 3] = [
    ("first crossing (v1)", |c| &c.sign_first_crossing),
    ("line-fit zero (v3)", |c| &c.sign_fit_crossing),
    ("cosine, first crossing", |c| &c.cos_first_crossing),
];

fn end_note(r: &SphRunRecord) -> String {
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

fn crossing_note(c: &Crossing) -> String {
    match c {
        Crossing::Found { .. } => String::new(),
        Crossing::StartsNegative { distance, value } => {
            format!("starts negative ({value:.3} at distance {distance:.4})")
        }
        Crossing::NeverCrosses { reason, .. } => format!("never crosses: {reason}"),
        Crossing::NoData { reason } => format!("no data: {reason}"),
    }
}

/// Tidy rows: run status, losses, class stiffness, and stiff domain sizes per space (distance
/// and angle) by both methods and both stiffness kinds. Stiffness rows are written only with a
/// finite value (the CSV checker requires one).
pub fn tidy_rows(records: &[SphRunRecord]) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in records {
        let base = Row {
            run_id: r.id.clone(),
            dataset: r.spec.data.name(),
            optimizer: r.spec.optimizer.name().into(),
            lr: r.spec.optimizer.lr(),
            seed: r.spec.seed,
            threshold: r.fitted().then_some(r.spec.loss_threshold),
            space: String::new(),
            metric: String::new(),
            value: None,
            note: String::new(),
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
        let lnote = crossing_note(&r.label_crossing);
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
                let note = crossing_note(crossing);
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

/// Stiff domain size of one (degree or lr) cell, space and method over the fitted seeds.
#[derive(Debug, Clone, Serialize)]
pub struct DomainCell {
    pub degree: usize,
    pub lr: f64,
    pub space: String,
    pub method: String,
    /// `pi / l` and the first zero of `P_l(cos theta)` (radians).
    pub characteristic_angle: f64,
    pub target_zero_angle: Option<f64>,
    /// Over fitted runs with a crossing: the distance `1 - cos` and the angle (radians).
    pub distance: Option<SeedMean>,
    pub angle: Option<SeedMean>,
    pub fitted_runs: usize,
    /// Runs of this cell that did not fit their target (excluded from the means, listed in the tables).
    pub not_fitted_runs: usize,
    pub diverged_runs: usize,
    /// Fitted runs whose curve has no crossing (see results.csv notes).
    pub no_crossing: usize,
    /// Not-fitted runs' crossings (distance), for reference.
    pub not_fitted_distances: Vec<f64>,
    /// First zero of the label-agreement curve (angle, radians) over the same fitted runs.
    pub label_zero_angle: Option<SeedMean>,
    /// Largest per-bin |input-space sign stiffness - label agreement| up to the first crossing, over
    /// the fitted runs: 0 means the tangent kernel was positive for every such pair, so sign
    /// stiffness there is the labels' agreement.
    pub max_curve_gap: Option<f64>,
}

fn domain_cell(
    runs: &[&SphRunRecord],
    space: &str,
    method: &str,
    pick: Pick,
    degree: usize,
    lr: f64,
    dim: usize,
) -> DomainCell {
    let size = |r: &SphRunRecord| {
        r.measurement
            .as_ref()
            .and_then(|m| m.curves.iter().find(|c| c.space == space))
            .and_then(|c| crossing_distance(pick(c)))
    };
    let fitted: Vec<&&SphRunRecord> = runs.iter().filter(|r| r.fitted()).collect();
    let found: Vec<f64> = fitted.iter().filter_map(|r| size(r)).collect();
    DomainCell {
        degree,
        lr,
        space: space.into(),
        method: method.into(),
        characteristic_angle: PI / degree as f64,
        target_zero_angle: stiff_data::synthetic::profile_first_zero(dim, degree).ok().flatten(),
        distance: seed_mean(&found),
        angle: seed_mean(&found.iter().map(|&d| distance_to_angle(d)).collect::<Vec<_>>()),
        fitted_runs: fitted.len(),
        not_fitted_runs: runs.iter().filter(|r| matches!(r.end, SphEnd::NotFitted { .. })).count(),
        diverged_runs: runs.iter().filter(|r| matches!(r.end, SphEnd::Diverged { .. })).count(),
        no_crossing: fitted.len() - found.len(),
        not_fitted_distances: runs
            .iter()
            .filter(|r| matches!(r.end, SphEnd::NotFitted { .. }))
            .filter_map(|r| size(r))
            .collect(),
        max_curve_gap: fitted
            .iter()
            .filter_map(|r| curve_gap(r))
            .fold(None, |acc: Option<f64>, g| Some(acc.map_or(g, |a| a.max(g)))),
        label_zero_angle: seed_mean(
            &fitted
                .iter()
                .filter_map(|r| crossing_distance(&r.label_crossing))
                .map(distance_to_angle)
                .collect::<Vec<_>>(),
        ),
    }
}

/// Largest per-bin gap between the input-space sign stiffness curve and the label-agreement
/// curve, over the bins up to the later of their two first crossings (the bins that decide the
/// domain size).
fn curve_gap(r: &SphRunRecord) -> Option<f64> {
    let c = r.measurement.as_ref()?.curves.iter().find(|c| c.space == "input")?;
    if c.curve.bins != r.label_curve.bins {
        return None;
    }
    let reach = crossing_distance(&c.sign_first_crossing)?.max(crossing_distance(&r.label_crossing)?);
    c.curve
        .sign_mean
        .iter()
        .zip(&r.label_curve.sign_mean)
        .zip(&c.curve.centres)
        .filter(|(_, &centre)| centre <= reach + c.curve.bins.width())
        .map(|(pair, _)| pair)
        .filter_map(|(a, b)| Some((a.as_ref()? - b.as_ref()?).abs()))
        .fold(None, |acc: Option<f64>, g| Some(acc.map_or(g, |a| a.max(g))))
}

/// Power law `theta = prefactor * (pi / l)^exponent` fitted by least squares in log-log over the
/// degrees with a mean domain angle (fitted runs), with the Spearman correlation of degree and
/// angle (negative: the domain shrinks as l grows).
#[derive(Debug, Clone, Serialize)]
pub struct LengthScaleFit {
    pub space: String,
    pub method: String,
    pub degrees: Vec<usize>,
    pub angles: Vec<f64>,
    pub exponent: Option<f64>,
    pub prefactor: Option<f64>,
    pub r_squared: Option<f64>,
    pub spearman_degree_angle: Option<f64>,
    /// `theta / (pi / l)` per degree.
    pub ratio_to_pi_over_l: Vec<f64>,
    /// `theta / (first zero of P_l)` per degree.
    pub ratio_to_target_zero: Vec<f64>,
    /// `theta / (first zero of the label-agreement curve)` per degree.
    pub ratio_to_label_zero: Vec<f64>,
    /// The same log-log fit for the first zero of `P_l(cos theta)` over the same degrees: the
    /// exponent a domain equal to the target's correlation zero would show.
    pub reference_exponent: Option<f64>,
}

fn length_scale_fit(cells: &[&DomainCell]) -> Option<LengthScaleFit> {
    let first = cells.first()?;
    let pts: Vec<&&DomainCell> = cells.iter().filter(|c| c.angle.is_some()).collect();
    let degrees: Vec<usize> = pts.iter().map(|c| c.degree).collect();
    let angles: Vec<f64> = pts.iter().map(|c| c.angle.as_ref().map_or(f64::NAN, |m| m.mean)).collect();
    let lx: Vec<f64> = pts.iter().map(|c| c.characteristic_angle.ln()).collect();
    let ly: Vec<f64> = angles.iter().map(|a| a.ln()).collect();
    let exponent = slope(&lx, &ly).filter(|b| b.is_finite());
    let (prefactor, r_squared) = match exponent {
        Some(b) => {
            let n = lx.len() as f64;
            let (mx, my) = (lx.iter().sum::<f64>() / n, ly.iter().sum::<f64>() / n);
            let a = my - b * mx;
            let ss_res: f64 = lx.iter().zip(&ly).map(|(x, y)| (y - a - b * x).powi(2)).sum();
            let ss_tot: f64 = ly.iter().map(|y| (y - my).powi(2)).sum();
            (Some(a.exp()), (ss_tot > 0.0).then(|| 1.0 - ss_res / ss_tot))
        }
        None => (None, None),
    };
    let dl: Vec<f64> = degrees.iter().map(|&l| l as f64).collect();
    let ref_pts: Vec<(f64, f64)> =
        pts.iter().filter_map(|c| c.target_zero_angle.map(|z| (c.characteristic_angle.ln(), z.ln()))).collect();
    let (rx, ry): (Vec<f64>, Vec<f64>) = ref_pts.into_iter().unzip();
    Some(LengthScaleFit {
        reference_exponent: slope(&rx, &ry),
        ratio_to_label_zero: pts
            .iter()
            .zip(&angles)
            .map(|(c, a)| c.label_zero_angle.as_ref().map_or(f64::NAN, |z| a / z.mean))
            .collect(),
        space: first.space.clone(),
        method: first.method.clone(),
        spearman_degree_angle: spearman(&dl, &angles),
        ratio_to_pi_over_l: pts.iter().zip(&angles).map(|(c, a)| a / c.characteristic_angle).collect(),
        ratio_to_target_zero: pts
            .iter()
            .zip(&angles)
            .map(|(c, a)| c.target_zero_angle.map_or(f64::NAN, |z| a / z))
            .collect(),
        degrees,
        angles,
        exponent,
        prefactor,
        r_squared,
    })
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite()).map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn fmt_mean(m: &Option<SeedMean>, digits: usize, scale: f64) -> String {
    match m {
        None => "–".into(),
        Some(m) => match m.half_width {
            Some(h) => format!("{:.digits$} ± {:.digits$}", m.mean * scale, h * scale),
            None => format!("{:.digits$}", m.mean * scale),
        },
    }
}

fn deg(rad: f64) -> f64 {
    rad.to_degrees()
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
    let cells_of = |cells: &[DomainCell], space: &str, method: &str| -> Vec<DomainCell> {
        cells.iter().filter(|c| c.space == space && c.method == method).cloned().collect()
    };
    let fits: Vec<LengthScaleFit> = spaces
        .iter()
        .flat_map(|s| METHODS.iter().map(move |(m, _)| (s.clone(), *m)))
        .filter_map(|(s, m)| {
            let cs = cells_of(&degree_cells, &s, m);
            length_scale_fit(&cs.iter().collect::<Vec<_>>())
        })
        .collect();
    // Learning-rate trend of the domain size (distance), per space and method.
    #[derive(Serialize)]
    struct LrTrend {
        space: String,
        method: String,
        lrs: Vec<f64>,
        distances: Vec<f64>,
        slope_per_decade: Option<f64>,
        spearman: Option<f64>,
    }
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
    let verdict = verdict_text(headline, gap);
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

    draw_figure(dir, cfg, records, &spaces, &degree_cells, &lr_cells)?;

    // summary.md
    let mut md = String::new();
    let _ = writeln!(md, "# Stiffness on spherical harmonics{}\n", if cfg.quick { " (quick run)" } else { "" });
    let _ = writeln!(md, "Command: `{command}`\n");
    let _ = writeln!(
        md,
        "**Paper's claim / open question:** the paper studies stiffness on synthetic spherical-harmonics data and \
         leaves open how the stiff domain size relates to the length scale on which the learned function varies. \
         Here the target's sign pattern varies on an angular scale of about pi/l, so if stiff domains track the \
         function's length scale, the domain angle should shrink like pi/l (exponent 1 below).\n"
    );
    let _ = writeln!(md, "**This run:** {verdict}\n");
    let _ = writeln!(md, "![{FIGURE}]({FIGURE}.png)\n");
    let _ = writeln!(
        md,
        "Setup: inputs uniform on S^{} (d = {}), 2-class labels = sign of a seeded random unit-norm combination of the \
         {} harmonics of degree l; ReLU MLP {}-{}-2, {} batch {}, trained until the training loss (mean cross-entropy \
         on a fixed {}-example training subset, every {} steps) falls below {} (\"fitted\") or {} steps pass \
         (\"not fitted\", measured at the end, excluded from the means); {} training / {} validation points; \
         stiffness between the first {} validation points; seeds {:?} (each seed draws its own target, points and \
         initialisation). Degrees {:?} at lr {}; learning rates {:?} at l = {}.\n",
        cfg.dim - 1,
        cfg.dim,
        match cfg.target {
            stiff_data::synthetic::TargetKind::RealHarmonics => "2l+1 real spherical".to_string(),
            stiff_data::synthetic::TargetKind::ZonalSum { directions } => format!("{directions} zonal"),
        },
        cfg.dim,
        cfg.hidden.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("-"),
        cfg.optimizer.name(),
        cfg.batch_size,
        cfg.train_eval_subset,
        cfg.eval_every,
        cfg.loss_threshold,
        cfg.max_steps,
        cfg.n_train,
        cfg.n_val,
        cfg.stiffness_subset,
        cfg.seeds,
        cfg.degrees,
        cfg.lr,
        cfg.lrs,
        cfg.lr_sweep_degree,
    );
    let _ = writeln!(
        md,
        "Distance = 1 - cos(theta) between inputs (theta = their angle on the sphere; the same formula in each \
         layer's representation); domain angle = arccos(1 - distance). Bins: {} equal bins over [{}, {}] (on S^2 the \
         input distance of two uniform points is uniform on [0, 2], so bins hold equal pair counts). Sign stiffness; \
         first crossing (v1) interpolates between bin centres, line-fit zero (v3) is the zero of a least-squares line \
         over all pairs (a line fits the oscillating curves of l >= 2 badly, so v3 is reported but not trusted \
         there). Reference scales: pi/l; the first zero of P_l(cos theta), the correlation E[f(x) f(y)] of the \
         random targets; and the first zero of the measured label agreement s_i s_j (s = ±1) vs distance over the \
         same pairs. For 2-class cross-entropy g_i . g_j = s_i s_j |r_i r_j| (grad z_i . grad z_j) (r the residual, \
         z the logit difference), so input-space sign stiffness equals label agreement wherever the network's \
         tangent kernel is positive: a domain at the label-agreement zero means the stiff domain is set by the \
         labels' correlation length.\n",
        cfg.measure.bins.bins, cfg.measure.bins.lo, cfg.measure.bins.hi
    );
    let _ = writeln!(md, "## Input-space stiff domain vs degree (mean ± 95% half-width over fitted seeds)\n");
    let _ = writeln!(
        md,
        "| l | pi/l (deg) | P_l zero (deg) | label-agreement zero (deg) | max bin gap stiffness vs labels (up to the crossing) | fitted / not / diverged | v1 distance | v1 angle (deg) | v1 angle·l/pi | v3 distance | v3 angle (deg) | cosine v1 angle (deg) | not-fitted v1 distances |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let input_v1 = cells_of(&degree_cells, "input", METHODS[0].0);
    let input_v3 = cells_of(&degree_cells, "input", METHODS[1].0);
    let input_cos = cells_of(&degree_cells, "input", METHODS[2].0);
    for ((a, b), c) in input_v1.iter().zip(&input_v3).zip(&input_cos) {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {} | {} | {} | {} / {} / {} | {} | {} | {} | {} | {} | {} | {} |",
            a.degree,
            deg(a.characteristic_angle),
            fmt_opt(a.target_zero_angle.map(deg), 1),
            fmt_mean(&a.label_zero_angle, 1, 180.0 / PI),
            fmt_opt(a.max_curve_gap, 3),
            a.fitted_runs,
            a.not_fitted_runs,
            a.diverged_runs,
            fmt_mean(&a.distance, 4, 1.0),
            fmt_mean(&a.angle, 1, 180.0 / PI),
            fmt_opt(a.angle.as_ref().map(|m| m.mean / a.characteristic_angle), 2),
            fmt_mean(&b.distance, 4, 1.0),
            fmt_mean(&b.angle, 1, 180.0 / PI),
            fmt_mean(&c.angle, 1, 180.0 / PI),
            if a.not_fitted_distances.is_empty() {
                "–".to_string()
            } else {
                a.not_fitted_distances.iter().map(|d| format!("{d:.4}")).collect::<Vec<_>>().join(", ")
            }
        );
    }
    let _ = writeln!(
        md,
        "\n## Fitted relation theta = C (pi/l)^b, per space and method (log-log least squares over degrees)\n\n\
         | space | method | degrees used | b | C | R² | Spearman(l, theta) |\n|---|---|---|---|---|---|---|"
    );
    for f in &fits {
        let _ = writeln!(
            md,
            "| {} | {} | {:?} | {} | {} | {} | {} |",
            f.space,
            f.method,
            f.degrees,
            fmt_opt(f.exponent, 3),
            fmt_opt(f.prefactor, 3),
            fmt_opt(f.r_squared, 3),
            fmt_opt(f.spearman_degree_angle, 2)
        );
    }
    let _ = writeln!(md, "\n## Domain size (distance, v1) per space and degree\n");
    let _ = writeln!(md, "| l | {} |\n|---|{}", spaces.join(" | "), "---|".repeat(spaces.len()));
    for &l in &cfg.degrees {
        let mut line = format!("| {l} |");
        for s in &spaces {
            let c = degree_cells.iter().find(|c| c.degree == l && &c.space == s && c.method == METHODS[0].0);
            let _ = write!(line, " {} |", c.map_or("–".into(), |c| fmt_mean(&c.distance, 4, 1.0)));
        }
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(md, "\n## Domain size (distance) vs learning rate at l = {}\n", cfg.lr_sweep_degree);
    let _ = writeln!(md, "| lr | method | {} |\n|---|---|{}", spaces.join(" | "), "---|".repeat(spaces.len()));
    for &lr in &cfg.lrs {
        for (mname, _) in METHODS {
            let mut line = format!("| {lr} | {mname} |");
            for s in &spaces {
                let c = lr_cells.iter().find(|c| c.lr == lr && &c.space == s && c.method == mname);
                let _ = write!(
                    line,
                    " {} |",
                    c.map_or("–".into(), |c| {
                        let extra = if c.not_fitted_runs > 0 {
                            format!(" ({} not fitted)", c.not_fitted_runs)
                        } else {
                            String::new()
                        };
                        format!("{}{extra}", fmt_mean(&c.distance, 4, 1.0))
                    })
                );
            }
            let _ = writeln!(md, "{line}");
        }
    }
    let _ = writeln!(md, "\n| space | method | slope per decade of lr | Spearman |\n|---|---|---|---|");
    for t in &lr_trends {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            t.space,
            t.method,
            fmt_opt(t.slope_per_decade, 4),
            fmt_opt(t.spearman, 2)
        );
    }
    let _ = writeln!(
        md,
        "\n## Runs\n\n| run | end | step | train loss | train acc | val acc | positive share | train s | measure s |\n|---|---|---|---|---|---|---|---|---|"
    );
    for r in records {
        let end = match &r.end {
            SphEnd::Fitted => "fitted".to_string(),
            SphEnd::NotFitted { steps } => format!("**not fitted** ({steps} steps)"),
            SphEnd::Diverged { step, reason } => format!("**diverged** at {step}: {reason}"),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.3} | {:.1} | {:.2} |",
            r.id,
            end,
            r.step,
            fmt_opt(r.train_loss, 3),
            fmt_opt(r.train_acc, 3),
            fmt_opt(r.val_acc, 3),
            r.positive_fraction,
            r.train_seconds,
            r.measure_seconds
        );
    }
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}

fn range(v: &[f64]) -> String {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return "–".into();
    }
    let lo = f.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.2}–{hi:.2}")
}

fn verdict_text(fit: Option<&LengthScaleFit>, gap: Option<f64>) -> String {
    let Some(f) = fit else {
        return "no verdict: no fitted run had an input-space crossing.".into();
    };
    if f.degrees.len() < 2 {
        return format!(
            "no verdict: only {} degree(s) with a fitted input-space crossing ({:?}).",
            f.degrees.len(),
            f.degrees
        );
    }
    let (first, last) = (f.degrees[0], f.degrees[f.degrees.len() - 1]);
    let shrinks = match f.spearman_degree_angle {
        Some(r) if r < 0.0 => {
            format!("the input-space stiff domain shrinks as l grows (Spearman rho(l, theta) = {r:.2})")
        }
        Some(r) => format!("the input-space stiff domain does NOT shrink as l grows (Spearman rho(l, theta) = {r:.2})"),
        None if f.angles[f.angles.len() - 1] < f.angles[0] => {
            format!("the input-space stiff domain shrinks from l = {first} to l = {last}")
        }
        None => format!("the input-space stiff domain does NOT shrink from l = {first} to l = {last}"),
    };
    let relation = match (f.exponent, f.prefactor) {
        (Some(b), Some(c)) => format!(
            "; fitted relation (sign stiffness, v1 first crossing, degrees {:?}): theta ≈ {c:.3} · (pi/l)^{b:.3} \
             (R² {}), where theta = pi/l would give exponent 1 and a domain equal to the first zero of \
             P_l(cos theta) (~2.405/(l+1/2)) would give {}; theta·l/pi ranges {}, theta / (first zero of P_l) \
             ranges {}, theta / (zero of the measured label agreement) ranges {}",
            f.degrees,
            fmt_opt(f.r_squared, 3),
            fmt_opt(f.reference_exponent, 3),
            range(&f.ratio_to_pi_over_l),
            range(&f.ratio_to_target_zero),
            range(&f.ratio_to_label_zero),
        ),
        _ => String::new(),
    };
    let labels = match gap {
        Some(g) if g < 0.05 => format!(
            " In input space the binned sign-stiffness curve equals the labels' agreement s_i s_j to within {g:.3} in \
             every bin up to the crossing: the network's tangent kernel is positive for (nearly) every pair, so the sign-stiffness domain \
             is the labels' correlation length, which for these targets is the first zero of P_l(cos theta), not pi/l \
             itself (see the cosine-stiffness rows for a measure that also weighs gradient magnitudes)."
        ),
        Some(g) => format!(
            " The input-space sign-stiffness curve differs from the labels' agreement by up to {g:.3} in a bin before the crossing: the \
             tangent kernel is negative for some pairs, so the network shapes the stiff domain beyond the labels."
        ),
        None => String::new(),
    };
    format!("{shrinks}{relation}.{labels}")
}

#[allow(clippy::too_many_arguments)]
fn draw_figure(
    dir: &Path,
    cfg: &SphericalConfig,
    records: &[SphRunRecord],
    spaces: &[String],
    degree_cells: &[DomainCell],
    lr_cells: &[DomainCell],
) -> Result<()> {
    // Panel 1: input-space sign stiffness vs angle, one run per degree (the first seed).
    let first_seed = cfg.seeds.first().copied().unwrap_or(0);
    let mut curve_series = Vec::new();
    for &l in &cfg.degrees {
        let Some(r) = records
            .iter()
            .find(|r| r.spec.data.degree == l && r.spec.optimizer.lr() == cfg.lr && r.spec.seed == first_seed)
        else {
            continue;
        };
        let Some(c) = r.measurement.as_ref().and_then(|m| m.curves.iter().find(|c| c.space == "input")) else {
            continue;
        };
        let label = if r.fitted() { format!("l = {l}") } else { format!("l = {l} (not fitted)") };
        let x: Vec<f64> = c.curve.centres.iter().map(|&d| deg(distance_to_angle(d))).collect();
        let y: Vec<f64> = c.curve.sign_mean.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
        let mut s = Series::new(label, x, y);
        if let Crossing::Found { distance } = c.sign_first_crossing {
            s = s.with_marker(deg(distance_to_angle(distance)), format!("{:.0}°", deg(distance_to_angle(distance))));
        }
        curve_series.push(s);
    }
    // Panel 2: domain angle vs pi/l (degrees on both axes), with references.
    let mut by_scale: Vec<&DomainCell> = degree_cells.iter().filter(|c| c.space == "input").collect();
    by_scale.sort_by(|a, b| a.characteristic_angle.total_cmp(&b.characteristic_angle));
    let mut scale_series = Vec::new();
    for (mname, _) in METHODS {
        let cs: Vec<&&DomainCell> = by_scale.iter().filter(|c| c.method == mname).collect();
        scale_series.push(
            Series::new(
                format!("input, {mname}"),
                cs.iter().map(|c| deg(c.characteristic_angle)).collect(),
                cs.iter().map(|c| c.angle.as_ref().map_or(f64::NAN, |m| deg(m.mean))).collect(),
            )
            .with_err(cs.iter().map(|c| c.angle.as_ref().and_then(|m| m.half_width).map_or(f64::NAN, deg)).collect()),
        );
    }
    let refs: Vec<&&DomainCell> = by_scale.iter().filter(|c| c.method == METHODS[0].0).collect();
    scale_series.push(Series::new(
        "theta = pi/l",
        refs.iter().map(|c| deg(c.characteristic_angle)).collect(),
        refs.iter().map(|c| deg(c.characteristic_angle)).collect(),
    ));
    scale_series.push(Series::new(
        "label agreement zero (data)",
        refs.iter().map(|c| deg(c.characteristic_angle)).collect(),
        refs.iter().map(|c| c.label_zero_angle.as_ref().map_or(f64::NAN, |m| deg(m.mean))).collect(),
    ));
    scale_series.push(Series::new(
        "first zero of P_l(cos theta)",
        refs.iter().map(|c| deg(c.characteristic_angle)).collect(),
        refs.iter().map(|c| c.target_zero_angle.map_or(f64::NAN, deg)).collect(),
    ));
    // Panel 3: domain distance vs degree per space (v1).
    let space_series = |cells: &[DomainCell], x: fn(&DomainCell) -> f64| -> Vec<Series> {
        spaces
            .iter()
            .map(|s| {
                let cs: Vec<&DomainCell> = cells.iter().filter(|c| &c.space == s && c.method == METHODS[0].0).collect();
                Series::new(
                    s.clone(),
                    cs.iter().map(|c| x(c)).collect(),
                    cs.iter().map(|c| c.distance.as_ref().map_or(f64::NAN, |m| m.mean)).collect(),
                )
                .with_err(
                    cs.iter().map(|c| c.distance.as_ref().and_then(|m| m.half_width).unwrap_or(f64::NAN)).collect(),
                )
            })
            .collect()
    };
    let panels = vec![
        Panel {
            title: format!("input-space sign stiffness vs angle (lr {}, seed {first_seed})", cfg.lr),
            x_label: "angle between inputs theta (degrees)".into(),
            y_label: "sign stiffness".into(),
            series: curve_series,
            hline: Some(0.0),
            ..Default::default()
        },
        Panel {
            title: "input-space stiff domain vs the target's length scale".into(),
            x_label: "pi / l (degrees)".into(),
            y_label: "stiff domain angle (degrees)".into(),
            series: scale_series,
            ..Default::default()
        },
        Panel {
            title: format!("stiff domain (v1) per space vs degree (lr {})", cfg.lr),
            x_label: "degree l".into(),
            y_label: "stiff domain size (distance 1 - cos)".into(),
            series: space_series(degree_cells, |c| c.degree as f64),
            ..Default::default()
        },
        Panel {
            title: format!("stiff domain (v1) per space vs learning rate (l = {})", cfg.lr_sweep_degree),
            x_label: format!("learning rate ({})", cfg.optimizer.name()),
            y_label: "stiff domain size (distance 1 - cos)".into(),
            log_x: true,
            series: space_series(lr_cells, |c| c.lr),
            ..Default::default()
        },
    ];
    let seeds_note = if cfg.seeds.len() > 1 {
        format!("mean of fitted seeds of {}, 95% t-intervals", cfg.seeds.len())
    } else {
        "1 seed".into()
    };
    line_figure(
        &LineFigure {
            title: format!(
                "Stiffness on spherical harmonics of degree l: MLP {} ({seeds_note}){}",
                cfg.hidden.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("-"),
                if cfg.quick { " [quick]" } else { "" }
            ),
            panels,
            columns: 2,
        },
        &dir.join(FIGURE),
    )?;
    Ok(())
}
