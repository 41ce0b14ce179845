//! Reading an ONNX model file into the crate's own graph: nodes with decoded attributes,
//! initializers as host tensors (inline, raw or in external data files beside the model), the one
//! data input and the output.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use prost::Message;
use sha2::Digest;

use crate::error::{OnnxError, Result};
use crate::proto;

/// The opsets of the default domain this crate reads (the op semantics of `crate::ops` follow them).
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=23;

/// Values of a host tensor: floats of any width are held as `f64` (exact for `f32`), integers
/// and booleans as `i64`.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    /// Float values.
    Float(Vec<f64>),
    /// Integer (or boolean) values.
    Int(Vec<i64>),
}

/// A tensor known without running the graph: an initializer, a `Constant`, shape arithmetic.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape (empty for a scalar).
    pub dims: Vec<usize>,
    /// Values in row-major order.
    pub data: HostData,
}

impl HostTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
    /// Whether the values are floats.
    pub fn is_float(&self) -> bool {
        matches!(self.data, HostData::Float(_))
    }
    /// The values as integers (floats truncated), for shape arithmetic.
    pub fn ints(&self) -> Vec<i64> {
        match &self.data {
            HostData::Int(v) => v.clone(),
            HostData::Float(v) => v.iter().map(|&f| f as i64).collect(),
        }
    }
    /// The values as floats.
    pub fn floats(&self) -> Vec<f64> {
        match &self.data {
            HostData::Float(v) => v.clone(),
            HostData::Int(v) => v.iter().map(|&i| i as f64).collect(),
        }
    }
}

/// A node attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// `f`.
    Float(f32),
    /// `i`.
    Int(i64),
    /// `s` (UTF-8, lossy).
    Str(String),
    /// `t`.
    Tensor(HostTensor),
    /// `floats`.
    Floats(Vec<f32>),
    /// `ints`.
    Ints(Vec<i64>),
    /// Any other kind (strings, graphs): present but not read.
    Other,
}

/// One operator application.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node's name (generated as `{op}_{position}` when the file has none).
    pub name: String,
    /// Op type (`Conv`, `Gemm`, ...).
    pub op: String,
    /// Domain (`""` or `ai.onnx` for the default one).
    pub domain: String,
    /// Input value names (`""` for an omitted optional input).
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
    /// Attributes by name.
    pub attrs: HashMap<String, Attr>,
}

/// A parsed ONNX model.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The model file.
    pub path: PathBuf,
    /// Version of the default-domain opset.
    pub opset: i64,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// The one data input: name and declared shape (`None` for a symbolic size like `batch`).
    pub input: (String, Vec<Option<usize>>),
    /// The output (the logits).
    pub output: String,
    /// Initializers by name.
    pub initializers: BTreeMap<String, HostTensor>,
    /// Initializer names in file order (the parameter order).
    pub initializer_order: Vec<String>,
    /// SHA-256 of the model file's bytes (external data is covered by the initializers' values).
    pub file_sha256: [u8; 32],
}

