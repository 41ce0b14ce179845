//! Weights of a spec model: key maps, reading checkpoint files, building and inspecting the parameters.

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::model::SpecModel;
use super::shapes::{ModelSpec, TensorRole};
use crate::error::SpecKeyError;
use crate::{ModelError, Result};

/// How file keys become spec keys: explicit renames (`from -> to`, applied first), then a
/// leading `module.` (DataParallel) is stripped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMap {
    /// File key to spec key.
    pub rename: HashMap<String, String>,
}

impl KeyMap {
    /// Reads `{"file key": "spec key", ...}` from a JSON file.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
        let rename: HashMap<String, String> = serde_json::from_str(&text).map_err(|e| ModelError::File {
            path: path.to_path_buf(),
            msg: format!("a key map must be a JSON object of strings: {}", crate::error::clip_quoted(&e.to_string())),
        })?;
        Ok(Self { rename })
    }

    /// The spec key of file key `key`: the rename if there is one, else `key` without a leading `module.`.
    pub fn apply(&self, key: &str) -> String {
        if let Some(k) = self.rename.get(key) {
            return k.clone();
        }
        key.strip_prefix("module.").map(str::to_string).unwrap_or_else(|| key.to_string())
    }
}

/// Reads every tensor of a safetensors file, or of a PyTorch `.pt`/`.pth` state dict (zip +
/// pickle, checked before anything is allocated; a checkpoint dict with a `state_dict` entry
/// works too). A malformed file gives [`ModelError::File`] saying what is wrong, never a panic.
pub fn read_weights(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext == "pt" || ext == "pth" || ext == "bin" {
        if !path.exists() {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let v = crate::pt::read(path)?;
        v.into_iter().map(|(k, t)| Ok((k, t.to_device(device)?))).collect()
    } else {
        Ok(crate::io::load_tensors(path, device)?.0)
    }
}

impl SpecModel {
    /// Fresh parameters: Linear/Conv2d weights and biases `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
    /// (PyTorch's default) from `ChaCha8Rng(seed)` in state-dict order; norm weights 1, biases 0;
    /// running mean 0, variance 1.
    pub fn new(spec: &ModelSpec, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        spec.shapes()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        for p in spec.tensors() {
            let n: usize = p.shape.iter().product();
            let v: Vec<f32> = match (p.fan_in, p.field) {
                (Some(f), _) => {
                    let b = 1.0 / (f as f32).sqrt();
                    (0..n).map(|_| rng.random_range(-b..b)).collect()
                }
                (None, "weight" | "running_var") => vec![1.0; n],
                _ => vec![0.0; n],
            };
            tensors.insert(p.key.clone(), Tensor::from_vec(v, p.shape.as_slice(), &Device::Cpu)?);
        }
        Self::from_tensors(spec, tensors, Path::new("<random init>"), &KeyMap::default(), dtype, device)
    }

    /// Builds the model from named tensors (file keys, mapped through `keys`). Every parameter and
    /// buffer must be present with the right shape and no other key may be (`num_batches_tracked`
    /// is ignored). Errors name `source`, the layer index and type, the key, and both shapes.
    pub fn from_tensors(
        spec: &ModelSpec,
        tensors: HashMap<String, Tensor>,
        source: &Path,
        keys: &KeyMap,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        spec.shapes()?;
        let mut mapped: HashMap<String, (String, Tensor)> = HashMap::new();
        for (k, t) in tensors {
            let to = keys.apply(&k);
            if let Some((prev, _)) = mapped.get(&to) {
                return Err(ModelError::File {
                    path: source.to_path_buf(),
                    msg: format!("keys `{prev}` and `{k}` both map to `{to}`"),
                });
            }
            mapped.insert(to, (k, t));
        }
        let mut params = Vec::new();
        let mut buffers = HashMap::new();
        for p in spec.tensors() {
            let layer = spec.layers[p.layer].type_name().to_string();
            let (file_key, t) = mapped.remove(&p.key).ok_or_else(|| {
                ModelError::SpecMissingKey(Box::new(SpecKeyError {
                    path: source.to_path_buf(),
                    index: p.layer,
                    layer: layer.clone(),
                    key: p.key.clone(),
                    expected: p.shape.clone(),
                    got: None,
                }))
            })?;
            if t.dims() != p.shape.as_slice() {
                return Err(ModelError::SpecShape(Box::new(SpecKeyError {
                    path: source.to_path_buf(),
                    index: p.layer,
                    layer,
                    key: file_key,
                    expected: p.shape.clone(),
                    got: Some(t.dims().to_vec()),
                })));
            }
            // The checks every model source gets (Model::load makes them for presets): a NaN
            // weight would give a NaN Gram, an integer one would be cast silently.
            crate::io::check_float_finite(source, &file_key, &t)?;
            let t = t.to_dtype(dtype)?.to_device(device)?;
            match p.role {
                TensorRole::Parameter => params.push((p.key.clone(), Var::from_tensor(&t)?)),
                TensorRole::Buffer => {
                    buffers.insert(p.key.clone(), t);
                }
            }
        }
        mapped.retain(|k, _| !k.ends_with(".num_batches_tracked"));
        if let Some((_, (file_key, _))) = mapped.into_iter().min_by(|a, b| a.0.cmp(&b.0)) {
            return Err(ModelError::UnexpectedKey { path: source.to_path_buf(), key: file_key });
        }
        Ok(Self { spec: spec.clone(), params, buffers })
    }

    /// Loads weights from a safetensors or `.pt`/`.pth` file (see [`read_weights`]).
    pub fn load(spec: &ModelSpec, path: &Path, keys: &KeyMap, dtype: DType, device: &Device) -> Result<Self> {
        let t = read_weights(path, device)?;
        Self::from_tensors(spec, t, path, keys, dtype, device)
    }

    /// The layer list.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// `(key, var)` of every parameter in `state_dict()` order.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Buffers (batch norm running statistics) by key.
    pub fn buffers(&self) -> &HashMap<String, Tensor> {
        &self.buffers
    }

    /// The parameter `"{layer}.{field}"`, if the layer has it.
    pub fn param(&self, layer: usize, field: &str) -> Option<&Var> {
        let key = format!("{layer}.{field}");
        self.params.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The buffer `"{layer}.{field}"`.
    pub fn buffer(&self, layer: usize, field: &str) -> Option<&Tensor> {
        self.buffers.get(&format!("{layer}.{field}"))
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The dtype of the stored tensors (f32 when there are none).
    pub fn dtype(&self) -> DType {
        self.buffers
            .values()
            .next()
            .map(|t| t.dtype())
            .or(self.params.first().map(|(_, v)| v.dtype()))
            .unwrap_or(DType::F32)
    }

    /// The device of the parameters (CPU when there are none).
    pub fn device(&self) -> Device {
        self.params.first().map(|(_, v)| v.device().clone()).unwrap_or(Device::Cpu)
    }

    /// An independent copy in another dtype (e.g. F64 for oracle checks).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let params = self
            .params
            .iter()
            .map(|(k, v)| Ok((k.clone(), Var::from_tensor(&v.as_tensor().to_dtype(dtype)?.copy()?)?)))
            .collect::<Result<Vec<_>>>()?;
        let buffers =
            self.buffers.iter().map(|(k, t)| Ok((k.clone(), t.to_dtype(dtype)?.copy()?))).collect::<Result<_>>()?;
        Ok(Self { spec: self.spec.clone(), params, buffers })
    }

    /// `(key, tensor)` of every parameter and buffer, `state_dict()` order (for saving).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.spec
            .tensors()
            .into_iter()
            .filter_map(|p| match p.role {
                TensorRole::Parameter => self.param(p.layer, p.field).map(|v| (p.key, v.as_tensor().clone())),
                TensorRole::Buffer => self.buffers.get(&p.key).map(|t| (p.key, t.clone())),
            })
            .collect()
    }
}
