//! # stiff-cross
//!
//! Stiffness between whole datasets: every row example (e.g. all 60,000 MNIST training images)
//! against every column example (e.g. all 10,000 test images), without ever holding the cross
//! Gram matrix `K[i,j] = g^rows_i . g^cols_j` (for fc6 the materialised gradients alone would be
//! 143 GB).
//!
//! * **Tiles.** `K` is cut into a fixed grid of `tile_rows x tile_cols` tiles, sized from the
//!   memory budget ([`CrossOptions::memory_budget_bytes`], default 2 GiB). Each tile is one
//!   [`stiff_gradkernel::cross_gram`] call (both sides' forward/backward recomputed, cheap next
//!   to the Gram product when tiles are large), reduced at once by
//!   [`stiff_analysis::reduce_tile`] into class-pair sums and counts and per-column sums, then
//!   dropped.
//! * **Checkpoints.** Each finished tile's sums go atomically to
//!   `DIR/tiles/tile-NNNNNN.safetensors`; a rerun skips finished tiles (resume).
//! * **Shards.** `Shard { k, n }` computes the tiles with `index % n == k`; any number of
//!   processes (Slurm array tasks) can share `DIR`. [`merge`] adds all tiles in tile-index
//!   order and writes `DIR/cross.json`, CSVs and heatmaps.
//! * **Same answer.** Sums are f64, counts integers, each tile is reduced in fixed row groups,
//!   and tiles are added in index order, so the result is bit-identical however the tiles were
//!   ordered, split over shards, or interrupted and resumed. The tile grid itself is part of the
//!   job (`DIR/plan.json`): a rerun with other settings, data or weights is refused.
#![deny(missing_docs)]

mod error;
mod report;
mod sets;
mod tilefile;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stiff_analysis::{reduce_tile, StiffnessSettings, TilePlace};
use stiff_gradkernel::{GramOptions, Method, Network};
use stiff_models::Model;

pub use error::{CrossError, Result};
pub use report::{merge, AntiStiff, CrossReport, MergeOutput};
pub use sets::{model_id, ExampleSet, ModelId};

/// Default memory budget: 2 GiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 2 << 30;

/// Version of `plan.json`, `examples.json`, tile files and `cross.json`: their top-level
/// `schema_version` (2: the field was called `format_version` in version 1). See
/// `docs/formats.md`.
pub const SCHEMA_VERSION: u32 = 2;

/// Options of a cross-stiffness job: [`CrossOptions::default`] and the `with_*` setters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CrossOptions {
    /// Working-memory budget in bytes (default [`DEFAULT_MEMORY_BUDGET`]): sizes the tiles.
    pub memory_budget_bytes: usize,
    /// Rows per tile (default: from the budget).
    pub tile_rows: Option<usize>,
    /// Columns per tile (default: all columns, at most 16,384).
    pub tile_cols: Option<usize>,
    /// Gram products in f64 (default false).
    pub accumulate_f64: bool,
    /// Gram method (default auto).
    pub method: Method,
    /// Rows and columns are the same example set: self-pairs are excluded. Default false.
    pub same_set: bool,
    /// Pairwise stiffness conventions.
    pub settings: StiffnessSettings,
    /// Length of the ranked list of most anti-stiff column examples in `cross.json` (default 20).
    pub top: usize,
}

impl Default for CrossOptions {
    fn default() -> Self {
        Self {
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET,
            tile_rows: None,
            tile_cols: None,
            accumulate_f64: false,
            method: Method::Auto,
            same_set: false,
            settings: StiffnessSettings::default(),
            top: 20,
        }
    }
}

stiff_models::options_setters!(CrossOptions {
    with_memory_budget_bytes => memory_budget_bytes: usize,
    with_tile_rows => tile_rows: Option<usize>,
    with_tile_cols => tile_cols: Option<usize>,
    with_accumulate_f64 => accumulate_f64: bool,
    with_method => method: Method,
    with_same_set => same_set: bool,
    with_settings => settings: StiffnessSettings,
    with_top => top: usize,
});

/// One side as recorded in the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideInfo {
    /// Human-readable origin, e.g. `mnist train (60000)`.
    pub name: String,
    /// Number of examples.
    pub n: usize,
    /// [`ExampleSet::fingerprint`] of the data.
    pub fingerprint: String,
}

