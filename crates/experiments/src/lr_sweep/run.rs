//! One run of the learning-rate sweep: train until each loss threshold, measure there.

use std::time::Instant;

use candle::{DType, Device};
use serde::{Deserialize, Serialize};
use stiff_models::{Model, ModelConfig};
use stiff_train::{LabelledData, Progress, Trainer};

use super::config::LrRunSpec;
use crate::measure::{measure, Measurement};
use crate::options::RunEnd;
use crate::prepare::Prepared;
use crate::Result;

/// Version of the run record layout.
pub const RECORD_VERSION: u32 = 1;
/// The state at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdPoint {
    pub threshold: f64,
    pub step: u64,
    pub images_seen: u64,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    pub measurement: Measurement,
}

/// A finished run, as stored in `runs/<sweep>/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrRunRecord {
    pub record_version: u32,
    pub id: String,
    pub spec: LrRunSpec,
    pub end: RunEnd,
    /// Thresholds reached, in the order reached.
    pub points: Vec<ThresholdPoint>,
    pub steps: u64,
    pub train_seconds: f64,
    pub measure_seconds: f64,
}

impl LrRunRecord {
    pub fn point(&self, threshold: f64) -> Option<&ThresholdPoint> {
        self.points.iter().find(|p| p.threshold == threshold)
    }
}

/// Runs one spec on prepared data: trains, measures at each threshold, returns the record.
pub fn run_one(
    spec: &LrRunSpec,
    data: &Prepared,
    device: &Device,
    bar: Option<indicatif::ProgressBar>,
) -> Result<LrRunRecord> {
    let t0 = Instant::now();
    let cfg = ModelConfig::preset(spec.preset, data.input, data.num_classes());
    let model = Model::new(&cfg, spec.seed, DType::F32, device)?;
    let train_cfg = stiff_train::TrainConfig {
        optimizer: spec.optimizer,
        batch_size: spec.batch_size,
        seed: spec.seed,
        max_steps: spec.max_steps,
        eval_every: spec.eval_every,
        train_eval_subset: spec.train_eval_subset,
        thresholds: spec.thresholds.clone(),
        stop_at_last_threshold: true,
        overfit_patience: None,
        ..Default::default()
    };
    let mut measure_seconds = 0.0;
    let mut points = Vec::new();
    let mut sink = |snap: &stiff_train::Snapshot<'_>| -> std::result::Result<(), stiff_train::SinkError> {
        if let stiff_train::SnapshotReason::Threshold { threshold } = snap.reason {
            let tm = Instant::now();
            let m = measure(snap.model, &data.stiff_x, &data.stiff_y, data.num_classes(), &spec.measure)?;
            measure_seconds += tm.elapsed().as_secs_f64();
            points.push(ThresholdPoint {
                threshold,
                step: snap.step,
                images_seen: snap.images_seen,
                train_loss: snap.metrics.train_loss,
                val_loss: snap.metrics.val_loss,
                val_acc: snap.metrics.val_acc,
                measurement: m,
            });
        }
        Ok(())
    };
    let train = LabelledData::new(data.train_x.clone(), data.train_y.clone())?;
    // Validation loss on a fixed subset: the full split would cost more than the training itself.
    let val_idx = stiff_train::eval_subset(data.val_y.len(), spec.train_eval_subset, 1);
    let val = LabelledData::new(data.val_x.clone(), data.val_y.clone())?.select(&val_idx, device)?;
    let progress = bar.map_or(Progress::Hidden, Progress::Bar);
    let outcome = Trainer::new(model, train_cfg)?.with_progress(progress).run(&train, Some(&val), &mut sink)?;
    let end = match outcome.status {
        stiff_train::RunStatus::Diverged { step, reason } => RunEnd::Diverged { step, reason },
        _ if points.len() == spec.thresholds.len() => RunEnd::Completed,
        _ => RunEnd::StepBudget { steps: outcome.step },
    };
    Ok(LrRunRecord {
        record_version: RECORD_VERSION,
        id: spec.id(),
        spec: spec.clone(),
        end,
        points,
        steps: outcome.step,
        train_seconds: t0.elapsed().as_secs_f64() - measure_seconds,
        measure_seconds,
    })
}
