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

/// The completion file of a figure folder `OUT/<fig>/`: every figure writes it last and the runner
/// removes it before redrawing, so a folder without it is an interrupted draw and counts as absent.
pub const SUMMARY: &str = "summary.md";

/// Writes `bytes` to `path` atomically (temp file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
    stiff_fs::write_atomic(path, bytes).map_err(|e| ExperimentError::io(&e.path, e.source))
}

/// Version of every JSON file this crate writes (figure `config.json` and `results.json`, run
/// records, the configs beside the runs): a top-level `schema_version` field. See
/// `docs/formats.md`.
pub const SCHEMA_VERSION: u32 = 1;

/// `value`'s fields after a leading `schema_version`.
#[derive(Serialize)]
struct Versioned<'a, T: Serialize> {
    schema_version: u32,
    #[serde(flatten)]
    value: &'a T,
}

/// Serialises `value` (a struct or a JSON object) as pretty JSON to `path`, atomically, with a
/// top-level `schema_version` ([`SCHEMA_VERSION`]) first.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(&Versioned { schema_version: SCHEMA_VERSION, value })
        .map_err(|e| ExperimentError::Format(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Reads JSON from `path`. A file with a `schema_version` newer than [`SCHEMA_VERSION`] (written
/// by a newer build) is refused; files without one (written before versions) are read as they are.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    #[derive(serde::Deserialize)]
    struct Version {
        schema_version: Option<u32>,
    }
    let bytes = std::fs::read(path).map_err(|e| ExperimentError::io(path, e))?;
    let format = |e: serde_json::Error| ExperimentError::Format(format!("{}: {e}", path.display()));
    if let Some(v) = serde_json::from_slice::<Version>(&bytes).map_err(format)?.schema_version {
        if v > SCHEMA_VERSION {
            return Err(ExperimentError::NewerSchema {
                path: path.display().to_string(),
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
    }
    serde_json::from_slice(&bytes).map_err(format)
}

/// The per-run records of one sweep.
#[derive(Debug, Clone)]
pub struct RunStore {
    dir: PathBuf,
}

impl RunStore {
    /// The store of sweep `sweep` under `out` (`out/runs/<sweep>/`).
    pub fn new(out: &Path, sweep: &str) -> Self {
        Self { dir: out.join("runs").join(sweep) }
    }

    /// The sweep folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record file of run `id`.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The finished record of run `id`, if there is one that parses. A record in an older,
    /// unreadable format counts as absent (the run is redone); a record written by a newer build
    /// is an error ([`ExperimentError::NewerSchema`]), so it is never overwritten.
    pub fn get<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>> {
        let p = self.path(id);
        if !p.is_file() {
            return Ok(None);
        }
        match read_json(&p) {
            Ok(r) => Ok(Some(r)),
            Err(e @ ExperimentError::NewerSchema { .. }) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Stores the finished record of run `id` atomically (with `schema_version`).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A record from a newer build must stop the sweep (it would otherwise count as unfinished
    /// and be overwritten); a missing record is absent, an older unreadable one is redone.
    #[test]
    fn newer_records_are_refused_not_redone() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::new(dir.path(), "s");
        assert!(store.get::<serde_json::Value>("a").unwrap().is_none());
        store.put("a", &serde_json::json!({ "x": 1 })).unwrap();
        let got: serde_json::Value = store.get("a").unwrap().unwrap();
        assert_eq!(got["x"], 1);
        let newer = serde_json::json!({ "schema_version": SCHEMA_VERSION + 1, "x": 2 });
        std::fs::write(store.path("b"), serde_json::to_vec(&newer).unwrap()).unwrap();
        let err = store.get::<serde_json::Value>("b").unwrap_err();
        assert!(matches!(err, ExperimentError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1), "{err}");
        std::fs::write(store.path("c"), b"not json").unwrap();
        assert!(store.get::<serde_json::Value>("c").unwrap().is_none());
    }
}
