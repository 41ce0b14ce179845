//! `stiff gram`: the per-example gradient Gram matrix of a checkpoint on a set of examples, its
//! per-layer parts, and the sign/cosine class stiffness matrices.
//!
//! Writes into `--out DIR`:
//! * `gram.safetensors`: `K` `(N, N)` and `K.<layer>` per layer (unless `--no-per-layer`), plus
//!   `labels` u32 `(N)`; metadata carries the model configuration.
//! * `stiffness.json`: N, class sizes, sign and cosine class matrices with within/between means,
//!   the per-layer forms, and `timing.gram_seconds` (the Gram computation alone, no I/O).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use candle::{DType, Device, Tensor};
use stiff_gradkernel::{GramOptions, Method};
use stiff_models::{InputShape, Model, ModelConfig, Preset};

#[derive(clap::Args, Debug)]
pub struct GramArgs {
    /// Architecture preset (fc6, fc4, cnn5, cnn4); optional if the weights file stores its config.
    #[arg(long, conflicts_with_all = ["config", "spec"])]
    pub preset: Option<Preset>,
    /// Model configuration as JSON (stiff-models `ModelConfig`), instead of a preset.
    #[arg(long, conflicts_with = "spec")]
    pub config: Option<PathBuf>,
    /// Any `nn.Sequential` as a JSON layer list in PyTorch terms (stiff-models `ModelSpec`);
    /// the weights are then a PyTorch state dict (safetensors or `.pt`/`.pth`, keys `0.weight`, ...).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// With `--spec`: JSON object renaming weight-file keys to spec keys (`{"features.0.weight": "0.weight"}`);
    /// a leading `module.` is stripped anyway.
    #[arg(long, requires = "spec")]
    pub key_map: Option<PathBuf>,
    /// Loss whose per-example gradients are compared: cross-entropy (default), mse-onehot, or mse
    /// (float targets `t` (N, outputs) in the inputs file; with `--spec`).
    #[arg(long, default_value = "cross-entropy")]
    pub loss: String,
    /// Number of classes for `--preset` (default: the dataset's, or 10 with `--inputs`).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Checkpoint (safetensors with the stiff-models keys).
    #[arg(long)]
    pub weights: PathBuf,
    /// Examples: safetensors with `x` (N, ...) float and `y` (N) integer labels (u8, u32 or i64).
    #[arg(long, conflicts_with = "dataset", required_unless_present = "dataset")]
    pub inputs: Option<PathBuf>,
    /// Dataset to draw a class-balanced subset of the test split from (mnist, fashion-mnist, cifar10, cifar100).
    #[arg(long)]
    pub dataset: Option<stiff_data::DatasetName>,
    /// Subset size for `--dataset`.
    #[arg(long, default_value_t = 500)]
    pub subset: usize,
    /// Seed of the subset draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Dataset directory (default: the stiff-data search path).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Working-memory budget of the Gram computation in MiB.
    #[arg(long, default_value_t = 2048)]
    pub budget_mb: usize,
    /// Accumulate the Gram products in f64 (the default is f32).
    #[arg(long)]
    pub f64: bool,
    /// Skip the per-layer Grams.
    #[arg(long)]
    pub no_per_layer: bool,
    /// auto, factorised or materialised.
    #[arg(long, default_value = "auto", value_parser = parse_method)]
    pub method: Method,
}

fn parse_method(s: &str) -> Result<Method, String> {
    match s {
        "auto" => Ok(Method::Auto),
        "factorised" | "factorized" => Ok(Method::Factorised),
        "materialised" | "materialized" => Ok(Method::Materialised),
        _ => Err(format!("unknown method `{s}` (expected auto, factorised or materialised)")),
    }
}

/// Examples ready for the kernel: x `(N, C, H, W)` f32 and labels.
struct Examples {
    x: Tensor,
    labels: Vec<u32>,
    num_classes: Option<usize>,
    source: String,
}

fn load_inputs(path: &Path) -> anyhow::Result<Examples> {
    let (mut t, _) = stiff_models::io::load_tensors(path, &Device::Cpu)
        .with_context(|| format!("reading inputs file {}", path.display()))?;
    let x = t.remove("x").ok_or_else(|| anyhow!("{}: missing tensor `x` (inputs, (N, ...))", path.display()))?;
    let y = t.remove("y").ok_or_else(|| anyhow!("{}: missing tensor `y` (labels, (N))", path.display()))?;
    if x.rank() < 2 || x.dim(0)? == 0 {
        bail!("{}: `x` must be (N, ...) with N > 0, got shape {:?}", path.display(), x.dims());
    }
    if !x.dtype().is_float() {
        bail!("{}: `x` must be a float tensor, got {:?}", path.display(), x.dtype());
    }
    if y.dims() != [x.dim(0)?] {
        bail!("{}: `y` has shape {:?} but `x` has {} examples", path.display(), y.dims(), x.dim(0)?);
    }
    let labels: Vec<i64> = match y.dtype() {
        DType::U8 | DType::U32 | DType::I64 => y.to_dtype(DType::I64)?.to_vec1()?,
        other => bail!("{}: `y` must be u8, u32 or i64 labels, got {other:?}", path.display()),
    };
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l > u32::MAX as i64) {
        bail!("{}: label {l} at index {i} is negative or too large", path.display());
    }
    Ok(Examples {
        x: x.to_dtype(DType::F32)?,
        labels: labels.into_iter().map(|l| l as u32).collect(),
        num_classes: None,
        source: path.display().to_string(),
    })
}

