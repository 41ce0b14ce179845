//! Tile checkpoints: one safetensors file per finished tile, written atomically.
//!
//! Tensors: `sign_sum`, `cos_sum` f64 (C, C); `sign_count`, `cos_count` u64 (C, C);
//! `col_sign_sum`, `col_cos_sum` f64 (cols, C); `col_sign_count`, `col_cos_count` u64 (cols, C);
//! `row_norms` f64 (rows); `col_norms` f64 (cols). Metadata: `plan` (hash of the plan),
//! `index`, `rows`, `cols` (ranges), `seconds` (compute time), and `sha256`: a checksum of all
//! of the above (see [`checksum`]), so a changed byte is found when the tile is read back.
//!
//! Reading also checks what a checksum cannot (a tile written wrong): every value finite, norms
//! non-negative, counts within the tile's `rows x cols` pairs, the per-column counts adding up to
//! the class-pair counts, and each sum within its count (signs and clamped cosines lie in [-1, 1]).

use std::collections::HashMap;
use std::path::Path;

use ndarray::Array2;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use stiff_analysis::TileSums;

use crate::error::{CrossError, Result};
use crate::{ComputedTile, Tile};

fn f64_bytes(v: impl Iterator<Item = f64>) -> Vec<u8> {
    v.flat_map(f64::to_le_bytes).collect()
}

fn u64_bytes(v: impl Iterator<Item = u64>) -> Vec<u8> {
    v.flat_map(u64::to_le_bytes).collect()
}

/// Writes `t` for `tile` of the plan with hash `plan_hash` to `path`, atomically.
pub(crate) fn write(path: &Path, plan_hash: &str, tile: &Tile, t: &ComputedTile) -> Result<()> {
    let s = &t.sums;
    let c = s.num_classes;
    let cols = s.col_sign_sum.nrows();
    let owned: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
        ("sign_sum", Dtype::F64, vec![c, c], f64_bytes(s.sign_sum.iter().copied())),
        ("cos_sum", Dtype::F64, vec![c, c], f64_bytes(s.cos_sum.iter().copied())),
        ("sign_count", Dtype::U64, vec![c, c], u64_bytes(s.sign_count.iter().copied())),
        ("cos_count", Dtype::U64, vec![c, c], u64_bytes(s.cos_count.iter().copied())),
        ("col_sign_sum", Dtype::F64, vec![cols, c], f64_bytes(s.col_sign_sum.iter().copied())),
        ("col_cos_sum", Dtype::F64, vec![cols, c], f64_bytes(s.col_cos_sum.iter().copied())),
        ("col_sign_count", Dtype::U64, vec![cols, c], u64_bytes(s.col_sign_count.iter().copied())),
        ("col_cos_count", Dtype::U64, vec![cols, c], u64_bytes(s.col_cos_count.iter().copied())),
        ("row_norms", Dtype::F64, vec![t.row_norms.len()], f64_bytes(t.row_norms.iter().copied())),
        ("col_norms", Dtype::F64, vec![t.col_norms.len()], f64_bytes(t.col_norms.iter().copied())),
    ];
    let mut meta = HashMap::from([
        ("plan".to_string(), plan_hash.to_string()),
        ("index".to_string(), tile.index.to_string()),
        ("rows".to_string(), format!("{}..{}", tile.rows.0, tile.rows.1)),
        ("cols".to_string(), format!("{}..{}", tile.cols.0, tile.cols.1)),
        ("seconds".to_string(), format!("{}", t.seconds)),
    ]);
    let sum = checksum(&meta, owned.iter().map(|(n, d, sh, b)| (*n, *d, sh.as_slice(), b.as_slice())));
    meta.insert("sha256".to_string(), sum);
    let views: Vec<(&str, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, sh, b)| (*n, TensorView::new(*d, sh.clone(), b).expect("shape matches bytes")))
        .collect();
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| CrossError::BadFile { path: path.to_path_buf(), reason: format!("serialising tile: {e}") })?;
    stiff_fs::write_atomic(path, &bytes)?;
    Ok(())
}

/// The tensors of a tile file, in checksum order.
const TENSORS: [&str; 10] = [
    "sign_sum",
    "cos_sum",
    "sign_count",
    "cos_count",
    "col_sign_sum",
    "col_cos_sum",
    "col_sign_count",
    "col_cos_count",
    "row_norms",
    "col_norms",
];

/// Metadata entries covered by the checksum, in order.
const META: [&str; 5] = ["plan", "index", "rows", "cols", "seconds"];

/// Hex SHA-256 over the metadata entries [`META`] and the tensors (name, dtype, shape, bytes) in
/// the order given, each field length-prefixed so no two contents hash alike. Independent of
/// the file's header layout (safetensors does not fix the order of its JSON header).
fn checksum<'a>(
    meta: &HashMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    for k in META {
        field(k.as_bytes());
        field(meta.get(k).map_or(&b""[..], |v| v.as_bytes()));
    }
    for (name, dtype, shape, bytes) in tensors {
        field(name.as_bytes());
        field(format!("{dtype:?}").as_bytes());
        field(&shape.iter().flat_map(|d| (*d as u64).to_le_bytes()).collect::<Vec<u8>>());
        field(bytes);
    }
    hex::encode(h.finalize())
}

