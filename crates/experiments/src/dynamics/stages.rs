//! The four stages (init, early, late 1, late 2) of a class-matrix figure, picked from a run's
//! measured steps.

use serde::Serialize;

use super::config::StageRule;
use super::run::{DynPoint, DynRunRecord};

/// One of the four stages of a class-matrix figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// "init", "early", "late 1", "late 2".
    pub name: String,
    /// Index into the record's points.
    pub point: usize,
    /// The measured step.
    pub step: u64,
    /// The step the rule aimed at (the measured step is the nearest one).
    pub target_step: u64,
}

/// The four stages of `record` under `rule` (fewer when the run has fewer measured points).
pub fn stages(record: &DynRunRecord, rule: StageRule) -> Vec<Stage> {
    let Some(last) = record.points.last() else { return vec![] };
    let idx = |p: &DynPoint| record.points.iter().position(|q| q.step == p.step).unwrap_or(0);
    let run_len = last.step;
    let (early_t, late1_t) = match rule {
        StageRule::AroundOnset => {
            let l1 = record.onset.as_ref().map_or(run_len / 2, |o| o.best_step);
            // Early: training has clearly started, i.e. the training loss has covered a quarter of
            // its way from initialisation to late 1 (a fixed fraction of steps would land in the
            // initial plateau of plain SGD).
            let l1_loss = record.nearest_point(l1).map_or(f64::NAN, |p| p.train_loss);
            let l0_loss = record.points[0].train_loss;
            let goal = l0_loss - 0.25 * (l0_loss - l1_loss);
            let early = record
                .points
                .iter()
                .find(|p| p.step > 0 && p.step <= l1 && p.train_loss <= goal)
                .map_or((l1 / 10).max(1), |p| p.step);
            (early, l1)
        }
        StageRule::Fractions => (((run_len as f64) * 0.02).round().max(1.0) as u64, run_len / 2),
    };
    let mut out = Vec::new();
    for (name, target) in [("init", 0), ("early", early_t), ("late 1", late1_t), ("late 2", run_len)] {
        // Later stages never pick step 0 (init has it).
        let cands: Vec<&DynPoint> = record.points.iter().filter(|p| (target == 0) == (p.step == 0)).collect();
        let d = |s: u64| ((s as f64 + 1.0).ln() - (target as f64 + 1.0).ln()).abs();
        if let Some(p) = cands.into_iter().min_by(|a, b| d(a.step).total_cmp(&d(b.step))) {
            out.push(Stage { name: name.into(), point: idx(p), step: p.step, target_step: target });
        }
    }
    out
}