/// Everything that fixes the answer of a job, stored as `DIR/plan.json`. Two processes with the
/// same plan compute bit-identical tiles (same machine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`SCHEMA_VERSION`] of the job (`format_version` in version 1 files).
    #[serde(alias = "format_version")]
    pub schema_version: u32,
    /// The row examples.
    pub rows: SideInfo,
    /// The column examples.
    pub cols: SideInfo,
    /// Classes of the model (labels are below it).
    pub num_classes: usize,
    /// Rows and columns are the same set (self-pairs excluded).
    pub same_set: bool,
    /// The model.
    pub model: ModelId,
    /// Rows per tile.
    pub tile_rows: usize,
    /// Columns per tile.
    pub tile_cols: usize,
    /// Tiles down the grid (`ceil(rows.n / tile_rows)`).
    pub row_tiles: usize,
    /// Tiles across the grid (`ceil(cols.n / tile_cols)`).
    pub col_tiles: usize,
    /// Memory budget handed to each tile's `cross_gram` (bytes).
    pub gram_budget_bytes: usize,
    /// Gram products in f64.
    pub accumulate_f64: bool,
    /// Gram method.
    pub method: Method,
    /// Pairwise stiffness conventions.
    pub settings: StiffnessSettings,
    /// Length of the most-anti-stiff list.
    pub top: usize,
}

/// One tile of the grid, row-major index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Row-major index in the grid.
    pub index: usize,
    /// Row range `[start, end)`.
    pub rows: (usize, usize),
    /// Column range `[start, end)`.
    pub cols: (usize, usize),
}

impl Plan {
    /// The plan for `rows x cols` under `opts`.
    pub fn new(
        rows: &ExampleSet,
        cols: &ExampleSet,
        num_classes: usize,
        model: ModelId,
        opts: &CrossOptions,
    ) -> Result<Plan> {
        if opts.memory_budget_bytes < (16 << 20) {
            return Err(CrossError::Invalid {
                what: "memory budget",
                reason: format!("{} bytes is below the 16 MiB minimum", opts.memory_budget_bytes),
            });
        }
        if opts.same_set && rows.len() != cols.len() {
            return Err(CrossError::Invalid {
                what: "same_set",
                reason: format!("rows ({}) and columns ({}) differ in size", rows.len(), cols.len()),
            });
        }
        for (what, v) in [("tile_rows", opts.tile_rows), ("tile_cols", opts.tile_cols)] {
            if v == Some(0) {
                return Err(CrossError::Invalid { what, reason: "must be at least 1".into() });
            }
        }
        let (n, m) = (rows.len(), cols.len());
        let elem = if opts.accumulate_f64 { 8 } else { 4 };
        // Half the budget for the tile (the Gram's own host matrix, its tensor and our copy:
        // about three tile-sized buffers), a quarter for the Gram's chunk work, the rest for
        // data, model and the per-column sums.
        let area = (opts.memory_budget_bytes / 2 / (3 * elem)).max(1);
        let tile_cols = opts.tile_cols.unwrap_or(m.min(16_384)).min(m);
        let tile_rows = opts.tile_rows.unwrap_or_else(|| {
            let r = (area / tile_cols).max(1);
            if r >= 128 {
                r / 64 * 64
            } else {
                r
            }
        });
        let tile_rows = tile_rows.min(n);
        Ok(Plan {
            schema_version: SCHEMA_VERSION,
            rows: SideInfo { name: rows.name.clone(), n, fingerprint: rows.fingerprint()? },
            cols: SideInfo { name: cols.name.clone(), n: m, fingerprint: cols.fingerprint()? },
            num_classes,
            same_set: opts.same_set,
            model,
            tile_rows,
            tile_cols,
            row_tiles: n.div_ceil(tile_rows),
            col_tiles: m.div_ceil(tile_cols),
            gram_budget_bytes: opts.memory_budget_bytes / 4,
            accumulate_f64: opts.accumulate_f64,
            method: opts.method,
            settings: opts.settings,
            top: opts.top,
        })
    }

    /// Number of tiles.
    pub fn num_tiles(&self) -> usize {
        self.row_tiles * self.col_tiles
    }

    /// Tile `index` (row-major over the grid).
    pub fn tile(&self, index: usize) -> Tile {
        let (ri, ci) = (index / self.col_tiles, index % self.col_tiles);
        let r0 = ri * self.tile_rows;
        let c0 = ci * self.tile_cols;
        Tile {
            index,
            rows: (r0, (r0 + self.tile_rows).min(self.rows.n)),
            cols: (c0, (c0 + self.tile_cols).min(self.cols.n)),
        }
    }

