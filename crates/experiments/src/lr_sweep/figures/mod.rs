//! Figures 8, 9 and 10, drawn from the records of the learning-rate sweep; the rows of
//! `results.csv` they share.

pub mod fig10;
pub mod fig8;
pub mod fig9;

use stiff_analysis::{Crossing, TrendTest, Verdict};

use super::model::KINDS;
use super::run::{LrRunRecord, ThresholdPoint};
use crate::measure::{crossing_distance, crossing_note, SpaceCurve};
use crate::options::RunEnd;
use crate::tidy::Row;

/// How a stiff domain size is read from a space's curve.
pub(crate) type Pick = fn(&SpaceCurve) -> &Crossing;
/// The two extraction methods, judged separately: v1 (first crossing), v3 (line-fit zero).
pub(crate) const METHODS: [(&str, Pick); 2] =
    [("first crossing (v1)", |c| &c.sign_first_crossing), ("line-fit zero (v3)", |c| &c.sign_fit_crossing)];

/// The curves a point's domain sizes are read from: the window's pooled curves, or the
/// crossing's own when the window holds none.
pub(crate) fn point_curves(p: &ThresholdPoint) -> &[SpaceCurve] {
    if p.pooled_curves.is_empty() {
        &p.measurement.curves
    } else {
        &p.pooled_curves
    }
}

/// The verdict of a trend whose increase is v1's claim: "supports v1", "supports v2/v3" or
/// "inconclusive" (also when no test could be made).
pub fn verdict_label(test: Option<&TrendTest>) -> &'static str {
    match test.map(|t| t.verdict) {
        Some(Verdict::Increasing) => "supports v1",
        Some(Verdict::Decreasing) => "supports v2/v3",
        _ => "inconclusive",
    }
}

/// Median of possibly right-censored observations `(value, censored)`, and whether it is only a
/// lower bound (a censored observation lies at or below it).
pub(crate) fn censored_median(obs: &[(f64, bool)]) -> Option<(f64, bool)> {
    if obs.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = obs.iter().map(|o| o.0).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    // A censored value at or below the upper middle element could move the median up.
    Some((med, obs.iter().any(|&(x, c)| c && x <= v[n / 2])))
}

/// Rows shared by every figure of the sweep: losses, class stiffness and stiff domain sizes.
pub fn tidy_rows(records: &[LrRunRecord]) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in records {
        let base = Row::for_run(
            &r.id,
            r.spec.dataset.to_string(),
            r.spec.optimizer.name(),
            r.spec.optimizer.lr(),
            r.spec.seed,
        );
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
            rows.push(at("smoothed_loss", p.smoothed_loss));
            rows.push(at("window_snapshots", Some(p.window.len() as f64)));
            for (kind, name) in KINDS {
                rows.push(at(&format!("within_{name}_stiffness_window_mean"), p.window_mean(kind, true)));
                rows.push(at(&format!("between_{name}_stiffness_window_mean"), p.window_mean(kind, false)));
                rows.push(at(&format!("between_{name}_window_sd"), p.window_sd(kind, false)));
            }
            for c in &p.pooled_curves {
                for (metric, crossing) in [
                    ("stiff_domain_sign_first_crossing_pooled", &c.sign_first_crossing),
                    ("stiff_domain_sign_linear_fit_pooled", &c.sign_fit_crossing),
                ] {
                    rows.push(Row {
                        space: c.space.clone(),
                        note: crossing_note(crossing, 3),
                        ..at(metric, crossing_distance(crossing))
                    });
                }
            }
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
                        note: crossing_note(crossing, 3),
                        ..at(metric, crossing_distance(crossing))
                    });
                }
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::censored_median;

    #[test]
    fn median_of_censored_observations_is_flagged_as_a_lower_bound_only_when_it_is_one() {
        assert_eq!(censored_median(&[]), None);
        // Censored above the median: the median is exact.
        assert_eq!(censored_median(&[(1.0, false), (2.0, false), (9.0, true)]), Some((2.0, false)));
        // Censored in the upper middle of an even count: the true median is larger.
        assert_eq!(censored_median(&[(0.2, false), (0.6, true)]), Some((0.4, true)));
        assert_eq!(censored_median(&[(0.5, true), (1.0, false), (3.0, false)]), Some((1.0, true)));
    }
}
