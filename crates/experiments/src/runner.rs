//! `reproduce` and `report`: run the selected runs of a figure's sweep (resuming by default),
//! then draw the figure from every finished run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle::Device;
use stiff_data::DatasetName;

use crate::figures::lr::{fig9_run, write_fig10, write_fig8, write_fig9};
use crate::lr_sweep::{run_one, LrRunRecord, LrRunSpec, LrSweepConfig, OptimizerKind, RunEnd};
use crate::prepare::{prepare, DataSettings, Prepared};
use crate::progress::SweepProgress;
use crate::report::write_index;
use crate::store::read_json;
use crate::sweep::{plan, RunSelection};
use crate::{ExperimentError, Result};

/// Everything `reproduce` takes from the command line.
#[derive(Debug, Clone)]
pub struct ReproduceOptions {
    /// fig8, fig9, fig10 or all.
    pub figure: String,
    pub quick: bool,
    pub data_dir: Option<PathBuf>,
    pub out: PathBuf,
    pub device: Device,
    /// Seeds per configuration; default 3 (full) or 1 (quick).
    pub seeds: Option<usize>,
    pub optimizer: OptimizerKind,
    /// Skip runs already finished in `out` (default true).
    pub resume: bool,
    pub list_runs: bool,
    pub selection: RunSelection,
    /// The command line, recorded in each figure's config.
    pub command: String,
}

/// Parses `cpu` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(n) = s.strip_prefix("cuda:").or(if s == "cuda" { Some("0") } else { None }) else {
        return Err(ExperimentError::InvalidArgument(format!("--device `{s}`: expected cpu or cuda:N")));
    };
    let n: usize = n.parse().map_err(|_| ExperimentError::InvalidArgument(format!("--device `{s}`: bad GPU index")))?;
    if !candle::utils::cuda_is_available() {
        return Err(ExperimentError::InvalidArgument(format!(
            "--device {s}: this build has no CUDA support; build with the `cuda` feature (`cargo xtask build-cuda`)"
        )));
    }
    Ok(Device::new_cuda(n)?)
}

const FIGS: [&str; 3] = ["fig8", "fig9", "fig10"];
use crate::dynamics::DYN_FIGURES;
use crate::spherical::{SphericalConfig, FIGURE as SPHERICAL};

/// The runs a figure needs.
fn figure_runs(figure: &str, cfg: &LrSweepConfig) -> Vec<LrRunSpec> {
    match figure {
        "fig9" => fig9_run(cfg).into_iter().collect(),
        _ => cfg.runs(),
    }
}

