//! The prose of Figs 2-7 (`summary.md`), written from numbers the figure modules already
//! computed; nothing here computes a statistic.

use std::fmt::Write as _;

use stiff_analysis::BlockScore;

use super::config::{DynConfig, StageRule};
use super::figures::fig2::FallBack;
use super::figures::fig7::Traj;
use super::figures::stages::StageClaims;
use super::figures::{between_ci, end_note, within_ci};
use super::run::{DynPoint, DynRunRecord};
use super::stages::Stage;

/// `value [lo, hi]` with the bootstrap interval when there is one.
pub(crate) fn fmt_ci(v: f64, ci: Option<(f64, f64)>) -> String {
    match ci {
        Some((lo, hi)) => format!("{v:.3} [{lo:.3}, {hi:.3}]"),
        None => format!("{v:.3}"),
    }
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

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "–",
    }
}

/// Fig 2's `summary.md`; `tests`: the fall-back test per run (`None`: no onset detected).
pub fn fig2(
    cfg: &DynConfig,
    records: &[DynRunRecord],
    tests: &[(String, Option<Vec<FallBack>>)],
    command: &str,
) -> String {
    let r = &records[0];
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
    for (id, t) in tests {
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
    md
}

/// The `summary.md` of Figs 3-6; `st`: the stages of the first run.
pub fn stages(
    cfg: &DynConfig,
    records: &[DynRunRecord],
    claims: &[StageClaims],
    st: &[Stage],
    command: &str,
) -> String {
    let r = &records[0];
    let fig_no = cfg.figure.trim_start_matches("fig");
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
        for c in claims {
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
        for c in claims {
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
            StageRule::AroundOnset =>
                "init = step 0; late 1 = the measured step nearest the onset of overfitting (middle of the run if none); early = the first measured step whose training loss has fallen a quarter of the way from its initial value to its value at late 1; late 2 = the last step",
            StageRule::Fractions => "init = step 0; early, late 1, late 2 = the measured steps nearest 2%, 50%, 100% of the run",
        },
        st.iter().map(|s| format!("{} = step {}", s.name, s.step)).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(md, "![{0}]({0}.png)\n\n![over training]({0}_over_training.png)\n", cfg.figure);
    let _ = writeln!(md, "## Stages (run {})\n", r.id);
    let _ = writeln!(
        md,
        "| stage | step | train loss | val loss | within sign | between sign | within cosine | between cosine |\n|---|---|---|---|---|---|---|---|"
    );
    for s in st {
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
    md
}

/// Fig 7's `summary.md`: block scores at the focus point `p` (nearest step `focus`) and over training.
pub fn fig7(
    cfg: &DynConfig,
    records: &[DynRunRecord],
    focus_scores: &[(String, BlockScore)],
    p: &DynPoint,
    focus: u64,
    traj: &[Traj],
    command: &str,
) -> String {
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
    for (kname, b) in focus_scores {
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
    for t in traj {
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
            t.step, t.train_loss, t.sign, t.sign_p, t.cosine, t.cosine_p
        );
    }
    let _ = writeln!(md, "\n## Runs\n\n{}", runs_table(records));
    md
}
