//! Safetensors checkpoints with PyTorch-compatible keys. The model configuration travels in the
//! file's metadata (`stiff.config`, JSON) so a checkpoint is self-describing; files written by
//! other tools (without it) load with an explicit configuration.

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Device, Tensor};

use crate::{Model, ModelConfig, ModelError, Result};

/// Metadata key holding the JSON [`ModelConfig`].
pub const CONFIG_METADATA_KEY: &str = "stiff.config";
/// Metadata key of the model-file layout version ([`MODEL_SCHEMA_VERSION`], a decimal string).
/// Files without it (written before it existed) read as version 1.
pub const SCHEMA_VERSION_METADATA_KEY: &str = "stiff.schema_version";
/// Version of the model files [`Model::save`] writes; [`Model::load`] refuses newer ones.
pub const MODEL_SCHEMA_VERSION: u32 = 1;

fn file_err(path: &Path, msg: impl std::fmt::Display) -> ModelError {
    ModelError::File { path: path.to_path_buf(), msg: msg.to_string() }
}

/// Writes named tensors (plus metadata) to `path` atomically: a temp file beside it, then rename.
/// Tensors are streamed (see [`write_safetensors`]), so a large `K` is not copied in memory.
pub fn save_tensors_atomic(tensors: &[(String, Tensor)], metadata: HashMap<String, String>, path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Io { path: dir.to_path_buf(), source: e })?;
    if path.file_name().is_none() {
        return Err(file_err(path, "not a file path"));
    }
    stiff_fs::write_atomic_with(path, |w| write_safetensors(w, tensors, &metadata))
        .map_err(|e| ModelError::Io { path: e.path, source: e.source })
}

/// Writes `tensors` and `metadata` to `w` in the safetensors format (readable by the
/// `safetensors` crate and PyTorch) without building the file in memory: the JSON header first,
/// then each tensor's bytes, streamed straight from host storage for contiguous f32/f64 CPU
/// tensors (other tensors are copied one at a time). GPU tensors are written from a CPU copy,
/// so they give the same bytes.
pub fn write_safetensors(
    w: &mut dyn std::io::Write,
    tensors: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> std::io::Result<()> {
    use safetensors::View;
    let bad = |e: candle::Error| std::io::Error::other(e.to_string());
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        let bytes = t
            .elem_count()
            .checked_mul(t.dtype().size_in_bytes())
            .ok_or_else(|| std::io::Error::other("tensor too large"))?;
        let entry = serde_json::json!({
            "dtype": serde_json::to_value(View::dtype(&t))?,
            "shape": t.dims(),
            "data_offsets": [offset, offset + bytes],
        });
        header.insert(name.clone(), entry);
        offset += bytes;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header))?;
    // The format pads the header with spaces to a multiple of 8 bytes.
    json.resize(json.len().div_ceil(8) * 8, b' ');
    w.write_all(&(json.len() as u64).to_le_bytes())?;
    w.write_all(&json)?;
    for (_, t) in tensors {
        let t = t.to_device(&Device::Cpu).map_err(bad)?.contiguous().map_err(bad)?;
        let (storage, layout) = t.storage_and_layout();
        let range = layout.contiguous_offsets();
        match (&*storage, range) {
            (candle::Storage::Cpu(candle::CpuStorage::F32(v)), Some((a, b))) => {
                for chunk in v[a..b].chunks(1 << 16) {
                    let buf: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
                    w.write_all(&buf)?;
                }
            }
            (candle::Storage::Cpu(candle::CpuStorage::F64(v)), Some((a, b))) => {
                for chunk in v[a..b].chunks(1 << 15) {
                    let buf: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
                    w.write_all(&buf)?;
                }
            }
            _ => {
                drop(storage);
                w.write_all(&View::data(&t))?;
            }
        }
    }
    Ok(())
}

/// Reads every tensor of a safetensors file and its metadata.
pub fn load_tensors(path: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        // The parser's own words ("header too small") mean nothing to someone who passed the
        // wrong file: say what the file is not first.
        file_err(path, format!("not a safetensors file ({} bytes; {e})", bytes.len()))
    })?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle::safetensors::load_buffer(&bytes, device).map_err(|e| file_err(path, e))?;
    Ok((tensors, metadata))
}

/// Checks that `t` (tensor `key` of file `path`) is a float tensor whose values are all finite;
/// the error names the file, the tensor and the first bad element. Scans in slices so a large
/// tensor on a GPU is not copied to the host whole.
pub fn check_float_finite(path: &Path, key: &str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(ModelError::NotFloat {
            path: path.to_path_buf(),
            key: key.to_string(),
            dtype: format!("{:?}", t.dtype()),
        });
    }
    const SLICE: usize = 1 << 20;
    let flat = t.flatten_all()?;
    let n = flat.elem_count();
    let mut start = 0;
    while start < n {
        let len = SLICE.min(n - start);
        let v = flat.narrow(0, start, len)?.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.to_vec1::<f64>()?;
        if let Some((i, &value)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(ModelError::NonFinite {
                path: path.to_path_buf(),
                key: key.to_string(),
                index: start + i,
                value,
            });
        }
        start += len;
    }
    Ok(())
}

/// Every tensor of a checkpoint must be a finite float tensor (sorted by name so the first error
/// reported does not depend on hash order).
fn check_weights(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let mut keys: Vec<&String> = tensors.keys().collect();
    keys.sort();
    keys.into_iter().try_for_each(|k| check_float_finite(path, k, &tensors[k]))
}

impl Model {
    /// Saves the parameters (keys as in the crate docs) and the configuration to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let cfg = serde_json::to_string(self.config()).map_err(|e| file_err(path, e))?;
        let meta = HashMap::from([
            (CONFIG_METADATA_KEY.to_string(), cfg),
            (SCHEMA_VERSION_METADATA_KEY.to_string(), MODEL_SCHEMA_VERSION.to_string()),
        ]);
        save_tensors_atomic(&self.named_tensors(), meta, path)
    }

    /// Loads a checkpoint written by [`Model::save`] (configuration from the metadata).
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let (tensors, meta) = load_tensors(path, device)?;
        if let Some(v) = meta.get(SCHEMA_VERSION_METADATA_KEY) {
            match v.parse::<u32>() {
                Ok(v) if v <= MODEL_SCHEMA_VERSION => {}
                _ => {
                    return Err(file_err(
                        path,
                        format!(
                            "`{SCHEMA_VERSION_METADATA_KEY}` is {v:?}; this build reads model files up to version \
                             {MODEL_SCHEMA_VERSION} (written by a newer stiffness?)"
                        ),
                    ))
                }
            }
        }
        check_weights(path, &tensors)?;
        let cfg_json =
            meta.get(CONFIG_METADATA_KEY).ok_or_else(|| ModelError::NoConfig { path: path.to_path_buf() })?;
        let cfg: ModelConfig = serde_json::from_str(cfg_json)
            .map_err(|e| file_err(path, format!("bad `{CONFIG_METADATA_KEY}` metadata: {e}")))?;
        Self::from_tensors(&cfg, tensors, path, dtype, device)
    }

    /// Loads parameters for a given configuration (e.g. a file written by PyTorch with the same keys).
    pub fn load_with_config(path: &Path, cfg: &ModelConfig, dtype: DType, device: &Device) -> Result<Self> {
        let (tensors, _) = load_tensors(path, device)?;
        check_weights(path, &tensors)?;
        Self::from_tensors(cfg, tensors, path, dtype, device)
    }
}
