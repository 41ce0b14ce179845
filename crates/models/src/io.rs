//! Safetensors checkpoints with PyTorch-compatible keys. The model configuration travels in the
//! file's metadata (`stiff.config`, JSON) so a checkpoint is self-describing; files written by
//! other tools (without it) load with an explicit configuration.

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Device, Tensor};

use crate::{Model, ModelConfig, ModelError, Result};

/// Metadata key holding the JSON [`ModelConfig`].
pub const CONFIG_METADATA_KEY: &str = "stiff.config";

fn file_err(path: &Path, msg: impl std::fmt::Display) -> ModelError {
    ModelError::File { path: path.to_path_buf(), msg: msg.to_string() }
}

/// Writes named tensors (plus metadata) to `path` atomically: a temp file beside it, then rename.
pub fn save_tensors_atomic(tensors: &[(String, Tensor)], metadata: HashMap<String, String>, path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Io { path: dir.to_path_buf(), source: e })?;
    if path.file_name().is_none() {
        return Err(file_err(path, "not a file path"));
    }
    // Serialise from CPU copies so a GPU model saves the same bytes.
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(cpu, Some(metadata)).map_err(|e| file_err(path, e))?;
    stiff_fs::write_atomic(path, &bytes).map_err(|e| ModelError::Io { path: e.path, source: e.source })
}

/// Reads every tensor of a safetensors file and its metadata.
pub fn load_tensors(path: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| file_err(path, e))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle::safetensors::load_buffer(&bytes, device).map_err(|e| file_err(path, e))?;
    Ok((tensors, metadata))
}

impl Model {
    /// Saves the parameters (keys as in the crate docs) and the configuration to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let cfg = serde_json::to_string(self.config()).map_err(|e| file_err(path, e))?;
        let meta = HashMap::from([(CONFIG_METADATA_KEY.to_string(), cfg)]);
        save_tensors_atomic(&self.named_tensors(), meta, path)
    }

    /// Loads a checkpoint written by [`Model::save`] (configuration from the metadata).
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let (tensors, meta) = load_tensors(path, device)?;
        let cfg_json =
            meta.get(CONFIG_METADATA_KEY).ok_or_else(|| ModelError::NoConfig { path: path.to_path_buf() })?;
        let cfg: ModelConfig = serde_json::from_str(cfg_json)
            .map_err(|e| file_err(path, format!("bad `{CONFIG_METADATA_KEY}` metadata: {e}")))?;
        Self::from_tensors(&cfg, tensors, path, dtype, device)
    }

    /// Loads parameters for a given configuration (e.g. a file written by PyTorch with the same keys).
    pub fn load_with_config(path: &Path, cfg: &ModelConfig, dtype: DType, device: &Device) -> Result<Self> {
        let (tensors, _) = load_tensors(path, device)?;
        Self::from_tensors(cfg, tensors, path, dtype, device)
    }
}
