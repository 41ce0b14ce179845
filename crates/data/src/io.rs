//! File reading with transparent gzip, and checksums.

use std::io::Read;
use std::path::Path;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// The two bytes every gzip stream starts with.
pub(crate) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a whole file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// Reads a file and gunzips it when it starts with the gzip magic (whatever its name says).
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = read_file(path)?;
    maybe_gunzip(path, raw)
}

/// Gunzips `raw` when it is gzip data, otherwise returns it unchanged. `path` is for messages.
pub(crate) fn maybe_gunzip(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    // The gzip trailer's ISIZE (length mod 2^32) is a good capacity hint; cap it so a corrupt
    // trailer cannot make us reserve absurd amounts of memory up front.
    let hint = raw
        .len()
        .checked_sub(4)
        .and_then(|i| raw.get(i..))
        .map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize)
        .unwrap_or(0)
        .min(raw.len().saturating_mul(64))
        .min(1 << 30);
    let mut out = Vec::with_capacity(hint);
    flate2::read::GzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|source| DataError::Gzip { path: path.to_path_buf(), source })?;
    Ok(out)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex MD5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// Reads big-endian u32 at `offset`, or `None` past the end.
pub(crate) fn be_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let b = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
