//! Sweeps are lists of independent runs with stable ids, so a cluster scheduler can run them on
//! many machines writing into one results folder. This module holds the selection of runs a
//! process executes (`--only`, `--shard K/N`) and the learning rate as run ids spell it; the
//! runner plans, lists (`--list-runs`) and resumes with them. It imports no other module of the
//! crate but the error type, so `options` can hold a [`RunSelection`].

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
