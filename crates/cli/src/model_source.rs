//! The one model loader of `gram`, `measure` and `cross`: the same flags ([`ModelArgs`], flattened
//! into each subcommand), the same checks and one loaded type ([`LoadedModel`]) that every
//! subcommand hands to the gradient kernel without asking where the network came from.
//!
//! Sources: a preset (`--preset`), a `ModelConfig` JSON (`--config`), the configuration stored
//! in the checkpoint (neither), any `nn.Sequential` (`--spec`, with `--key-map`), or any ONNX
//! graph (`--onnx`, with an optional `--weights` state dict and `--trainable`).
//!
//! Adding a source: its flag in [`ModelArgs`]; a `Source` variant with its
//! arms in `Source::of` and `ModelArgs::source_flag`; one arm in [`load`] that builds a `Built`
//! (network, class count, input size, fingerprint, what the reports record); a [`Net`] variant
//! with its arm in `Net::network`; and, for `measure`, an arm in `LoadedModel::subject` (a
//! `stiff_experiments::measure::Subject` for it, or a refusal). Nothing else changes: `gram`,
//! `measure` and `cross` only see [`LoadedModel`].
//!
//! Checks every source gets: the weights are finite floats (NaN/inf and integer tensors are
//! refused naming the file and key, by the stiff-models loaders), and the class count is the
//! network's output width; `--num-classes` may only repeat it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use candle::{DType, Device, Tensor, Var};
use stiff_cross::ModelId;
use stiff_experiments::measure::{Represented, Subject};
use stiff_gradkernel::{Loss, Network};
use stiff_models::{InputShape, KeyMap, Layer, Model, ModelConfig, ModelSpec, Preset, SpecModel};
use stiff_onnx::{OnnxNet, OnnxOptions, Trainable};

use crate::examples::{parse_preprocess, InputPreprocess};

/// Where the network comes from, and how the inputs are prepared for it.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Architecture preset (fc6, fc4, cnn5, cnn4); optional if the weights file stores its config.
    #[arg(long, conflicts_with_all = ["config", "spec", "onnx"], value_parser = preset_parser())]
    pub preset: Option<Preset>,
    /// Model configuration as JSON (stiff-models `ModelConfig`), instead of a preset.
    #[arg(long, conflicts_with_all = ["spec", "onnx"])]
    pub config: Option<PathBuf>,
    /// Any `nn.Sequential` as a JSON layer list in PyTorch terms (stiff-models `ModelSpec`, see
    /// the gradient-kernel README); `--weights` is then its state dict (safetensors or
    /// `.pt`/`.pth`, keys as `state_dict()` writes them: `0.weight`, ...). A spec shaped like a
    /// preset takes the presets' CPU kernels and gives their numbers.
    #[arg(long, conflicts_with = "onnx")]
    pub spec: Option<PathBuf>,
    /// Any model as an ONNX graph (`torch.onnx.export(..., dynamo=True, optimize=False)`: a
    /// ResNet, a transformer); external data files beside it. The graph holds the weights;
    /// `--weights` may replace them with a state dict whose names and shapes must match. See
    /// docs/formats.md for the export call and what counts as a parameter.
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// With `--onnx`: the parameters are the float initializers whose name matches this regular
    /// expression, instead of those feeding a parameter slot (conv/dense weights and biases,
    /// norm scales and offsets, added tables).
    #[arg(long, requires = "onnx")]
    pub trainable: Option<String>,
    /// With `--spec`: JSON object renaming weight-file keys to spec keys
    /// (`{"features.0.weight": "0.weight"}`); a leading `module.` is stripped anyway.
    #[arg(long, requires = "spec")]
    pub key_map: Option<PathBuf>,
    /// Checkpoint: safetensors with the stiff-models keys, or with `--spec` a PyTorch state dict
    /// (with `--onnx` optional: a state dict replacing the graph's values).
    #[arg(long, required_unless_present = "onnx")]
    pub weights: Option<PathBuf>,
    /// Number of classes; the checkpoint's output width is the class count, so this can only
    /// repeat it [default: the network's outputs (a preset's last layer in the checkpoint), else
    /// the dataset's, else the largest label + 1].
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Input preprocessing: none, per-example (each example to zero mean, unit variance, as
    /// training here used) or mean-std:M,S ((x - M) / S, e.g. a PyTorch checkpoint trained with
    /// `Normalize(M, S)`) [default: per-example for dataset examples, none for inputs files].
    #[arg(long, value_parser = parse_preprocess)]
    pub preprocess: Option<InputPreprocess>,
}

