//! Tidy result tables: one row per run x threshold x (space) x metric, written as CSV.

use std::path::Path;

use serde::Serialize;

use crate::store::write_atomic;
use crate::{ExperimentError, Result};

/// One row of `results.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Run id.
    pub run_id: String,
    /// Dataset name.
    pub dataset: String,
    /// Optimizer name.
    pub optimizer: String,
    /// Learning rate.
    pub lr: f64,
    /// Model seed.
    pub seed: u64,
    /// Training-loss threshold (empty when the row is not tied to one).
    pub threshold: Option<f64>,
    /// Representation space for distance metrics ("input", "layer1", ...), else empty.
    pub space: String,
    /// What is measured (the figure's own metric names, e.g. `run_steps`).
    pub metric: String,
    /// The value; empty when undefined (see `note`).
    pub value: Option<f64>,
    /// Extra context: `step=N`, a divergence reason, why a value is missing.
    pub note: String,
}

impl Row {
    /// A row of one run, not yet tied to a threshold, space or metric.
    pub fn for_run(run_id: &str, dataset: String, optimizer: &str, lr: f64, seed: u64) -> Self {
        Self {
            run_id: run_id.to_string(),
            dataset,
            optimizer: optimizer.to_string(),
            lr,
            seed,
            threshold: None,
            space: String::new(),
            metric: String::new(),
            value: None,
            note: String::new(),
        }
    }
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
