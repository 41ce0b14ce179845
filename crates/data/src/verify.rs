//! `data verify`: for each dataset found, checks checksums, counts, shapes, label ranges and class
//! histograms.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::checksums;
use crate::error::Result;
use crate::io::{md5_hex, read_file, sha256_hex};
use crate::load::{build_cifar, build_idx, read_cifar_files, read_idx_bytes, LoadOptions};
use crate::locate::{candidate_dirs, probe, Probe, Source};
use crate::{Dataset, DatasetName};

/// Outcome of verifying one dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyStatus {
    /// No file of the dataset was found.
    Missing,
    /// Present and every check passed.
    Complete,
    /// Present but incomplete or failing a check.
    Broken,
}

impl fmt::Display for VerifyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerifyStatus::Missing => "missing",
            VerifyStatus::Complete => "complete",
            VerifyStatus::Broken => "BROKEN",
        })
    }
}

/// One line of the verify table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct VerifyRow {
    /// The dataset checked.
    pub dataset: DatasetName,
    /// The outcome.
    pub status: VerifyStatus,
    /// The folder checked (`None` when missing).
    pub location: Option<PathBuf>,
    /// `ok`, `MISMATCH`, `n/a` (no published checksum for that form) or `-` (not checked).
    pub checksum: String,
    /// What was found, or what is wrong.
    pub message: String,
}

impl VerifyRow {
    /// True when the dataset is present but broken (the CLI exits non-zero on these).
    pub fn is_broken(&self) -> bool {
        self.status == VerifyStatus::Broken
    }

    /// Column titles matching the `Display` layout.
    pub fn header() -> String {
        format!("{:<14} {:<9} {:<9} {}", "dataset", "status", "checksum", "details")
    }
}

impl fmt::Display for VerifyRow {
    /// `dataset status checksum details (location)` on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<14} {:<9} {:<9} {}",
            self.dataset.as_str(),
            self.status.to_string(),
            self.checksum,
            self.message
        )?;
        if let Some(loc) = &self.location {
            write!(f, " [{}]", loc.display())?;
        }
        Ok(())
    }
}

