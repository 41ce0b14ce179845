//! `reproduce` and `report` for any [`Pipeline`]: plan the selected runs of a figure's sweep
//! (resuming by default), run them with progress, store their records, then draw the figures
//! from every finished run. Pipelines come from [`crate::registry`]; this module names none.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::index::write_index;
use crate::options::{figure_dir, OptimizerKind, ReproduceOptions};
use crate::pipeline::{AnyPipeline, FigureInfo, Pipeline};
use crate::progress::SweepProgress;
use crate::registry::pipelines;
use crate::store::{read_json, write_atomic, write_json, RunStore, SUMMARY};
use crate::{ExperimentError, Result};

pub use crate::options::parse_device;

/// Runs (or resumes) the selected runs of `opts.figure`, then writes its outputs. `all` runs
/// every figure whose data is present and lists the others, with the reason, in `OUT/skipped.md`.
pub fn reproduce(opts: &ReproduceOptions) -> Result<()> {
    let all = opts.figure == "all";
    let registry = pipelines();
    // (pipeline, its requested figures), in registry order.
    let mut groups: Vec<(&dyn AnyPipeline, Vec<&str>)> = Vec::new();
    let mut skipped: Vec<(&str, String)> = Vec::new();
    for p in registry.iter().copied() {
        let mut figs = Vec::new();
        for f in p.figures() {
            if all {
                match (!opts.list_runs).then(|| missing_data(f, opts)).flatten() {
                    Some(why) => skipped.push((f.name, why)),
                    None => figs.push(f.name),
                }
            } else if f.name == opts.figure {
                figs.push(f.name);
            }
        }
        if !figs.is_empty() {
            groups.push((p, figs));
        }
    }
    if !all && groups.is_empty() {
        let names: Vec<&str> = registry.iter().flat_map(|p| p.figures().iter().map(|f| f.name)).collect();
        return Err(ExperimentError::InvalidArgument(format!(
            "unknown figure `{}`: expected one of {}, all (see `cargo xtask list`)",
            opts.figure,
            names.join(", ")
        )));
    }
    if all && !opts.list_runs {
        write_skipped(&opts.out, &skipped)?;
        for (f, why) in &skipped {
            eprintln!("skipping {f}: {why}");
        }
    }
    // `--only` ids may belong to any pipeline; each gets the ids that are its own.
    let ids: Vec<Vec<String>> = groups.iter().map(|(p, figs)| p.run_ids(figs, opts)).collect::<Result<_>>()?;
    if let Some(bad) = opts.selection.only.iter().find(|o| !ids.iter().any(|i| i.contains(o))) {
        return Err(ExperimentError::InvalidArgument(format!("--only {bad}: no such run (see --list-runs)")));
    }
    for ((p, figs), ids) in groups.iter().zip(&ids) {
        let mut o = opts.clone();
        if !opts.selection.only.is_empty() {
            o.selection.only = opts.selection.only.iter().filter(|x| ids.contains(x)).cloned().collect();
            if o.selection.only.is_empty() {
                continue;
            }
        }
        p.reproduce(figs, &o)?;
    }
    if opts.list_runs || !opts.selection.is_everything() {
        return Ok(());
    }
    write_index(&opts.out)
}

/// Why `f` cannot run here (its data is missing), if it cannot.
fn missing_data(f: &FigureInfo, opts: &ReproduceOptions) -> Option<String> {
    let missing: Vec<String> = f
        .datasets
        .iter()
        .filter(|d| stiff_data::locate(**d, opts.data_dir.as_deref()).is_err())
        .map(|d| d.to_string())
        .collect();
    if missing.is_empty() {
        return None;
    }
    let fetch = missing.iter().map(|d| format!("`cargo xtask data fetch {d}`")).collect::<Vec<_>>();
    Some(format!("{} not found; fetch with {}", missing.join(", "), fetch.join(", ")))
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
    write_atomic(&path, md.as_bytes())
}

/// `report --out DIR`: redraws every figure whose config or runs are in `out`, from the
/// finished runs, and rewrites `index.md`.
pub fn report(out: &Path) -> Result<()> {
    let mut drawn = 0;
    for p in pipelines() {
        drawn += p.report(out)?;
    }
    if drawn == 0 {
        return Err(ExperimentError::InvalidArgument(format!("{}: no finished runs or figures found", out.display())));
    }
    write_index(out)
}

/// The configurations of `figs`, with their figure names.
fn configs<'f, P: Pipeline>(p: &P, figs: &[&'f str], opts: &ReproduceOptions) -> Result<Vec<(&'f str, P::Config)>> {
    figs.iter().map(|&f| Ok((f, p.config(f, opts)?))).collect()
}

