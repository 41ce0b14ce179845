//! What a cross job computes on: each side's examples with labels, checked when built, and the
//! model's identity.

use std::path::Path;

use candle::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{CrossError, Result};

/// One side of the cross Gram: examples with labels.
#[derive(Debug, Clone)]
pub struct ExampleSet {
    /// Human-readable origin, e.g. `mnist train (60000)`.
    pub name: String,
    /// `(N, ...)` float inputs (moved to the CPU), in any shape and dtype the model accepts.
    pub x: Tensor,
    /// `(N)` class labels.
    pub labels: Vec<u32>,
    /// `(N)` index of each example in its source (split or inputs file), for reports.
    pub ids: Vec<usize>,
}

impl ExampleSet {
    /// Checks that `x` has N rows matching `labels` and `ids`, N > 0.
    pub fn new(name: impl Into<String>, x: Tensor, labels: Vec<u32>, ids: Vec<usize>) -> Result<Self> {
        let name = name.into();
        let n = x.dims().first().copied().unwrap_or(0);
        if x.rank() < 2 || n == 0 {
            return Err(CrossError::Invalid {
                what: "example set",
                reason: format!("{name}: x must be (N, ...) with N > 0, got {:?}", x.dims()),
            });
        }
        if labels.len() != n || ids.len() != n {
            return Err(CrossError::Invalid {
                what: "example set",
                reason: format!("{name}: {n} inputs but {} labels and {} ids", labels.len(), ids.len()),
            });
        }
        if !x.dtype().is_float() {
            return Err(CrossError::Invalid {
                what: "example set",
                reason: format!("{name}: x must be a float tensor, got {:?}", x.dtype()),
            });
        }
        let x = x.to_device(&Device::Cpu)?;
        check_finite(&name, &x)?;
        Ok(Self { name, x, labels, ids })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always false (an example set is never empty).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// SHA-256 over shape, inputs (f32 little-endian) and labels: identifies the data in the plan.
    pub fn fingerprint(&self) -> Result<String> {
        let mut h = Sha256::new();
        h.update(format!("{:?} {:?}", self.x.dtype(), self.x.dims()).as_bytes());
        if self.x.dtype() == DType::F64 {
            for v in self.x.flatten_all()?.to_vec1::<f64>()? {
                h.update(v.to_le_bytes());
            }
        } else {
            for v in self.x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()? {
                h.update(v.to_le_bytes());
            }
        }
        for l in &self.labels {
            h.update(l.to_le_bytes());
        }
        Ok(hex::encode(h.finalize()))
    }
}

/// Refuses a non-finite input before any tile is computed (it would make every Gram entry of
/// its row and column NaN), naming the set (its file) and the example. Scans in row blocks so
/// no full copy of a large set is made.
fn check_finite(name: &str, x: &Tensor) -> Result<()> {
    const BLOCK_VALUES: usize = 1 << 20;
    let n = x.dim(0)?;
    let per = x.elem_count() / n;
    let rows = (BLOCK_VALUES / per.max(1)).max(1);
    let mut r0 = 0;
    while r0 < n {
        let len = rows.min(n - r0);
        let v = x.narrow(0, r0, len)?.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(CrossError::Invalid {
                what: "example set",
                reason: format!(
                    "{name}: example {} holds a non-finite input ({}) at feature {}",
                    r0 + i / per,
                    v[i],
                    i % per
                ),
            });
        }
        r0 += len;
    }
    Ok(())
}

/// What identifies the model in the plan: a fingerprint (e.g. SHA-256 of the weights file and
/// configuration) and a description for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    /// SHA-256 of the weights file and configuration (or any stable identity).
    pub fingerprint: String,
    /// For humans: weights path and configuration.
    pub description: String,
}

/// [`ModelId`] of a weights file and its configuration (JSON): SHA-256 of both.
pub fn model_id(weights: &Path, config_json: &str) -> Result<ModelId> {
    let bytes = std::fs::read(weights).map_err(|source| CrossError::Io { path: weights.to_path_buf(), source })?;
    let mut h = Sha256::new();
    h.update(&bytes);
    h.update(config_json.as_bytes());
    Ok(ModelId { fingerprint: hex::encode(h.finalize()), description: format!("{} {config_json}", weights.display()) })
}
