use std::path::PathBuf;

/// Everything that can go wrong building, running, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    #[error("unknown model preset `{0}` (expected one of: fc6, fc4, cnn5, cnn4)")]
    UnknownPreset(String),
    #[error("input has shape {got:?} but the model expects (N, {expected})")]
    InputShape { got: Vec<usize>, expected: String },
    #[error("{path}: missing parameter `{key}`")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: parameter `{key}` has shape {got:?}, the model expects {expected:?}")]
    WrongShape { path: PathBuf, key: String, got: Vec<usize>, expected: Vec<usize> },
    #[error("{path}: unexpected parameter `{key}` (not part of this architecture)")]
    UnexpectedKey { path: PathBuf, key: String },
    #[error("layer {index} ({layer}): {msg}")]
    SpecLayer { index: usize, layer: String, msg: String },
    #[error("{path}: missing key `{key}` for layer {index} ({layer}), expected shape {expected:?}")]
    SpecMissingKey { path: PathBuf, index: usize, layer: String, key: String, expected: Vec<usize> },
    #[error("{path}: key `{key}` of layer {index} ({layer}) has shape {got:?}, expected {expected:?}")]
    SpecShape { path: PathBuf, index: usize, layer: String, key: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("{path}: no model configuration stored in the file metadata; pass the preset/config explicitly")]
    NoConfig { path: PathBuf },
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    /// A tensor that must hold floats holds another dtype (e.g. i32 weights).
    #[error("{path}: tensor `{key}` has dtype {dtype}, expected a float tensor (f16, bf16, f32 or f64)")]
    NotFloat { path: PathBuf, key: String, dtype: String },
    /// A tensor holds NaN or an infinity.
    #[error("{path}: tensor `{key}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite { path: PathBuf, key: String, index: usize, value: f64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Candle(#[from] candle::Error),
}