pub(crate) fn preset_parser() -> impl clap::builder::TypedValueParser<Value = Preset> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["fc6", "fc4", "cnn5", "cnn4"]).try_map(|s| s.parse::<Preset>())
}

impl ModelArgs {
    /// Flag combinations clap cannot check, refused before any work: `--key-map` needs `--spec`
    /// (clap's `requires` is not enforced next to a conflicting flag such as `--preset`).
    pub fn check_flags(&self) -> anyhow::Result<()> {
        if let (Some(k), None) = (&self.key_map, &self.spec) {
            bail!("--key-map {} only applies to a --spec model; give --spec, or drop --key-map", k.display());
        }
        if let (Some(t), None) = (&self.trainable, &self.onnx) {
            bail!("--trainable {t} only applies to an --onnx model; give --onnx, or drop --trainable");
        }
        Ok(())
    }

    /// The file holding the weights: `--weights`, else (an ONNX graph holds its own) `--onnx`.
    /// Clap requires one of them; the check keeps a caller that skipped clap honest.
    pub fn weights(&self) -> anyhow::Result<&Path> {
        self.weights.as_deref().or(self.onnx.as_deref()).ok_or_else(|| anyhow!("--weights FILE is required"))
    }

    /// `--preprocess`, else the default for examples from a dataset (`per-example`, what the
    /// training here used) or from an inputs file (`none`: used as they are).
    pub fn preprocess_for(&self, from_dataset: bool) -> InputPreprocess {
        self.preprocess.unwrap_or(if from_dataset { InputPreprocess::PerExample } else { InputPreprocess::None })
    }

    /// The flag naming the network, for messages: `--spec FILE`, `--config FILE`, `--preset P`
    /// or `--weights FILE` (stored configuration).
    pub fn source_flag(&self) -> String {
        match Source::of(self) {
            Source::Spec(p) => format!("--spec {}", p.display()),
            Source::Onnx(p) => format!("--onnx {}", p.display()),
            Source::Config(p) => format!("--config {}", p.display()),
            Source::Preset(p) => format!("--preset {}", p.name()),
            Source::Stored => format!("--weights {}", self.weights.as_deref().unwrap_or(Path::new("")).display()),
        }
    }
}

