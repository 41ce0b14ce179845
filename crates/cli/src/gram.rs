//! `stiff gram`: the per-example gradient Gram matrix of a checkpoint on a set of examples, its
//! per-layer parts, and the sign/cosine class stiffness matrices.
//!
//! Order of work, so that nothing computed is lost and nothing half-written is left: check every
//! input (files, finite values, labels, the memory budget, that `--out` is writable), compute
//! `K`, run the class analysis (its failure is recorded, not fatal to `K`), then publish
//! `gram.safetensors` and `stiffness.json` together (both or neither). Formats: `docs/formats.md`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use candle::{DType, Device, Tensor};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use stiff_gradkernel::budget::{BudgetError, GramRequest, ModelSizes};
use stiff_gradkernel::{GramOptions, Method, Network};

use crate::examples::{input_shape, load_dataset, load_inputs, record, Examples, FileRecord, SubsetDraw};
use crate::memory;
use crate::model_source::{self, LoadContext, LoadedModel, ModelArgs};

/// Version of the `stiffness.json` layout (see `docs/formats.md`). 3: `run_id`, also in the
/// metadata of `gram.safetensors`.
pub const GRAM_SCHEMA_VERSION: u32 = 3;

/// Metadata key of `gram.safetensors` holding the run id that `stiffness.json` also records.
pub const RUN_ID_METADATA_KEY: &str = "stiff.run_id";

pub(crate) fn dataset_parser() -> impl TypedValueParser<Value = stiff_data::DatasetName> {
    PossibleValuesParser::new(["mnist", "fashion-mnist", "cifar10", "cifar100"])
        .try_map(|s| s.parse::<stiff_data::DatasetName>())
}

fn method_parser() -> impl TypedValueParser<Value = Method> {
    PossibleValuesParser::new(["auto", "factorised", "materialised"]).map(|s| match s.as_str() {
        "factorised" => Method::Factorised,
        "materialised" => Method::Materialised,
        _ => Method::Auto,
    })
}

#[derive(clap::Args, Debug)]
pub struct GramArgs {
    /// The network: `--preset`/`--config`/`--spec` (+ `--key-map`), `--weights`, `--num-classes`,
    /// `--preprocess` (the same flags as `measure` and `cross`).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Loss whose per-example gradients are compared: cross-entropy, mse-onehot, or mse (float
    /// targets `t` (N, outputs) in the --inputs file); other than cross-entropy needs --spec.
    #[arg(long, default_value = "cross-entropy")]
    pub loss: String,
    /// Examples: safetensors with `x` (N, ...) float and `y` (N) integer labels (u8, u32 or i64).
    #[arg(long, conflicts_with = "dataset", required_unless_present = "dataset")]
    pub inputs: Option<PathBuf>,
    /// Dataset to draw a class-balanced subset of the test split from.
    #[arg(long, value_parser = dataset_parser())]
    pub dataset: Option<stiff_data::DatasetName>,
    /// Subset size for `--dataset` (a multiple of the class count, at most the test split).
    #[arg(long, default_value_t = 500)]
    pub subset: usize,
    /// Seed of the subset draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Dataset directory, the only place looked [default: $STIFF_DATA_DIR, else the user cache].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Output directory (created if missing; checked writable before any work).
    #[arg(long)]
    pub out: PathBuf,
    /// Memory budget in MiB for the data the command holds: the dataset while loading, the
    /// examples, the model, K, the per-layer Grams and working memory (not the program itself).
    #[arg(long, default_value_t = 2048)]
    pub budget_mb: u64,
    /// Compute in f64: the parameters and the Gram products (the default is f32).
    #[arg(long)]
    pub f64: bool,
    /// Always compute the per-layer Grams (refuse if they do not fit the budget).
    #[arg(long, conflicts_with = "no_per_layer")]
    pub per_layer: bool,
    /// Skip the per-layer Grams. [default: computed when they fit the budget, else skipped with a note]
    #[arg(long)]
    pub no_per_layer: bool,
    /// How layer contributions are computed.
    #[arg(long, default_value = "auto", value_parser = method_parser())]
    pub method: Method,
    /// Device: cpu or cuda:N (CUDA needs a build with `cargo xtask build-cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Skip classes with no example in the class analysis instead of failing.
    #[arg(long)]
    pub allow_empty_classes: bool,
}

/// `--budget-mb` in bytes, refusing values whose byte count overflows.
pub(crate) fn budget_bytes(mb: u64) -> anyhow::Result<u64> {
    mb.checked_mul(1 << 20).filter(|&b| usize::try_from(b).is_ok()).ok_or_else(|| {
        anyhow!("--budget-mb {mb} is too large (at most {} MiB on this machine)", (usize::MAX as u64) >> 20)
    })
}

