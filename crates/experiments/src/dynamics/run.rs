//! One dynamics run: train for a fixed number of steps, measure stiffness at a schedule of
//! steps, log losses all along, detect the onset of overfitting.

use std::time::Instant;

use candle::{DType, Device};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use stiff_models::{Model, ModelConfig};
use stiff_train::{LabelledData, Metrics, Progress, SnapshotReason, Trainer};

use super::config::DynRunSpec;
use crate::measure::{measure, Measurement};
use crate::options::RunEnd;
use crate::prepare::Prepared;
use crate::Result;

/// Version of the dynamics run record layout.
pub const RECORD_VERSION: u32 = 1;
/// The onset of overfitting as the trainer detected it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Onset {
    /// The evaluation with the lowest validation loss before the detection (the marked onset).
    pub best_step: u64,
    /// Training examples seen at that evaluation.
    pub best_images_seen: u64,
    /// The step at which the onset was declared (`overfit_patience` evaluations later).
    pub detected_step: u64,
}

/// The state at one measured step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynPoint {
    /// Optimizer steps taken.
    pub step: u64,
    /// Training examples seen.
    pub images_seen: u64,
    /// Loss on the fixed training-evaluation subset.
    pub train_loss: f64,
    /// Accuracy on that subset.
    pub train_acc: f64,
    /// Validation loss.
    pub val_loss: Option<f64>,
    /// Validation accuracy.
    pub val_acc: Option<f64>,
    /// Stiffness measured at this step.
    pub measurement: Measurement,
}

/// A finished run, as stored in `runs/dynamics[-quick]/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynRunRecord {
    /// [`RECORD_VERSION`] of the record's layout.
    pub record_version: u32,
    /// Run id (`runs/<sweep>/<id>.json`).
    pub id: String,
    /// What was run.
    pub spec: DynRunSpec,
    /// `Completed` (ran its steps) or `Diverged`.
    pub end: RunEnd,
    /// Every evaluation (train/val loss), step 0 included.
    pub history: Vec<Metrics>,
    /// The measured steps, in order.
    pub points: Vec<DynPoint>,
    /// The overfitting onset, when detected.
    pub onset: Option<Onset>,
    /// Steps taken.
    pub steps: u64,
    /// Seconds spent training (measurements excluded).
    pub train_seconds: f64,
    /// Seconds spent measuring stiffness.
    pub measure_seconds: f64,
}

impl DynRunRecord {
    /// The measured point nearest `step` on a log scale (`step + 1` against `s + 1`), ties to the
    /// earlier one; `None` without points.
    pub fn nearest_point(&self, step: u64) -> Option<&DynPoint> {
        let d = |s: u64| ((s as f64 + 1.0).ln() - (step as f64 + 1.0).ln()).abs();
        self.points.iter().min_by(|a, b| d(a.step).total_cmp(&d(b.step)))
    }
}
/// Trains one spec on prepared data, measuring stiffness at every scheduled step.
pub fn run_one(spec: &DynRunSpec, data: &Prepared, device: &Device, bar: Option<ProgressBar>) -> Result<DynRunRecord> {
    let t0 = Instant::now();
    let cfg = ModelConfig::preset(spec.preset, data.input, data.num_classes());
    let model = Model::new(&cfg, spec.seed, DType::F32, device)?;
    let train_cfg = spec
        .train
        .train_config(spec.optimizer, spec.seed)
        .with_thresholds(vec![])
        .with_snapshot_steps(spec.schedule.clone())
        .with_overfit_patience(Some(spec.overfit_patience))
        .with_stop_at_overfit(false);
    let mut measure_seconds = 0.0;
    let mut points = Vec::new();
    let mut onset = None;
    let mut sink = |snap: &stiff_train::Snapshot<'_>| -> std::result::Result<(), stiff_train::SinkError> {
        match snap.reason {
            SnapshotReason::Step { .. } => {
                let tm = Instant::now();
                let m = measure(snap.model, &data.stiff_x, &data.stiff_y, data.num_classes(), &spec.measure)?;
                measure_seconds += tm.elapsed().as_secs_f64();
                points.push(DynPoint {
                    step: snap.step,
                    images_seen: snap.images_seen,
                    train_loss: snap.metrics.train_loss,
                    train_acc: snap.metrics.train_acc,
                    val_loss: snap.metrics.val_loss,
                    val_acc: snap.metrics.val_acc,
                    measurement: m,
                });
            }
            SnapshotReason::OverfittingOnset { best_step } => {
                onset = Some(Onset {
                    best_step,
                    best_images_seen: best_step * spec.train.batch_size as u64,
                    detected_step: snap.step,
                });
            }
            _ => {}
        }
        Ok(())
    };
    let labels = if spec.permute_labels {
        stiff_data::sampling::permuted_labels(&data.train_y, spec.seed)
    } else {
        data.train_y.clone()
    };
    let train = LabelledData::new(data.train_x.clone(), labels)?;
    let val_idx = stiff_train::eval_subset(data.val_y.len(), spec.train.train_eval_subset, 1);
    let val = LabelledData::new(data.val_x.clone(), data.val_y.clone())?.select(&val_idx, device)?;
    let progress = bar.map_or(Progress::Hidden, Progress::Bar);
    let report = Trainer::new(model, train_cfg)?.with_progress(progress).run(&train, Some(&val), &mut sink)?;
    let end = match report.status {
        stiff_train::RunStatus::Diverged { step, reason } => RunEnd::Diverged { step, reason },
        _ => RunEnd::Completed,
    };
    Ok(DynRunRecord {
        record_version: RECORD_VERSION,
        id: spec.id(),
        spec: spec.clone(),
        end,
        history: report.history,
        points,
        onset,
        steps: report.step,
        train_seconds: t0.elapsed().as_secs_f64() - measure_seconds,
        measure_seconds,
    })
}
