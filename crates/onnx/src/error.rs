//! Errors of the ONNX front end: each names the file, node or tensor and the problem.

use std::path::PathBuf;

/// What went wrong reading or running an ONNX graph.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The model file (or an external data file) could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model (truncated, another format).
    #[error("{path}: not a readable ONNX model (truncated or another format): {problem}")]
    Decode {
        /// The model file.
        path: PathBuf,
        /// The decoder's message.
        problem: String,
    },
    /// The graph is valid protobuf but not a model this crate can run (no graph, bad opset,
    /// several inputs, an input without a tensor type).
    #[error("{path}: {problem}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// An initializer's data is missing, outside its external file, or of the wrong length.
    #[error("{path}: initializer `{tensor}`: {problem}")]
    Initializer {
        /// The model file (or the external data file).
        path: PathBuf,
        /// The initializer's name.
        tensor: String,
        /// What is wrong.
        problem: String,
    },
    /// An operator outside the supported set, found before any computation.
    #[error(
        "{path}: node {position} (`{node}`) is a `{op}`, which stiff-onnx does not support; supported: {supported}"
    )]
    UnsupportedOp {
        /// The model file.
        path: PathBuf,
        /// The op type (with its domain when not the default one).
        op: String,
        /// The node's name.
        node: String,
        /// The node's index in the graph (0-based).
        position: usize,
        /// The supported op types.
        supported: String,
    },
    /// A node's attributes or inputs are outside what is supported (a ceil-mode pool, a
    /// training-mode batch norm), or inconsistent with its inputs' shapes.
    #[error("node {position} (`{node}`, {op}): {problem}")]
    Node {
        /// The node's index.
        position: usize,
        /// The node's name.
        node: String,
        /// Its op type.
        op: String,
        /// What is wrong.
        problem: String,
    },
    /// `--weights` does not match the graph's parameters (names or shapes), or the override
    /// file is unreadable.
    #[error("{path}: {problem}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What differs.
        problem: String,
    },
    /// A `--trainable` pattern that is not a valid regular expression, or selects nothing.
    #[error("--trainable `{pattern}`: {problem}")]
    Trainable {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        problem: String,
    },
    /// The inputs do not fit the graph's declared input.
    #[error("inputs: {0}")]
    Input(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Result with [`OnnxError`].
pub type Result<T> = std::result::Result<T, OnnxError>;