fn load_dataset(args: &GramArgs, name: stiff_data::DatasetName) -> anyhow::Result<Examples> {
    let ds = stiff_data::load(name, args.data_dir.as_deref()).with_context(|| format!("loading dataset {name}"))?;
    let k = ds.num_classes();
    let idx = stiff_data::sampling::balanced_subset(&ds.test.labels, k, args.subset, args.seed)?;
    let split = ds.test.select(&idx)?;
    let x = stiff_data::preprocess::Preprocess::default().apply(&split.images)?;
    Ok(Examples {
        x,
        labels: split.labels,
        num_classes: Some(k),
        source: format!("{name} test split, balanced subset of {} (seed {})", args.subset, args.seed),
    })
}

fn input_shape(x: &Tensor) -> anyhow::Result<InputShape> {
    Ok(match x.dims() {
        [_, c, h, w] => InputShape::new(*c, *h, *w),
        [_, h, w] => InputShape::new(1, *h, *w),
        [_, f] => InputShape::new(1, 1, *f),
        d => bail!("inputs must be (N, C, H, W), (N, H, W) or (N, F); got {d:?}"),
    })
}

fn load_model(args: &GramArgs, ex: &Examples) -> anyhow::Result<Model> {
    let classes = || args.num_classes.or(ex.num_classes).unwrap_or(10);
    let w = &args.weights;
    let model = if let Some(p) = args.preset {
        let cfg = ModelConfig::preset(p, input_shape(&ex.x)?, classes());
        Model::load_with_config(w, &cfg, DType::F32, &Device::Cpu)?
    } else if let Some(c) = &args.config {
        let text = std::fs::read_to_string(c).with_context(|| format!("reading config {}", c.display()))?;
        let cfg: ModelConfig =
            serde_json::from_str(&text).with_context(|| format!("{}: not a model configuration", c.display()))?;
        Model::load_with_config(w, &cfg, DType::F32, &Device::Cpu)?
    } else {
        Model::load(w, DType::F32, &Device::Cpu)?
    };
    Ok(model)
}

pub fn run(args: GramArgs) -> anyhow::Result<()> {
    let ex = match (&args.inputs, args.dataset) {
        (Some(p), _) => load_inputs(p)?,
        (None, Some(d)) => load_dataset(&args, d)?,
        (None, None) => bail!("give --inputs FILE or --dataset NAME"),
    };
    if args.spec.is_some() {
        return run_spec(&args, &ex);
    }
    if args.loss != "cross-entropy" && args.loss != "ce" {
        bail!("--loss {} needs --spec (the preset path measures cross-entropy)", args.loss);
    }
    let model = load_model(&args, &ex)?;
    let num_classes = model.config().num_classes;
    if let Some((i, l)) = ex.labels.iter().enumerate().find(|(_, &l)| l as usize >= num_classes) {
        bail!("{}: label {l} at index {i} is out of range for a {num_classes}-class model", ex.source);
    }
    let n = ex.labels.len();
    let y = Tensor::from_vec(ex.labels.clone(), n, &Device::Cpu)?;
    let opts = GramOptions {
        memory_budget_bytes: args.budget_mb << 20,
        accumulate_f64: args.f64,
        per_layer: !args.no_per_layer,
        method: args.method,
        ..Default::default()
    };
    let r = stiff_gradkernel::gram(&model, &ex.x, &y, &opts).with_context(|| format!("Gram of {}", ex.source))?;

    let k = stiff_gradkernel::to_ndarray_f64(&r.k)?;
    let settings = stiff_analysis::StiffnessSettings::default();
    let class = stiff_analysis::class_stiffness(k.view(), &ex.labels, num_classes, &settings)?;

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut tensors = vec![("K".to_string(), r.k.clone()), ("labels".to_string(), y)];
    for (name, t) in &r.per_layer {
        tensors.push((format!("K.{name}"), t.clone()));
    }
    let meta = HashMap::from([
        (stiff_models::io::CONFIG_METADATA_KEY.to_string(), serde_json::to_string(model.config())?),
        ("source".to_string(), ex.source.clone()),
    ]);
    let gram_path = args.out.join("gram.safetensors");
    stiff_models::io::save_tensors_atomic(&tensors, meta, &gram_path)?;
    let report = serde_json::json!({
        "n": n,
        "num_classes": num_classes,
        "source": ex.source,
        "weights": args.weights.display().to_string(),
        "model": model.config(),
        "options": opts,
        "forms": r.forms,
        "chunk": r.chunk,
        "within_sign": class.sign.within,
        "between_sign": class.sign.between,
        "within_cosine": class.cosine.within,
        "between_cosine": class.cosine.between,
        "class_stiffness": class,
        "mean_loss": r.loss_per_example.iter().sum::<f64>() / n as f64,
        "timing": { "gram_seconds": r.seconds },
    });
    stiff_analysis::write_json(&args.out.join("stiffness.json"), &report)?;
    eprintln!(
        "stiff gram: N = {n}, {:.3} s; sign within {:.4} between {:.4}; wrote {}",
        r.seconds,
        class.sign.within,
        class.sign.between,
        args.out.display()
    );
    Ok(())
}

