//! Tile checkpoints: one safetensors file per finished tile, written atomically.
//!
//! Tensors: `sign_sum`, `cos_sum` f64 (C, C); `sign_count`, `cos_count` u64 (C, C);
//! `col_sign_sum`, `col_cos_sum` f64 (cols, C); `col_sign_count`, `col_cos_count` u64 (cols, C);
//! `row_norms` f64 (rows); `col_norms` f64 (cols). Metadata: `plan` (hash of the plan),
//! `index`, `rows`, `cols` (ranges), `seconds` (compute time).

use std::collections::HashMap;
use std::path::Path;

use ndarray::Array2;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
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
    let views: Vec<(&str, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, sh, b)| (*n, TensorView::new(*d, sh.clone(), b).expect("shape matches bytes")))
        .collect();
    let meta = HashMap::from([
        ("plan".to_string(), plan_hash.to_string()),
        ("index".to_string(), tile.index.to_string()),
        ("rows".to_string(), format!("{}..{}", tile.rows.0, tile.rows.1)),
        ("cols".to_string(), format!("{}..{}", tile.cols.0, tile.cols.1)),
        ("seconds".to_string(), format!("{}", t.seconds)),
    ]);
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| CrossError::BadFile { path: path.to_path_buf(), reason: format!("serialising tile: {e}") })?;
    stiff_fs::write_atomic(path, &bytes)?;
    Ok(())
}

/// Reads and checks the tile file at `path` against the plan hash and the tile's ranges.
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
    Ok(ComputedTile { sums, row_norms: f("row_norms", &[nr])?, col_norms: f("col_norms", &[nc])?, seconds })
}
