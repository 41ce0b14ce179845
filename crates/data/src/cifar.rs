//! The CIFAR-10 / CIFAR-100 binary formats.
//!
//! CIFAR-10 record: 1 label byte + 3072 pixel bytes; CIFAR-100 record: 1 coarse + 1 fine label
//! byte + 3072 pixel bytes. Pixels are the R plane, then G, then B, each 32x32 row-major, which is
//! already (C, H, W) order.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::classes::CIFAR100_FINE_TO_COARSE;
use crate::error::{DataError, Result};
use crate::io::GZIP_MAGIC;

/// Pixel bytes per CIFAR image: 3 channels of 32x32.
pub const CIFAR_IMAGE_BYTES: usize = 3 * 32 * 32;

/// Which of the two CIFAR binary layouts a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CifarKind {
    Ten,
    Hundred,
}

impl CifarKind {
    pub fn label_bytes(self) -> usize {
        match self {
            CifarKind::Ten => 1,
            CifarKind::Hundred => 2,
        }
    }
    pub fn record_bytes(self) -> usize {
        self.label_bytes() + CIFAR_IMAGE_BYTES
    }
}

/// The records of one or more batch files, appended.
#[derive(Debug, Default)]
pub(crate) struct CifarRecords {
    /// (n, 3, 32, 32) pixels as bytes.
    pub pixels: Vec<u8>,
    /// Fine labels (the only labels for CIFAR-10).
    pub labels: Vec<u32>,
    /// CIFAR-100 super-class labels.
    pub coarse: Vec<u32>,
}

/// Parses one batch file's bytes and appends its records to `out`; returns the record count.
///
/// Checks: length is a non-zero multiple of the record size; labels in range; for CIFAR-100 the
/// coarse label equals `CIFAR100_FINE_TO_COARSE[fine]`.
pub(crate) fn parse_batch(path: &Path, bytes: &[u8], kind: CifarKind, out: &mut CifarRecords) -> Result<usize> {
    let rec = kind.record_bytes();
    if bytes.is_empty() {
        return Err(DataError::bad_size(path, "file is empty"));
    }
    if bytes.len() % rec != 0 {
        return Err(DataError::bad_size(
            path,
            format!(
                "{} bytes is not a whole number of {rec}-byte records ({} whole records and {} bytes left over)",
                bytes.len(),
                bytes.len() / rec,
                bytes.len() % rec
            ),
        ));
    }
    let n = bytes.len() / rec;
    out.pixels.reserve(n * CIFAR_IMAGE_BYTES);
    out.labels.reserve(n);
    for (index, record) in bytes.chunks_exact(rec).enumerate() {
        match kind {
            CifarKind::Ten => {
                let label = u32::from(record[0]);
                if label >= 10 {
                    return Err(DataError::LabelOutOfRange { path: path.to_path_buf(), index, label, num_classes: 10 });
                }
                out.labels.push(label);
            }
            CifarKind::Hundred => {
                let coarse = u32::from(record[0]);
                let fine = u32::from(record[1]);
                if fine >= 100 {
                    return Err(DataError::LabelOutOfRange {
                        path: path.to_path_buf(),
                        index,
                        label: fine,
                        num_classes: 100,
                    });
                }
                let expected_coarse = u32::from(CIFAR100_FINE_TO_COARSE[fine as usize]);
                if coarse != expected_coarse {
                    return Err(DataError::CoarseMismatch {
                        path: path.to_path_buf(),
                        index,
                        fine,
                        coarse,
                        expected_coarse,
                    });
                }
                out.labels.push(fine);
                out.coarse.push(coarse);
            }
        }
        out.pixels.extend_from_slice(&record[kind.label_bytes()..]);
    }
    Ok(n)
}

/// Reads the named members (matched by file name, any folder) out of a `.tar.gz` (or plain
/// `.tar`) stream, in the order of `names`. Errors if one is missing.
pub(crate) fn read_tar_members(archive: &Path, names: &[&str]) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let file = std::fs::File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 2];
    let is_gz = {
        use std::io::BufRead;
        let buf = reader.fill_buf().map_err(|e| DataError::io(archive, e))?;
        if buf.len() >= 2 {
            magic.copy_from_slice(&buf[..2]);
        }
        magic == GZIP_MAGIC
    };
    let stream: Box<dyn Read> = if is_gz { Box::new(flate2::read::GzDecoder::new(reader)) } else { Box::new(reader) };
    // Errors from the stream may come from gzip or from tar; name both.
    let tar_err = |e: std::io::Error| DataError::Tar { path: archive.to_path_buf(), reason: e.to_string() };
    let mut found: Vec<Option<(PathBuf, Vec<u8>)>> = vec![None; names.len()];
    let mut tar = tar::Archive::new(stream);
    for entry in tar.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let member = entry.path().map_err(tar_err)?.into_owned();
        let Some(file_name) = member.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(slot) = names.iter().position(|n| *n == file_name) else {
            continue;
        };
        if found[slot].is_some() {
            continue;
        }
        // The header's size is only a hint; a corrupt one must not trigger a huge allocation.
        let hint = usize::try_from(entry.size()).unwrap_or(0).min(256 << 20);
        let mut data = Vec::with_capacity(hint);
        entry.read_to_end(&mut data).map_err(tar_err)?;
        found[slot] = Some((archive.join(&member), data));
    }
    // Read to the end so the gzip CRC and length are checked: corruption must not pass silently.
    std::io::copy(&mut tar.into_inner(), &mut std::io::sink()).map_err(tar_err)?;
    let missing: Vec<&str> = names.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(n, _)| *n).collect();
    if !missing.is_empty() {
        return Err(DataError::Tar {
            path: archive.to_path_buf(),
            reason: format!("missing member(s) {}", missing.join(", ")),
        });
    }
    Ok(found.into_iter().flatten().collect())
}