/// Every run of `cfgs`, deduplicated, in order.
fn specs<P: Pipeline>(p: &P, cfgs: &[(&str, P::Config)]) -> Vec<P::Spec> {
    let mut specs: Vec<P::Spec> = Vec::new();
    for (f, c) in cfgs {
        for s in p.runs(f, c) {
            if !specs.contains(&s) {
                specs.push(s);
            }
        }
    }
    specs
}

/// The finished record of `spec` in `store`, if any (a record of another spec does not count).
/// Errors: a record written by a newer build (never overwritten).
fn finished<P: Pipeline>(p: &P, store: &RunStore, spec: &P::Spec) -> Result<Option<P::Record>> {
    Ok(store.get::<P::Record>(&p.run_id(spec))?.filter(|r| p.record_spec(r) == spec))
}

/// [`AnyPipeline::reproduce`] with explicit configurations (tests shrink them): plans the runs
/// of every `(figure, config)`, runs the selected unfinished ones, then draws each figure and
/// rewrites `index.md` (unless only part of the sweep was selected).
pub fn reproduce_with<P: Pipeline>(p: &P, cfgs: &[(&str, P::Config)], opts: &ReproduceOptions) -> Result<()> {
    let Some((_, first)) = cfgs.first() else { return Ok(()) };
    for (_, c) in cfgs {
        p.check(c, opts)?;
    }
    let store = p.store(first, &opts.out);
    let specs = specs(p, cfgs);
    let label = cfgs.iter().map(|(f, _)| *f).collect::<Vec<_>>().join("+");
    let mut done_ids = std::collections::HashSet::new();
    for s in &specs {
        if finished(p, &store, s)?.is_some() {
            done_ids.insert(p.run_id(s));
        }
    }
    let done = |s: &P::Spec| done_ids.contains(&p.run_id(s));
    let Some(todo) = plan(&label, &specs, |s| p.run_id(s), done, opts)? else { return Ok(()) };
    for (f, c) in cfgs {
        p.begin(c, &opts.out)?;
        let cfg_json = serde_json::to_value(c).map_err(|e| ExperimentError::Format(format!("{f} config: {e}")))?;
        write_json(
            &config_beside_runs(&opts.out, &figure_dir(f, p.optimizer(c))),
            &serde_json::json!({ "figure": f, "command": opts.command, P::CONFIG_KEY: cfg_json }),
        )?;
    }
    run_all(p, &todo, opts, &store)?;
    if is_partial(opts) {
        return Ok(());
    }
    for (f, c) in cfgs {
        let dir = draw(p, f, c, &opts.out, &opts.command)?;
        eprintln!("wrote {}", dir.display());
    }
    write_index(&opts.out)
}

fn run_all<P: Pipeline>(p: &P, todo: &[&P::Spec], opts: &ReproduceOptions, store: &RunStore) -> Result<()> {
    if todo.is_empty() {
        return Ok(());
    }
    let progress = SweepProgress::new(p.label(), todo.len());
    let mut cache = P::Cache::default();
    for spec in todo {
        let id = p.run_id(spec);
        let bar = progress.start_run(id.clone(), p.max_steps(spec));
        let t = Instant::now();
        let record = p.run_one(spec, &mut cache, opts, bar.clone())?;
        store.put(&id, &record)?;
        progress.finish_run(&bar, p.log_line(&record, t.elapsed().as_secs_f64()));
    }
    progress.finish();
    Ok(())
}

/// Draws `figure` of `cfg` from the finished runs in `out`; returns its folder.
fn draw<P: Pipeline>(p: &P, figure: &str, cfg: &P::Config, out: &Path, command: &str) -> Result<std::path::PathBuf> {
    let store = p.store(cfg, out);
    let specs = p.runs(figure, cfg);
    let mut records: Vec<P::Record> = Vec::new();
    for s in &specs {
        records.extend(finished(p, &store, s)?);
    }
    let missing = specs.len() - records.len();
    if missing > 0 {
        eprintln!("{figure}: {missing} of {} runs are not finished yet; drawing from the rest", specs.len());
    }
    let dir = out.join(figure_dir(figure, p.optimizer(cfg)));
    // `summary.md` is the folder's completion file: every figure writes it last, so removing it
    // first means an interrupted redraw leaves a folder that `index.md` and `report` treat as
    // absent, never an old summary beside new results.
    let done = dir.join(SUMMARY);
    stiff_fs::remove_if_exists(&done).map_err(|e| ExperimentError::io(&e.path, e.source))?;
    p.draw(figure, cfg, &records, &dir, command)?;
    if !done.is_file() {
        return Err(ExperimentError::Format(format!("{figure}: the figure wrote no {}", done.display())));
    }
    Ok(dir)
}

