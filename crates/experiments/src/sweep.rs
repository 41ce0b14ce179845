//! Sweeps are lists of independent runs with stable ids, so a cluster scheduler can run them on
//! many machines writing into one results folder (`--list-runs`, `--only`, `--shard K/N`), and an
//! interrupted sweep resumes where it stopped.

use serde::{Deserialize, Serialize};

use crate::{ExperimentError, Result};

/// Which runs of a sweep this process executes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSelection {
    /// Only these run ids (empty = all).
    pub only: Vec<String>,
    /// `(k, n)`: run every run whose position in the sweep is `k` modulo `n` (0-based `k`, as a
    /// Slurm array's `SLURM_ARRAY_TASK_ID`).
    pub shard: Option<(usize, usize)>,
}

impl RunSelection {
    /// Parses `K/N` (0 <= K < N).
    pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
        let bad = || ExperimentError::InvalidArgument(format!("--shard `{s}`: expected K/N with 0 <= K < N, e.g. 0/4"));
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n): (usize, usize) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if n == 0 || k >= n {
            return Err(bad());
        }
        Ok((k, n))
    }

    /// Filters `ids` (in sweep order) down to this selection; unknown `--only` ids are an error.
    pub fn select<'a>(&self, ids: &'a [String]) -> Result<Vec<&'a String>> {
        for o in &self.only {
            if !ids.contains(o) {
                return Err(ExperimentError::InvalidArgument(format!(
                    "--only {o}: no such run in this sweep (see --list-runs)"
                )));
            }
        }
        Ok(ids
            .iter()
            .enumerate()
            .filter(|(i, id)| {
                (self.only.is_empty() || self.only.contains(id)) && self.shard.is_none_or(|(k, n)| i % n == k)
            })
            .map(|(_, id)| id)
            .collect())
    }

    /// True when every run of the sweep is selected (so figures can be drawn from this process).
    pub fn is_everything(&self) -> bool {
        self.only.is_empty() && self.shard.is_none()
    }
}

/// Plans one invocation over a sweep's runs (in sweep order): with `--list-runs` prints each id
/// with `done`/`pending` and returns `None`; otherwise returns the selected runs that still have
/// to run (finished ones are skipped when resuming) and says so on stderr.
pub fn plan<'a, S>(
    label: &str,
    specs: &'a [S],
    id: impl Fn(&S) -> String,
    done: impl Fn(&S) -> bool,
    opts: &crate::options::ReproduceOptions,
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
pub fn is_partial(opts: &crate::options::ReproduceOptions) -> bool {
    let partial = !opts.selection.is_everything();
    if partial {
        eprintln!(
            "selected runs finished; once every shard is done, draw the figures with `cargo xtask report --out {}`",
            opts.out.display()
        );
    }
    partial
}

/// A learning rate as it appears in run ids: `0.03` → `0.03`, `1e-4` → `0.0001`.
pub fn fmt_lr(lr: f64) -> String {
    let s = format!("{lr}");
    if s.contains('e') {
        format!("{lr:.10}").trim_end_matches('0').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_sweep() {
        let ids: Vec<String> = (0..7).map(|i| format!("r{i}")).collect();
        let mut seen = Vec::new();
        for k in 0..3 {
            let sel = RunSelection { only: vec![], shard: Some((k, 3)) };
            seen.extend(sel.select(&ids).unwrap().into_iter().cloned());
        }
        seen.sort();
        let mut all = ids.clone();
        all.sort();
        assert_eq!(seen, all);
        assert!(RunSelection::parse_shard("3/3").is_err());
        assert!(RunSelection::parse_shard("a/3").is_err());
        assert_eq!(RunSelection::parse_shard("1/4").unwrap(), (1, 4));
        let sel = RunSelection { only: vec!["nope".into()], shard: None };
        assert!(sel.select(&ids).is_err());
    }

    #[test]
    fn learning_rates_format_stably() {
        assert_eq!(fmt_lr(0.03), "0.03");
        assert_eq!(fmt_lr(1e-4), "0.0001");
        assert_eq!(fmt_lr(1.0), "1");
    }
}
