//! Merging finished tiles into `cross.json`, CSVs and heatmaps.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stiff_analysis::{ClassMatrix, CrossAccumulator, CrossStiffness};

use crate::error::{CrossError, Result};
use crate::{read_json, tilefile, Examples, Layout, Plan, SCHEMA_VERSION};

/// A column example that the rows of its own class push the wrong way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AntiStiff {
    /// Column position in the job.
    pub col: usize,
    /// Index in the column set's source (split or inputs file).
    pub id: usize,
    /// Its class.
    pub label: u32,
    /// Mean cosine stiffness to rows of its own class (the ranking key, ascending).
    pub own_cosine: f64,
    /// Mean sign stiffness to rows of its own class.
    pub own_sign: f64,
    /// Mean cosine stiffness to rows of all other classes (pooled).
    pub other_cosine: f64,
    /// Mean sign stiffness to rows of all other classes.
    pub other_sign: f64,
}

/// Timing of the whole job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Compute seconds summed over tiles (Gram + reduction; over all shards).
    pub seconds: f64,
}

/// The content of `DIR/cross.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CrossReport {
    /// [`SCHEMA_VERSION`](crate::SCHEMA_VERSION).
    #[serde(alias = "format_version")]
    pub schema_version: u32,
    /// Everything that fixed the answer (sides, model, tile grid, conventions).
    pub settings: Plan,
    /// Row examples per class.
    pub row_class_sizes: Vec<usize>,
    /// Column examples per class.
    pub col_class_sizes: Vec<usize>,
    /// Sign class matrix, rows' class x columns' class, with pair counts.
    pub class_sign: ClassMatrix,
    /// Cosine class matrix (pairs with a zero-norm gradient left out).
    pub class_cosine: ClassMatrix,
    /// Pairs in the sign matrix.
    pub pairs: u64,
    /// Row / column examples with a zero gradient (positions in the job).
    pub zero_norm_rows: Vec<usize>,
    /// Column examples with a zero gradient (positions in the job).
    pub zero_norm_cols: Vec<usize>,
    /// Column examples with the lowest mean cosine stiffness to their own class.
    pub most_anti_stiff: Vec<AntiStiff>,
    /// Compute time of the job.
    pub timing: Timing,
}

/// Result of [`merge`]: the report, the full streamed result and the files written.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MergeOutput {
    /// What `cross.json` holds.
    pub report: CrossReport,
    /// The full streamed result (per-column sums included).
    pub stiffness: CrossStiffness,
    /// Files written (CSVs, `cross.json` last among them, then the heatmaps).
    pub files: Vec<PathBuf>,
}

fn class_sizes(labels: &[u32], c: usize) -> Vec<usize> {
    let mut s = vec![0; c];
    for &l in labels {
        s[l as usize] += 1;
    }
    s
}

/// Adds every tile of the job in `dir` in tile-index order and writes `cross.json`,
/// `class_sign.csv`, `class_cosine.csv`, `columns.csv` and `cross.png`/`cross.svg`.
/// Errors with [`CrossError::Incomplete`] if a tile is missing.
pub fn merge(dir: &Path) -> Result<MergeOutput> {
    let lay = Layout { dir: dir.to_path_buf() };
    if !lay.plan().exists() {
        return Err(CrossError::BadFile {
            path: lay.plan(),
            reason: "no plan here: not a `stiff cross` output folder (or no shard has started)".into(),
        });
    }
    let plan: Plan = read_json(&lay.plan())?;
    if plan.schema_version != SCHEMA_VERSION {
        return Err(CrossError::BadFile {
            path: lay.plan(),
            reason: format!("schema_version {} (this build reads {SCHEMA_VERSION})", plan.schema_version),
        });
    }
    let ex: Examples = read_json(&lay.examples())?;
    if ex.schema_version != SCHEMA_VERSION {
        return Err(CrossError::BadFile {
            path: lay.examples(),
            reason: format!("schema_version {} (this build reads {SCHEMA_VERSION})", ex.schema_version),
        });
    }
    let c = plan.num_classes;
    if ex.row_labels.len() != plan.rows.n
        || ex.col_labels.len() != plan.cols.n
        || ex.row_ids.len() != plan.rows.n
        || ex.col_ids.len() != plan.cols.n
        || ex.row_labels.iter().chain(&ex.col_labels).any(|&l| l as usize >= c)
    {
        return Err(CrossError::BadFile { path: lay.examples(), reason: "does not match plan.json".into() });
    }
    let missing: Vec<usize> = (0..plan.num_tiles()).filter(|&t| !lay.tile(t).exists()).collect();
    if !missing.is_empty() {
        return Err(CrossError::Incomplete {
            dir: dir.to_path_buf(),
            missing: missing.len(),
            total: plan.num_tiles(),
            first: missing.iter().take(5).copied().collect(),
        });
    }
    let hash = plan.hash();
    let mut acc = CrossAccumulator::new(plan.cols.n, c);
    let mut row_norms = vec![f64::NAN; plan.rows.n];
    let mut col_norms = vec![f64::NAN; plan.cols.n];
    let mut seconds = 0.0;
    // Fixed order (tile index) makes the f64 sums independent of how tiles were produced.
    for t in 0..plan.num_tiles() {
        let tile = plan.tile(t);
        let ct = tilefile::read(&lay.tile(t), &hash, &tile, c)?;
        acc.add(&ct.sums, tile.cols.0)?;
        // Norms from the first tile that covers each example (a fixed choice).
        if tile.cols.0 == 0 {
            row_norms[tile.rows.0..tile.rows.1].copy_from_slice(&ct.row_norms);
        }
        if tile.rows.0 == 0 {
            col_norms[tile.cols.0..tile.cols.1].copy_from_slice(&ct.col_norms);
        }
        seconds += ct.seconds;
    }
    let st = acc.finish(&plan.settings)?;
    let mut ranked: Vec<AntiStiff> = (0..plan.cols.n)
        .map(|j| {
            let s = st.column_summary(j, ex.col_labels[j]);
            AntiStiff {
                col: j,
                id: ex.col_ids[j],
                label: ex.col_labels[j],
                own_cosine: s.own_cosine,
                own_sign: s.own_sign,
                other_cosine: s.other_cosine,
                other_sign: s.other_sign,
            }
        })
        .filter(|a| a.own_cosine.is_finite())
        .collect();
    ranked.sort_by(|a, b| a.own_cosine.total_cmp(&b.own_cosine).then(a.col.cmp(&b.col)));
    ranked.truncate(plan.top);
    let zero = |v: &[f64]| v.iter().enumerate().filter(|(_, &x)| x == 0.0).map(|(i, _)| i).collect();
    let report = CrossReport {
        schema_version: SCHEMA_VERSION,
        row_class_sizes: class_sizes(&ex.row_labels, c),
        col_class_sizes: class_sizes(&ex.col_labels, c),
        class_sign: st.sign.clone(),
        class_cosine: st.cosine.clone(),
        pairs: st.sign.counts.sum(),
        zero_norm_rows: zero(&row_norms),
        zero_norm_cols: zero(&col_norms),
        most_anti_stiff: ranked,
        timing: Timing { seconds },
        settings: plan,
    };
    let files = write_outputs(dir, &report, &st, &ex)?;
    Ok(MergeOutput { report, stiffness: st, files })
}

