use std::path::PathBuf;

/// Everything that can go wrong building, running, saving or loading a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A configuration that cannot be built (zero widths, a kernel larger than the input, ...).
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    /// A preset name that is none of fc6, fc4, cnn5, cnn4.
    #[error("unknown model preset `{}` (expected one of: fc6, fc4, cnn5, cnn4)", clip(.0, ECHO_MAX))]
    UnknownPreset(String),
    /// The input tensor's shape does not fit the model.
    #[error("input has shape {got:?} but the model expects (N, {expected})")]
    InputShape {
        /// The input's dims.
        got: Vec<usize>,
        /// What the model accepts per example, e.g. `1x28x28` or `784`.
        expected: String,
    },
    /// A parameter the architecture needs is not in the weights file.
    #[error("{path}: missing parameter `{key}`")]
    MissingKey {
        /// The weights file.
        path: PathBuf,
        /// The parameter the architecture needs.
        key: String,
    },
    /// A parameter in the weights file has another shape than the architecture needs.
    #[error("{path}: parameter `{key}` has shape {got:?}, the model expects {expected:?}")]
    WrongShape {
        /// The weights file.
        path: PathBuf,
        /// The parameter.
        key: String,
        /// Its shape in the file.
        got: Vec<usize>,
        /// The shape the architecture needs.
        expected: Vec<usize>,
    },
    /// The weights file holds a parameter the architecture does not have.
    #[error("{path}: unexpected parameter `{key}` (not part of this architecture)")]
    UnexpectedKey {
        /// The weights file.
        path: PathBuf,
        /// The key no layer uses.
        key: String,
    },
    /// A layer of a [`crate::ModelSpec`] that cannot be built.
    #[error("layer {index} ({layer}): {msg}")]
    SpecLayer {
        /// Layer index in the spec (0-based, as in `state_dict()` keys).
        index: usize,
        /// Layer type (PyTorch class name).
        layer: String,
        /// What is wrong.
        msg: String,
    },
    /// A spec parameter absent from the weights (`got` is `None`).
    #[error("{}: missing key `{}` for layer {} ({}), expected shape {:?}", .0.path.display(), .0.key, .0.index, .0.layer, .0.expected)]
    SpecMissingKey(Box<SpecKeyError>),
    /// A spec parameter with the wrong shape (`key` is the file's key).
    #[error("{}: key `{}` of layer {} ({}) has shape {:?}, expected {:?}", .0.path.display(), .0.key, .0.index, .0.layer, .0.got.as_deref().unwrap_or_default(), .0.expected)]
    SpecShape(Box<SpecKeyError>),
    /// A weights file without the `stiff.config` metadata, loaded without a configuration.
    #[error("{path}: no model configuration stored in the file metadata; pass the preset/config explicitly")]
    NoConfig {
        /// The weights file.
        path: PathBuf,
    },
    /// A file that cannot be read as what it should be (not safetensors, bad JSON, ...).
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A tensor that must hold floats holds another dtype (e.g. i32 weights).
    #[error("{path}: tensor `{key}` has dtype {dtype}, expected a float tensor (f16, bf16, f32 or f64)")]
    NotFloat {
        /// The file.
        path: PathBuf,
        /// The tensor.
        key: String,
        /// Its dtype as stored, e.g. `I32`.
        dtype: String,
    },
    /// A tensor holds NaN or an infinity.
    #[error("{path}: tensor `{key}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor.
        key: String,
        /// Flat (row-major) index of the first non-finite element.
        index: usize,
        /// That element (NaN or an infinity).
        value: f64,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A tensor operation failed (candle's own error).
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Details of a weight-file key that does not fit a [`crate::ModelSpec`] (boxed in [`ModelError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecKeyError {
    /// The weights file.
    pub path: PathBuf,
    /// Layer index in the spec.
    pub index: usize,
    /// Layer type (PyTorch class name).
    pub layer: String,
    /// The key as written in the file (after the key map).
    pub key: String,
    /// The shape the spec needs.
    pub expected: Vec<usize>,
    /// The shape in the file; `None` when the key is missing.
    pub got: Option<Vec<usize>>,
}

/// Longest user string an error echoes whole (a layer name, a key, a preset name).
pub(crate) const ECHO_MAX: usize = 80;

/// `s` cut to `max` characters plus `… (N bytes)`, so an error never echoes a huge user string whole.
pub(crate) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &s[..end], s.len()),
    }
}

/// `msg` with every backtick-quoted span (where serde quotes the offending input, e.g. an
/// unknown layer type) cut to [`ECHO_MAX`] characters, and the whole cut to a few lines.
pub(crate) fn clip_quoted(msg: &str) -> String {
    let parts: Vec<String> =
        msg.split('`').enumerate().map(|(i, p)| if i % 2 == 1 { clip(p, ECHO_MAX) } else { p.to_string() }).collect();
    clip(&parts.join("`"), 16 * ECHO_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_quoted_strings_are_cut() {
        let long = "A".repeat(1000);
        let msg = format!("unknown variant `{long}`, expected one of `Linear`, `ReLU` at line 1");
        let got = clip_quoted(&msg);
        assert!(got.contains(&format!("`{}… (1000 bytes)`", "A".repeat(ECHO_MAX))), "{got}");
        assert!(got.ends_with("expected one of `Linear`, `ReLU` at line 1"), "{got}");
        assert_eq!(clip("short", ECHO_MAX), "short");
        assert_eq!(clip("ééé", 2), "éé… (6 bytes)");
    }
}
