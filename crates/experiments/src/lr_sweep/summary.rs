//! The prose of Figs 8-10 (`summary.md`, verdict lines), written from numbers the figure
//! modules already computed; nothing here computes a statistic.

use std::fmt::Write as _;

use stiff_analysis::Crossing;

use super::config::LrSweepConfig;
use super::figures::fig10::DomainCell;
use super::figures::fig8::{cell_err, Cell, Trend};
use super::figures::{crossing_note, kind_label, KINDS};
use super::run::{LrRunRecord, ThresholdPoint};
use crate::measure::{crossing_distance, SpaceCurve};
use crate::options::RunEnd;

/// Fig 8's verdict from the trend votes (up: higher learning rate, higher stiffness).
pub fn fig8_verdict(up: usize, down: usize) -> String {
    if up + down == 0 {
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
    }
}

/// Fig 8's `summary.md`.
pub fn fig8(
    cfg: &LrSweepConfig,
    records: &[LrRunRecord],
    cells: &[Cell],
    trends: &[Trend],
    verdict_text: &str,
    seeds_note: &str,
    command: &str,
) -> String {
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
    for t in trends {
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
    md
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

/// Fig 9's `summary.md`: `point` is the run's last threshold point with the Spearman rho of
/// (depth, first-crossing distance) over the hidden layers; `None` when it reached no threshold.
pub fn fig9(
    cfg: &LrSweepConfig,
    record: &LrRunRecord,
    point: Option<(&ThresholdPoint, Option<f64>)>,
    command: &str,
) -> String {
    let mut md = format!(
        "# Fig 9: stiffness vs dot-product distance, per space{}\n\nCommand: `{command}`\n\n\
         **Paper's claim:** stiffness falls with distance in every space, and deeper layers have smaller stiff \
         domains (the curve crosses zero at a smaller distance).\n\n",
        if cfg.quick { " (quick run)" } else { "" }
    );
    let Some((point, rho)) = point else {
        md.push_str(&format!("Run `{}` reached no threshold ({:?}): nothing to plot.\n", record.id, record.end));
        return md;
    };
    let curves: &[SpaceCurve] = &point.measurement.curves;
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
    md
}

/// Fig 10's verdict from the slope votes (up: larger domains at higher learning rate).
pub fn fig10_verdict(up: usize, down: usize) -> String {
    if up + down == 0 {
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
    }
}

/// Fig 10's `summary.md`.
pub fn fig10(cfg: &LrSweepConfig, dcells: &[DomainCell], verdict: &str, command: &str) -> String {
    let mut md = format!(
        "# Fig 10: stiff domain size vs learning rate{}\n\nCommand: `{command}`\n\n\
         **Paper's claim (v1):** higher learning rates give larger stiff domains; v2/v3 claim the opposite.\n\n\
         **This run:** {verdict}.\n\nStiff domain size = the dot-product distance at which sign stiffness first \
         crosses zero going outwards (v1), or the zero of a least-squares line (v3), measured at the lowest \
         training-loss threshold of each dataset. `–` = no crossing in any seed (see results.csv notes).\n\n\
         ![fig10](fig10.png)\n\n| dataset | method | space | lr | mean size | seeds without crossing |\n|---|---|---|---|---|---|\n",
        if cfg.quick { " (quick run)" } else { "" }
    );
    for c in dcells {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            c.dataset,
            c.method,
            c.space,
            c.lr,
            c.size.as_ref().map_or("–".into(), |m| format!("{:.3}", m.mean)),
            c.no_crossing
        );
    }
    md
}