/// Which flag says what the network is.
enum Source<'a> {
    Preset(Preset),
    Config(&'a Path),
    Spec(&'a Path),
    Onnx(&'a Path),
    /// The configuration stored in the checkpoint.
    Stored,
}

impl<'a> Source<'a> {
    fn of(a: &'a ModelArgs) -> Self {
        if let Some(o) = &a.onnx {
            return Source::Onnx(o);
        }
        match (&a.spec, &a.config, a.preset) {
            (Some(s), _, _) => Source::Spec(s),
            (None, Some(c), _) => Source::Config(c),
            (None, None, Some(p)) => Source::Preset(p),
            (None, None, None) => Source::Stored,
        }
    }
}

/// What the subcommand knows about its examples when the model is built.
#[derive(Debug, Clone)]
pub struct LoadContext<'a> {
    /// Per-example input shape (a preset is built for it).
    pub input: InputShape,
    /// The dataset's class count, when the examples come from one.
    pub dataset_classes: Option<usize>,
    /// Largest label + 1, when labels are known.
    pub label_classes: Option<usize>,
    /// Parameter dtype.
    pub dtype: DType,
    /// Device of the parameters.
    pub device: &'a Device,
}

/// The network of one source. Implements [`Network`] by handing every call to the variant.
pub enum Net {
    /// A preset or `ModelConfig` network with stiff-models keys.
    Preset(Model),
    /// An `nn.Sequential` spec with `state_dict()` keys.
    Spec(SpecModel),
    /// An ONNX graph (boxed: it holds the parsed graph).
    Onnx(Box<OnnxNet>),
}

impl Net {
    /// The variant's network (the one `match` the [`Network`] impl needs).
    fn network(&self) -> &dyn Network {
        match self {
            Net::Preset(m) => m,
            Net::Spec(m) => m,
            Net::Onnx(g) => &**g,
        }
    }
}

/// The distance curves' spaces of a network that is not a preset or a spec (an ONNX graph: the
/// inputs of its dense and conv layers after the first).
impl Represented for Net {
    fn representations(&self, x: &Tensor) -> candle::Result<Vec<Tensor>> {
        match self {
            Net::Onnx(g) => g.representations(x),
            _ => Err(candle::Error::Msg("presets and specs are measured through their own subjects".into())),
        }
    }
}

impl Network for Net {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        self.network().forward(x)
    }
    fn parameters(&self) -> Vec<(String, Var)> {
        self.network().parameters()
    }
    fn prepare(&self, x: &Tensor) -> stiff_gradkernel::Result<Tensor> {
        self.network().prepare(x)
    }
    fn chain(&self) -> Option<Vec<Layer>> {
        self.network().chain()
    }
}

/// What one source's arm of [`load`] builds.
struct Built {
    net: Net,
    num_classes: usize,
    input_numel: usize,
    id: ModelId,
    /// `(stiffness.json field, gram.safetensors metadata key, architecture JSON)`.
    architecture: (&'static str, &'static str, String),
    /// `measurement.json`'s `model`, without `files`.
    record: serde_json::Value,
}

/// A loaded network and what every subcommand needs to know about it.
pub struct LoadedModel {
    /// The network.
    pub net: Net,
    /// Its output width: the class count.
    pub num_classes: usize,
    /// SHA-256 of the weights and the architecture, and a description (cross jobs resume on it).
    pub id: ModelId,
    /// Bytes of the parameters.
    pub param_bytes: u64,
    /// Per-example input elements the network takes.
    pub input_numel: usize,
    /// The model files read besides the weights: `(role, path)` (config, spec, key map).
    pub files: Vec<(&'static str, PathBuf)>,
    /// The flag that named the network (`--spec FILE`, `--preset fc6`, ...), for messages.
    pub source: String,
    architecture: (&'static str, &'static str, String),
    record: serde_json::Value,
}

impl LoadedModel {
    /// What `measurement.json` records as `model`: `{"kind": "preset", "config": ...}` or
    /// `{"kind": "spec", "spec": ...}`, with `files`: the model files read besides the weights.
    pub fn record(&self) -> anyhow::Result<serde_json::Value> {
        let mut files = Vec::new();
        for (role, p) in &self.files {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            files.push(serde_json::json!({ "role": role, "path": p, "sha256": stiff_data::sha256_hex(&bytes) }));
        }
        let mut r = self.record.clone();
        r["files"] = files.into();
        Ok(r)
    }

    /// The architecture as `stiffness.json` holds it (field `model`: the config, or `spec`: the
    /// layer list) and as `gram.safetensors` metadata (key `stiff.config` or `stiff.spec`, the
    /// JSON text): `(field, metadata key, JSON text)`.
    pub fn architecture(&self) -> &(&'static str, &'static str, String) {
        &self.architecture
    }

    /// The measurement subject with `loss` (presets are measured with cross-entropy).
    pub fn subject<'a>(&'a self, loss: &'a Loss) -> anyhow::Result<Subject<'a>> {
        Ok(match &self.net {
            Net::Preset(m) => {
                if !matches!(loss, Loss::CrossEntropy) {
                    bail!("--loss {loss:?}: {} is measured with cross-entropy; other losses need --spec", self.source);
                }
                Subject::Preset(m)
            }
            Net::Spec(model) => Subject::Spec { model, loss },
            Net::Onnx(_) => Subject::Network { net: &self.net, loss },
        })
    }