    /// A stable hash of the plan (stored in every tile file).
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("plan serialises");
        hex::encode(Sha256::digest(json))
    }

    /// Compares with the plan stored in `path`, field by field, for a clear refusal. Only what
    /// fixes the answer counts: the human-readable descriptions (`model.description`,
    /// `rows.name`, `cols.name`, which hold paths) may differ, so the same weights and data
    /// given under another path (relative, absolute, a symlink) resume the job.
    fn check_same(&self, stored: &Plan, path: &Path) -> Result<()> {
        let a = serde_json::to_value(stored).expect("plan serialises");
        let b = serde_json::to_value(self).expect("plan serialises");
        let identity = |k: &str, v: &serde_json::Value| -> serde_json::Value {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                match k {
                    "model" => {
                        o.remove("description");
                    }
                    "rows" | "cols" => {
                        o.remove("name");
                    }
                    _ => {}
                }
            }
            v
        };
        if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
            for (k, va) in a {
                let vb = b.get(k).cloned().unwrap_or(serde_json::Value::Null);
                if identity(k, va) != identity(k, &vb) {
                    return Err(CrossError::PlanMismatch {
                        path: path.to_path_buf(),
                        field: k.clone(),
                        existing: va.to_string(),
                        new: vb.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The `k`-th of `n` shards (0-based): tiles with `index % n == k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard's number (0-based).
    pub k: usize,
    /// Number of shards.
    pub n: usize,
}

impl Shard {
    /// Parses `K/N`.
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || CrossError::Shard(s.to_string());
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k: usize = k.trim().parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        if n == 0 || k >= n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }

    /// Whether tile `index` belongs to this shard.
    pub fn owns(&self, index: usize) -> bool {
        index % self.n == self.k
    }
}

/// Labels and source indices of both sides, stored as `DIR/examples.json` for [`merge`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Examples {
    /// [`SCHEMA_VERSION`] (absent, read as 0, in version 1 files).
    #[serde(default)]
    pub schema_version: u32,
    /// Class of each row example.
    pub row_labels: Vec<u32>,
    /// Class of each column example.
    pub col_labels: Vec<u32>,
    /// Index of each row example in its source.
    pub row_ids: Vec<usize>,
    /// Index of each column example in its source.
    pub col_ids: Vec<usize>,
}

/// Progress of a run, passed to the callback after each tile.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Progress {
    /// Tiles of this shard finished (including ones found finished).
    pub done: usize,
    /// Tiles of this shard.
    pub total: usize,
    /// Pairs computed by this process so far (not counting resumed tiles).
    pub pairs_computed: u64,
    /// Seconds since this process started the job.
    pub elapsed: f64,
}

/// What one invocation of [`run`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunSummary {
    /// Tiles in the whole grid.
    pub tiles_total: usize,
    /// Tiles of this shard.
    pub tiles_in_shard: usize,
    /// Tiles computed now.
    pub computed: usize,
    /// Tiles of this shard found already finished.
    pub resumed: usize,
    /// All tiles of the whole grid are finished (so [`merge`] will succeed).
    pub complete: bool,
    /// The job's plan.
    pub plan: Plan,
}

/// How [`run`] proceeds: [`RunControl::default`] (every tile of the grid, no progress callback)
/// and the `with_*` setters.
#[derive(Default)]
#[non_exhaustive]
pub struct RunControl<'a> {
    /// Only this shard's tiles (default: all).
    pub shard: Option<Shard>,
    /// Stop after computing this many tiles (a time slice, or a simulated interruption).
    pub max_tiles: Option<usize>,
    /// Called after every tile.
    pub progress: Option<&'a mut dyn FnMut(Progress)>,
}

stiff_models::options_setters!(RunControl<'a> {
    with_shard => shard: Option<Shard>,
    with_max_tiles => max_tiles: Option<usize>,
    with_progress => progress: Option<&'a mut dyn FnMut(Progress)>,
});

impl std::fmt::Debug for RunControl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl").field("shard", &self.shard).field("max_tiles", &self.max_tiles).finish()
    }
}

/// Paths of a job folder.
pub(crate) struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn plan(&self) -> PathBuf {
        self.dir.join("plan.json")
    }
    pub fn examples(&self) -> PathBuf {
        self.dir.join("examples.json")
    }
    pub fn tiles(&self) -> PathBuf {
        self.dir.join("tiles")
    }
    pub fn tile(&self, index: usize) -> PathBuf {
        self.tiles().join(format!("tile-{index:06}.safetensors"))
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(|source| CrossError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&text).map_err(|e| CrossError::BadFile { path: path.to_path_buf(), reason: e.to_string() })
}

/// Pretty JSON with a final newline, as every JSON file of a job folder is written.
fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("serialisable");
    bytes.push(b'\n');
    bytes
}

/// Publishes `bytes` at `path` unless a file is there already (racing writers: one wins), then
/// checks that what is there is exactly `bytes`; a different file is an error.
fn publish_or_check(path: &Path, bytes: &[u8], what: &str) -> Result<()> {
    stiff_fs::write_new(path, bytes)?;
    let existing = std::fs::read(path).map_err(|source| CrossError::Io { path: path.to_path_buf(), source })?;
    if existing != bytes {
        return Err(CrossError::PlanMismatch {
            path: path.to_path_buf(),
            field: what.to_string(),
            existing: "(other content)".into(),
            new: "(this job's)".into(),
        });
    }
    Ok(())
}

/// Computes (this shard's share of) the tiles of `rows x cols` into `dir`, skipping tiles that
/// are already finished. Call [`merge`] once every shard is done.
///
/// `num_classes` is the model's; every label must be below it.
pub fn run(
    model: &Model,
    model_id: ModelId,
    rows: &ExampleSet,
    cols: &ExampleSet,
    opts: &CrossOptions,
    dir: &Path,
    ctl: RunControl<'_>,
) -> Result<RunSummary> {
    run_net(model, model.config().num_classes, model_id, rows, cols, opts, dir, ctl)
}

/// [`run`] for any network (a preset, a spec model, a user's candle module) with `num_classes`
/// outputs: the tiles go through the same `cross_gram` dispatch, so a spec shaped like a preset
/// takes the same CPU kernel.
#[allow(clippy::too_many_arguments)]
pub fn run_net<N: Network + ?Sized>(
    model: &N,
    num_classes: usize,
    model_id: ModelId,
    rows: &ExampleSet,
    cols: &ExampleSet,
    opts: &CrossOptions,
    dir: &Path,
    mut ctl: RunControl<'_>,
) -> Result<RunSummary> {
    let start = Instant::now();
    for (side, set) in [("rows", rows), ("cols", cols)] {
        if let Some((i, l)) = set.labels.iter().enumerate().find(|(_, &l)| l as usize >= num_classes) {
            return Err(CrossError::Invalid {
                what: "labels",
                reason: format!(
                    "{side} ({}): label {l} at index {i} is out of range for a {num_classes}-class model",
                    set.name
                ),
            });
        }
    }
    let plan = Plan::new(rows, cols, num_classes, model_id, opts)?;
    let lay = Layout { dir: dir.to_path_buf() };
    std::fs::create_dir_all(lay.tiles()).map_err(|source| CrossError::CreateDir { path: lay.tiles(), source })?;
    // The plan is published only where none is (two jobs started at once in one folder race
    // here: one wins, the other then reads the winner's plan and is refused if it differs). A
    // job found here continues under its stored plan (its descriptions, hence its tile hash).
    stiff_fs::write_new(&lay.plan(), &json_bytes(&plan))?;
    let stored: Plan = read_json(&lay.plan())?;
    plan.check_same(&stored, &lay.plan())?;
    let plan = stored;
    let examples = Examples {
        schema_version: SCHEMA_VERSION,
        row_labels: rows.labels.clone(),
        col_labels: cols.labels.clone(),
        row_ids: rows.ids.clone(),
        col_ids: cols.ids.clone(),
    };
    publish_or_check(&lay.examples(), &serde_json::to_vec(&examples).expect("serialisable"), "examples.json")?;

    let hash = plan.hash();
    let mine: Vec<usize> = (0..plan.num_tiles()).filter(|&t| ctl.shard.is_none_or(|s| s.owns(t))).collect();
    let mut summary = RunSummary {
        tiles_total: plan.num_tiles(),
        tiles_in_shard: mine.len(),
        computed: 0,
        resumed: 0,
        complete: false,
        plan: plan.clone(),
    };
    let gram_opts = GramOptions::default()
        .with_memory_budget_bytes(plan.gram_budget_bytes)
        .with_accumulate_f64(plan.accumulate_f64)
        .with_per_layer(false)
        .with_method(plan.method);
    let mut pairs = 0u64;
    for (done, &t) in mine.iter().enumerate() {
        let path = lay.tile(t);
        if path.exists() {
            // A finished tile must belong to this plan; a foreign or damaged one is an error.
            tilefile::read(&path, &hash, &plan.tile(t), num_classes)?;
            summary.resumed += 1;
        } else {
            if ctl.max_tiles.is_some_and(|m| summary.computed >= m) {
                break;
            }
            let tile = plan.tile(t);
            let sums = compute_tile(model, rows, cols, &plan, &tile, &gram_opts)?;
            tilefile::write(&path, &hash, &tile, &sums)?;
            summary.computed += 1;
            pairs += ((tile.rows.1 - tile.rows.0) * (tile.cols.1 - tile.cols.0)) as u64;
        }
        if let Some(cb) = ctl.progress.as_mut() {
            cb(Progress {
                done: done + 1,
                total: mine.len(),
                pairs_computed: pairs,
                elapsed: start.elapsed().as_secs_f64(),
            });
        }
    }
    summary.complete = (0..plan.num_tiles()).all(|t| lay.tile(t).exists());
    Ok(summary)
}

/// Sums of one tile plus what the report needs from it.
#[derive(Debug, Clone)]
pub(crate) struct ComputedTile {
    pub sums: stiff_analysis::TileSums,
    pub row_norms: Vec<f64>,
    pub col_norms: Vec<f64>,
    pub seconds: f64,
}

fn compute_tile<N: Network + ?Sized>(
    model: &N,
    rows: &ExampleSet,
    cols: &ExampleSet,
    plan: &Plan,
    tile: &Tile,
    gram_opts: &GramOptions,
) -> Result<ComputedTile> {
    let t0 = Instant::now();
    let (r0, r1) = tile.rows;
    let (c0, c1) = tile.cols;
    let xa = rows.x.narrow(0, r0, r1 - r0)?;
    let xb = cols.x.narrow(0, c0, c1 - c0)?;
    let ya = Tensor::new(&rows.labels[r0..r1], &Device::Cpu)?;
    let yb = Tensor::new(&cols.labels[c0..c1], &Device::Cpu)?;
    let g = stiff_gradkernel::cross_gram(model, &xa, &ya, &xb, &yb, gram_opts)
        .map_err(|source| CrossError::Gram { tile: tile.index, source })?;
    let place = TilePlace { row0: r0, col0: c0, exclude_self: plan.same_set };
    let (nr, nc) = (r1 - r0, c1 - c0);
    // Reduced straight from the kernel's host buffer: no copy of the tile (356 MB for fc6 on MNIST).
    let k = g.k.to_device(&Device::Cpu)?.contiguous()?;
    let reduce = |s: &StiffnessSettings| -> Result<stiff_analysis::TileSums> {
        let labels = (&rows.labels[r0..r1], &cols.labels[c0..c1]);
        let (storage, layout) = k.storage_and_layout();
        let (a, b) = layout.contiguous_offsets().expect("made contiguous above");
        let (na, nb) = (&g.norms_a, &g.norms_b);
        let nc_ = plan.num_classes;
        Ok(match &*storage {
            candle::Storage::Cpu(candle::CpuStorage::F64(v)) => {
                let view = ndarray::ArrayView2::from_shape((nr, nc), &v[a..b]).expect("tile shape");
                reduce_tile(view, place, labels.0, labels.1, na, nb, nc_, s)?
            }
            candle::Storage::Cpu(candle::CpuStorage::F32(v)) => {
                let view = ndarray::ArrayView2::from_shape((nr, nc), &v[a..b]).expect("tile shape");
                reduce_tile(view, place, labels.0, labels.1, na, nb, nc_, s)?
            }
            _ => {
                let v = k.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                let view = ndarray::ArrayView2::from_shape((nr, nc), &v).expect("tile shape");
                reduce_tile(view, place, labels.0, labels.1, na, nb, nc_, s)?
            }
        })
    };
    let sums = reduce(&plan.settings)?;
    Ok(ComputedTile {
        sums,
        row_norms: g.norms_a.clone(),
        col_norms: g.norms_b.clone(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}
