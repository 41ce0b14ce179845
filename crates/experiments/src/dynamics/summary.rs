//! The prose of Figs 2-7 (`summary.md`), written from numbers the figure modules already
//! computed; nothing here computes a statistic.

use std::fmt::Write as _;

use stiff_analysis::BlockScore;

use super::config::{DynConfig, StageRule};
use super::model::{
    end_note, interval_text, steps_text, AcrossSeeds, CurvePoint, FallBack, StageClaims, StageMean, Traj,
};
use super::run::{DynPoint, DynRunRecord};

/// `value [lo, hi]` with the bootstrap interval when there is one.
pub(crate) fn fmt_ci(v: f64, ci: Option<(f64, f64)>) -> String {
    match ci {
        Some((lo, hi)) => format!("{v:.3} [{lo:.3}, {hi:.3}]"),
        None => format!("{v:.3}"),
    }
}

fn setup_text(cfg: &DynConfig, seeds: usize) -> String {
    format!(
        "Setup: {} on {}{}, {} with constant learning rate {}, batch {}, {} steps, seeds {:?}; training set: {}; \
         train/validation loss (mean cross-entropy on fixed {}-example subsets of the training and test splits) \
         every {} steps; stiffness on {} test examples (class-balanced, fixed seed) at steps {:?}; {}. Onset of overfitting: the best validation loss, once it \
         has not improved for {} evaluations while the training loss kept falling.",
        cfg.preset,
        cfg.dataset,
        if cfg.permute_labels { " with permuted training labels" } else { "" },
        cfg.optimizer.name(),
        cfg.lr,
        cfg.train.batch_size,
        cfg.train.max_steps,
        cfg.seeds,
        cfg.data.train_subset.map_or("all of the training split".into(), |n| format!(
            "a fixed class-balanced subset of {n} examples (so that the net overfits within minutes)"
        )),
        cfg.train.train_eval_subset,
        cfg.train.eval_every,
        cfg.data.stiffness_subset,
        cfg.schedule,
        interval_text(seeds, cfg.measure.bootstrap_reps),
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

/// `mean [lo, hi]` of a value over the seeds, `–` without one.
fn fmt_across(a: Option<&AcrossSeeds>) -> String {
    a.map_or("–".into(), |a| fmt_ci(a.mean, a.ci))
}

/// The measured-points table over the seeds.
fn points_table(curve: &[CurvePoint]) -> String {
    let mut s = String::from(
        "| step | images seen | seeds | train loss | val loss | within sign | between sign | within cosine | between cosine |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in curve {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.4} | {} | {} | {} | {} | {} |",
            c.step,
            c.images_seen,
            c.seeds,
            c.train_loss.mean,
            c.val_loss.as_ref().map_or("–".into(), |v| format!("{:.4}", v.mean)),
            fmt_across(c.sign_within.as_ref()),
            fmt_across(c.sign_between.as_ref()),
            fmt_across(c.cosine_within.as_ref()),
            fmt_across(c.cosine_between.as_ref()),
        );
    }
    s
}

/// "(mean over N seeds, 95% t-interval across seeds)" or "(one seed, 95% bootstrap interval)".
fn over_text(n: usize) -> String {
    if n >= 2 {
        format!("mean over {n} seeds, 95% Student-t interval across seeds")
    } else {
        "one seed, 95% bootstrap interval over examples".into()
    }
}

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "–",
    }
}

/// Fig 2's `summary.md`; `test`: the fall-back test over the seeds with an onset (`None`: no
/// seed has one); `per_seed`: the same test on each seed alone.
pub fn fig2(
    cfg: &DynConfig,
    records: &[DynRunRecord],
    test: Option<&[FallBack]>,
    per_seed: &[(String, Option<Vec<FallBack>>)],
    curve: &[CurvePoint],
    command: &str,
) -> String {
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
    let _ = writeln!(md, "{}\n", setup_text(cfg, records.len()));
    let no_onset: Vec<&str> = records.iter().filter(|r| r.onset.is_none()).map(|r| r.id.as_str()).collect();
    match test {
        None => {
            let _ =
                writeln!(md, "**Verdict:** no seed detected an onset of overfitting, so the claim cannot be tested.\n");
        }
        Some(t) => {
            let n = t.first().map_or(0, |f| f.onset_steps.len());
            let n_ok = t.iter().filter(|f| f.supported).count();
            let _ = writeln!(
                md,
                "**Verdict ({}):** onset of overfitting (lowest validation loss) at steps {:?}{}; stiffness falls back \
                 toward 0 after it in {n_ok} of {} cases ({}): {}.\n",
                over_text(n),
                t.first().map_or(vec![], |f| f.onset_steps.clone()),
                if no_onset.is_empty() { String::new() } else { format!(" (no onset, left out: {})", no_onset.join(", ")) },
                t.len(),
                if n >= 2 {
                    "the upper bound of |end| - |onset| across seeds is below 0"
                } else {
                    "|value at end| < |value at onset|, 95% bootstrap intervals disjoint"
                },
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
                "| kind | which | peak up to onset | at onset | at end | \\|end\\| - \\|onset\\| | end / onset | falls back |\n|---|---|---|---|---|---|---|---|"
            );
            for f in t {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.3} | {} | {} | {} | {:.2} | {} |",
                    f.kind,
                    f.which,
                    f.peak_before_onset,
                    fmt_ci(f.at_onset.mean, f.at_onset.ci),
                    fmt_ci(f.at_end.mean, f.at_end.ci),
                    fmt_ci(f.change.mean, f.change.ci),
                    f.ratio,
                    if f.supported { "yes" } else { "no" }
                );
            }
            let _ = writeln!(md);
        }
    }
    if records.len() >= 2 {
        let _ = writeln!(
            md,
            "Per seed (each with its own bootstrap intervals; the verdict above is the across-seed one):\n"
        );
        for (id, t) in per_seed {
            let text = t.as_ref().map_or("no onset detected".into(), |t| {
                format!(
                    "onset at step {}, falls back in {} of {} cases",
                    t.first().map_or(0, |f| f.onset_steps[0]),
                    t.iter().filter(|f| f.supported).count(),
                    t.len()
                )
            });
            let _ = writeln!(md, "* {id}: {text}");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "![fig2](fig2.png)\n");
    let _ = writeln!(md, "## Measured steps ({})\n\n{}", over_text(records.len()), points_table(curve));
    let _ = writeln!(md, "## Runs\n\n{}", runs_table(records));
    md
}