/// Reads and checks the tile file at `path` against the plan hash and the tile's ranges, its
/// checksum, and the bounds its values must keep (see the module docs).
pub(crate) fn read(path: &Path, plan_hash: &str, tile: &Tile, num_classes: usize) -> Result<ComputedTile> {
    let bad = |reason: String| CrossError::BadFile { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|source| CrossError::Io { path: path.to_path_buf(), source })?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a tile file (safetensors: {e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| meta.get(k).cloned().ok_or_else(|| bad(format!("tile metadata lacks `{k}`")));
    if get("plan")? != plan_hash {
        return Err(bad("tile belongs to a different plan (settings, data or weights changed)".into()));
    }
    let want = [
        ("index", tile.index.to_string()),
        ("rows", format!("{}..{}", tile.rows.0, tile.rows.1)),
        ("cols", format!("{}..{}", tile.cols.0, tile.cols.1)),
    ];
    for (k, v) in want {
        let got = get(k)?;
        if got != v {
            return Err(bad(format!("tile metadata `{k}` is {got}, expected {v}")));
        }
    }
    let seconds: f64 = get("seconds")?.parse().map_err(|_| bad("tile metadata `seconds` is not a number".into()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("safetensors: {e}")))?;
    let stored = meta.get("sha256").ok_or_else(|| {
        bad("tile has no `sha256` checksum (written before tiles had one, or damaged); delete it and rerun to \
             recompute it"
            .into())
    })?;
    let mut views = Vec::with_capacity(TENSORS.len());
    for name in TENSORS {
        views.push((name, st.tensor(name).map_err(|e| bad(format!("tensor `{name}`: {e}")))?));
    }
    let sum = checksum(&meta, views.iter().map(|(n, t)| (*n, t.dtype(), t.shape(), t.data())));
    if *stored != sum {
        return Err(bad(format!(
            "checksum mismatch: the tile's content hashes to {sum}, its metadata says {stored} (the file was \
             changed or damaged after it was written); delete it and rerun to recompute it"
        )));
    }
    let (nr, nc) = (tile.rows.1 - tile.rows.0, tile.cols.1 - tile.cols.0);
    let c = num_classes;
    let raw = |name: &str, dtype: Dtype, shape: &[usize]| -> Result<Vec<[u8; 8]>> {
        let t = st.tensor(name).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        if t.dtype() != dtype || t.shape() != shape {
            return Err(bad(format!(
                "tensor `{name}` is {:?} {:?}, expected {dtype:?} {shape:?}",
                t.dtype(),
                t.shape()
            )));
        }
        Ok(t.data().chunks_exact(8).map(|b| b.try_into().expect("8 bytes")).collect())
    };
    let f = |name: &str, shape: &[usize]| -> Result<Vec<f64>> {
        Ok(raw(name, Dtype::F64, shape)?.into_iter().map(f64::from_le_bytes).collect())
    };
    let u = |name: &str, shape: &[usize]| -> Result<Vec<u64>> {
        Ok(raw(name, Dtype::U64, shape)?.into_iter().map(u64::from_le_bytes).collect())
    };
    let a2f = |name: &str, r: usize| -> Result<Array2<f64>> {
        Ok(Array2::from_shape_vec((r, c), f(name, &[r, c])?).expect("checked shape"))
    };
    let a2u = |name: &str, r: usize| -> Result<Array2<u64>> {
        Ok(Array2::from_shape_vec((r, c), u(name, &[r, c])?).expect("checked shape"))
    };
    let sums = TileSums {
        num_classes: c,
        sign_sum: a2f("sign_sum", c)?,
        cos_sum: a2f("cos_sum", c)?,
        sign_count: a2u("sign_count", c)?,
        cos_count: a2u("cos_count", c)?,
        col_sign_sum: a2f("col_sign_sum", nc)?,
        col_cos_sum: a2f("col_cos_sum", nc)?,
        col_sign_count: a2u("col_sign_count", nc)?,
        col_cos_count: a2u("col_cos_count", nc)?,
    };
    let ct = ComputedTile { sums, row_norms: f("row_norms", &[nr])?, col_norms: f("col_norms", &[nc])?, seconds };
    check_values(&ct, nr, nc).map_err(bad)?;
    Ok(ct)
}

/// The bounds a correctly computed tile of `nr x nc` pairs keeps; the error names the tensor.
fn check_values(t: &ComputedTile, nr: usize, nc: usize) -> std::result::Result<(), String> {
    let s = &t.sums;
    let pairs = (nr as u64) * (nc as u64);
    let finite = |name: &str, v: &mut dyn Iterator<Item = f64>| -> std::result::Result<(), String> {
        match v.enumerate().find(|(_, x)| !x.is_finite()) {
            Some((i, x)) => Err(format!("tensor `{name}` holds {x} at flat index {i}; a tile's sums are finite")),
            None => Ok(()),
        }
    };
    finite("sign_sum", &mut s.sign_sum.iter().copied())?;
    finite("cos_sum", &mut s.cos_sum.iter().copied())?;
    finite("col_sign_sum", &mut s.col_sign_sum.iter().copied())?;
    finite("col_cos_sum", &mut s.col_cos_sum.iter().copied())?;
    for (name, v) in [("row_norms", &t.row_norms), ("col_norms", &t.col_norms)] {
        if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !(x.is_finite() && **x >= 0.0)) {
            return Err(format!("tensor `{name}` holds {x} at index {i}; norms are finite and non-negative"));
        }
    }
    let total = |a: &ndarray::Array2<u64>| a.iter().try_fold(0u64, |acc, &x| acc.checked_add(x));
    for (name, cn, col_name, col) in [
        ("sign_count", &s.sign_count, "col_sign_count", &s.col_sign_count),
        ("cos_count", &s.cos_count, "col_cos_count", &s.col_cos_count),
    ] {
        let (n, m) = (total(cn), total(col));
        if n.is_none_or(|n| n > pairs) {
            return Err(format!(
                "tensor `{name}` counts {} pairs, more than the tile's {nr} x {nc} = {pairs}",
                n.map_or("over 2^64".into(), |n| n.to_string())
            ));
        }
        if n != m {
            return Err(format!(
                "tensor `{name}` counts {} pairs but `{col_name}` counts {}; they count the same pairs",
                n.unwrap_or(0),
                m.map_or("over 2^64".into(), |m| m.to_string())
            ));
        }
    }
    // Signs and clamped cosines lie in [-1, 1]; the slack covers the rounding of long f64 sums.
    let within = |name: &str, sum: &ndarray::Array2<f64>, count: &ndarray::Array2<u64>| match sum
        .iter()
        .zip(count)
        .position(|(&v, &c)| v.abs() > c as f64 * (1.0 + 1e-9))
    {
        Some(i) => Err(format!(
            "tensor `{name}` holds {} at flat index {i}, beyond its {} pairs of values in [-1, 1]",
            sum.iter().nth(i).expect("found"),
            count.iter().nth(i).expect("found")
        )),
        None => Ok(()),
    };
    within("sign_sum", &s.sign_sum, &s.sign_count)?;
    within("cos_sum", &s.cos_sum, &s.cos_count)?;
    within("col_sign_sum", &s.col_sign_sum, &s.col_sign_count)?;
    within("col_cos_sum", &s.col_cos_sum, &s.col_cos_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stiff_analysis::TileSums;

    /// A 2 x 3 tile of 2 classes whose sums a correct reduction could give.
    fn tile() -> (Tile, ComputedTile) {
        let mut sums = TileSums::zeros(3, 2);
        sums.sign_count[[0, 1]] = 6;
        sums.sign_sum[[0, 1]] = -2.0;
        sums.col_sign_count[[0, 0]] = 2;
        sums.col_sign_count[[1, 0]] = 2;
        sums.col_sign_count[[2, 0]] = 2;
        let ct = ComputedTile { sums, row_norms: vec![1.0, 0.5], col_norms: vec![2.0, 0.0, 1.0], seconds: 0.25 };
        (Tile { index: 4, rows: (10, 12), cols: (0, 3) }, ct)
    }

    /// Tiles that carry a valid checksum but values no reduction gives (a tile written wrong)
    /// are refused by the value checks, naming the tensor.
    #[test]
    fn impossible_values_are_refused_even_with_a_valid_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let (t, ok) = tile();
        write(&path, "h", &t, &ok).unwrap();
        assert_eq!(read(&path, "h", &t, 2).unwrap().sums, ok.sums, "a correct tile reads back");
        type Tamper = fn(&mut ComputedTile);
        let cases: [(Tamper, &str); 6] = [
            (|c| c.sums.sign_count[[0, 1]] = 7, "counts 7 pairs, more than the tile's 2 x 3 = 6"),
            (|c| c.sums.sign_count[[0, 1]] = 5, "counts 5 pairs but `col_sign_count` counts 6"),
            (|c| c.sums.cos_sum[[1, 1]] = f64::NAN, "`cos_sum` holds NaN"),
            (|c| c.sums.sign_sum[[0, 1]] = -6.5, "`sign_sum` holds -6.5 at flat index 1, beyond its 6 pairs"),
            (|c| c.col_norms[1] = -1.0, "`col_norms` holds -1 at index 1"),
            (
                |c| c.sums.col_cos_count[[2, 1]] = u64::MAX,
                "`cos_count` counts 0 pairs but `col_cos_count` counts 18446744073709551615",
            ),
        ];
        for (tamper, want) in cases {
            let mut bad = ok.clone();
            tamper(&mut bad);
            write(&path, "h", &t, &bad).unwrap();
            let err = read(&path, "h", &t, 2).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("t.safetensors"), "{want}: {err}");
        }
    }
}
