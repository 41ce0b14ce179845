//! `stiff measure`: stiffness of a user's checkpoint on a dataset subset: class matrices
//! (sign and cosine, with bootstrap intervals), distance curves per space with zero crossings,
//! and figures. The checkpoint is a preset's (`--preset`, or its stored config) or any PyTorch
//! `nn.Sequential` state dict (`--spec FILE --weights W [--key-map M] [--loss L]`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle::DType;
use stiff_data::DatasetName;
use stiff_experiments::measure::{measure_subject, MeasureSettings, Subject};
use stiff_experiments::prepare::{prepare, DataSettings};
use stiff_models::{KeyMap, Model, ModelConfig, ModelSpec, Preset, SpecModel};

use crate::examples::{parse_preprocess, InputPreprocess};
use stiff_plot::{heatmap_figure, line_figure, Heatmap, HeatmapFigure, LineFigure, Panel, Series};

/// Version of the `measurement.json` layout (see `docs/formats.md`). 3: `model` (preset or
/// spec), `loss` and `preprocess` recorded. 4: `run_id`; the figures and `measurement.json` are
/// published as one set, `measurement.json` last.
pub const MEASURE_SCHEMA_VERSION: u32 = 4;

/// The files of one measurement, in publication order: `measurement.json` (the completion
/// file) comes last.
const FIGURE_FILES: [&str; 4] =
    ["class_stiffness.png", "class_stiffness.svg", "distance_curves.png", "distance_curves.svg"];

