//! `stiff cross`: stiffness between whole datasets (every row example against every column
//! example), streamed in tiles that are reduced on the fly, checkpointed, and shardable.
//!
//! ```text
//! stiff cross --preset fc6 --weights W --dataset mnist --rows train --cols test --out DIR
//! stiff cross --spec net.json --weights state_dict.pt --dataset mnist --out DIR   # any nn.Sequential
//! stiff cross ... --shard 2/4          # one of 4 processes; then:
//! stiff cross merge DIR
//! ```
//! `--rows` / `--cols`: `train`, `test`, `N` (class-balanced subset of N test examples),
//! `train:N` / `test:N` (subset of that split), or a safetensors inputs file with `x` (N, ...)
//! and `y` (N). Equal specs mean the same set: self-pairs are excluded.
//!
//! Writes `DIR/plan.json`, `DIR/examples.json`, `DIR/tiles/*` (checkpoints) and, once every
//! tile is done, `DIR/cross.json`, `class_sign.csv`, `class_cosine.csv`, `columns.csv`,
//! `cross.png`, `cross.svg` (see the `stiff-cross` crate).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use candle::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use stiff_cross::{CrossOptions, ExampleSet, RunControl, Shard};
use stiff_fs::{DirLock, LockMode};
use stiff_gradkernel::Method;
use stiff_models::InputShape;

