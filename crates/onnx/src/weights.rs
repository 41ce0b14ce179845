//! `--weights`: a state dict replacing the graph's initializer values, checked name by name and
//! shape by shape (a graph whose BatchNorm was folded at export has other parameters than the
//! trained model: that is an error that says so), and the finiteness check of every parameter.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle::{DType, Device, Tensor};

use crate::error::{OnnxError, Result};
use crate::graph::{Graph, HostData};

fn list(v: &[&str]) -> String {
    let mut s: Vec<&str> = v.iter().take(6).copied().collect();
    if v.len() > 6 {
        s.push("...");
    }
    format!("{} ({})", s.join(", "), v.len())
}

/// Replaces initializer values by the tensors of `path` (safetensors or a PyTorch `.pt`/`.pth`
/// state dict; a leading `module.` is stripped). Every parameter must be present with the
/// graph's shape; a key the graph does not have (other than `num_batches_tracked`) is an error.
pub(crate) fn apply_weights(g: &mut Graph, params: &[String], path: &Path) -> Result<()> {
    let werr = |problem: String| OnnxError::Weights { path: path.into(), problem };
    let raw = stiff_models::spec::read_weights(path, &Device::Cpu).map_err(|e| werr(e.to_string()))?;
    let map: HashMap<String, Tensor> =
        raw.into_iter().map(|(k, v)| (k.strip_prefix("module.").map(str::to_string).unwrap_or(k), v)).collect();
    let missing: Vec<&str> = params.iter().filter(|p| !map.contains_key(*p)).map(String::as_str).collect();
    let unknown: Vec<&str> = map
        .keys()
        .filter(|k| !g.initializers.contains_key(*k) && !k.ends_with("num_batches_tracked"))
        .map(String::as_str)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() || !unknown.is_empty() {
        let mut p = String::from("the weights do not name the graph's parameters:");
        if !missing.is_empty() {
            p += &format!(" graph parameters not in the file: {};", list(&missing));
        }
        if !unknown.is_empty() {
            p += &format!(" file tensors not in the graph: {};", list(&unknown));
        }
        p += " a graph exported with BatchNorm folded into the convolutions (torch.onnx.export's default \
               optimize=True) or with renamed tensors has other parameters than the trained model: export with \
               optimize=False (see docs/formats.md)";
        return Err(werr(p));
    }
    for (k, t) in &map {
        let Some(h) = g.initializers.get_mut(k) else { continue };
        if t.dims() != h.dims.as_slice() {
            return Err(werr(format!(
                "`{k}` has shape {:?} in the file but {:?} in the graph (was BatchNorm folded at export?)",
                t.dims(),
                h.dims
            )));
        }
        match (t.dtype(), &h.data) {
            (DType::F16 | DType::BF16 | DType::F32 | DType::F64, HostData::Float(_)) => {
                h.data = HostData::Float(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?);
            }
            (DType::F16 | DType::BF16 | DType::F32 | DType::F64, HostData::Int(_)) => {
                return Err(werr(format!("`{k}` is float in the file but integer in the graph")));
            }
            (dt, HostData::Float(_)) => {
                return Err(werr(format!("`{k}` has integer type {dt:?}; a parameter must be float")));
            }
            (_, HostData::Int(_)) => {
                h.data = HostData::Int(t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?);
            }
        }
    }
    Ok(())
}

/// Every parameter and float initializer must be finite (a NaN weight gives a NaN Gram).
pub(crate) fn check_finite(g: &Graph, params: &[String]) -> Result<()> {
    for p in params {
        if let HostData::Float(v) = &g.initializers[p].data {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(OnnxError::Initializer {
                    path: g.path.clone(),
                    tensor: p.clone(),
                    problem: format!("element {i} is {} (a parameter must be finite)", v[i]),
                });
            }
        }
    }
    Ok(())
}