#[derive(clap::Args)]
pub struct MeasureArgs {
    /// Checkpoint: safetensors with the stiff-models keys, or with `--spec` a PyTorch state dict
    /// (safetensors or `.pt`/`.pth`, keys `0.weight`, ...; a `module.` prefix is stripped).
    #[arg(long)]
    weights: PathBuf,
    /// Architecture preset, needed when the checkpoint carries no `stiff.config` metadata.
    #[arg(long, conflicts_with = "spec", value_parser = crate::gram::preset_parser())]
    preset: Option<Preset>,
    /// Any `nn.Sequential` as a JSON layer list in PyTorch terms (stiff-models `ModelSpec`, see
    /// the gradient-kernel README); its input shape must be the dataset's image shape (or its
    /// flattened size) and its output count the dataset's class count.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// With `--spec`: JSON object renaming weight-file keys to spec keys
    /// (`{"features.0.weight": "0.weight"}`).
    #[arg(long, requires = "spec")]
    key_map: Option<PathBuf>,
    /// Loss whose per-example gradients are compared: cross-entropy or mse-onehot (needs --spec).
    #[arg(long, default_value = "cross-entropy", value_parser = ["cross-entropy", "mse-onehot"])]
    loss: String,
    /// The dataset whose test split is measured.
    #[arg(long, value_parser = crate::gram::dataset_parser())]
    dataset: DatasetName,
    /// Class-balanced test examples to measure on (default 500, 3000 for CIFAR-100); a multiple
    /// of the class count, at most the test split.
    #[arg(long)]
    subset: Option<usize>,
    /// Seed of the subset.
    #[arg(long, default_value_t = 0)]
    subset_seed: u64,
    /// Dataset directory, the only place looked [default: $STIFF_DATA_DIR, else the user cache].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Input preprocessing: per-example (each image to zero mean, unit variance, as training
    /// used), none (pixels in [0, 1]) or mean-std:M,S ((x - M) / S on the [0, 1] pixels, e.g. a
    /// PyTorch checkpoint trained with `Normalize(M, S)`). Recorded in measurement.json.
    #[arg(long, default_value = "per-example", value_parser = parse_preprocess)]
    preprocess: InputPreprocess,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Distance bins over [0, 2] (1 to 100000).
    #[arg(long, default_value_t = 40)]
    bins: usize,
    /// Bootstrap replicates for the intervals (0 = none; at most 100000).
    #[arg(long, default_value_t = 200)]
    bootstrap: usize,
    /// Output directory (created if missing; checked writable before any work).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: MeasureArgs) -> Result<()> {
    let device = stiff_experiments::runner::parse_device(&a.device)?;
    // clap's `requires` is not enforced next to a conflicting flag (--preset): check it here.
    if let (Some(k), None) = (&a.key_map, &a.spec) {
        bail!("--key-map {} only applies to a --spec model; give --spec, or drop --key-map", k.display());
    }
    // Sizes first: a huge one failed only after the Gram was computed.
    check_limits(&a)?;
    // Held until the results are published: a second writer of --out is refused, not mixed in.
    let _lock = crate::outdir::claim(&a.out, "--out", stiff_fs::LockMode::Exclusive, "stiff measure")?;
    let name = a.dataset;
    let mut ds = DataSettings::for_dataset(name);
    // The dataset loader standardises per example itself; none and mean-std start from [0, 1].
    if a.preprocess != InputPreprocess::PerExample {
        ds.preprocess = stiff_data::preprocess::Preprocess::none();
    }
    if a.spec.is_none() && a.loss != "cross-entropy" {
        bail!("--loss {}: presets are measured with cross-entropy; other losses need --spec", a.loss);
    }
    if let Some(n) = a.subset {
        ds.stiffness_subset = n;
    }
    ds.subset_seed = a.subset_seed;
    // The user's files are read before the data: their errors come first.
    let spec = a.spec.as_ref().map(|p| load_spec(&a, p, &device)).transpose()?;
    let data = prepare(name, a.data_dir.as_deref(), &ds, &device)?;
    let stiff_x = match a.preprocess {
        InputPreprocess::MeanStd { .. } => a.preprocess.apply(&data.stiff_x)?,
        _ => data.stiff_x.clone(),
    };
    let files_read = stiff_data::source_files(name, a.data_dir.as_deref())?;
    let mut settings = MeasureSettings { bootstrap_reps: a.bootstrap, ..Default::default() };
    settings.bins.bins = a.bins;
    let (m, model_record) = match spec {
        Some((model, record)) => {
            check_spec_fits(&a, model.spec(), data.input.numel(), data.num_classes())?;
            let loss: stiff_gradkernel::Loss = a.loss.parse()?;
            let subject = Subject::Spec { model: &model, loss: &loss };
            (measure_subject(&subject, &stiff_x, &data.stiff_y, data.num_classes(), &settings)?, record)
        }
        None => {
            let model = load_preset(&a, &data, &device)?;
            let record = serde_json::json!({ "kind": "preset", "config": model.config() });
            (measure_subject(&Subject::Preset(&model), &stiff_x, &data.stiff_y, data.num_classes(), &settings)?, record)
        }
    };
    let weights = std::fs::read(&a.weights).with_context(|| format!("reading --weights {}", a.weights.display()))?;
    let mut json = serde_json::to_vec_pretty(&serde_json::json!({ "schema_version": MEASURE_SCHEMA_VERSION,
        "run_id": crate::outdir::new_run_id(), "weights": a.weights,
        "weights_sha256": stiff_data::sha256_hex(&weights),
        "model": model_record, "loss": a.loss, "preprocess": a.preprocess,
        "dataset": name, "files_read": files_read, "data_settings": ds, "subset": data.stiff_idx.len(),
        "subset_seed": a.subset_seed, "device": a.device, "settings": settings, "measurement": m }))?;
    json.push(b'\n');
    publish(&a, &data, &m, &json)?;
    summary(&m);
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// `--bins`, `--bootstrap` and `--subset` against their limits, before any data is read.
fn check_limits(a: &MeasureArgs) -> Result<()> {
    use crate::limits::{check_range, check_subset, MAX_BINS, MAX_BOOTSTRAP};
    check_range("--bins", a.bins, 1, MAX_BINS, "distance bins over [0, 2]")?;
    check_range("--bootstrap", a.bootstrap, 0, MAX_BOOTSTRAP, "bootstrap replicates")?;
    if let Some(n) = a.subset {
        check_subset("--subset", n, a.dataset, "test", a.dataset.official_counts().1)?;
    }
    Ok(())
}

/// All or none: the figures are drawn into a private folder inside `--out`, then staged with
/// `measurement.json` as one [`stiff_fs::FileSet`] (the old `measurement.json` is removed
/// first, the new one published last), so a failed rerun never leaves new files beside old ones.
fn publish(
    a: &MeasureArgs,
    data: &stiff_experiments::prepare::Prepared,
    m: &stiff_experiments::measure::Measurement,
    json: &[u8],
) -> Result<()> {
    let staging = stiff_fs::staging_dir(&a.out)?;
    figures(a, data, m, staging.path())?;
    let mut set = stiff_fs::FileSet::new();
    for name in FIGURE_FILES {
        let drawn = staging.path().join(name);
        set.stage_path(&a.out.join(name), ".tmp", |tmp| {
            std::fs::rename(&drawn, tmp).map_err(|e| stiff_fs::WriteError::new(tmp, e))
        })?;
    }
    set.stage(&a.out.join("measurement.json"), json)?;
    set.publish()?;
    Ok(())
}

/// `--spec` (and `--key-map`): the network with the `--weights`, and what to record.
fn load_spec(
    a: &MeasureArgs,
    spec_path: &std::path::Path,
    device: &candle::Device,
) -> Result<(SpecModel, serde_json::Value)> {
    let spec = ModelSpec::from_json_file(spec_path).with_context(|| format!("--spec {}", spec_path.display()))?;
    let keys = match &a.key_map {
        Some(p) => KeyMap::from_json_file(p).with_context(|| format!("--key-map {}", p.display()))?,
        None => KeyMap::default(),
    };
    let model = SpecModel::load(&spec, &a.weights, &keys, DType::F32, device)
        .with_context(|| format!("--weights {} for --spec {}", a.weights.display(), spec_path.display()))?;
    let sha = |p: &std::path::Path| -> Result<String> {
        Ok(stiff_data::sha256_hex(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?))
    };
    let mut files = vec![serde_json::json!({ "role": "spec", "path": spec_path, "sha256": sha(spec_path)? })];
    if let Some(p) = &a.key_map {
        files.push(serde_json::json!({ "role": "key_map", "path": p, "sha256": sha(p)? }));
    }
    Ok((model, serde_json::json!({ "kind": "spec", "spec": spec, "files": files })))
}

/// The spec's input must hold one image of the dataset and its outputs must be the classes.
fn check_spec_fits(a: &MeasureArgs, spec: &ModelSpec, input_numel: usize, classes: usize) -> Result<()> {
    let path = a.spec.as_deref().unwrap_or(std::path::Path::new("")).display();
    let want: usize = spec.input.iter().product();
    if want != input_numel {
        bail!(
            "--spec {path}: the network takes input {:?} ({want} values) but {} images have {input_numel}",
            spec.input,
            a.dataset
        );
    }
    let outputs = spec.num_outputs().with_context(|| format!("--spec {path}"))?;
    if outputs != classes {
        bail!("--spec {path}: the network has {outputs} outputs but {} has {classes} classes", a.dataset);
    }
    Ok(())
}

/// `--preset`, or the config stored in the checkpoint.
fn load_preset(a: &MeasureArgs, data: &stiff_experiments::prepare::Prepared, device: &candle::Device) -> Result<Model> {
    Ok(match a.preset {
        Some(p) => {
            let cfg = ModelConfig::preset(p, data.input, data.num_classes());
            Model::load_with_config(&a.weights, &cfg, DType::F32, device)?
        }
        None => match Model::load(&a.weights, DType::F32, device) {
            Err(e @ stiff_models::ModelError::NoConfig { .. }) => {
                return Err(anyhow::Error::new(e)
                    .context("pass --preset (or --spec) to say which architecture the weights are for"))
            }
            other => other?,
        },
    })
}

/// The class-stiffness heatmaps and the distance curves, drawn into `dir`.
fn figures(
    a: &MeasureArgs,
    data: &stiff_experiments::prepare::Prepared,
    m: &stiff_experiments::measure::Measurement,
    dir: &std::path::Path,
) -> Result<()> {
    let name = a.dataset;
    let cells = |c: &Vec<Vec<Option<f64>>>| -> Vec<Vec<f64>> {
        c.iter().map(|r| r.iter().map(|v| v.unwrap_or(f64::NAN)).collect()).collect()
    };
    let heat = |title: &str, values: Vec<Vec<f64>>| Heatmap {
        title: title.into(),
        values,
        row_labels: data.class_names.clone(),
        col_labels: data.class_names.clone(),
        range: (-1.0, 1.0),
        group_boundaries: if data.num_classes() == 100 { (1..20).map(|g| g * 5).collect() } else { vec![] },
    };
    heatmap_figure(
        &HeatmapFigure {
            title: format!("Class stiffness of {} on {} ({} examples)", a.weights.display(), name, m.n),
            panels: vec![
                heat(
                    &format!("sign: within {:.3}, between {:.3}", m.sign.within, m.sign.between),
                    cells(&m.class_sign),
                ),
                heat(
                    &format!("cosine: within {:.3}, between {:.3}", m.cosine.within, m.cosine.between),
                    cells(&m.class_cosine),
                ),
            ],
            columns: 2,
        },
        &dir.join("class_stiffness"),
    )?;
    let panel = |kind: &str, sign: bool| Panel {
        title: format!("{kind} stiffness vs distance"),
        x_label: "dot-product distance 1 - cos(u, v)".into(),
        y_label: format!("{kind} stiffness"),
        series: m
            .curves
            .iter()
            .map(|c| {
                let means = if sign { &c.curve.sign_mean } else { &c.curve.cos_mean };
                let crossing = if sign { &c.sign_first_crossing } else { &c.cos_first_crossing };
                let s = Series::new(
                    c.space.clone(),
                    c.curve.centres.clone(),
                    means.iter().map(|v| v.unwrap_or(f64::NAN)).collect(),
                );
                match stiff_experiments::measure::crossing_distance(crossing) {
                    Some(d) => s.with_marker(d, format!("{} {d:.2}", c.space)),
                    None => s,
                }
            })
            .collect(),
        hline: Some(0.0),
        ..Default::default()
    };
    line_figure(
        &LineFigure {
            title: format!("Stiffness vs distance: {} on {}", a.weights.display(), name),
            panels: vec![panel("sign", true), panel("cosine", false)],
            columns: 2,
        },
        &dir.join("distance_curves"),
    )?;
    Ok(())
}

/// The result on stdout.
fn summary(m: &stiff_experiments::measure::Measurement) {
    println!(
        "n = {}; sign: within {:.4}, between {:.4}; cosine: within {:.4}, between {:.4}; gram {:.3}s",
        m.n, m.sign.within, m.sign.between, m.cosine.within, m.cosine.between, m.gram_seconds
    );
    for c in &m.curves {
        println!(
            "  {:<8} first zero crossing of sign stiffness: {}",
            c.space,
            stiff_experiments::measure::crossing_distance(&c.sign_first_crossing)
                .map_or_else(|| format!("none ({:?})", c.sign_first_crossing), |d| format!("{d:.3}"))
        );
    }
}
