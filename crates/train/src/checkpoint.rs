//! Training checkpoints: one safetensors file holding the weights (the model's own keys), the
//! Adam moments (`optim.m.<key>`, `optim.v.<key>`) and, in the metadata, the model configuration
//! (`stiff.config`, so the weights also load with [`load_model`]), the training configuration
//! (`stiff.train_config`) and the loop state (`stiff.train_state`: step, epoch, position in the
//! epoch, update count, threshold and overfitting bookkeeping). Written atomically.

use std::collections::HashMap;
use std::path::Path;

use candle::{Device, Tensor};
use serde::{Deserialize, Serialize};
use stiff_models::io::{load_tensors, save_tensors_atomic, CONFIG_METADATA_KEY};
use stiff_models::{Model, ModelConfig};

use crate::{Result, TrainConfig, TrainError};

/// Metadata key of the JSON [`TrainConfig`].
pub const TRAIN_CONFIG_KEY: &str = "stiff.train_config";
/// Metadata key of the JSON [`TrainState`].
pub const TRAIN_STATE_KEY: &str = "stiff.train_state";
/// Metadata key of the checkpoint layout version ([`crate::SCHEMA_VERSION`], a decimal string;
/// absent in checkpoints written before versions, which load as before).
pub const SCHEMA_VERSION_KEY: &str = "stiff.schema_version";
const M_PREFIX: &str = "optim.m.";
const V_PREFIX: &str = "optim.v.";

/// Validation-loss bookkeeping for overfitting-onset detection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OverfitTracker {
    /// Lowest validation loss so far, its step, and the training loss measured with it.
    pub best_val: Option<f64>,
    /// Step of that best evaluation.
    pub best_step: u64,
    /// Training loss measured at that best evaluation.
    pub train_at_best: f64,
    /// Regular evaluations since the best one.
    pub evals_since_best: u32,
    /// Step at which the onset was declared.
    pub onset_step: Option<u64>,
}

/// Everything besides weights and moments that a resumed run needs to continue exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Current epoch (0-based) and the position of the next mini-batch in its order.
    pub epoch: u64,
    /// Position of the next mini-batch in the current epoch's order.
    pub pos: usize,
    /// Training examples seen (`step * batch_size`).
    pub images_seen: u64,
    /// Optimizer updates taken (Adam's `t`; equals `step`).
    pub updates: u64,
    /// Whether the step-0 evaluation and snapshots have been done.
    pub started: bool,
    /// Thresholds already crossed.
    pub thresholds_crossed: Vec<f64>,
    /// Overfitting-onset bookkeeping.
    pub overfit: OverfitTracker,
    /// Sum and count of mini-batch losses since the last evaluation.
    pub batch_loss_sum: f64,
    /// Number of mini-batch losses in `batch_loss_sum`.
    pub batch_loss_count: u64,
    /// Wall-clock seconds spent so far.
    pub elapsed_s: f64,
    /// The most recent mini-batch losses, oldest first ([`crate::ThresholdRule::RunningMean`]).
    #[serde(default)]
    pub recent_losses: std::collections::VecDeque<f64>,
    /// Threshold windows still taking snapshots.
    #[serde(default)]
    pub pending_windows: Vec<PendingWindow>,
}

/// A threshold window in progress: its next snapshot is `index`, due at step `due`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PendingWindow {
    /// The threshold whose crossing opened the window.
    pub threshold: f64,
    /// Index of the next snapshot of the window (1-based; the crossing itself is 0).
    pub index: u32,
    /// Step at which that snapshot is due.
    pub due: u64,
}

/// A loaded checkpoint.
#[derive(Debug)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The model with the checkpoint's weights.
    pub model: Model,
    /// The training configuration the run was started with.
    pub config: TrainConfig,
    /// Loop state to continue from.
    pub state: TrainState,
    /// Adam moments in [`Model::vars`] order (empty for SGD).
    pub m: Vec<Tensor>,
    /// Adam second moments in the same order (empty for SGD).
    pub v: Vec<Tensor>,
}

fn ck_err(path: &Path, msg: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), msg: msg.to_string() }
}

