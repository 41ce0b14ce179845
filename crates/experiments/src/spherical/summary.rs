//! The prose of the spherical figure (`summary.md`, the verdict), written from numbers
//! `figures` already computed; nothing here computes a statistic.

use std::f64::consts::PI;
use std::fmt::Write as _;

use super::config::{SphericalConfig, FIGURE};
use super::model::{cells_of, deg, DomainCell, LengthScaleFit, LrTrend, METHODS};
use super::run::{SphEnd, SphRunRecord};
use crate::stats::SeedMean;

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

fn range(v: &[f64]) -> String {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return "–".into();
    }
    let lo = f.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.2}–{hi:.2}")
}

/// The headline verdict from the input-space v1 fit and the largest stiffness-vs-labels gap.
pub fn verdict_text(fit: Option<&LengthScaleFit>, gap: Option<f64>) -> String {
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

/// The figure's `summary.md`.
#[allow(clippy::too_many_arguments)]
pub fn summary(
    cfg: &SphericalConfig,
    records: &[SphRunRecord],
    spaces: &[String],
    degree_cells: &[DomainCell],
    lr_cells: &[DomainCell],
    fits: &[LengthScaleFit],
    lr_trends: &[LrTrend],
    verdict: &str,
    command: &str,
) -> String {
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
        cfg.train.batch_size,
        cfg.train.train_eval_subset,
        cfg.train.eval_every,
        cfg.loss_threshold,
        cfg.train.max_steps,
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
    let input_v1 = cells_of(degree_cells, "input", METHODS[0].0);
    let input_v3 = cells_of(degree_cells, "input", METHODS[1].0);
    let input_cos = cells_of(degree_cells, "input", METHODS[2].0);
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
    for f in fits {
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
        for s in spaces {
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
            for s in spaces {
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
    for t in lr_trends {
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
    md
}
