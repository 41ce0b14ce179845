//! One spherical run: generate the data, train until the loss threshold (or the budget), measure.

use std::time::Instant;

use candle::{DType, Device};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use stiff_analysis::{distance_curve, BinSpec, Crossing, DistanceCurve, PairFilter, StiffnessKind, StiffnessSettings};
use stiff_data::synthetic::generate;
use stiff_models::{ArchSpec, InputShape, Model, ModelConfig};
use stiff_train::{LabelledData, Progress, Trainer};

use super::config::SphRunSpec;
use crate::measure::{measure, Measurement};
use crate::{ExperimentError, Result};

/// Version of the run record layout.
pub const RECORD_VERSION: u32 = 1;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SphEnd {
    /// The training loss fell below the threshold; measured there.
    Fitted,
    /// The step budget ran out first; measured at the end, flagged.
    NotFitted {
        /// Steps taken.
        steps: u64,
    },
    /// Non-finite loss or exploding weights; not measured.
    Diverged {
        /// Step at which divergence was detected.
        step: u64,
        /// What diverged.
        reason: String,
    },
}

/// A finished run (`runs/<sweep>/<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SphRunRecord {
    /// [`RECORD_VERSION`] of the record's layout.
    pub record_version: u32,
    /// Run id.
    pub id: String,
    /// What was run.
    pub spec: SphRunSpec,
    /// How it ended.
    pub end: SphEnd,
    /// Steps when measured (or when the run ended, if diverged).
    pub step: u64,
    /// Loss on the training-evaluation subset when measured.
    pub train_loss: Option<f64>,
    /// Accuracy on that subset.
    pub train_acc: Option<f64>,
    /// Validation loss.
    pub val_loss: Option<f64>,
    /// Validation accuracy.
    pub val_acc: Option<f64>,
    /// Share of positive labels in the training split (sign labels need not be balanced for even l).
    pub positive_fraction: f64,
    /// Stiffness measurement (`None` for a diverged run).
    pub measurement: Option<Measurement>,
    /// Label agreement `s_i s_j` (`s = +-1`) vs input distance over the stiffness subset: the
    /// reference the input-space stiffness curve is compared with (independent of the network).
    pub label_curve: DistanceCurve,
    /// Its first zero crossing: beyond it two points more often have different labels.
    pub label_crossing: Crossing,
    /// Seconds spent training.
    pub train_seconds: f64,
    /// Seconds spent measuring stiffness.
    pub measure_seconds: f64,
}

impl SphRunRecord {
    /// Whether the run fitted its target.
    pub fn fitted(&self) -> bool {
        matches!(self.end, SphEnd::Fitted)
    }
}