    /// Whether the network takes a per-example loss other than cross-entropy (the presets'
    /// kernels and records are cross-entropy only).
    pub fn takes_any_loss(&self) -> bool {
        matches!(self.net, Net::Spec(_) | Net::Onnx(_))
    }

    /// Labels must be below the class count; `what` names where they come from.
    pub fn check_labels(&self, labels: &[u32], what: &str) -> anyhow::Result<()> {
        let k = self.num_classes;
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= k) {
            bail!("{what}: label {l} at index {i} is out of range for a {k}-class model ({})", self.source);
        }
        Ok(())
    }
}

/// What the records say about an ONNX network: the graph file, its opset, the content
/// fingerprint, the input shape, the class count and the parameters with their shapes.
fn onnx_summary(g: &OnnxNet, fingerprint: &str) -> serde_json::Value {
    let params: Vec<serde_json::Value> =
        g.parameter_info().iter().map(|p| serde_json::json!({ "name": p.name, "shape": p.shape })).collect();
    serde_json::json!({
        "file": g.graph().path,
        "opset": g.graph().opset,
        "fingerprint": fingerprint,
        "input": g.input_shape(),
        "outputs": g.num_outputs(),
        "parameters": params,
    })
}

/// `--num-classes`, if given, must equal the network's class count `k` (`what` names its source).
fn agree(args: &ModelArgs, what: &str, k: usize) -> anyhow::Result<()> {
    match args.num_classes {
        Some(given) if given != k => bail!("--num-classes {given} contradicts {what}, which has {k} classes"),
        _ => Ok(()),
    }
}

/// The class count a preset checkpoint stores: the length of its last layer's bias.
fn checkpoint_classes(w: &Path, p: Preset) -> anyhow::Result<Option<usize>> {
    let (tensors, _) = stiff_models::io::load_tensors(w, &Device::Cpu)
        .with_context(|| format!("reading --weights {}", w.display()))?;
    Ok(tensors.get(&output_bias_key(&p.arch())).and_then(|b| b.dims1().ok()))
}

/// Key of the bias of a network's last layer (its length is the class count): `layers.{depth}.bias`
/// for an MLP, `head.bias` for a CNN (see the stiff-models parameter names).
pub(crate) fn output_bias_key(arch: &stiff_models::ArchSpec) -> String {
    match arch {
        stiff_models::ArchSpec::Mlp { hidden } => format!("layers.{}.bias", hidden.len()),
        stiff_models::ArchSpec::Cnn { .. } => "head.bias".to_string(),
    }
}

