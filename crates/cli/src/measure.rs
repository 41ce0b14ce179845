//! `stiff measure`: stiffness of a user's checkpoint on a dataset subset: class matrices
//! (sign and cosine, with bootstrap intervals), distance curves per space with zero crossings,
//! and figures. The checkpoint is a preset's (`--preset`, `--config`, or its stored config) or any
//! PyTorch `nn.Sequential` state dict (`--spec FILE --weights W [--key-map M] [--loss L]`), loaded
//! by the loader all subcommands share ([`crate::model_source`]).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle::DType;
use stiff_data::DatasetName;
use stiff_experiments::measure::{measure_subject, MeasureSettings};
use stiff_experiments::prepare::{prepare, DataSettings};
use stiff_models::InputShape;

use crate::examples::InputPreprocess;
use crate::model_source::{self, LoadContext, LoadedModel, ModelArgs};
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
    /// The network: `--preset`/`--config`/`--spec` (+ `--key-map`), `--weights`, `--num-classes`,
    /// `--preprocess` (the same flags as `gram` and `cross`). A spec's input must hold one image
    /// of the dataset (or its flattened size) and every network's outputs must be its classes.
    #[command(flatten)]
    model: ModelArgs,
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
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Distance bins over [0, 2] (1 to 100000).
    #[arg(long, default_value_t = 40)]
    bins: usize,
    /// Bootstrap replicates for the intervals (0 = none; at most 100000).
    #[arg(long, default_value_t = 200)]
    bootstrap: usize,
    /// Compute in f64 (network, examples and Gram; default f32): for comparisons with another
    /// tool's f64 numbers, and where f32 rounding could break near ties (max pooling, ReLU at 0).
    #[arg(long)]
    f64: bool,
    /// Output directory (created if missing; checked writable before any work).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: MeasureArgs) -> Result<()> {
    let device = stiff_experiments::runner::parse_device(&a.device)?;
    a.model.check_flags()?;
    // Sizes first: a huge one failed only after the Gram was computed.
    check_limits(&a)?;
    // Held until the results are published: a second writer of --out is refused, not mixed in.
    let _lock = crate::outdir::claim(&a.out, "--out", stiff_fs::LockMode::Exclusive, "stiff measure")?;
    let name = a.dataset;
    // The examples are a dataset's: per-example standardisation unless --preprocess says otherwise.
    let preprocess = a.model.preprocess_for(true);
    let mut ds = DataSettings::for_dataset(name);
    // The dataset loader standardises per example itself; none and mean-std start from [0, 1].
    if preprocess != InputPreprocess::PerExample {
        ds.preprocess = stiff_data::preprocess::Preprocess::none();
    }
    if let Some(n) = a.subset {
        ds.stiffness_subset = n;
    }
    ds.subset_seed = a.subset_seed;
    // The user's files are read before the data: their errors come first.
    let (c, h, w) = name.input_shape();
    let cx = LoadContext {
        input: InputShape::new(c, h, w),
        dataset_classes: Some(name.num_classes()),
        label_classes: None,
        dtype: if a.f64 { DType::F64 } else { DType::F32 },
        device: &device,
    };
    let model = model_source::load(&a.model, &cx)?;
    check_fits(&a, &model, c * h * w, name.num_classes())?;
    let loss: stiff_gradkernel::Loss = a.loss.parse()?;
    let subject = model.subject(&loss)?;
    let data = prepare(name, a.data_dir.as_deref(), &ds, &device)?;
    let stiff_x = match preprocess {
        InputPreprocess::MeanStd { .. } => preprocess.apply(&data.stiff_x)?,
        _ => data.stiff_x.clone(),
    };
    let files_read = stiff_data::source_files(name, a.data_dir.as_deref())?;
    let mut settings = MeasureSettings { bootstrap_reps: a.bootstrap, ..Default::default() };
    settings.bins.bins = a.bins;
    let m = measure_subject(&subject, &stiff_x, &data.stiff_y, data.num_classes(), &settings)?;
    let weights_path = a.model.weights()?;
    let weights =
        std::fs::read(weights_path).with_context(|| format!("reading --weights {}", weights_path.display()))?;
    let mut json = serde_json::to_vec_pretty(&serde_json::json!({ "schema_version": MEASURE_SCHEMA_VERSION,
        "run_id": crate::outdir::new_run_id(), "weights": weights_path,
        "weights_sha256": stiff_data::sha256_hex(&weights),
        "model": model.record()?, "loss": a.loss, "preprocess": preprocess,
        "dataset": name, "files_read": files_read, "data_settings": ds, "subset": data.stiff_idx.len(),
        "subset_seed": a.subset_seed, "device": a.device, "f64": a.f64, "settings": settings, "measurement": m }))?;
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

/// The network's input must hold one image of the dataset and its outputs must be the classes.
fn check_fits(a: &MeasureArgs, model: &LoadedModel, input_numel: usize, classes: usize) -> Result<()> {
    let source = &model.source;
    if model.input_numel != input_numel {
        bail!(
            "{source}: the network takes {} values per example but {} images have {input_numel}",
            model.input_numel,
            a.dataset
        );
    }
    if model.num_classes != classes {
        bail!("{source}: the network has {} outputs but {} has {classes} classes", model.num_classes, a.dataset);
    }
    Ok(())
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
            title: format!("Class stiffness of {} on {} ({} examples)", weights_name(a), name, m.n),
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
            title: format!("Stiffness vs distance: {} on {}", weights_name(a), name),
            panels: vec![panel("sign", true), panel("cosine", false)],
            columns: 2,
        },
        &dir.join("distance_curves"),
    )?;
    Ok(())
}

/// The `--weights` path for figure titles.
fn weights_name(a: &MeasureArgs) -> String {
    a.model.weights.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
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