impl Graph {
    /// Reads `path` (and the external data files its initializers name, relative to its folder).
    pub fn load(path: &Path) -> Result<Graph> {
        let bytes = std::fs::read(path).map_err(|source| OnnxError::Io { path: path.into(), source })?;
        let model = proto::ModelProto::decode(bytes.as_slice())
            .map_err(|e| OnnxError::Decode { path: path.into(), problem: e.to_string() })?;
        let file_sha256: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        drop(bytes);
        let bad = |problem: String| OnnxError::Model { path: path.into(), problem };
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .ok_or_else(|| bad("no opset of the default ONNX domain is imported (not an ONNX model?)".into()))?;
        if !OPSETS.contains(&opset) {
            return Err(bad(format!(
                "opset {opset} is not supported (supported: {}-{}); re-export with `opset_version` in that range",
                OPSETS.start(),
                OPSETS.end()
            )));
        }
        let g = model.graph.ok_or_else(|| bad("the model has no graph".into()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut ext = ExternalFiles { dir, open: HashMap::new(), model: path.into() };
        let mut initializers = BTreeMap::new();
        let mut initializer_order = Vec::new();
        for t in &g.initializer {
            if t.name.is_empty() {
                return Err(bad("an initializer has no name".into()));
            }
            let host = decode_tensor(t, &mut ext)?;
            if initializers.insert(t.name.clone(), host).is_some() {
                return Err(bad(format!("initializer `{}` is defined twice", t.name)));
            }
            initializer_order.push(t.name.clone());
        }
        let inputs: Vec<&proto::ValueInfoProto> =
            g.input.iter().filter(|v| !initializers.contains_key(&v.name)).collect();
        let [input] = inputs.as_slice() else {
            let names: Vec<&str> = inputs.iter().map(|v| v.name.as_str()).collect();
            return Err(bad(format!("the graph must have exactly one data input, it has {}: {names:?}", names.len())));
        };
        let tt = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .ok_or_else(|| bad(format!("input `{}` is not a tensor", input.name)))?;
        if !matches!(tt.elem_type, 1 | 10 | 11 | 16) {
            return Err(bad(format!("input `{}` has element type {}, not a float type", input.name, tt.elem_type)));
        }
        let dims = tt
            .shape
            .as_ref()
            .map(|s| s.dim.iter().map(|d| d.dim_value.filter(|&v| v > 0).map(|v| v as usize)).collect())
            .unwrap_or_default();
        let [output] = g.output.as_slice() else {
            return Err(bad(format!("the graph must have exactly one output (the logits), it has {}", g.output.len())));
        };
        let mut nodes = Vec::with_capacity(g.node.len());
        for (i, n) in g.node.iter().enumerate() {
            let name = if n.name.is_empty() { format!("{}_{i}", n.op_type) } else { n.name.clone() };
            let mut attrs = HashMap::new();
            for a in &n.attribute {
                let v = decode_attr(a, &mut ext).map_err(|p| OnnxError::Node {
                    position: i,
                    node: name.clone(),
                    op: n.op_type.clone(),
                    problem: format!("attribute `{}`: {p}", a.name),
                })?;
                attrs.insert(a.name.clone(), v);
            }
            nodes.push(Node {
                name,
                op: n.op_type.clone(),
                domain: n.domain.clone(),
                inputs: n.input.clone(),
                outputs: n.output.clone(),
                attrs,
            });
        }
        Ok(Graph {
            path: path.into(),
            opset,
            nodes,
            input: (input.name.clone(), dims),
            output: output.name.clone(),
            initializers,
            initializer_order,
            file_sha256,
        })
    }
}

/// Open external data files of one model, by relative location.
struct ExternalFiles {
    dir: PathBuf,
    open: HashMap<String, (File, u64)>,
    model: PathBuf,
}

impl ExternalFiles {
    fn read(&mut self, tensor: &str, location: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let err = |path: PathBuf, problem: String| OnnxError::Initializer { path, tensor: tensor.into(), problem };
        let rel = Path::new(location);
        // The data must lie beside the model: a crafted graph must not read arbitrary files.
        if location.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(err(
                self.model.clone(),
                format!("external data location `{location}` is not a plain relative path inside the model's folder"),
            ));
        }
        let full = self.dir.join(rel);
        if !self.open.contains_key(location) {
            let f = File::open(&full).map_err(|e| {
                err(full.clone(), format!("cannot open the external data file `{location}` named by the model: {e}"))
            })?;
            let size = f.metadata().map_err(|e| err(full.clone(), e.to_string()))?.len();
            self.open.insert(location.into(), (f, size));
        }
        let (f, size) = self.open.get_mut(location).expect("inserted above");
        if offset.checked_add(len).is_none_or(|end| end > *size) {
            return Err(err(full, format!("bytes {offset}..{offset}+{len} lie outside the file ({size} bytes)")));
        }
        let mut buf = vec![0u8; len as usize];
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| err(full.clone(), e.to_string()))?;
        Ok(buf)
    }
}

fn element_size(data_type: i32) -> Option<usize> {
    match data_type {
        1 | 6 => Some(4),
        11 | 7 => Some(8),
        2 | 3 | 9 => Some(1),
        5 => Some(2),
        _ => None,
    }
}

