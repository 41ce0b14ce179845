//! The IDX format of MNIST and Fashion-MNIST.
//!
//! Images: big-endian u32 magic 2051 (`0x00000803`: unsigned bytes, 3 dims), count, rows, cols,
//! then `count*rows*cols` pixel bytes. Labels: magic 2049 (`0x00000801`), count, `count` bytes.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::io::be_u32;

/// Magic number of an IDX file of u8 images (3 dimensions).
pub const IDX_IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX file of u8 labels (1 dimension).
pub const IDX_LABELS_MAGIC: u32 = 2049;

/// Parsed IDX images: the pixels are `bytes[16..]`, `n*rows*cols` of them.
#[derive(Debug)]
pub(crate) struct IdxImages {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    bytes: Vec<u8>,
}

impl IdxImages {
    pub fn pixels(&self) -> &[u8] {
        &self.bytes[16..]
    }
}

fn header_u32(path: &Path, bytes: &[u8], offset: usize, what: &str) -> Result<u32> {
    be_u32(bytes, offset).ok_or_else(|| {
        DataError::bad_size(
            path,
            format!("truncated header: {} bytes, cannot read the {what} at byte {offset}", bytes.len()),
        )
    })
}

fn check_magic(path: &Path, bytes: &[u8], expected: u32, what: &'static str) -> Result<()> {
    let found = header_u32(path, bytes, 0, "magic number")?;
    if found != expected {
        return Err(DataError::BadMagic { path: path.to_path_buf(), found, expected, what });
    }
    Ok(())
}

/// Checks that `bytes` has exactly `header + payload` bytes.
fn check_len(path: &Path, actual: usize, header: u64, payload: Option<u64>, what: &str) -> Result<()> {
    let expected = payload
        .and_then(|p| p.checked_add(header))
        .ok_or_else(|| DataError::bad_size(path, format!("header promises an impossible number of {what}")))?;
    let actual = actual as u64;
    if actual < expected {
        return Err(DataError::bad_size(
            path,
            format!("truncated: header promises {expected} bytes of {what} and header, file has {actual}"),
        ));
    }
    if actual > expected {
        return Err(DataError::bad_size(
            path,
            format!(
                "{} trailing bytes after the {expected} bytes (header and {what}) the header promises \
                 (gzip data is read only one byte past that)",
                actual - expected
            ),
        ));
    }
    Ok(())
}

/// Parses (already decompressed) IDX image bytes.
pub(crate) fn parse_images(path: &Path, bytes: Vec<u8>) -> Result<IdxImages> {
    check_magic(path, &bytes, IDX_IMAGES_MAGIC, "images")?;
    let n = header_u32(path, &bytes, 4, "image count")? as u64;
    let rows = header_u32(path, &bytes, 8, "row count")? as u64;
    let cols = header_u32(path, &bytes, 12, "column count")? as u64;
    let payload = n.checked_mul(rows).and_then(|x| x.checked_mul(cols));
    check_len(path, bytes.len(), 16, payload, "images")?;
    Ok(IdxImages { n: n as usize, rows: rows as usize, cols: cols as usize, bytes })
}

/// Parses (already decompressed) IDX label bytes, checking every label is `< num_classes`.
pub(crate) fn parse_labels(path: &Path, bytes: &[u8], num_classes: usize) -> Result<Vec<u32>> {
    check_magic(path, bytes, IDX_LABELS_MAGIC, "labels")?;
    let n = header_u32(path, bytes, 4, "label count")? as u64;
    check_len(path, bytes.len(), 8, Some(n), "labels")?;
    bytes[8..]
        .iter()
        .enumerate()
        .map(|(index, &b)| {
            let label = u32::from(b);
            if (label as usize) < num_classes {
                Ok(label)
            } else {
                Err(DataError::LabelOutOfRange { path: path.to_path_buf(), index, label, num_classes })
            }
        })
        .collect()
}