/// Whether to keep the per-layer Grams, checked against the budget before any work. Returns the
/// decision and, when they were dropped for the budget, the note saying so. A network that is no
/// chain of dense/conv layers has no layer sizes to count here: the kernel checks its budget.
fn plan_per_layer(
    args: &GramArgs,
    net: &dyn Network,
    n: usize,
    budget: u64,
    held: u64,
) -> anyhow::Result<(bool, Option<String>)> {
    let Some(layers) = net.chain() else { return Ok((!args.no_per_layer, None)) };
    let opts = GramOptions::default().with_accumulate_f64(args.f64);
    let sizes = ModelSizes::of_layers(&layers, &opts);
    let check =
        |per_layer: bool| stiff_gradkernel::budget::check(&sizes, &GramRequest::square(n as u64, per_layer, budget));
    let held_note = format!(
        "\n(the budget above is what --budget-mb {} leaves after the {} MiB that the examples and the model hold)",
        args.budget_mb,
        memory::mib(held)
    );
    let refuse = |e: BudgetError| -> anyhow::Error {
        let mut hint = String::new();
        if let BudgetError::OverBudget { largest, largest_without_per_layer, min_budget_bytes, .. } = &e {
            let fewer = if args.dataset.is_some() {
                format!("--subset {largest}")
            } else {
                format!("at most {largest} examples in --inputs")
            };
            hint = format!("\ntry {fewer}, or --budget-mb {}", memory::mib(min_budget_bytes.saturating_add(held)));
            if let Some(w) = largest_without_per_layer {
                hint.push_str(&format!(", or --no-per-layer (fits up to {w} examples)"));
            }
        }
        anyhow!("{e}{held_note}{hint}")
    };
    if args.no_per_layer {
        return check(false).map(|_| (false, None)).map_err(refuse);
    }
    match check(true) {
        Ok(_) => Ok((true, None)),
        Err(e) if args.per_layer => Err(refuse(e)),
        Err(e) => match check(false) {
            Ok(_) => Ok((false, Some(format!("per-layer Grams skipped: {e}{held_note}")))),
            Err(e) => Err(refuse(e)),
        },
    }
}