/// Builds the network `args` name with its `--weights`, and checks it.
pub fn load(args: &ModelArgs, cx: &LoadContext<'_>) -> anyhow::Result<LoadedModel> {
    args.check_flags()?;
    let w = args.weights()?;
    let source = args.source_flag();
    let mut files = Vec::new();
    // One arm per source; everything after the match is the same for all of them.
    let built = match Source::of(args) {
        Source::Onnx(path) => {
            files.push(("onnx", path.to_path_buf()));
            if let Some(w) = &args.weights {
                files.push(("weights", w.clone()));
            }
            let opts = OnnxOptions {
                dtype: cx.dtype,
                device: cx.device.clone(),
                trainable: args.trainable.clone().map(Trainable::Matching).unwrap_or_default(),
                weights: args.weights.clone(),
            };
            let g = OnnxNet::load(path, &opts).with_context(|| format!("--onnx {}", path.display()))?;
            let fingerprint = g.fingerprint();
            let summary = onnx_summary(&g, &fingerprint);
            Built {
                num_classes: g.num_outputs(),
                input_numel: g.input_shape().iter().product(),
                id: ModelId { description: format!("{} (onnx, {fingerprint})", path.display()), fingerprint },
                architecture: ("onnx", "stiff.onnx", serde_json::to_string(&summary)?),
                record: serde_json::json!({ "kind": "onnx", "onnx": summary }),
                net: Net::Onnx(Box::new(g)),
            }
        }
        Source::Spec(spec_path) => {
            let spec =
                ModelSpec::from_json_file(spec_path).with_context(|| format!("--spec {}", spec_path.display()))?;
            files.push(("spec", spec_path.to_path_buf()));
            let keys = match &args.key_map {
                Some(p) => {
                    files.push(("key_map", p.clone()));
                    KeyMap::from_json_file(p).with_context(|| format!("--key-map {}", p.display()))?
                }
                None => KeyMap::default(),
            };
            let model = SpecModel::load(&spec, w, &keys, cx.dtype, cx.device)
                .with_context(|| format!("--weights {} for --spec {}", w.display(), spec_path.display()))?;
            let spec_json = serde_json::to_string(&spec)?;
            Built {
                num_classes: spec.num_outputs()?,
                input_numel: spec.input.iter().product(),
                id: stiff_cross::model_id(w, &serde_json::to_string(&(&spec, &keys))?)?,
                architecture: ("spec", "stiff.spec", spec_json),
                record: serde_json::json!({ "kind": "spec", "spec": spec }),
                net: Net::Spec(model),
            }
        }
        Source::Preset(p) => {
            let from_head = checkpoint_classes(w, p)?;
            if let Some(h) = from_head {
                agree(args, &format!("--weights {} (its last layer)", w.display()), h)?;
            }
            let k = args.num_classes.or(from_head).or(cx.dataset_classes).or(cx.label_classes).ok_or_else(|| {
                anyhow!("cannot tell the class count of --weights {}: give --num-classes", w.display())
            })?;
            preset_net(w, Some(&ModelConfig::preset(p, cx.input, k)), cx)?
        }
        Source::Config(c) => {
            let text = std::fs::read_to_string(c).with_context(|| format!("reading --config {}", c.display()))?;
            let cfg: ModelConfig = serde_json::from_str(&text)
                .with_context(|| format!("--config {}: not a model configuration", c.display()))?;
            files.push(("config", c.to_path_buf()));
            preset_net(w, Some(&cfg), cx)?
        }
        Source::Stored => preset_net(w, None, cx)?,
    };
    // The class count is the network's output width; --num-classes may only repeat it.
    agree(args, &source, built.num_classes)?;
    let param_bytes =
        built.net.parameters().iter().map(|(_, v)| (v.elem_count() * v.dtype().size_in_bytes()) as u64).sum();
    let Built { net, num_classes, input_numel, id, architecture, record } = built;
    Ok(LoadedModel { net, num_classes, id, param_bytes, input_numel, files, source, architecture, record })
}

/// A stiff-models network with the `--weights`: of configuration `cfg`, or (`None`) of the one
/// stored in the checkpoint.
fn preset_net(w: &Path, cfg: Option<&ModelConfig>, cx: &LoadContext<'_>) -> anyhow::Result<Built> {
    let model = match cfg {
        Some(cfg) => Model::load_with_config(w, cfg, cx.dtype, cx.device),
        None => match Model::load(w, cx.dtype, cx.device) {
            Err(e @ stiff_models::ModelError::NoConfig { .. }) => {
                return Err(anyhow::Error::new(e)
                    .context("pass --preset, --config or --spec to say which architecture the weights are for"))
            }
            other => other,
        },
    }
    .with_context(|| format!("loading --weights {}", w.display()))?;
    let config = model.config();
    let config_json = serde_json::to_string(config)?;
    Ok(Built {
        num_classes: config.num_classes,
        input_numel: config.input.numel(),
        id: stiff_cross::model_id(w, &config_json)?,
        architecture: ("model", stiff_models::io::CONFIG_METADATA_KEY, config_json),
        record: serde_json::json!({ "kind": "preset", "config": config }),
        net: Net::Preset(model),
    })
}