use crate::memory;
use crate::model_source::{self, LoadContext, ModelArgs};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CrossArgs {
    #[command(subcommand)]
    pub sub: Option<CrossSub>,
    #[command(flatten)]
    pub run: CrossRunArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum CrossSub {
    /// Combine the finished tiles of all shards in DIR into cross.json, CSVs and heatmaps.
    Merge {
        /// The folder given as --out to every shard.
        dir: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct CrossRunArgs {
    /// The network: `--preset`/`--config`/`--spec` (+ `--key-map`), `--weights`, `--num-classes`,
    /// `--preprocess` (the same flags as `gram` and `measure`).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Dataset for `train`/`test`/subset sides (mnist, fashion-mnist, cifar10, cifar100).
    #[arg(long)]
    pub dataset: Option<stiff_data::DatasetName>,
    /// Dataset directory (default: the stiff-data search path). Never downloads.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Row examples: train, test, N, train:N, test:N, or an inputs file.
    #[arg(long, default_value = "train")]
    pub rows: String,
    /// Column examples: same forms as --rows.
    #[arg(long, default_value = "test")]
    pub cols: String,
    /// Seed of subset draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (shared by all shards).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Memory budget in MiB for the data the command holds: the dataset while loading, both
    /// sides' examples, the model and the tiles' working memory (sizes the tiles).
    #[arg(long, default_value_t = 2048)]
    pub budget_mb: usize,
    /// Rows per tile (default: from the budget).
    #[arg(long)]
    pub tile_rows: Option<usize>,
    /// Columns per tile (default: all columns, at most 16384).
    #[arg(long)]
    pub tile_cols: Option<usize>,
    /// Gram products in f64.
    #[arg(long)]
    pub f64: bool,
    /// auto, factorised or materialised.
    #[arg(long, default_value = "auto", value_parser = parse_method)]
    pub method: Method,
    /// Compute only shard K of N (0-based), e.g. from a Slurm array task; merge afterwards.
    #[arg(long)]
    pub shard: Option<String>,
    /// Stop after computing this many tiles (rerun to continue).
    #[arg(long)]
    pub max_tiles: Option<usize>,
    /// Length of the most-anti-stiff list in cross.json.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Do not merge at the end even if every tile is finished.
    #[arg(long)]
    pub no_merge: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_method(s: &str) -> Result<Method, String> {
    match s {
        "auto" => Ok(Method::Auto),
        "factorised" | "factorized" => Ok(Method::Factorised),
        "materialised" | "materialized" => Ok(Method::Materialised),
        _ => Err(format!("unknown method `{s}` (expected auto, factorised or materialised)")),
    }
}

/// One side as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Side {
    Split { train: bool, subset: Option<usize> },
    File(PathBuf),
}

fn parse_side(arg: &str, s: &str) -> anyhow::Result<Side> {
    let split = |name: &str| match name {
        "train" => Some(true),
        "test" => Some(false),
        _ => None,
    };
    if let Some(t) = split(s) {
        return Ok(Side::Split { train: t, subset: None });
    }
    if let Ok(n) = s.parse::<usize>() {
        return Ok(Side::Split { train: false, subset: Some(n) });
    }
    if let Some((a, b)) = s.split_once(':') {
        if let (Some(t), Ok(n)) = (split(a), b.parse::<usize>()) {
            return Ok(Side::Split { train: t, subset: Some(n) });
        }
    }
    let p = PathBuf::from(s);
    if p.exists() {
        return Ok(Side::File(p));
    }
    bail!("{arg} `{s}`: expected train, test, N, train:N, test:N, or an existing inputs file")
}

fn load_file(path: &Path, pre: crate::examples::InputPreprocess) -> anyhow::Result<ExampleSet> {
    let (mut t, _) = stiff_models::io::load_tensors(path, &Device::Cpu)
        .with_context(|| format!("reading inputs file {}", path.display()))?;
    let x = t.remove("x").ok_or_else(|| anyhow!("{}: missing tensor `x` (inputs, (N, ...))", path.display()))?;
    let y = t.remove("y").ok_or_else(|| anyhow!("{}: missing tensor `y` (labels, (N))", path.display()))?;
    if x.rank() < 2 || x.dim(0)? == 0 || !x.dtype().is_float() {
        bail!("{}: `x` must be a float (N, ...) tensor with N > 0, got {:?} {:?}", path.display(), x.dtype(), x.dims());
    }
    // Found here, naming the file, not after the tiles were computed.
    stiff_models::io::check_float_finite(path, "x", &x).context("inputs file")?;
    let n = x.dim(0)?;
    if y.dims() != [n] {
        bail!("{}: `y` has shape {:?} but `x` has {n} examples", path.display(), y.dims());
    }
    let labels: Vec<i64> = match y.dtype() {
        DType::U8 | DType::U32 | DType::I64 => y.to_dtype(DType::I64)?.to_vec1()?,
        other => bail!("{}: `y` must be u8, u32 or i64 labels, got {other:?}", path.display()),
    };
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l > u32::MAX as i64) {
        bail!("{}: label {l} at index {i} is negative or too large", path.display());
    }
    let x = pre.apply(&x.to_dtype(DType::F32)?)?;
    let name = format!("{} ({n}){}", path.display(), preprocess_note(pre, crate::examples::InputPreprocess::None));
    Ok(ExampleSet::new(name, x, labels.into_iter().map(|l| l as u32).collect(), (0..n).collect())?)
}

fn load_side(args: &CrossRunArgs, ds: Option<&stiff_data::Dataset>, side: &Side) -> anyhow::Result<ExampleSet> {
    match side {
        Side::File(p) => load_file(p, args.model.preprocess_for(false)),
        Side::Split { train, subset } => {
            let (ds, name) = match (ds, args.dataset) {
                (Some(d), Some(n)) => (d, n),
                _ => bail!("--rows/--cols train, test or a subset size need --dataset"),
            };
            let split = if *train { &ds.train } else { &ds.test };
            let sname = if *train { "train" } else { "test" };
            let idx: Vec<usize> = match subset {
                None => (0..split.len()).collect(),
                Some(n) => stiff_data::sampling::balanced_subset(&split.labels, ds.num_classes(), *n, args.seed)
                    .with_context(|| format!("subset of {n} from the {name} {sname} split"))?,
            };
            let part = if subset.is_some() { split.select(&idx)? } else { split.clone() };
            let pre = args.model.preprocess_for(true);
            let x = pre.apply(&part.images)?;
            let note = preprocess_note(pre, crate::examples::InputPreprocess::PerExample);
            let desc = match subset {
                None => format!("{name} {sname} ({}){note}", idx.len()),
                Some(n) => format!("{name} {sname}, balanced subset of {n} (seed {}){note}", args.seed),
            };
            Ok(ExampleSet::new(desc, x, part.labels.clone(), idx)?)
        }
    }
}

/// Bytes held while the sides are loaded: the decoded dataset plus each standardised side drawn
/// from it (the dataset is held until both sides exist), or twice an inputs file's size (its
/// bytes and its tensors). Checks the subset sizes against the splits on the way.
fn loading_bytes(args: &CrossRunArgs, sides: &[&Side]) -> anyhow::Result<u64> {
    let mut need = 0u64;
    let mut data = 0u64;
    for (flag, side) in ["--rows", "--cols"].into_iter().zip(sides) {
        match side {
            Side::File(p) => need += 2 * memory::file_bytes(p),
            Side::Split { train, subset } => {
                let Some(name) = args.dataset else { continue };
                let (n_train, n_test) = name.official_counts();
                let (split, available) = if *train { ("train", n_train) } else { ("test", n_test) };
                if let Some(n) = subset {
                    crate::limits::check_subset(flag, *n, name, split, available)?;
                }
                let (c, h, w) = name.input_shape();
                data = memory::dataset_load_bytes(name);
                need += (subset.unwrap_or(available) * c * h * w * 4) as u64;
            }
        }
    }
    Ok(need + data)
}

/// `, preprocess X` in a side's description when it is not the side's default (the default
/// keeps the descriptions, hence the plans, of jobs started before `--preprocess` existed).
fn preprocess_note(pre: crate::examples::InputPreprocess, default: crate::examples::InputPreprocess) -> String {
    if pre == default {
        String::new()
    } else {
        format!(", preprocess {pre:?}")
    }
}

fn input_shape(x: &Tensor) -> anyhow::Result<InputShape> {
    Ok(match x.dims() {
        [_, c, h, w] => InputShape::new(*c, *h, *w),
        [_, h, w] => InputShape::new(1, *h, *w),
        [_, f] => InputShape::new(1, 1, *f),
        d => bail!("inputs must be (N, C, H, W), (N, H, W) or (N, F); got {d:?}"),
    })
}

pub fn run(args: CrossArgs) -> anyhow::Result<()> {
    match args.sub {
        Some(CrossSub::Merge { dir }) => merge_dir(&dir),
        None => run_job(args.run),
    }
}

/// Name of the lock file that serialises merges of one folder (a merge is repeatable: a second
/// one waits, then writes the same files again).
const MERGE_LOCK_FILE: &str = ".stiff-merge.lock";

/// `cross merge DIR`: the folder must exist (a typo is not a new empty job) and be writable.
fn merge_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("cross merge {}: no such folder (give the --out of the cross job)", dir.display());
    }
    let _job = crate::outdir::claim(dir, "cross merge", LockMode::Shared, "stiff cross merge")?;
    merge(dir)
}