/// Writes a checkpoint atomically (temp file + rename).
pub fn save_checkpoint(
    path: &Path,
    model: &Model,
    m: &[Tensor],
    v: &[Tensor],
    config: &TrainConfig,
    state: &TrainState,
) -> Result<()> {
    let named = model.named_tensors();
    if !(m.is_empty() && v.is_empty()) && (m.len() != named.len() || v.len() != named.len()) {
        return Err(ck_err(path, format!("{} / {} moment tensors for {} parameters", m.len(), v.len(), named.len())));
    }
    let mut tensors = named.clone();
    for ((key, _), (mt, vt)) in named.iter().zip(m.iter().zip(v)) {
        tensors.push((format!("{M_PREFIX}{key}"), mt.clone()));
        tensors.push((format!("{V_PREFIX}{key}"), vt.clone()));
    }
    let json = |x: &dyn erased::Json| x.to_json().map_err(|e| ck_err(path, e));
    let meta = HashMap::from([
        (CONFIG_METADATA_KEY.to_string(), json(model.config())?),
        (TRAIN_CONFIG_KEY.to_string(), json(config)?),
        (TRAIN_STATE_KEY.to_string(), json(state)?),
        (SCHEMA_VERSION_KEY.to_string(), crate::SCHEMA_VERSION.to_string()),
    ]);
    Ok(save_tensors_atomic(&tensors, meta, path)?)
}

/// Reads a checkpoint written by [`save_checkpoint`]; tensors go to `device` in their stored dtype.
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint> {
    let (tensors, meta) = load_tensors(path, device)?;
    let get = |key: &str| meta.get(key).ok_or_else(|| ck_err(path, format!("missing `{key}` metadata")));
    if let Some(v) = meta.get(SCHEMA_VERSION_KEY) {
        match v.parse::<u32>() {
            Ok(v) if v <= crate::SCHEMA_VERSION => {}
            _ => {
                return Err(ck_err(
                    path,
                    format!("`{SCHEMA_VERSION_KEY}` is {v}; this build reads up to {}", crate::SCHEMA_VERSION),
                ))
            }
        }
    }
    let model_cfg: ModelConfig = serde_json::from_str(get(CONFIG_METADATA_KEY)?)
        .map_err(|e| ck_err(path, format!("bad `{CONFIG_METADATA_KEY}`: {e}")))?;
    let config: TrainConfig = serde_json::from_str(get(TRAIN_CONFIG_KEY)?)
        .map_err(|e| ck_err(path, format!("bad `{TRAIN_CONFIG_KEY}`: {e}")))?;
    let state: TrainState = serde_json::from_str(get(TRAIN_STATE_KEY)?)
        .map_err(|e| ck_err(path, format!("bad `{TRAIN_STATE_KEY}`: {e}")))?;
    let (mut optim, tensors): (HashMap<String, Tensor>, HashMap<String, Tensor>) =
        tensors.into_iter().partition(|(k, _)| k.starts_with("optim."));
    let dtype = tensors.values().next().map(|t| t.dtype()).ok_or_else(|| ck_err(path, "no parameters stored"))?;
    let model = Model::from_tensors(&model_cfg, tensors, path, dtype, device)?;
    let (mut m, mut v) = (Vec::new(), Vec::new());
    if !optim.is_empty() {
        for (key, _) in model.named_tensors() {
            let mut take = |prefix: &str| {
                optim.remove(&format!("{prefix}{key}")).ok_or_else(|| ck_err(path, format!("missing `{prefix}{key}`")))
            };
            m.push(take(M_PREFIX)?);
            v.push(take(V_PREFIX)?);
        }
        if let Some(k) = optim.keys().min() {
            return Err(ck_err(path, format!("unexpected tensor `{k}`")));
        }
    }
    Ok(Checkpoint { model, config, state, m, v })
}

/// Loads only the model from a training checkpoint (or from a plain [`Model::save`] file).
pub fn load_model(path: &Path, device: &Device) -> Result<Model> {
    let (mut tensors, meta) = load_tensors(path, device)?;
    tensors.retain(|k, _| !k.starts_with("optim."));
    let cfg_json = meta
        .get(CONFIG_METADATA_KEY)
        .ok_or_else(|| ck_err(path, format!("missing `{CONFIG_METADATA_KEY}` metadata")))?;
    let cfg: ModelConfig =
        serde_json::from_str(cfg_json).map_err(|e| ck_err(path, format!("bad `{CONFIG_METADATA_KEY}`: {e}")))?;
    let dtype = tensors.values().next().map(|t| t.dtype()).ok_or_else(|| ck_err(path, "no parameters stored"))?;
    Ok(Model::from_tensors(&cfg, tensors, path, dtype, device)?)
}

mod erased {
    /// Object-safe JSON serialisation for the metadata helper above.
    pub trait Json {
        fn to_json(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> serde_json::Result<String> {
            serde_json::to_string(self)
        }
    }
}