fn decode_tensor(t: &proto::TensorProto, ext: &mut ExternalFiles) -> Result<HostTensor> {
    let model = ext.model.clone();
    let err = |problem: String| OnnxError::Initializer { path: model.clone(), tensor: t.name.clone(), problem };
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        dims.push(usize::try_from(d).map_err(|_| err(format!("negative dimension {d} in {:?}", t.dims)))?);
    }
    let numel = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err(format!("shape {dims:?} overflows")))?;
    let esize = element_size(t.data_type).ok_or_else(|| {
        err(format!("element type {} is not supported (float, double, integer or bool)", t.data_type))
    })?;
    let raw: Option<Vec<u8>> = if t.data_location == 1 {
        let mut loc = None;
        let (mut off, mut len) = (0u64, None);
        for kv in &t.external_data {
            let num = || {
                kv.value
                    .parse::<u64>()
                    .map_err(|_| err(format!("external data {} `{}` is not a number", kv.key, kv.value)))
            };
            match kv.key.as_str() {
                "location" => loc = Some(kv.value.clone()),
                "offset" => off = num()?,
                "length" => len = Some(num()?),
                _ => {}
            }
        }
        let loc = loc.ok_or_else(|| err("external data without a `location`".into()))?;
        let want = (numel as u64).checked_mul(esize as u64).ok_or_else(|| err("size overflows".into()))?;
        if let Some(l) = len {
            if l != want {
                return Err(err(format!("external data length {l} bytes, but shape {dims:?} needs {want}")));
            }
        }
        Some(ext.read(&t.name, &loc, off, want)?)
    } else if !t.raw_data.is_empty() || numel == 0 {
        Some(t.raw_data.clone())
    } else {
        None
    };
    let data = match raw {
        Some(bytes) => {
            if bytes.len() != numel * esize {
                return Err(err(format!("{} data bytes, but shape {dims:?} needs {}", bytes.len(), numel * esize)));
            }
            from_raw(t.data_type, &bytes)
        }
        None => {
            let data = match t.data_type {
                1 => HostData::Float(t.float_data.iter().map(|&v| v as f64).collect()),
                11 => HostData::Float(t.double_data.clone()),
                7 => HostData::Int(t.int64_data.clone()),
                _ => HostData::Int(t.int32_data.iter().map(|&v| v as i64).collect()),
            };
            let have = match &data {
                HostData::Float(v) => v.len(),
                HostData::Int(v) => v.len(),
            };
            if have != numel {
                return Err(err(format!("{have} values, but shape {dims:?} needs {numel}")));
            }
            data
        }
    };
    Ok(HostTensor { dims, data })
}

fn from_raw(data_type: i32, b: &[u8]) -> HostData {
    match data_type {
        1 => HostData::Float(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4")) as f64).collect()),
        11 => HostData::Float(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8"))).collect()),
        7 => HostData::Int(b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8"))).collect()),
        6 => HostData::Int(b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4")) as i64).collect()),
        5 => HostData::Int(b.chunks_exact(2).map(|c| i16::from_le_bytes(c.try_into().expect("2")) as i64).collect()),
        3 => HostData::Int(b.iter().map(|&v| v as i8 as i64).collect()),
        _ => HostData::Int(b.iter().map(|&v| v as i64).collect()),
    }
}

fn decode_attr(a: &proto::AttributeProto, ext: &mut ExternalFiles) -> std::result::Result<Attr, String> {
    Ok(match a.r#type {
        1 => Attr::Float(a.f),
        2 => Attr::Int(a.i),
        3 => Attr::Str(String::from_utf8_lossy(&a.s).into_owned()),
        4 => Attr::Tensor(
            decode_tensor(a.t.as_ref().ok_or("tensor attribute without a tensor")?, ext).map_err(|e| e.to_string())?,
        ),
        6 => Attr::Floats(a.floats.clone()),
        7 => Attr::Ints(a.ints.clone()),
        _ => Attr::Other,
    })
}
