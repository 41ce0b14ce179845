//! The examples `stiff gram` measures: an `--inputs` file or a class-balanced subset of a
//! dataset's test split, preprocessed, with a record of every file read.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use candle::{DType, Device, Tensor};
use serde::Serialize;
use stiff_models::InputShape;

/// Preprocessing applied to the examples before the Gram (recorded in `stiffness.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum InputPreprocess {
    /// Used as given.
    None,
    /// Each example to zero mean and unit (population) variance over its values.
    PerExample,
    /// `(x - mean) / std` with scalars.
    MeanStd {
        /// Subtracted from every value.
        mean: f64,
        /// Divides every value; finite and positive.
        std: f64,
    },
}

pub(crate) fn parse_preprocess(s: &str) -> Result<InputPreprocess, String> {
    match s {
        "none" => Ok(InputPreprocess::None),
        "per-example" => Ok(InputPreprocess::PerExample),
        _ => {
            let spec = s
                .strip_prefix("mean-std:")
                .ok_or_else(|| format!("unknown preprocessing `{s}` (expected none, per-example or mean-std:M,S)"))?;
            let (m, sd) = spec
                .split_once(',')
                .ok_or_else(|| format!("`{s}`: expected mean-std:M,S, e.g. mean-std:0.1307,0.3081"))?;
            let num = |v: &str| v.trim().parse::<f64>().map_err(|_| format!("`{s}`: `{v}` is not a number"));
            let (mean, std) = (num(m)?, num(sd)?);
            if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
                return Err(format!("`{s}`: the mean must be finite and the std finite and positive"));
            }
            Ok(InputPreprocess::MeanStd { mean, std })
        }
    }
}

impl InputPreprocess {
    pub(crate) fn apply(self, x: &Tensor) -> anyhow::Result<Tensor> {
        Ok(match self {
            InputPreprocess::None => x.clone(),
            InputPreprocess::MeanStd { mean, std } => x.affine(1.0 / std, -mean / std)?,
            InputPreprocess::PerExample => {
                let dims = x.dims().to_vec();
                let n = dims[0];
                let flat = x.reshape((n, 1, 1, x.elem_count() / n.max(1)))?;
                stiff_data::preprocess::Preprocess::default().apply(&flat)?.reshape(dims)?
            }
        })
    }
}

/// A file this run read, recorded in `stiffness.json`.
#[derive(Debug, Serialize)]
pub(crate) struct FileRecord {
    pub(crate) role: &'static str,
    pub(crate) path: PathBuf,
    sha256: String,
    pub(crate) bytes: u64,
}

pub(crate) fn record(role: &'static str, path: &Path) -> anyhow::Result<FileRecord> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {role} file {}", path.display()))?;
    Ok(FileRecord { role, path: path.to_path_buf(), sha256: stiff_data::sha256_hex(&bytes), bytes: bytes.len() as u64 })
}

/// Examples ready for the kernel: x `(N, ...)` f32 and labels.
pub(crate) struct Examples {
    pub(crate) x: Tensor,
    pub(crate) labels: Vec<u32>,
    pub(crate) num_classes: Option<usize>,
    pub(crate) source: String,
    pub(crate) files: Vec<FileRecord>,
    pub(crate) preprocess: InputPreprocess,
}

pub(crate) fn load_inputs(path: &Path, preprocess: InputPreprocess) -> anyhow::Result<Examples> {
    let (mut t, _) = stiff_models::io::load_tensors(path, &Device::Cpu)
        .with_context(|| format!("reading --inputs {}", path.display()))?;
    let x =
        t.remove("x").ok_or_else(|| anyhow!("--inputs {}: missing tensor `x` (inputs, (N, ...))", path.display()))?;
    let y = t.remove("y").ok_or_else(|| anyhow!("--inputs {}: missing tensor `y` (labels, (N))", path.display()))?;
    if x.rank() < 2 || x.dim(0)? == 0 {
        bail!("--inputs {}: `x` must be (N, ...) with N > 0, got shape {:?}", path.display(), x.dims());
    }
    stiff_models::io::check_float_finite(path, "x", &x).context("--inputs")?;
    if y.dims() != [x.dim(0)?] {
        bail!("--inputs {}: `y` has shape {:?} but `x` has {} examples", path.display(), y.dims(), x.dim(0)?);
    }
    let labels: Vec<i64> = match y.dtype() {
        DType::U8 | DType::U32 | DType::I64 => y.to_dtype(DType::I64)?.to_vec1()?,
        other => bail!("--inputs {}: `y` must be u8, u32 or i64 labels, got {other:?}", path.display()),
    };
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l > u32::MAX as i64) {
        bail!("--inputs {}: label {l} at index {i} is negative or too large", path.display());
    }
    Ok(Examples {
        x: preprocess.apply(&x.to_dtype(DType::F32)?)?,
        labels: labels.into_iter().map(|l| l as u32).collect(),
        num_classes: None,
        source: path.display().to_string(),
        files: vec![record("inputs", path)?],
        preprocess,
    })
}

/// Where and how to draw a class-balanced subset of a dataset's test split.
pub(crate) struct SubsetDraw<'a> {
    /// Dataset directory (`--data-dir`).
    pub data_dir: Option<&'a std::path::Path>,
    /// Examples (a multiple of the class count).
    pub subset: usize,
    /// Seed of the draw.
    pub seed: u64,
}

pub(crate) fn load_dataset(
    args: &SubsetDraw<'_>,
    name: stiff_data::DatasetName,
    preprocess: InputPreprocess,
) -> anyhow::Result<Examples> {
    let ds = stiff_data::load(name, args.data_dir).with_context(|| format!("loading dataset {name}"))?;
    let k = ds.num_classes();
    if args.subset == 0 || args.subset % k != 0 {
        bail!("--subset {}: must be a positive multiple of the {k} classes of {name} (class-balanced)", args.subset);
    }
    let idx = stiff_data::sampling::balanced_subset(&ds.test.labels, k, args.subset, args.seed)
        .with_context(|| format!("--subset {}", args.subset))?;
    let split = ds.test.select(&idx)?;
    let files = ds
        .files
        .iter()
        .map(|f| FileRecord { role: "dataset", path: f.path.clone(), sha256: f.sha256.clone(), bytes: f.bytes })
        .collect();
    Ok(Examples {
        x: preprocess.apply(&split.images)?,
        labels: split.labels,
        num_classes: Some(k),
        source: format!("{name} test split, balanced subset of {} (seed {})", args.subset, args.seed),
        files,
        preprocess,
    })
}

pub(crate) fn input_shape(x: &Tensor) -> anyhow::Result<InputShape> {
    Ok(match x.dims() {
        [_, c, h, w] => InputShape::new(*c, *h, *w),
        [_, h, w] => InputShape::new(1, *h, *w),
        [_, f] => InputShape::new(1, 1, *f),
        d => bail!("inputs must be (N, C, H, W), (N, H, W) or (N, F); got {d:?}"),
    })
}