/// Plans one invocation over a sweep's runs (in sweep order): with `--list-runs` prints each id
/// with `done`/`pending` and returns `None`; otherwise returns the selected runs that still have
/// to run (finished ones are skipped when resuming) and says so on stderr.
fn plan<'a, S>(
    label: &str,
    specs: &'a [S],
    id: impl Fn(&S) -> String,
    done: impl Fn(&S) -> bool,
    opts: &ReproduceOptions,
) -> Result<Option<Vec<&'a S>>> {
    if opts.list_runs {
        for s in specs {
            println!("{}\t{}", id(s), if done(s) { "done" } else { "pending" });
        }
        return Ok(None);
    }
    let ids: Vec<String> = specs.iter().map(&id).collect();
    let selected = opts.selection.select(&ids)?;
    let todo: Vec<&S> = specs.iter().filter(|s| selected.contains(&&id(s)) && !(opts.resume && done(s))).collect();
    eprintln!(
        "{label}: {} runs in the sweep, {} selected, {} already finished, {} to run; results in {}",
        specs.len(),
        selected.len(),
        selected.len() - todo.len(),
        todo.len(),
        opts.out.display()
    );
    Ok(Some(todo))
}

/// True when this process ran only part of the sweep (`--only` / `--shard`); then it says how to
/// draw the figures once every part is done, and the caller draws nothing.
fn is_partial(opts: &ReproduceOptions) -> bool {
    let partial = !opts.selection.is_everything();
    if partial {
        eprintln!(
            "selected runs finished; once every shard is done, draw the figures with `cargo xtask report --out {}`",
            opts.out.display()
        );
    }
    partial
}

/// `OUT/runs/figures/<figure folder>.json`: a figure's config (as in its `config.json`), written
/// before any run starts, so `report` can draw from a folder filled by shards (which draw nothing).
fn config_beside_runs(out: &Path, dir_name: &str) -> PathBuf {
    out.join("runs").join("figures").join(format!("{dir_name}.json"))
}

/// The configurations `report` redraws for `figure`: those recorded in its folders' config.json
/// (one folder per optimizer) or beside the runs, else those rebuilt from the stored runs (folders
/// written before configs were kept beside the runs).
fn report_configs<P: Pipeline>(p: &P, figure: &str, out: &Path) -> Result<Vec<(P::Config, String)>> {
    let mut found = Vec::new();
    for opt in OptimizerKind::ALL {
        let dir = figure_dir(figure, opt);
        // A folder without its summary was left by an interrupted draw: not a source.
        let complete = out.join(&dir).join(SUMMARY).is_file();
        let in_folder = out.join(&dir).join("config.json");
        let path = if complete && in_folder.is_file() { in_folder } else { config_beside_runs(out, &dir) };
        if path.is_file() {
            let v: serde_json::Value = read_json(&path)?;
            let cfg: P::Config = serde_json::from_value(v[P::CONFIG_KEY].clone())
                .map_err(|e| ExperimentError::Format(format!("{}: {e}", path.display())))?;
            found.push((cfg, v["command"].as_str().unwrap_or("cargo xtask report").to_string()));
        }
    }
    if found.is_empty() {
        found = p.configs_from_runs(figure, out)?.into_iter().map(|c| (c, "cargo xtask report".to_string())).collect();
    }
    Ok(found)
}

impl<P: Pipeline> AnyPipeline for P {
    fn type_path(&self) -> &'static str {
        std::any::type_name::<P>()
    }

    fn figures(&self) -> &'static [FigureInfo] {
        Pipeline::figures(self)
    }

    fn run_ids(&self, figs: &[&str], opts: &ReproduceOptions) -> Result<Vec<String>> {
        Ok(specs(self, &configs(self, figs, opts)?).iter().map(|s| self.run_id(s)).collect())
    }

    fn reproduce(&self, figs: &[&str], opts: &ReproduceOptions) -> Result<()> {
        reproduce_with(self, &configs(self, figs, opts)?, opts)
    }

    fn report(&self, out: &Path) -> Result<usize> {
        let mut drawn = 0;
        for f in Pipeline::figures(self) {
            for (cfg, command) in report_configs(self, f.name, out)? {
                // A figure with no finished run has nothing to draw.
                let store = self.store(&cfg, out);
                let mut any = false;
                for s in self.runs(f.name, &cfg) {
                    any |= finished(self, &store, &s)?.is_some();
                }
                if !any {
                    continue;
                }
                draw(self, f.name, &cfg, out, &command)?;
                drawn += 1;
            }
        }
        Ok(drawn)
    }
}
