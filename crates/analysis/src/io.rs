//! JSON and CSV writers. Every write is atomic: a temporary file in the destination directory,
//! flushed and synced, then renamed over the target, so readers never see a half-written file.
//!
//! JSON is the complete record (settings included). CSV is a flat table for plotting; its
//! settings go to a sidecar `<file>.meta.json` written the same way.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::class::ClassStiffness;
use crate::distance::DistanceCurve;
use crate::error::{AnalysisError, Result};

/// Writes `bytes` to `path` atomically (temp file in the same directory, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    stiff_fs::write_atomic(path, bytes).map_err(|e| AnalysisError::Io { path: e.path, source: e.source })
}

/// Any result as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|source| AnalysisError::Json { path: path.to_path_buf(), source })?;
    write_atomic(path, &bytes)
}

fn meta_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".meta.json");
    PathBuf::from(s)
}

fn csv_bytes(path: &Path, rows: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>) -> Result<Vec<u8>> {
    let err = |source| AnalysisError::Csv { path: path.to_path_buf(), source };
    let mut w = csv::Writer::from_writer(Vec::new());
    rows(&mut w).map_err(err)?;
    w.into_inner().map_err(|e| AnalysisError::Io { path: path.to_path_buf(), source: e.into_error() })
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// Class matrices as a long table `a,b,sign,sign_pairs,cosine,cosine_pairs` (empty value
/// where a cell has no pairs), plus `<path>.meta.json` with everything but the matrices.
pub fn write_class_csv(path: &Path, c: &ClassStiffness) -> Result<()> {
    let k = c.num_classes;
    let bytes = csv_bytes(path, |w| {
        w.write_record(["a", "b", "sign", "sign_pairs", "cosine", "cosine_pairs"])?;
        for a in 0..k {
            for b in 0..k {
                w.write_record([
                    a.to_string(),
                    b.to_string(),
                    opt(c.sign.get(a, b)),
                    c.sign.counts[[a, b]].to_string(),
                    opt(c.cosine.get(a, b)),
                    c.cosine.counts[[a, b]].to_string(),
                ])?;
            }
        }
        Ok(())
    })?;
    write_atomic(path, &bytes)?;
    let meta = serde_json::json!({
        "schema_version": c.schema_version,
        "settings": c.settings,
        "n": c.n,
        "num_classes": c.num_classes,
        "class_sizes": c.class_sizes,
        "empty_classes": c.empty_classes,
        "zero_norm_examples": c.zero_norm_examples,
        "sign": {"within": c.sign.within, "between": c.sign.between},
        "cosine": {"within": c.cosine.within, "between": c.cosine.between},
    });
    write_json(&meta_path(path), &meta)
}

/// A distance curve as one row per bin
/// `bin,lo,hi,centre,cos_centre,sign_mean,sign_se,sign_pairs,cos_mean,cos_se,cos_pairs`
/// (empty where undefined), plus `<path>.meta.json` with the settings, bins and filter.
pub fn write_curve_csv(path: &Path, c: &DistanceCurve) -> Result<()> {
    let bytes = csv_bytes(path, |w| {
        w.write_record([
            "bin",
            "lo",
            "hi",
            "centre",
            "cos_centre",
            "sign_mean",
            "sign_se",
            "sign_pairs",
            "cos_mean",
            "cos_se",
            "cos_pairs",
        ])?;
        for b in 0..c.centres.len() {
            w.write_record([
                b.to_string(),
                c.edges[b].to_string(),
                c.edges[b + 1].to_string(),
                c.centres[b].to_string(),
                c.cos_centres[b].to_string(),
                opt(c.sign_mean[b]),
                opt(c.sign_se[b]),
                c.sign_counts[b].to_string(),
                opt(c.cos_mean[b]),
                opt(c.cos_se[b]),
                c.cos_counts[b].to_string(),
            ])?;
        }
        Ok(())
    })?;
    write_atomic(path, &bytes)?;
    let meta = serde_json::json!({
        "schema_version": c.schema_version,
        "settings": c.settings,
        "bins": c.bins,
        "filter": c.filter,
        "space": c.space,
        "n": c.n,
        "out_of_range_pairs": c.out_of_range_pairs,
        "zero_norm_examples": c.zero_norm_examples,
        "zero_norm_representations": c.zero_norm_representations,
    });
    write_json(&meta_path(path), &meta)
}
