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

/// Upper bound on the decompressed size of a gzip stream that is not IDX data (CIFAR tarballs
/// are about 170 MB uncompressed); IDX streams are bounded by their own header instead.
pub(crate) const MAX_GUNZIP_BYTES: u64 = 1 << 30;

/// Gunzips `raw` when it is gzip data, otherwise returns it unchanged. `path` is for messages.
///
/// Decompression is bounded: for IDX content the header is decoded first and decoding stops one
/// byte past the size it promises (so the parser still sees "too long"); anything else stops one
/// byte past [`MAX_GUNZIP_BYTES`]. A small `.gz` that expands to gigabytes therefore costs at
/// most the promised size, never the bomb's.
pub(crate) fn maybe_gunzip(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let gz_err = |source| DataError::Gzip { path: path.to_path_buf(), source };
    let mut dec = flate2::read::GzDecoder::new(raw.as_slice());
    let mut out = Vec::new();
    // IDX magic: two zero bytes, a type code, the number of dimensions.
    (&mut dec).take(4).read_to_end(&mut out).map_err(gz_err)?;
    let limit = match idx_header_dims(&out) {
        Some((elem, ndim)) => {
            (&mut dec).take(4 * ndim as u64).read_to_end(&mut out).map_err(gz_err)?;
            match idx_promised_len(&out, elem, ndim) {
                // A header that cannot be true is refused before inflating anything more.
                Some(p) if p <= MAX_GUNZIP_BYTES && p <= max_inflated_len(raw.len()) => p,
                Some(p) if p <= MAX_GUNZIP_BYTES => {
                    return Err(DataError::bad_size(
                        path,
                        format!(
                            "the IDX header promises {p} bytes, but a gzip stream of {} bytes inflates to at most \
                             {} (corrupt header)",
                            raw.len(),
                            max_inflated_len(raw.len())
                        ),
                    ))
                }
                promised => {
                    return Err(DataError::bad_size(
                        path,
                        format!(
                            "the IDX header promises {} bytes, more than the {MAX_GUNZIP_BYTES} this tool reads \
                             (corrupt header?); refused before decompressing",
                            promised.map_or("more than 2^64".to_string(), |p| p.to_string())
                        ),
                    ))
                }
            }
        }
        None => MAX_GUNZIP_BYTES,
    };
    let done = out.len() as u64;
    // The ISIZE trailer (length mod 2^32) is a capacity hint, capped by the limit.
    let hint = raw
        .len()
        .checked_sub(4)
        .and_then(|i| raw.get(i..))
        .map_or(0, |t| u64::from(u32::from_le_bytes([t[0], t[1], t[2], t[3]])));
    out.reserve(usize::try_from(hint.min(limit.saturating_add(1)).saturating_sub(done)).unwrap_or(0));
    (&mut dec).take(limit.saturating_add(1).saturating_sub(done)).read_to_end(&mut out).map_err(gz_err)?;
    if out.len() as u64 > limit && limit == MAX_GUNZIP_BYTES {
        return Err(DataError::bad_size(
            path,
            format!("decompresses to more than {MAX_GUNZIP_BYTES} bytes; not a dataset file this tool reads"),
        ));
    }
    Ok(out)
}

/// Most bytes a gzip stream of `compressed` bytes can inflate to: deflate's best ratio is 1032:1
/// (a 258-byte match coded in two bits), plus slack for the header and trailer.
fn max_inflated_len(compressed: usize) -> u64 {
    (compressed as u64).saturating_mul(1032).saturating_add(1024)
}

/// `(element size, number of dimensions)` when `head` starts like an IDX file.
fn idx_header_dims(head: &[u8]) -> Option<(u64, u8)> {
    let [0, 0, code, ndim] = *head.get(..4)? else { return None };
    let elem = match code {
        0x08 | 0x09 => 1,
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        _ => return None,
    };
    (1..=8).contains(&ndim).then_some((elem, ndim))
}

/// Total length (header and payload) an IDX header promises; `None` when it overflows.
fn idx_promised_len(head: &[u8], elem: u64, ndim: u8) -> Option<u64> {
    let mut len = elem;
    for d in 0..usize::from(ndim) {
        len = len.checked_mul(u64::from(be_u32(head, 4 + 4 * d)?))?;
    }
    len.checked_add(4 + 4 * u64::from(ndim))
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
