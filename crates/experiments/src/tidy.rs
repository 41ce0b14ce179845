//! Tidy result tables: one row per run x threshold x (space) x metric, written as CSV.

use std::path::Path;

use serde::Serialize;

use crate::store::write_atomic;
use crate::{ExperimentError, Result};

/// One row of `results.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub run_id: String,
    pub dataset: String,
    pub optimizer: String,
    pub lr: f64,
    pub seed: u64,
    /// Training-loss threshold (empty when the row is not tied to one).
    pub threshold: Option<f64>,
    /// Representation space for distance metrics ("input", "layer1", ...), else empty.
    pub space: String,
    pub metric: String,
    /// The value; empty when undefined (see `note`).
    pub value: Option<f64>,
    pub note: String,
}

/// Writes rows as CSV (atomically).
pub fn write_csv(path: &Path, rows: &[Row]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| ExperimentError::Format(format!("{}: {e}", path.display())))?;
    }
    let bytes = w.into_inner().map_err(|e| ExperimentError::Format(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}
