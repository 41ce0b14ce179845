//! One run of the learning-rate sweep: train until each loss threshold, measure there.

use std::time::Instant;

use candle::{DType, Device};
use serde::{Deserialize, Serialize};
use stiff_models::{Model, ModelConfig};
use stiff_train::{LabelledData, Progress, Trainer};

use super::config::LrRunSpec;
use stiff_analysis::StiffnessKind;

use crate::measure::{measure, KindSummary, MeasureSettings, Measurement, SpaceCurve};
use crate::options::RunEnd;
use crate::prepare::Prepared;
use crate::Result;

/// Version of the run record layout (2: windows of snapshots after each crossing).
pub const RECORD_VERSION: u32 = 2;

/// Class stiffness at one snapshot of a crossing's window (index 0 is the crossing itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSample {
    /// Position in the window (0: the crossing).
    pub index: u32,
    /// Step of the snapshot.
    pub step: u64,
    /// Loss on the fixed training-evaluation subset at this snapshot.
    pub train_loss: f64,
    /// Running mean of recent mini-batch losses (the crossing rule's quantity), when in use.
    pub smoothed_loss: Option<f64>,
    /// Within/between sign stiffness (no bootstrap interval: a window snapshot is a fast Gram).
    pub sign: KindSummary,
    /// Within/between cosine stiffness.
    pub cosine: KindSummary,
}

/// The state at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdPoint {
    /// The training-loss threshold.
    pub threshold: f64,
    /// Step of the crossing.
    pub step: u64,
    /// Training examples seen at the crossing.
    pub images_seen: u64,
    /// Loss on the fixed training-evaluation subset at the crossing.
    pub train_loss: f64,
    /// The running mean that crossed the threshold (`None` under the evaluated rule).
    pub smoothed_loss: Option<f64>,
    /// Validation loss at the crossing.
    pub val_loss: Option<f64>,
    /// Validation accuracy at the crossing.
    pub val_acc: Option<f64>,
    /// The full measurement at the crossing (bootstrap intervals, class matrices, curves).
    pub measurement: Measurement,
    /// Every snapshot of the window, the crossing first; shorter than the configured count only
    /// when the run ended (step budget, divergence) inside the window.
    pub window: Vec<WindowSample>,
    /// Per space: the distance curves of the window's snapshots pooled (bin moments summed),
    /// crossings read in bins with at least `min_pairs` pairs.
    pub pooled_curves: Vec<SpaceCurve>,
}

impl ThresholdPoint {
    /// The window's between-class (`within = false`) or within-class values of `kind`.
    pub fn window_values(&self, kind: StiffnessKind, within: bool) -> Vec<f64> {
        let pick = |w: &WindowSample| {
            let k = match kind {
                StiffnessKind::Sign => &w.sign,
                StiffnessKind::Cosine => &w.cosine,
            };
            if within {
                k.within
            } else {
                k.between
            }
        };
        self.window.iter().map(pick).filter(|v| v.is_finite()).collect()
    }

    /// Mean over the window (the value a seed contributes to Fig 8).
    pub fn window_mean(&self, kind: StiffnessKind, within: bool) -> Option<f64> {
        let v = self.window_values(kind, within);
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// Sample standard deviation over the window (`None` below two snapshots).
    pub fn window_sd(&self, kind: StiffnessKind, within: bool) -> Option<f64> {
        let v = self.window_values(kind, within);
        if v.len() < 2 {
            return None;
        }
        let m = v.iter().sum::<f64>() / v.len() as f64;
        Some((v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt())
    }
}

/// A finished run, as stored in `runs/<sweep>/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrRunRecord {
    /// [`RECORD_VERSION`] of the record's layout.
    pub record_version: u32,
    /// Run id (`runs/<sweep>/<id>.json`).
    pub id: String,
    /// What was run.
    pub spec: LrRunSpec,
    /// How it ended.
    pub end: RunEnd,
    /// Thresholds reached, in the order reached.
    pub points: Vec<ThresholdPoint>,
    /// Steps taken.
    pub steps: u64,
    /// Seconds spent training (measurements excluded).
    pub train_seconds: f64,
    /// Seconds spent measuring stiffness.
    pub measure_seconds: f64,
}

impl LrRunRecord {
    /// The crossing of `threshold`, if the run reached it.
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
    let train_cfg = spec
        .train
        .train_config(spec.optimizer, spec.seed)
        .with_thresholds(spec.thresholds.clone())
        .with_stop_at_last_threshold(true)
        .with_overfit_patience(None)
        .with_threshold_rule(spec.threshold_rule)
        .with_threshold_window(Some(spec.window));
    let mut measure_seconds = 0.0;
    let mut points: Vec<ThresholdPoint> = Vec::new();
    // Per point: the curves of each window snapshot, pooled once the run ends.
    let mut window_curves: Vec<Vec<Vec<SpaceCurve>>> = Vec::new();
    // Window snapshots skip the bootstrap: their spread is read across the window instead.
    let fast = MeasureSettings { bootstrap_reps: 0, ..spec.measure.clone() };
    let mut sink = |snap: &stiff_train::Snapshot<'_>| -> std::result::Result<(), stiff_train::SinkError> {
        let (threshold, index) = match snap.reason {
            stiff_train::SnapshotReason::Threshold { threshold } => (threshold, 0),
            stiff_train::SnapshotReason::ThresholdWindow { threshold, index } => (threshold, index),
            _ => return Ok(()),
        };
        let tm = Instant::now();
        let settings = if index == 0 { &spec.measure } else { &fast };
        let m = measure(snap.model, &data.stiff_x, &data.stiff_y, data.num_classes(), settings)?;
        measure_seconds += tm.elapsed().as_secs_f64();
        let sample = WindowSample {
            index,
            step: snap.step,
            train_loss: snap.metrics.train_loss,
            smoothed_loss: snap.smoothed_loss,
            sign: KindSummary { ci: None, ..m.sign.clone() },
            cosine: KindSummary { ci: None, ..m.cosine.clone() },
        };
        if index == 0 {
            window_curves.push(vec![m.curves.clone()]);
            points.push(ThresholdPoint {
                threshold,
                step: snap.step,
                images_seen: snap.images_seen,
                train_loss: snap.metrics.train_loss,
                smoothed_loss: snap.smoothed_loss,
                val_loss: snap.metrics.val_loss,
                val_acc: snap.metrics.val_acc,
                measurement: m,
                window: vec![sample],
                pooled_curves: vec![],
            });
        } else if let Some(i) = points.iter().position(|p| p.threshold == threshold) {
            points[i].window.push(sample);
            window_curves[i].push(m.curves);
        }
        Ok(())
    };
    let train = LabelledData::new(data.train_x.clone(), data.train_y.clone())?;
    // Validation loss on a fixed subset: the full split would cost more than the training itself.
    let val_idx = stiff_train::eval_subset(data.val_y.len(), spec.train.train_eval_subset, 1);
    let val = LabelledData::new(data.val_x.clone(), data.val_y.clone())?.select(&val_idx, device)?;
    let progress = bar.map_or(Progress::Hidden, Progress::Bar);
    let outcome = Trainer::new(model, train_cfg)?.with_progress(progress).run(&train, Some(&val), &mut sink)?;
    for (p, snaps) in points.iter_mut().zip(&window_curves) {
        let spaces = snaps.first().map_or(0, Vec::len);
        p.pooled_curves = (0..spaces)
            .filter_map(|s| {
                let per: Vec<&SpaceCurve> = snaps.iter().filter_map(|c| c.get(s)).collect();
                SpaceCurve::pooled(&per, spec.measure.min_pairs)
            })
            .collect();
    }
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