pub fn run(args: GramArgs) -> anyhow::Result<()> {
    let budget = budget_bytes(args.budget_mb)?;
    let device = stiff_experiments::runner::parse_device(&args.device)?;
    args.model.check_flags()?;
    if let Some(d) = args.dataset {
        crate::limits::check_subset("--subset", args.subset, d, "test", d.official_counts().1)?;
    }
    // Held until the results are published: a second writer of --out is refused, not mixed in.
    let _lock = crate::outdir::claim(&args.out, "--out", stiff_fs::LockMode::Exclusive, "stiff gram")?;
    let loading = match (&args.inputs, args.dataset) {
        (Some(p), _) => (2 * memory::file_bytes(p), format!("reading --inputs {}", p.display())),
        (None, Some(d)) => {
            (memory::dataset_load_bytes(d), format!("loading {d} (both splits, decoded to f32, before the subset)"))
        }
        (None, None) => (0, String::new()),
    };
    memory::check_loading(args.budget_mb, budget, loading.0, &loading.1)?;
    let pre = args.model.preprocess_for(args.inputs.is_none());
    let ex = match (&args.inputs, args.dataset) {
        (Some(p), _) => load_inputs(p, pre)?,
        (None, Some(d)) => {
            let draw = SubsetDraw { data_dir: args.data_dir.as_deref(), subset: args.subset, seed: args.seed };
            load_dataset(&draw, d, pre)?
        }
        (None, None) => bail!("give --inputs FILE or --dataset NAME"),
    };
    let dtype = if args.f64 { DType::F64 } else { DType::F32 };
    let cx = LoadContext {
        input: input_shape(&ex.x)?,
        dataset_classes: ex.num_classes,
        label_classes: ex.labels.iter().max().map(|&m| m as usize + 1),
        dtype,
        device: &device,
    };
    let model = model_source::load(&args.model, &cx)?;
    let weights_record = record("weights", args.model.weights()?)?;
    let held = memory::tensor_bytes(&ex.x) + model.param_bytes;
    let budget = memory::kernel_budget(args.budget_mb, budget, held, "the examples and the model")?;
    let loss: stiff_gradkernel::Loss = args.loss.parse()?;
    if !model.takes_any_loss() && !matches!(loss, stiff_gradkernel::Loss::CrossEntropy) {
        bail!("--loss {} needs --spec (the --preset/--config path measures cross-entropy)", args.loss);
    }
    let n = ex.labels.len();
    let targets = match loss {
        stiff_gradkernel::Loss::Mse => {
            let outputs = model.num_classes;
            let p = args.inputs.as_ref().ok_or_else(|| anyhow!("--loss mse needs --inputs with float targets `t`"))?;
            let (mut t, _) = stiff_models::io::load_tensors(p, &Device::Cpu)?;
            t.remove("t")
                .ok_or_else(|| anyhow!("{}: --loss mse needs a float tensor `t` (N, {outputs})", p.display()))?
        }
        _ => {
            model.check_labels(&ex.labels, &ex.source)?;
            Tensor::from_vec(ex.labels.clone(), n, &Device::Cpu)?
        }
    };
    let (per_layer, per_layer_note) = plan_per_layer(&args, &model.net, n, budget, held)?;
    if let Some(note) = &per_layer_note {
        eprintln!("stiff gram: {note}");
    }
    let opts = GramOptions::default()
        .with_memory_budget_bytes(budget as usize)
        .with_accumulate_f64(args.f64)
        .with_per_layer(per_layer)
        .with_method(args.method);
    let r = stiff_gradkernel::gram_net(&model.net, &ex.x, &targets, &loss, &opts).map_err(|e| match e {
        // The library names its option; the user set --budget-mb.
        stiff_gradkernel::GradKernelError::OverBudget { what, needed, .. } => anyhow!(
            "{what} needs about {} MiB, more than --budget-mb {} allows; raise --budget-mb or use fewer examples",
            needed.div_ceil(1 << 20),
            args.budget_mb
        ),
        e => anyhow::Error::new(e).context(format!("Gram of {}", ex.source)),
    })?;
    chunk_note(&args, r.chunk, n);
    let fallback = r.routes.iter().filter(|u| u.form == stiff_gradkernel::LayerForm::Fallback).count();
    if fallback > 0 {
        eprintln!("stiff gram: {fallback} of {} units via the exact fallback (slow)", r.routes.len());
    }
    let parts = r.per_layer.iter().map(|(name, t)| (format!("K.{name}"), t.clone())).collect();
    let (field, meta_key, arch) = model.architecture();
    let meta = HashMap::from([(meta_key.to_string(), arch.clone()), ("source".to_string(), ex.source.clone())]);
    let mut details = serde_json::json!({
        "options": opts,
        "per_layer": { "computed": per_layer, "note": per_layer_note },
        "routes": r.routes,
        "chunk": r.chunk,
        "budget": budget_record(&args, held, budget),
    });
    details[*field] = serde_json::from_str(arch)?;
    let mean_loss = r.loss_per_example.iter().sum::<f64>() / n as f64;
    let c = Computed { k: &r.k, parts, meta, num_classes: model.num_classes, details, seconds: r.seconds, mean_loss };
    publish(&args, ex, weights_record, &model, c)
}

/// How `--budget-mb` was spent: held by the examples and the model, handed to the kernel.
fn budget_record(args: &GramArgs, held: u64, kernel: u64) -> serde_json::Value {
    serde_json::json!({ "budget_mb": args.budget_mb, "held_bytes": held, "kernel_bytes": kernel })
}

/// Says so when the budget made the kernel work in blocks smaller than the whole set: that is
/// what makes a small budget slow (cnn4, N = 3000: 7 min at 64 MiB, 5 s at 1 GiB).
fn chunk_note(args: &GramArgs, chunk: usize, n: usize) {
    if chunk > 0 && chunk < n {
        eprintln!(
            "stiff gram: note: --budget-mb {} left room for blocks of {chunk} of the {n} examples; small blocks are \
             slow, a larger --budget-mb makes this faster",
            args.budget_mb
        );
    }
}

/// What a Gram computation hands to the analysis and the writer.
struct Computed<'a> {
    k: &'a Tensor,
    /// `K.<part>` tensors (per layer, or per unit of a spec model).
    parts: Vec<(String, Tensor)>,
    /// Metadata of `gram.safetensors`.
    meta: HashMap<String, String>,
    num_classes: usize,
    /// Model, options and routes, merged into `stiffness.json`.
    details: serde_json::Value,
    seconds: f64,
    mean_loss: f64,
}

