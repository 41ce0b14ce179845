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
    /// A spec parameter absent from the weights (`got` is `None`).
    #[error("{}: missing key `{}` for layer {} ({}), expected shape {:?}", .0.path.display(), .0.key, .0.index, .0.layer, .0.expected)]
    SpecMissingKey(Box<SpecKeyError>),
    /// A spec parameter with the wrong shape (`key` is the file's key).
    #[error("{}: key `{}` of layer {} ({}) has shape {:?}, expected {:?}", .0.path.display(), .0.key, .0.index, .0.layer, .0.got.as_deref().unwrap_or_default(), .0.expected)]
    SpecShape(Box<SpecKeyError>),
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

/// Details of a weight-file key that does not fit a [`crate::ModelSpec`] (boxed in [`ModelError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecKeyError {
    pub path: PathBuf,
    /// Layer index in the spec.
    pub index: usize,
    /// Layer type (PyTorch class name).
    pub layer: String,
    pub key: String,
    pub expected: Vec<usize>,
    pub got: Option<Vec<usize>>,
}
