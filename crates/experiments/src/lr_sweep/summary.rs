//! The prose of Figs 8-10 (`summary.md`, verdict lines), written from the numbers of
//! [`super::model`] that the figure modules computed; nothing here computes a statistic, and
//! nothing here imports a figure module (they import this one).

use std::fmt::Write as _;

use stiff_analysis::Crossing;

use super::config::LrSweepConfig;
use super::model::{
    cell_err, kind_label, test_text, Cell, DepthTrend, DomainCell, DomainTrend, LayerCell, Trend, KINDS,
};
use super::run::{LrRunRecord, ThresholdPoint};
use crate::measure::{crossing_distance, crossing_note, SpaceCurve};
use crate::options::RunEnd;

fn tally<'a>(verdicts: impl Iterator<Item = &'a str>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for v in verdicts {
        match counts.iter_mut().find(|c| c.0 == v) {
            Some(c) => c.1 += 1,
            None => counts.push((v, 1)),
        }
    }
    counts.iter().map(|(v, n)| format!("{v} in {n}")).collect::<Vec<_>>().join(", ")
}

/// Fig 8's headline: how many (dataset, kind, threshold) tests gave each verdict.
pub fn fig8_verdict(trends: &[Trend]) -> String {
    if trends.is_empty() {
        return "no verdict: no threshold reached".into();
    }
    format!(
        "Spearman permutation tests of between-class stiffness vs log learning rate over seeds (alpha 0.05): {} of {} (dataset, kind, threshold) cases",
        tally(trends.iter().map(|t| t.verdict)),
        trends.len()
    )
}

fn protocol_text(cfg: &LrSweepConfig) -> String {
    let rule = match cfg.threshold_rule {
        stiff_train::ThresholdRule::RunningMean { steps } => {
            format!("the running mean of the last {steps} mini-batch losses (checked after every step)")
        }
        stiff_train::ThresholdRule::Evaluated => format!(
            "the loss on a fixed {}-example training subset, evaluated every {} steps",
            cfg.train.train_eval_subset, cfg.train.eval_every
        ),
    };
    format!(
        "A threshold is crossed when {rule} first falls below it. Stiffness is then measured at {} snapshots {} steps \
         apart (the crossing first); a seed's value is their mean, and the within-window SD is reported beside the \
         seed SD.",
        cfg.window.count, cfg.window.every
    )
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
         examples (class-balanced, fixed seed). {} Intervals: {seeds_note}.\n",
        cfg.preset,
        cfg.datasets.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" and "),
        cfg.optimizer.name(),
        cfg.lrs,
        cfg.train.batch_size,
        cfg.seeds,
        cfg.data.stiffness_subset,
        protocol_text(cfg)
    );
    let _ = writeln!(md, "![fig8](fig8.png)\n");
    let _ = writeln!(
        md,
        "## Between-class stiffness\n\nmean ± 95% half-width (n seeds) [seed SD / mean within-window SD]; `–` = threshold not reached\n"
    );
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
                    let txt = match c.and_then(|c| c.between.as_ref().map(|m| (c, m, cell_err(c)))) {
                        Some((c, m, e)) => {
                            let pm = if e.is_finite() { format!(" ± {e:.4}") } else { String::new() };
                            format!(
                                " {:.4}{pm} (n={}) [{} / {}] |",
                                m.mean,
                                m.n,
                                fmt_opt(c.between_seed_sd, 4),
                                fmt_opt(c.between_window_sd, 4)
                            )
                        }
                        None => " – |".into(),
                    };
                    line.push_str(&txt);
                }
                let _ = writeln!(md, "{line}");
            }
            let _ = writeln!(md);
        }
    }
    let _ = writeln!(
        md,
        "## Trend with learning rate\n\nSpearman's rho between log10(lr) and the seed values, over every (lr, seed) \
         observation; two-sided permutation p-value. Verdict at alpha 0.05: rho > 0 supports v1, rho < 0 supports v2/v3.\n\n\
         | dataset | kind | threshold | test | slope per decade | verdict |\n|---|---|---|---|---|---|"
    );
    for t in trends {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            t.dataset,
            t.kind,
            t.threshold,
            test_text(t.test.as_ref()),
            fmt_opt(t.slope_per_decade, 4),
            t.verdict
        );
    }
    let _ = writeln!(md, "\n## Runs\n\n{}", run_status_table(records));
    md
}

fn run_status_table(records: &[LrRunRecord]) -> String {
    let mut s = String::from(
        "| run | end | steps | thresholds reached | window snapshots | train s | measure s |\n|---|---|---|---|---|---|---|\n",
    );
    for r in records {
        let end = match &r.end {
            RunEnd::Completed => "completed".into(),
            RunEnd::StepBudget { steps } => format!("out of steps ({steps})"),
            RunEnd::Diverged { step, reason } => format!("diverged at {step}: {reason}"),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} |",
            r.id,
            end,
            r.steps,
            r.points.iter().map(|p| p.threshold.to_string()).collect::<Vec<_>>().join(", "),
            r.points.iter().map(|p| p.window.len().to_string()).collect::<Vec<_>>().join(", "),
            r.train_seconds,
            r.measure_seconds
        );
    }
    s
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn fmt_median(m: Option<(f64, bool)>) -> String {
    match m {
        Some((v, true)) => format!("≥ {v:.3}"),
        Some((v, false)) => format!("{v:.3}"),
        None => "–".into(),
    }
}