/// Runs (or resumes) the selected runs of `opts.figure`, then writes its outputs. `all` runs
/// every figure whose data is present and lists the others, with the reason, in `OUT/skipped.md`.
pub fn reproduce(opts: &ReproduceOptions) -> Result<()> {
    let all = opts.figure == "all";
    if opts.figure == SPHERICAL {
        return crate::spherical::reproduce_spherical(opts);
    }
    let requested: Vec<&str> = match opts.figure.as_str() {
        "all" => DYN_FIGURES.iter().chain(FIGS.iter()).copied().collect(),
        f if FIGS.contains(&f) || DYN_FIGURES.contains(&f) => vec![f],
        f => {
            return Err(ExperimentError::InvalidArgument(format!(
                "unknown figure `{f}`: expected one of {}, {}, {SPHERICAL}, all (see `cargo xtask list`)",
                DYN_FIGURES.join(", "),
                FIGS.join(", ")
            )))
        }
    };
    let mut skipped: Vec<(&str, String)> = Vec::new();
    let figs: Vec<&str> = if all && !opts.list_runs {
        requested
            .into_iter()
            .filter(|f| {
                let missing: Vec<String> = crate::registry::datasets_for(f)
                    .into_iter()
                    .filter(|d| stiff_data::locate(*d, opts.data_dir.as_deref()).is_err())
                    .map(|d| d.to_string())
                    .collect();
                if !missing.is_empty() {
                    let fetch = missing.iter().map(|d| format!("`cargo xtask data fetch {d}`")).collect::<Vec<_>>();
                    skipped.push((f, format!("{} not found; fetch with {}", missing.join(", "), fetch.join(", "))));
                }
                missing.is_empty()
            })
            .collect()
    } else {
        requested
    };
    if all && !opts.list_runs {
        write_skipped(&opts.out, &skipped)?;
        for (f, why) in &skipped {
            eprintln!("skipping {f}: {why}");
        }
    }
    let lr_figs: Vec<&str> = figs.iter().copied().filter(|f| FIGS.contains(f)).collect();
    let dyn_figs: Vec<&str> = figs.iter().copied().filter(|f| DYN_FIGURES.contains(f)).collect();
    // `--only` ids may belong to either sweep; each sweep gets the ids that are its own.
    let lr_ids: Vec<String> = if lr_figs.is_empty() {
        vec![]
    } else {
        let cfg =
            LrSweepConfig::new(opts.quick, opts.optimizer, opts.seeds.unwrap_or(if opts.quick { 1 } else { 3 }).max(1));
        lr_figs.iter().flat_map(|f| figure_runs(f, &cfg)).map(|s| s.id()).collect()
    };
    let dyn_ids = crate::dynamics::run_ids(&dyn_figs, opts)?;
    // The synthetic figure needs no data, so `all` always includes it.
    let sph_ids: Vec<String> = if all {
        let seeds = opts.seeds.unwrap_or(if opts.quick { 1 } else { 3 }).max(1);
        SphericalConfig::new(opts.quick, opts.optimizer, seeds).runs().iter().map(|r| r.id()).collect()
    } else {
        vec![]
    };
    let part = |ids: &[String]| -> Result<Option<ReproduceOptions>> {
        let only = &opts.selection.only;
        if only.is_empty() {
            return Ok(Some(opts.clone()));
        }
        if let Some(bad) = only.iter().find(|o| !lr_ids.contains(o) && !dyn_ids.contains(o) && !sph_ids.contains(o)) {
            return Err(ExperimentError::InvalidArgument(format!("--only {bad}: no such run (see --list-runs)")));
        }
        let mine: Vec<String> = only.iter().filter(|o| ids.contains(o)).cloned().collect();
        Ok((!mine.is_empty()).then(|| {
            let mut o = opts.clone();
            o.selection.only = mine;
            o
        }))
    };
    if !dyn_figs.is_empty() {
        if let Some(o) = part(&dyn_ids)? {
            crate::dynamics::reproduce(&dyn_figs, &o)?;
        }
    }
    if !lr_figs.is_empty() {
        if let Some(o) = part(&lr_ids)? {
            reproduce_lr(&lr_figs, &o)?;
        }
    }
    if all {
        if let Some(o) = part(&sph_ids)? {
            crate::spherical::reproduce_spherical(&o)?;
        }
    }
    if opts.list_runs || !opts.selection.is_everything() {
        return Ok(());
    }
    write_index(&opts.out)
}

/// `OUT/skipped.md`: the figures `all` skipped and why (removed when none was skipped).
fn write_skipped(out: &Path, skipped: &[(&str, String)]) -> Result<()> {
    let path = out.join("skipped.md");
    if skipped.is_empty() {
        if path.is_file() {
            std::fs::remove_file(&path).map_err(|e| ExperimentError::io(&path, e))?;
        }
        return Ok(());
    }
    let mut md = String::from(
        "# Skipped figures\n\n`reproduce all` skipped these figures because their data is missing.\n\n| figure | reason |\n|---|---|\n",
    );
    for (f, why) in skipped {
        md.push_str(&format!("| {f} | {why} |\n"));
    }
    crate::store::write_atomic(&path, md.as_bytes())
}

/// The learning-rate sweep part of `reproduce` (Figs 8-10).
fn reproduce_lr(figs: &[&str], opts: &ReproduceOptions) -> Result<()> {
    let seeds = opts.seeds.unwrap_or(if opts.quick { 1 } else { 3 });
    if seeds == 0 {
        return Err(ExperimentError::InvalidArgument("--seeds must be at least 1".into()));
    }
    let cfg = LrSweepConfig::new(opts.quick, opts.optimizer, seeds);
    let store = cfg.store(&opts.out);
    let mut specs: Vec<LrRunSpec> = Vec::new();
    for f in figs {
        for s in figure_runs(f, &cfg) {
            if !specs.contains(&s) {
                specs.push(s);
            }
        }
    }
    let done = |s: &LrRunSpec| store.get::<LrRunRecord>(&s.id()).is_some_and(|r| &r.spec == s);
    let Some(todo) = plan(&figs.join("+"), &specs, LrRunSpec::id, done, opts)? else { return Ok(()) };
    run_specs(&todo, opts, &store)?;

    if crate::sweep::is_partial(opts) {
        return Ok(());
    }
    for f in figs {
        draw(f, &cfg, &opts.out, &opts.command)?;
        eprintln!("wrote {}", opts.out.join(f).display());
    }
    Ok(())
}