/// Runs one spec: generates its data, trains, measures, returns the record.
pub fn run_one(spec: &SphRunSpec, device: &Device, bar: Option<ProgressBar>) -> Result<SphRunRecord> {
    let t0 = Instant::now();
    let ds = generate(&spec.data)?;
    let k = ds.num_classes();
    let (c, h, w) = ds.input_shape();
    let cfg = ModelConfig::new(ArchSpec::Mlp { hidden: spec.hidden.clone() }, InputShape::new(c, h, w), k);
    let model = Model::new(&cfg, spec.seed, DType::F32, device)?;
    let train_x = ds.train.images.to_device(device)?;
    let val_x = ds.test.images.to_device(device)?;
    let m = spec.stiffness_subset.min(ds.test.len());
    let stiff_x = val_x.narrow(0, 0, m)?;
    let stiff_y: Vec<u32> = ds.test.labels[..m].to_vec();
    let label_curve = label_agreement_curve(&stiff_x, &stiff_y, &spec.measure.bins)?;
    let label_crossing = label_curve.first_zero_crossing(StiffnessKind::Sign);
    let train_cfg = spec
        .train
        .train_config(spec.optimizer, spec.seed)
        .with_thresholds(vec![spec.loss_threshold])
        .with_stop_at_last_threshold(true)
        .with_overfit_patience(None);
    struct Taken {
        fitted: bool,
        step: u64,
        metrics: stiff_train::Metrics,
        measurement: Measurement,
    }
    let mut taken: Option<Taken> = None;
    let mut measure_seconds = 0.0;
    let mut sink = |snap: &stiff_train::Snapshot<'_>| -> std::result::Result<(), stiff_train::SinkError> {
        let fitted = match snap.reason {
            stiff_train::SnapshotReason::Threshold { .. } => true,
            // The final snapshot follows the threshold one in a fitted run; measure it only when
            // the threshold was never reached.
            stiff_train::SnapshotReason::Final if taken.is_none() => false,
            _ => return Ok(()),
        };
        let tm = Instant::now();
        let measurement = measure(snap.model, &stiff_x, &stiff_y, k, &spec.measure)?;
        measure_seconds += tm.elapsed().as_secs_f64();
        taken = Some(Taken { fitted, step: snap.step, metrics: snap.metrics.clone(), measurement });
        Ok(())
    };
    let train = LabelledData::new(train_x, ds.train.labels.clone())?;
    let val_idx = stiff_train::eval_subset(ds.test.len(), spec.train.train_eval_subset, 1);
    let val = LabelledData::new(val_x, ds.test.labels.clone())?.select(&val_idx, device)?;
    let progress = bar.map_or(Progress::Hidden, Progress::Bar);
    let outcome = Trainer::new(model, train_cfg)?.with_progress(progress).run(&train, Some(&val), &mut sink)?;
    let positive_fraction = ds.train.labels.iter().filter(|&&l| l == 1).count() as f64 / ds.train.len().max(1) as f64;
    let last = outcome.history.last();
    let (end, step, metrics, measurement) = match (outcome.status, taken) {
        (stiff_train::RunStatus::Diverged { step, reason }, _) => {
            (SphEnd::Diverged { step, reason }, step, last.cloned(), None)
        }
        (_, Some(t)) => {
            let end = if t.fitted { SphEnd::Fitted } else { SphEnd::NotFitted { steps: outcome.step } };
            (end, t.step, Some(t.metrics), Some(t.measurement))
        }
        (_, None) => {
            return Err(ExperimentError::Format(format!(
                "run {}: training ended without a final snapshot (nothing measured)",
                spec.id()
            )))
        }
    };
    Ok(SphRunRecord {
        record_version: RECORD_VERSION,
        id: spec.id(),
        spec: spec.clone(),
        end,
        step,
        train_loss: metrics.as_ref().map(|m| m.train_loss),
        train_acc: metrics.as_ref().map(|m| m.train_acc),
        val_loss: metrics.as_ref().and_then(|m| m.val_loss),
        val_acc: metrics.as_ref().and_then(|m| m.val_acc),
        positive_fraction,
        measurement,
        label_curve,
        label_crossing,
        train_seconds: t0.elapsed().as_secs_f64() - measure_seconds,
        measure_seconds,
    })
}

/// Label agreement vs input distance, through the stiffness machinery: with the "Gram"
/// `K = s s^T` (`s_i = +1` for class 1, `-1` for class 0), sign and cosine stiffness of a pair are
/// both `s_i s_j`. For 2-class cross-entropy, `g_i . g_j = s_i s_j |r_i r_j| (grad z_i . grad z_j)`
/// (`r` the residual, `z` the logit difference), so input-space sign stiffness equals label
/// agreement wherever the tangent kernel `grad z_i . grad z_j` is positive.
///
/// * `x`: `(N, 1, 1, d)` inputs, `labels`: `(N)` in {0, 1}.
pub fn label_agreement_curve(x: &candle::Tensor, labels: &[u32], bins: &BinSpec) -> Result<DistanceCurve> {
    let s: Vec<f64> = labels.iter().map(|&l| if l == 1 { 1.0 } else { -1.0 }).collect();
    let k = ndarray::Array2::from_shape_fn((s.len(), s.len()), |(i, j)| s[i] * s[j]);
    let reps = crate::measure::to_array2_f32(x)?;
    let curve = distance_curve(k.view(), reps.view(), labels, PairFilter::All, bins, &StiffnessSettings::default())?;
    Ok(curve.with_space("input"))
}

/// Input-space distance `1 - cos(theta)` to the angle `theta` in radians.
pub fn distance_to_angle(d: f64) -> f64 {
    (1.0 - d).clamp(-1.0, 1.0).acos()
}