fn matrix_csv(m: &ClassMatrix) -> String {
    let c = m.num_classes();
    let mut s = String::from("row_class,col_class,value,pairs\n");
    for a in 0..c {
        for b in 0..c {
            let v = m.get(a, b).map(|v| format!("{v:.17e}")).unwrap_or_default();
            let _ = writeln!(s, "{a},{b},{v},{}", m.counts[[a, b]]);
        }
    }
    s
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.17e}")
    } else {
        String::new()
    }
}

fn write_outputs(dir: &Path, r: &CrossReport, st: &CrossStiffness, ex: &Examples) -> Result<Vec<PathBuf>> {
    let c = r.settings.num_classes;
    let mut cols = String::from("col,id,label,own_sign,own_cosine,other_sign,other_cosine");
    for a in 0..c {
        let _ = write!(cols, ",cosine_to_class_{a}");
    }
    cols.push('\n');
    for j in 0..r.settings.cols.n {
        let s = st.column_summary(j, ex.col_labels[j]);
        let _ = write!(
            cols,
            "{j},{},{},{},{},{},{}",
            ex.col_ids[j],
            ex.col_labels[j],
            num(s.own_sign),
            num(s.own_cosine),
            num(s.other_sign),
            num(s.other_cosine)
        );
        for a in 0..c {
            let _ = write!(cols, ",{}", num(st.col_cos_mean[[j, a]]));
        }
        cols.push('\n');
    }
    let mut json = serde_json::to_vec_pretty(r).expect("report serialises");
    json.push(b'\n');
    // `cross.json` is the completion file: removed before anything is replaced, published last,
    // so an interrupted merge leaves no `cross.json` beside newer CSVs or heatmaps.
    let done = dir.join("cross.json");
    stiff_fs::remove_if_exists(&done)?;
    let heat = |title: &str, m: &ClassMatrix| stiff_plot::Heatmap {
        title: format!("{title} (within {:.3}, between {:.3})", m.within, m.between),
        values: (0..c).map(|a| (0..c).map(|b| m.get(a, b).unwrap_or(f64::NAN)).collect()).collect(),
        row_labels: Vec::new(),
        col_labels: Vec::new(),
        range: (-1.0, 1.0),
        group_boundaries: Vec::new(),
    };
    let fig = stiff_plot::HeatmapFigure {
        title: format!("{} (rows) x {} (columns)", r.settings.rows.name, r.settings.cols.name),
        panels: vec![heat("sign stiffness", &r.class_sign), heat("cosine stiffness", &r.class_cosine)],
        columns: 2,
    };
    let heatmaps = stiff_plot::heatmap_figure(&fig, &dir.join("cross"))?;
    let paths = [
        (dir.join("class_sign.csv"), matrix_csv(&r.class_sign).into_bytes()),
        (dir.join("class_cosine.csv"), matrix_csv(&r.class_cosine).into_bytes()),
        (dir.join("columns.csv"), cols.into_bytes()),
        (done, json),
    ];
    let mut set = stiff_fs::FileSet::new();
    for (p, b) in &paths {
        set.stage(p, b)?;
    }
    set.publish()?;
    let mut files: Vec<PathBuf> = paths.into_iter().map(|(p, _)| p).collect();
    files.extend(heatmaps);
    Ok(files)
}