/// `--spec`: any `nn.Sequential` through the general engine (tapped fast path, exact fallback).
fn run_spec(args: &GramArgs, ex: &Examples) -> anyhow::Result<()> {
    let spec_path = args.spec.as_ref().expect("checked by the caller");
    let spec = stiff_models::ModelSpec::from_json_file(spec_path)?;
    let keys = match &args.key_map {
        Some(p) => stiff_models::KeyMap::from_json_file(p)?,
        None => stiff_models::KeyMap::default(),
    };
    let dtype = if args.f64 { DType::F64 } else { DType::F32 };
    let model = stiff_models::SpecModel::load(&spec, &args.weights, &keys, dtype, &Device::Cpu)?;
    let loss: stiff_gradkernel::Loss = args.loss.parse()?;
    let outputs = spec.num_outputs()?;
    let n = ex.labels.len();
    let y = Tensor::from_vec(ex.labels.clone(), n, &Device::Cpu)?;
    let targets = match loss {
        stiff_gradkernel::Loss::Mse => {
            let p = args.inputs.as_ref().ok_or_else(|| anyhow!("--loss mse needs --inputs with float targets `t`"))?;
            let (mut t, _) = stiff_models::io::load_tensors(p, &Device::Cpu)?;
            t.remove("t")
                .ok_or_else(|| anyhow!("{}: --loss mse needs a float tensor `t` (N, {outputs})", p.display()))?
        }
        _ => {
            if let Some((i, l)) = ex.labels.iter().enumerate().find(|(_, &l)| l as usize >= outputs) {
                bail!("{}: label {l} at index {i} is out of range for a network with {outputs} outputs", ex.source);
            }
            y.clone()
        }
    };
    let opts = GramOptions {
        memory_budget_bytes: args.budget_mb << 20,
        accumulate_f64: args.f64,
        per_layer: !args.no_per_layer,
        method: args.method,
        ..Default::default()
    };
    let r = stiff_gradkernel::gram_net(&model, &ex.x, &targets, &loss, &opts)
        .with_context(|| format!("Gram of {}", ex.source))?;
    let k = stiff_gradkernel::to_ndarray_f64(&r.k)?;
    let settings = stiff_analysis::StiffnessSettings::default();
    let class = stiff_analysis::class_stiffness(k.view(), &ex.labels, outputs, &settings)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut tensors = vec![("K".to_string(), r.k.clone()), ("labels".to_string(), y)];
    for (name, t) in &r.per_unit {
        tensors.push((format!("K.{name}"), t.clone()));
    }
    let meta = HashMap::from([
        ("stiff.spec".to_string(), serde_json::to_string(&spec)?),
        ("source".to_string(), ex.source.clone()),
    ]);
    stiff_models::io::save_tensors_atomic(&tensors, meta, &args.out.join("gram.safetensors"))?;
    let report = serde_json::json!({
        "n": n,
        "num_classes": outputs,
        "source": ex.source,
        "weights": args.weights.display().to_string(),
        "spec": spec,
        "loss": format!("{loss:?}"),
        "options": opts,
        "routes": r.routes,
        "chunk": r.chunk,
        "within_sign": class.sign.within,
        "between_sign": class.sign.between,
        "within_cosine": class.cosine.within,
        "between_cosine": class.cosine.between,
        "class_stiffness": class,
        "mean_loss": r.loss_per_example.iter().sum::<f64>() / n as f64,
        "timing": { "gram_seconds": r.seconds },
    });
    stiff_analysis::write_json(&args.out.join("stiffness.json"), &report)?;
    let fallback = r.routes.iter().filter(|u| u.form == stiff_gradkernel::RouteForm::Fallback).count();
    eprintln!(
        "stiff gram --spec: N = {n}, {} units ({fallback} via fallback), {:.3} s; sign within {:.4} between {:.4}; wrote {}",
        r.routes.len(),
        r.seconds,
        class.sign.within,
        class.sign.between,
        args.out.display()
    );
    Ok(())
}
