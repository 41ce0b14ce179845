//! Figures 8, 9 and 10, drawn from the records of the learning-rate sweep; the rows of
//! `results.csv` they share.

pub mod fig10;
pub mod fig8;
pub mod fig9;

use stiff_analysis::{Crossing, StiffnessKind};

use super::run::LrRunRecord;
use crate::measure::crossing_distance;
use crate::options::RunEnd;
use crate::tidy::Row;

pub(crate) const KINDS: [(StiffnessKind, &str); 2] = [(StiffnessKind::Sign, "sign"), (StiffnessKind::Cosine, "cosine")];

pub(crate) fn kind_label(kind: StiffnessKind) -> &'static str {
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

pub(crate) fn crossing_note(c: &Crossing) -> String {
    match c {
        Crossing::Found { .. } => String::new(),
        Crossing::StartsNegative { distance, value } => {
            format!("starts negative ({value:.3} at distance {distance:.3})")
        }
        Crossing::NeverCrosses { reason, .. } => format!("never crosses: {reason}"),
        Crossing::NoData { reason } => format!("no data: {reason}"),
    }
}