fn merge(dir: &Path) -> anyhow::Result<()> {
    let _merging = DirLock::wait_exclusive(dir, MERGE_LOCK_FILE, "stiff cross merge")?;
    let out = stiff_cross::merge(dir)?;
    let r = &out.report;
    eprintln!(
        "stiff cross merge: {} x {} = {} pairs; sign within {:.4} between {:.4}; cosine within {:.4} between {:.4}; {:.1} s of compute; wrote {}",
        r.settings.rows.n,
        r.settings.cols.n,
        r.pairs,
        r.class_sign.within,
        r.class_sign.between,
        r.class_cosine.within,
        r.class_cosine.between,
        r.timing.seconds,
        dir.join("cross.json").display()
    );
    Ok(())
}

fn run_job(args: CrossRunArgs) -> anyhow::Result<()> {
    let out = args.out.clone().ok_or_else(|| anyhow!("--out DIR is required"))?;
    args.model.check_flags()?;
    // Checked before any work: `budget_mb << 20` wrapped to a tiny budget for huge values.
    let budget = crate::gram::budget_bytes(args.budget_mb as u64)? as usize;
    let rows_side = parse_side("--rows", &args.rows)?;
    let cols_side = parse_side("--cols", &args.cols)?;
    let shard = args.shard.as_deref().map(Shard::parse).transpose()?;
    let needs_data = [&rows_side, &cols_side].iter().any(|s| matches!(s, Side::Split { .. }));
    let sides: &[&Side] = if cols_side == rows_side { &[&rows_side] } else { &[&rows_side, &cols_side] };
    let need = loading_bytes(&args, sides)?;
    // Shared: the shards of one job write their own tiles into one folder; `gram`/`measure`
    // (exclusive) are kept out. Held until this process is done, merge included.
    let _lock = crate::outdir::claim(&out, "--out", LockMode::Shared, "stiff cross")?;
    memory::check_loading(args.budget_mb as u64, budget as u64, need, "loading the examples")?;
    let ds = match (needs_data, args.dataset) {
        (true, Some(name)) => Some(
            stiff_data::load(name, args.data_dir.as_deref())
                .with_context(|| format!("loading dataset {name} (fetch it first: stiff data fetch {name})"))?,
        ),
        (true, None) => bail!("--rows/--cols train, test or a subset size need --dataset"),
        (false, _) => None,
    };
    let rows = load_side(&args, ds.as_ref(), &rows_side)?;
    let cols = if cols_side == rows_side { rows.clone() } else { load_side(&args, ds.as_ref(), &cols_side)? };
    let cx = LoadContext {
        input: input_shape(&rows.x)?,
        dataset_classes: ds.as_ref().map(|d| d.num_classes()),
        label_classes: rows.labels.iter().chain(&cols.labels).max().map(|&m| m as usize + 1),
        dtype: DType::F32,
        device: &Device::Cpu,
    };
    let model = model_source::load(&args.model, &cx)?;
    drop(ds);
    let mut held = memory::tensor_bytes(&rows.x) + model.param_bytes;
    if cols_side != rows_side {
        held += memory::tensor_bytes(&cols.x);
    }
    let budget =
        memory::kernel_budget(args.budget_mb as u64, budget as u64, held, "the examples of both sides and the model")?
            as usize;
    let opts = CrossOptions::default()
        .with_memory_budget_bytes(budget)
        .with_tile_rows(args.tile_rows)
        .with_tile_cols(args.tile_cols)
        .with_accumulate_f64(args.f64)
        .with_method(args.method)
        .with_same_set(cols_side == rows_side)
        .with_top(args.top);
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} tiles, {elapsed_precise} elapsed, ETA {eta_precise}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("cross {} x {}", rows.len(), cols.len()));
    let mut cb = |p: stiff_cross::Progress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    };
    let summary = stiff_cross::run_net(
        &model.net,
        model.num_classes,
        model.id.clone(),
        &rows,
        &cols,
        &opts,
        &out,
        RunControl::default().with_shard(shard).with_max_tiles(args.max_tiles).with_progress(Some(&mut cb)),
    )?;
    bar.finish_and_clear();
    let p = &summary.plan;
    eprintln!(
        "stiff cross: {} x {} in {} tiles of {} x {} ({} in this shard: {} computed, {} already done)",
        p.rows.n,
        p.cols.n,
        summary.tiles_total,
        p.tile_rows,
        p.tile_cols,
        summary.tiles_in_shard,
        summary.computed,
        summary.resumed
    );
    if args.tile_rows.is_none() && p.tile_rows < p.rows.n {
        eprintln!(
            "stiff cross: note: --budget-mb {} allows tiles of {} of the {} rows; small tiles are slow, a larger \
             --budget-mb makes this faster",
            args.budget_mb, p.tile_rows, p.rows.n
        );
    }
    if summary.complete && !args.no_merge {
        merge(&out)?;
    } else if !summary.complete {
        eprintln!("not all tiles are finished yet; when they are: stiff cross merge {}", out.display());
    }
    Ok(())
}
