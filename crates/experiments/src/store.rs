//! The results folder: one JSON record per finished run, written atomically, so an interrupted
//! sweep resumes where it stopped and several machines (a Slurm array) can fill one folder.
//!
//! Layout under `OUT`:
//! * `runs/<sweep>/<run id>.json`: a finished run (complete, or ended with a recorded status).
//!   A run in progress writes nothing here; a partial file is never visible (temp + rename).
//! * `<fig>/`: config, results, figures and summary of one figure (see the figure modules).
//! * `index.md`: links every figure produced so far.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use crate::{ExperimentError, Result};

/// Writes `bytes` to `path` atomically (temp file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
    stiff_fs::write_atomic(path, bytes).map_err(|e| ExperimentError::io(&e.path, e.source))
}

/// Serialises `value` as pretty JSON to `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|e| ExperimentError::Format(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Reads JSON from `path`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| ExperimentError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| ExperimentError::Format(format!("{}: {e}", path.display())))
}

/// The per-run records of one sweep.
#[derive(Debug, Clone)]
pub struct RunStore {
    dir: PathBuf,
}

impl RunStore {
    pub fn new(out: &Path, sweep: &str) -> Self {
        Self { dir: out.join("runs").join(sweep) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The finished record of run `id`, if there is one that parses.
    pub fn get<T: DeserializeOwned>(&self, id: &str) -> Option<T> {
        let p = self.path(id);
        p.is_file().then(|| read_json(&p).ok()).flatten()
    }

    pub fn put<T: Serialize>(&self, id: &str, record: &T) -> Result<()> {
        write_json(&self.path(id), record)
    }

    /// Every finished record in the sweep folder, sorted by file name. Unreadable files are
    /// reported, not silently skipped.
    pub fn all<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Ok(out) };
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        paths.sort();
        for p in paths {
            out.push(read_json(&p)?);
        }
        Ok(out)
    }
}