/// Verifies every dataset found in the search order of [`locate`](crate::locate) (`data_dir`,
/// `$STIFF_DATA_DIR`, cache dir). One row per dataset, in [`DatasetName::ALL`] order.
pub fn verify(data_dir: Option<&Path>) -> Vec<VerifyRow> {
    DatasetName::ALL
        .iter()
        .map(|&name| {
            let dirs = candidate_dirs(name, data_dir);
            // The first folder holding any of the dataset's files is the one `load` would use
            // (or the one that makes it fail as incomplete).
            for dir in &dirs {
                match probe(name, dir) {
                    Probe::Absent => continue,
                    Probe::Partial(missing) => {
                        return row(
                            name,
                            VerifyStatus::Broken,
                            Some(dir),
                            "-",
                            format!("incomplete: missing {}", missing.join(", ")),
                        )
                    }
                    Probe::Complete(src) => return verify_source(name, dir, &src),
                }
            }
            row(
                name,
                VerifyStatus::Missing,
                None,
                "-",
                format!("not found in {}", dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")),
            )
        })
        .collect()
}

/// Verifies `name` in exactly the dataset folder `dir`.
pub fn verify_dir(name: DatasetName, dir: &Path) -> VerifyRow {
    match probe(name, dir) {
        Probe::Absent => row(name, VerifyStatus::Missing, None, "-", format!("not found in {}", dir.display())),
        Probe::Partial(missing) => {
            row(name, VerifyStatus::Broken, Some(dir), "-", format!("incomplete: missing {}", missing.join(", ")))
        }
        Probe::Complete(src) => verify_source(name, dir, &src),
    }
}

fn row(name: DatasetName, status: VerifyStatus, dir: Option<&Path>, checksum: &str, message: String) -> VerifyRow {
    VerifyRow { dataset: name, status, location: dir.map(Path::to_path_buf), checksum: checksum.to_string(), message }
}

fn verify_source(name: DatasetName, dir: &Path, src: &Source) -> VerifyRow {
    match check(name, src) {
        Ok((checksum, problems, summary)) => {
            if problems.is_empty() {
                row(name, VerifyStatus::Complete, Some(dir), &checksum, summary)
            } else {
                row(name, VerifyStatus::Broken, Some(dir), &checksum, problems.join("; "))
            }
        }
        Err(e) => row(name, VerifyStatus::Broken, Some(dir), "-", e.to_string()),
    }
}

/// (checksum column, problems found, summary when fine).
fn check(name: DatasetName, src: &Source) -> Result<(String, Vec<String>, String)> {
    let opts = LoadOptions::default();
    let mut problems = Vec::new();
    let (checksum, dataset, mean_pixel) = match src {
        Source::Idx(files) => {
            let bytes = read_idx_bytes(files)?;
            let mut checksum = "ok";
            if let Some(expected) = checksums::idx_sha256(name) {
                for ((path, b), want) in files.paths.iter().zip(&bytes).zip(expected) {
                    let got = sha256_hex(b);
                    if got != *want {
                        checksum = "MISMATCH";
                        problems.push(format!(
                            "{}: SHA-256 of the uncompressed content is {got}, expected {want}",
                            path.display()
                        ));
                    }
                }
            }
            let pixels = bytes[0].get(16..).unwrap_or(&[]);
            let mean = pixels.iter().map(|&b| u64::from(b)).sum::<u64>() as f64 / pixels.len().max(1) as f64;
            (checksum.to_string(), build_idx(name, files, bytes, &opts)?, Some(mean))
        }
        Source::CifarTar(tar) => {
            let mut checksum = "ok";
            if let Some(want) = checksums::tar_md5(name) {
                let got = md5_hex(&read_file(tar)?);
                if got != want {
                    checksum = "MISMATCH";
                    problems.push(format!("{}: MD5 is {got}, expected {want}", tar.display()));
                }
            }
            let files = read_cifar_files(name, src)?;
            (checksum.to_string(), build_cifar(name, files, &opts)?, None)
        }
        Source::CifarBins { .. } => {
            let files = read_cifar_files(name, src)?;
            ("n/a".to_string(), build_cifar(name, files, &opts)?, None)
        }
    };
    problems.extend(check_contents(&dataset));
    let (c, h, w) = dataset.input_shape();
    let mut summary = format!(
        "train {} test {}, {c}x{h}x{w}, {} classes",
        dataset.train.len(),
        dataset.test.len(),
        dataset.num_classes()
    );
    if let Some(m) = mean_pixel {
        summary.push_str(&format!(", mean train pixel {m:.3}/255"));
    }
    if checksum == "n/a" {
        summary.push_str(" (extracted batch files have no published checksum)");
    }
    Ok((checksum, problems, summary))
}

/// Shape and class-histogram checks against the official values.
fn check_contents(ds: &Dataset) -> Vec<String> {
    let mut problems = Vec::new();
    if ds.input_shape() != ds.name.input_shape() {
        problems.push(format!("image shape {:?}, expected {:?}", ds.input_shape(), ds.name.input_shape()));
    }
    let (want_train, want_test) = checksums::class_histograms(ds.name);
    for (split, s, want) in [("train", &ds.train, want_train), ("test", &ds.test, want_test)] {
        let got = s.class_histogram(ds.num_classes());
        if got != want {
            let diffs: Vec<String> = got
                .iter()
                .zip(&want)
                .enumerate()
                .filter(|(_, (g, w))| g != w)
                .take(5)
                .map(|(c, (g, w))| format!("class {c}: {g} (expected {w})"))
                .collect();
            problems.push(format!("{split} class histogram differs: {}", diffs.join(", ")));
        }
    }
    problems
}