fn run_specs(todo: &[&LrRunSpec], opts: &ReproduceOptions, store: &crate::store::RunStore) -> Result<()> {
    if todo.is_empty() {
        return Ok(());
    }
    let progress = SweepProgress::new("sweep", todo.len());
    let mut data: BTreeMap<DatasetName, Prepared> = BTreeMap::new();
    for spec in todo {
        if let std::collections::btree_map::Entry::Vacant(slot) = data.entry(spec.dataset) {
            let mut s = spec.data.clone();
            if s.stiffness_subset == 0 {
                s = DataSettings::for_dataset(spec.dataset);
            }
            slot.insert(prepare(spec.dataset, opts.data_dir.as_deref(), &s, &opts.device)?);
        }
        let run_bar = progress.start_run(spec.id(), spec.max_steps);
        let t = Instant::now();
        let record = run_one(spec, &data[&spec.dataset], &opts.device, Some(run_bar.clone()))?;
        store.put(&record.id, &record)?;
        let end = match &record.end {
            RunEnd::Completed => "completed".to_string(),
            RunEnd::StepBudget { steps } => format!("out of steps at {steps}"),
            RunEnd::Diverged { step, reason } => format!("DIVERGED at step {step}: {reason}"),
        };
        let line = format!(
            "run {} {end}: {} thresholds reached in {} steps, {:.1}s ({})",
            record.id,
            record.points.len(),
            record.steps,
            t.elapsed().as_secs_f64(),
            record
                .points
                .iter()
                .map(|p| format!(
                    "<{}: between sign {:.3}, cos {:.3}",
                    p.threshold, p.measurement.sign.between, p.measurement.cosine.between
                ))
                .collect::<Vec<_>>()
                .join("; "),
        );
        progress.finish_run(&run_bar, line);
    }
    progress.finish();
    Ok(())
}

/// Draws one figure from the finished runs of the sweep `cfg` in `out`.
fn draw(figure: &str, cfg: &LrSweepConfig, out: &Path, command: &str) -> Result<()> {
    let store = cfg.store(out);
    let specs = figure_runs(figure, cfg);
    let records: Vec<LrRunRecord> =
        specs.iter().filter_map(|s| store.get::<LrRunRecord>(&s.id()).filter(|r| &r.spec == s)).collect();
    let missing = specs.len() - records.len();
    if missing > 0 {
        eprintln!("{figure}: {missing} of {} runs are not finished yet; drawing from the rest", specs.len());
    }
    let dir = out.join(figure);
    match figure {
        "fig8" => write_fig8(&dir, cfg, &records, command),
        "fig10" => write_fig10(&dir, cfg, &records, command),
        "fig9" => match records.first() {
            Some(r) => write_fig9(&dir, cfg, r, command),
            None => {
                Err(ExperimentError::InvalidArgument(format!("fig9: its run is not finished in {}", out.display())))
            }
        },
        _ => unreachable!("figure names are checked by the caller"),
    }
}

/// `report --out DIR`: redraws every figure whose config is in `out`, from the finished runs.
pub fn report(out: &Path) -> Result<()> {
    let mut drawn = 0;
    for f in FIGS {
        let cfg_path = out.join(f).join("config.json");
        let sweep_cfg = if cfg_path.is_file() {
            let v: serde_json::Value = read_json(&cfg_path)?;
            let cfg: LrSweepConfig = serde_json::from_value(v["sweep"].clone())
                .map_err(|e| ExperimentError::Format(format!("{}: {e}", cfg_path.display())))?;
            let command = v["command"].as_str().unwrap_or("").to_string();
            Some((cfg, command))
        } else {
            // Shards never draw; find the sweep from the stored runs instead.
            sweep_from_runs(out)?.map(|c| (c, "cargo xtask report".to_string()))
        };
        if let Some((cfg, command)) = sweep_cfg {
            draw(f, &cfg, out, &command)?;
            drawn += 1;
        }
    }
    drawn += crate::dynamics::report(out)?;
    drawn += usize::from(crate::spherical::report_spherical(out)?);
    if drawn == 0 {
        return Err(ExperimentError::InvalidArgument(format!("{}: no finished runs or figures found", out.display())));
    }
    write_index(out)
}

/// Rebuilds a sweep configuration from stored runs (for folders filled by shards).
fn sweep_from_runs(out: &Path) -> Result<Option<LrSweepConfig>> {
    for (sweep, quick) in [("lr-sweep", false), ("lr-sweep-quick", true)] {
        let records: Vec<LrRunRecord> = crate::store::RunStore::new(out, sweep).all()?;
        let Some(first) = records.first() else { continue };
        let opt = if first.spec.optimizer.name() == "adam" { OptimizerKind::Adam } else { OptimizerKind::Sgd };
        let mut seeds: Vec<u64> = records.iter().map(|r| r.spec.seed).collect();
        seeds.sort();
        seeds.dedup();
        let mut cfg = LrSweepConfig::new(quick, opt, seeds.len());
        cfg.seeds = seeds;
        return Ok(Some(cfg));
    }
    Ok(None)
}