/// The `summary.md` of Figs 3-6 from the claims and stages over the seeds.
pub fn stages(
    cfg: &DynConfig,
    records: &[DynRunRecord],
    claims: &[StageClaims],
    means: &[StageMean],
    curve: &[CurvePoint],
    command: &str,
) -> String {
    let n = records.len();
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
                "**{} stiffness ({}):** largest between-class value after initialisation {:.4} at step {} (95% lower \
                 bound {}); a between-class value significantly above 0 develops at some measured step: {} → claim {}. \
                 Between-class at the end of the run: {} ({}).\n",
                c.kind,
                over_text(c.between_at_end.n),
                c.max_between_after_init,
                c.max_between_step,
                c.max_between_ci_lo.map_or("–".into(), |v| format!("{v:.4}")),
                yes_no(c.positive_between_develops),
                match c.positive_between_develops {
                    Some(false) => "supported",
                    Some(true) => "not supported",
                    None => "not testable (no intervals)",
                },
                fmt_ci(c.between_at_end.mean, c.between_at_end.ci),
                match c.between_at_end.ci {
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
            "Verdicts ({}): {}.\n",
            over_text(n),
            if n >= 2 {
                "within > 0 at init = lower bound > 0; between grows = lower bound of the per-seed growth late 1 - init > 0; \
                 regresses = upper bound of the per-seed change |late 2| - |late 1| < 0"
            } else {
                "within > 0 at init = bootstrap lower bound > 0; between grows = bootstrap intervals at init and late 1 \
                 disjoint; regresses = |late 2| < |late 1|"
            }
        );
        let _ = writeln!(
            md,
            "| kind | within at init | within > 0 at init | between growth init → late 1 | between grows | within change late 1 → late 2 | within regresses | between change late 1 → late 2 | between regresses |\n|---|---|---|---|---|---|---|---|---|"
        );
        for c in claims {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.kind,
                fmt_ci(c.within_at_init.mean, c.within_at_init.ci),
                yes_no(c.within_positive_at_init),
                fmt_ci(c.between_growth.mean, c.between_growth.ci),
                yes_no(c.between_grows),
                fmt_ci(c.within_change.mean, c.within_change.ci),
                yes_no(c.within_regresses),
                fmt_ci(c.between_change.mean, c.between_change.ci),
                yes_no(c.between_regresses),
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "{}\n", setup_text(cfg, n));
    let _ = writeln!(
        md,
        "Stages ({}), picked per seed. Heatmaps: cell-wise mean over the seeds of each seed's matrix at its own stage; \
         colour scale: one symmetric range per stiffness kind across the four stages, centred on 0.\n",
        match cfg.stage_rule {
            StageRule::AroundOnset =>
                "init = step 0; late 1 = the measured step nearest the onset of overfitting (middle of the run if none); early = the first measured step whose training loss has fallen a quarter of the way from its initial value to its value at late 1; late 2 = the last step",
            StageRule::Fractions => "init = step 0; early, late 1, late 2 = the measured steps nearest 2%, 50%, 100% of the run",
        },
    );
    let _ = writeln!(md, "![{0}]({0}.png)\n\n![over training]({0}_over_training.png)\n", cfg.figure);
    let _ = writeln!(md, "## Stages ({})\n", over_text(n));
    let _ = writeln!(
        md,
        "| stage | step (per seed) | train loss | val loss | within sign | between sign | within cosine | between cosine |\n|---|---|---|---|---|---|---|---|"
    );
    for s in means {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.stage,
            steps_text(&s.steps),
            s.train_loss.as_ref().map_or("–".into(), |v| format!("{:.4}", v.mean)),
            s.val_loss.as_ref().map_or("–".into(), |v| format!("{:.4}", v.mean)),
            fmt_across(s.sign_within.as_ref()),
            fmt_across(s.sign_between.as_ref()),
            fmt_across(s.cosine_within.as_ref()),
            fmt_across(s.cosine_between.as_ref()),
        );
    }
    let _ = writeln!(md, "\n## All measured steps ({})\n\n{}", over_text(n), points_table(curve));
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
    let _ = writeln!(md, "{}\n", setup_text(cfg, records.len()));
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