/// Analyses `K` in place, then publishes `gram.safetensors` and `stiffness.json` together.
fn publish(
    args: &GramArgs,
    ex: Examples,
    weights: FileRecord,
    model: &LoadedModel,
    mut c: Computed<'_>,
) -> anyhow::Result<()> {
    let n = ex.labels.len();
    let num_classes = c.num_classes;
    // Analyse in place (no copy of K); a failure is recorded beside the Gram, not fatal to it.
    let settings = stiff_analysis::StiffnessSettings::default().with_allow_empty_classes(args.allow_empty_classes);
    let class = with_host_view(c.k, |k| match k {
        HostView::F32(v) => stiff_analysis::class_stiffness(v, &ex.labels, num_classes, &settings),
        HostView::F64(v) => stiff_analysis::class_stiffness(v, &ex.labels, num_classes, &settings),
    })?;
    let analysis_error = class.as_ref().err().map(|e| {
        let hint = if matches!(e, stiff_analysis::AnalysisError::EmptyClass { .. }) {
            " (pass --allow-empty-classes to skip classes with no example)"
        } else {
            ""
        };
        format!("{e}{hint}")
    });
    let class = class.ok();

    let y = Tensor::from_vec(ex.labels.clone(), n, &Device::Cpu)?;
    let mut tensors = vec![("K".to_string(), c.k.clone()), ("labels".to_string(), y)];
    tensors.extend(c.parts);
    let mut files = ex.files;
    files.push(weights);
    for (role, p) in &model.files {
        files.push(record(role, p)?);
    }
    // One id in both files: a reader can tell this run's pair from a mix of two runs' files.
    let run_id = crate::outdir::new_run_id();
    c.meta.insert(RUN_ID_METADATA_KEY.to_string(), run_id.clone());
    let mut report = serde_json::json!({
        "schema_version": GRAM_SCHEMA_VERSION,
        "run_id": run_id,
        "n": n,
        "num_classes": num_classes,
        "source": ex.source,
        "files_read": files,
        "preprocess": ex.preprocess,
        "device": args.device,
        "weights": args.model.weights()?.display().to_string(),
        "loss": args.loss,
        "analysis_error": analysis_error,
        "within_sign": class.as_ref().map(|c| c.sign.within),
        "between_sign": class.as_ref().map(|c| c.sign.between),
        "within_cosine": class.as_ref().map(|c| c.cosine.within),
        "between_cosine": class.as_ref().map(|c| c.cosine.between),
        "class_stiffness": class,
        "mean_loss": c.mean_loss,
        "timing": { "gram_seconds": c.seconds },
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (report.as_object_mut(), c.details) {
        obj.extend(extra);
    }
    // Both files or neither: a Gram is never published without its report.
    let mut set = stiff_fs::FileSet::new();
    set.stage_with(&args.out.join("gram.safetensors"), |w| stiff_models::io::write_safetensors(w, &tensors, &c.meta))?;
    set.stage(&args.out.join("stiffness.json"), &serde_json::to_vec_pretty(&report)?)?;
    set.publish()?;
    if let Some(e) = analysis_error {
        bail!(
            "class analysis failed: {e}\nthe Gram matrix was written to {}",
            args.out.join("gram.safetensors").display()
        );
    }
    let class = class.ok_or_else(|| anyhow!("class analysis produced no result"))?;
    println!(
        "N = {n}; sign stiffness within {:.4} between {:.4}; cosine within {:.4} between {:.4}; Gram {:.3} s; wrote {}",
        class.sign.within,
        class.sign.between,
        class.cosine.within,
        class.cosine.between,
        c.seconds,
        args.out.display()
    );
    Ok(())
}

/// A borrowed `(N, N)` view of a host tensor's data.
enum HostView<'a> {
    F32(ndarray::ArrayView2<'a, f32>),
    F64(ndarray::ArrayView2<'a, f64>),
}

/// Runs `f` on a view of `k`'s data without copying it (a contiguous f32/f64 CPU tensor; others
/// are copied to one first).
fn with_host_view<R>(k: &Tensor, f: impl FnOnce(HostView<'_>) -> R) -> anyhow::Result<R> {
    let (r, c) = k.dims2()?;
    let owned;
    let k = if k.device().is_cpu() && k.is_contiguous() && matches!(k.dtype(), DType::F32 | DType::F64) {
        k
    } else {
        owned = k.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.contiguous()?;
        &owned
    };
    let (storage, layout) = k.storage_and_layout();
    let (a, b) = layout.contiguous_offsets().ok_or_else(|| anyhow!("K is not contiguous"))?;
    Ok(match &*storage {
        candle::Storage::Cpu(candle::CpuStorage::F32(v)) => {
            f(HostView::F32(ndarray::ArrayView2::from_shape((r, c), &v[a..b])?))
        }
        candle::Storage::Cpu(candle::CpuStorage::F64(v)) => {
            f(HostView::F64(ndarray::ArrayView2::from_shape((r, c), &v[a..b])?))
        }
        _ => bail!("K is not an f32/f64 host tensor"),
    })
}
