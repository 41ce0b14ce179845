//! `stiff measure`: stiffness of a user's checkpoint on a dataset subset: class matrices
//! (sign and cosine, with bootstrap intervals), distance curves per space with zero crossings,
//! and figures.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle::DType;
use stiff_data::DatasetName;
use stiff_experiments::measure::{measure, MeasureSettings};
use stiff_experiments::prepare::{prepare, DataSettings};
use stiff_experiments::store::write_json;
use stiff_models::{Model, ModelConfig, Preset};
use stiff_plot::{heatmap_figure, line_figure, Heatmap, HeatmapFigure, LineFigure, Panel, Series};

/// Version of the `measurement.json` layout (see `docs/formats.md`).
pub const MEASURE_SCHEMA_VERSION: u32 = 2;

#[derive(clap::Args)]
pub struct MeasureArgs {
    /// Checkpoint (safetensors, keys as stiff-models documents).
    #[arg(long)]
    weights: PathBuf,
    /// Architecture preset, needed when the checkpoint carries no `stiff.config` metadata.
    #[arg(long, value_parser = crate::gram::preset_parser())]
    preset: Option<Preset>,
    /// The dataset whose test split is measured.
    #[arg(long, value_parser = crate::gram::dataset_parser())]
    dataset: DatasetName,
    /// Class-balanced validation examples to measure on (default 500, 3000 for CIFAR-100).
    #[arg(long)]
    subset: Option<usize>,
    /// Seed of the subset.
    #[arg(long, default_value_t = 0)]
    subset_seed: u64,
    /// Dataset directory, the only place looked [default: $STIFF_DATA_DIR, else the user cache].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Input preprocessing: per-example (zero mean, unit variance per image, as training used)
    /// or none.
    #[arg(long, default_value = "per-example", value_parser = ["per-example", "none"])]
    preprocess: String,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Distance bins over [0, 2].
    #[arg(long, default_value_t = 40)]
    bins: usize,
    /// Bootstrap replicates for the intervals (0 = none).
    #[arg(long, default_value_t = 200)]
    bootstrap: usize,
    /// Output directory (created if missing; checked writable before any work).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: MeasureArgs) -> Result<()> {
    let device = stiff_experiments::runner::parse_device(&a.device)?;
    stiff_fs::ensure_writable_dir(&a.out).context("--out")?;
    let name = a.dataset;
    let mut ds = DataSettings::for_dataset(name);
    if a.preprocess == "none" {
        ds.preprocess = stiff_data::preprocess::Preprocess::none();
    }
    if let Some(n) = a.subset {
        ds.stiffness_subset = n;
    }
    ds.subset_seed = a.subset_seed;
    let data = prepare(name, a.data_dir.as_deref(), &ds, &device)?;
    let files_read = stiff_data::source_files(name, a.data_dir.as_deref())?;
    let model = match a.preset {
        Some(p) => {
            let cfg = ModelConfig::preset(p, data.input, data.num_classes());
            Model::load_with_config(&a.weights, &cfg, DType::F32, &device)?
        }
        None => match Model::load(&a.weights, DType::F32, &device) {
            Err(e @ stiff_models::ModelError::NoConfig { .. }) => {
                return Err(anyhow::Error::new(e).context("pass --preset to say which architecture the weights are for"))
            }
            other => other?,
        },
    };
    let mut settings = MeasureSettings { bootstrap_reps: a.bootstrap, ..Default::default() };
    settings.bins.bins = a.bins;
    let m = measure(&model, &data.stiff_x, &data.stiff_y, data.num_classes(), &settings)?;
    write_json(
        &a.out.join("measurement.json"),
        &serde_json::json!({ "schema_version": MEASURE_SCHEMA_VERSION, "weights": a.weights,
            "weights_sha256": stiff_data::sha256_hex(&std::fs::read(&a.weights).with_context(|| format!("reading --weights {}", a.weights.display()))?),
            "dataset": name, "files_read": files_read, "data_settings": ds, "subset": data.stiff_idx.len(),
            "subset_seed": a.subset_seed, "device": a.device, "settings": settings, "measurement": m }),
    )?;
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
        &a.out.join("class_stiffness"),
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
        &a.out.join("distance_curves"),
    )?;
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
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