/// Fig 9's `summary.md`: the drawn run's curves and the depth trend over every run.
pub fn fig9(
    cfg: &LrSweepConfig,
    record: &LrRunRecord,
    point: Option<&ThresholdPoint>,
    cells: &[LayerCell],
    trends: &[DepthTrend],
    command: &str,
) -> String {
    let mut md = format!(
        "# Fig 9: stiffness vs dot-product distance, per space{}\n\nCommand: `{command}`\n\n\
         **Paper's claim:** stiffness falls with distance in every space, and deeper layers have smaller stiff \
         domains (the curve crosses zero at a smaller distance).\n\n",
        if cfg.quick { " (quick run)" } else { "" }
    );
    let _ = writeln!(
        md,
        "**Depth trend** (censored Kendall tau of stiff domain size vs hidden-layer depth over every seed at the \
         learning rate closest to 0.1, each dataset's lowest threshold; permutation p, alpha 0.05; a curve that never \
         crosses zero is a censored observation at the last distance read):\n\n| scope | method | test | verdict |\n|---|---|---|---|"
    );
    for t in trends {
        let _ = writeln!(md, "| {} | {} | {} | {} |", t.scope, t.method, test_text(t.test.as_ref()), t.verdict);
    }
    let _ = writeln!(
        md,
        "\n| dataset | method | layer | median size (≥ = lower bound) | observations | censored | no data |\n|---|---|---|---|---|---|---|"
    );
    for c in cells {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            c.dataset,
            c.method,
            c.space,
            fmt_median(c.median),
            c.observations.len(),
            c.censored,
            c.no_data
        );
    }
    let Some(point) = point else {
        let _ = writeln!(md, "\nRun `{}` reached no threshold ({:?}): nothing to plot.", record.id, record.end);
        return md;
    };
    let curves: &[SpaceCurve] = super::figures::point_curves(point);
    let _ = writeln!(
        md,
        "\n**Drawn run** ({}, training loss {:.4} at step {}; curves pooled over {} window snapshots):\n",
        record.id,
        point.train_loss,
        point.step,
        point.window.len()
    );
    let _ = writeln!(md, "![fig9](fig9.png)\n");
    let _ = writeln!(md, "| space | sign: first crossing (v1) | sign: line-fit zero (v3) | cosine: first crossing | cosine: line-fit zero |\n|---|---|---|---|---|");
    for c in curves {
        let f = |x: &Crossing| crossing_distance(x).map_or_else(|| crossing_note(x, 3), |d| format!("{d:.3}"));
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
        "\nBins: {} equal bins over distance [{}, {}] (the paper gives none); crossings read only bins with at least {} \
         pairs and interpolate linearly between bin centres (v1) or take the zero of a least-squares line over the \
         pairs of the initial decline, from distance 0 to the curve's minimum (v3). v1's axis is the cosine, `1 - distance`.",
        b.bins, b.lo, b.hi, cfg.measure.min_pairs
    );
    md
}

/// Fig 10's headline, per method (v1 and v3 judged separately).
pub fn fig10_verdict(trends: &[DomainTrend]) -> String {
    let mut parts = Vec::new();
    for (method, _) in super::figures::METHODS {
        let sel: Vec<&DomainTrend> = trends.iter().filter(|t| t.method == method).collect();
        if sel.is_empty() {
            continue;
        }
        parts.push(format!(
            "{method}: {} of {} (dataset, space) cases",
            tally(sel.iter().map(|t| t.verdict)),
            sel.len()
        ));
    }
    if parts.is_empty() {
        "no verdict: no domain sizes".into()
    } else {
        format!(
            "censored Kendall permutation tests of domain size vs log learning rate (alpha 0.05); {}",
            parts.join("; ")
        )
    }
}

/// Fig 10's `summary.md`.
pub fn fig10(
    cfg: &LrSweepConfig,
    dcells: &[DomainCell],
    trends: &[DomainTrend],
    verdict: &str,
    command: &str,
) -> String {
    let mut md = format!(
        "# Fig 10: stiff domain size vs learning rate{}\n\nCommand: `{command}`\n\n\
         **Paper's claim (v1):** higher learning rates give larger stiff domains; v2/v3 claim the opposite.\n\n\
         **This run:** {verdict}.\n\nStiff domain size = the dot-product distance at which sign stiffness first \
         crosses zero going outwards (v1), or the zero of a least-squares line (v3), read from each seed's curves \
         pooled over its window of snapshots at the lowest training-loss threshold of each dataset, in bins with at \
         least {} pairs. A curve that never crosses zero is a censored observation (the domain is larger than the \
         last distance read): it enters the rank test as such, and a cell with censored seeds reports the median \
         (`≥` when it is only a lower bound) instead of a mean. `no data` = no bin had enough pairs.\n\n\
         ![fig10](fig10.png)\n\n## Trends\n\n| dataset | method | space | test | verdict |\n|---|---|---|---|---|\n",
        if cfg.quick { " (quick run)" } else { "" },
        cfg.measure.min_pairs
    );
    for t in trends {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            t.dataset,
            t.method,
            t.space,
            test_text(t.test.as_ref()),
            t.verdict
        );
    }
    let _ = writeln!(
        md,
        "\n## Sizes\n\n| dataset | method | space | lr | mean ± 95% (uncensored only) | median | n | censored | no data | not reached |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in dcells {
        let mean = c.mean.as_ref().map_or("–".into(), |m| match m.half_width {
            Some(h) => format!("{:.3} ± {h:.3}", m.mean),
            None => format!("{:.3}", m.mean),
        });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.dataset,
            c.method,
            c.space,
            c.lr,
            mean,
            fmt_median(c.median),
            c.observations.len(),
            c.censored,
            c.no_data,
            c.not_reached
        );
    }
    md
}
