//! Super-class block structure of a class matrix (CIFAR-100: 100 fine classes in 20
//! super-classes, Fig. 7).
//!
//! Score = mean of `C[a,b]` over ordered pairs of *different* fine classes in the *same*
//! super-class, minus the mean over pairs in different super-classes (diagonal cells are not
//! used). Significance: a one-sided permutation test that shuffles the fine -> coarse
//! assignment (keeping super-class sizes), `p = (1 + #{perm score >= observed}) / (1 + perms)`.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::class::ClassMatrix;
use crate::error::{AnalysisError, Result};
use crate::settings::SCHEMA_VERSION;

/// Result of [`superclass_block_score`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BlockScore {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// `same_super_mean - cross_super_mean`.
    pub observed: f64,
    /// Mean over off-diagonal cells whose classes share a super-class.
    pub same_super_mean: f64,
    /// Mean over cells whose classes are in different super-classes.
    pub cross_super_mean: f64,
    /// Cells (with pairs) in the same-super-class mean.
    pub same_super_cells: usize,
    /// Cells (with pairs) in the cross-super-class mean.
    pub cross_super_cells: usize,
    /// Number of permutations.
    pub permutations: usize,
    /// Seed of the `ChaCha8Rng` shuffling the assignment.
    pub seed: u64,
    /// One-sided permutation p-value (`1.0` when `permutations == 0`).
    pub p_value: f64,
    /// Mean of the permutation scores (0 when none defined).
    pub null_mean: f64,
    /// Standard deviation of the permutation scores.
    pub null_sd: f64,
    /// Permutations whose score was undefined (a side with no cell) and were skipped.
    pub skipped_permutations: usize,
}

fn score(c: &ClassMatrix, coarse: &[u32]) -> Option<(f64, f64, usize, usize)> {
    let k = c.num_classes();
    let (mut ss, mut sn, mut xs, mut xn) = (0.0, 0usize, 0.0, 0usize);
    for a in 0..k {
        for b in 0..k {
            if a == b || c.counts[[a, b]] == 0 {
                continue;
            }
            if coarse[a] == coarse[b] {
                ss += c.values[[a, b]];
                sn += 1;
            } else {
                xs += c.values[[a, b]];
                xn += 1;
            }
        }
    }
    (sn > 0 && xn > 0).then(|| (ss / sn as f64, xs / xn as f64, sn, xn))
}

/// Super-class block score of a class matrix with a permutation test.
///
/// * `c`: a (K, K) class matrix (sign or cosine).
/// * `fine_to_coarse`: (K,) super-class of each fine class.
/// * `permutations`: number of shuffles (e.g. 1000); `seed`: RNG seed.
pub fn superclass_block_score(
    c: &ClassMatrix,
    fine_to_coarse: &[u32],
    permutations: usize,
    seed: u64,
) -> Result<BlockScore> {
    let k = c.num_classes();
    if fine_to_coarse.len() != k {
        return Err(AnalysisError::LengthMismatch { what: "fine_to_coarse", expected: k, got: fine_to_coarse.len() });
    }
    let (same, cross, sn, xn) = score(c, fine_to_coarse).ok_or_else(|| AnalysisError::NoData {
        what: "super-class block score: need cells both within and across super-classes".to_string(),
    })?;
    let observed = same - cross;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut perm = fine_to_coarse.to_vec();
    let (mut ge, mut skipped) = (0usize, 0usize);
    let mut null = Vec::with_capacity(permutations);
    for _ in 0..permutations {
        perm.shuffle(&mut rng);
        match score(c, &perm) {
            Some((s, x, _, _)) => {
                let v = s - x;
                if v >= observed {
                    ge += 1;
                }
                null.push(v);
            }
            None => skipped += 1,
        }
    }
    let m = null.len() as f64;
    let null_mean = if null.is_empty() { 0.0 } else { null.iter().sum::<f64>() / m };
    let null_sd = if null.len() > 1 {
        (null.iter().map(|v| (v - null_mean).powi(2)).sum::<f64>() / (m - 1.0)).sqrt()
    } else {
        0.0
    };
    Ok(BlockScore {
        schema_version: SCHEMA_VERSION,
        observed,
        same_super_mean: same,
        cross_super_mean: cross,
        same_super_cells: sn,
        cross_super_cells: xn,
        permutations,
        seed,
        p_value: (1 + ge) as f64 / (1 + null.len()) as f64,
        null_mean,
        null_sd,
        skipped_permutations: skipped,
    })
}
