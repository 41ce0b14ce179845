//! Aggregation of the dynamics runs over seeds (Figs 2-6): the seed is the unit. With two or more
//! seeds a quantity is the mean of the per-seed values with a 95% Student-t interval across seeds
//! (as Figs 8-10); with one seed it is that seed's value with its bootstrap interval over examples.

use stiff_analysis::StiffnessKind;

use super::super::model::{AcrossSeeds, CurvePoint, IntervalSource};
use super::super::run::{DynPoint, DynRunRecord};
use super::{between_ci, within_ci};
use crate::stats::seed_mean;

/// Aggregates per-seed `(value, bootstrap interval)` pairs. One pair: the value and its bootstrap
/// interval. Several: seed mean and Student-t interval over the finite values (no interval below
/// two). `None` when no value is finite.
pub fn across_seeds(per_seed: &[(f64, Option<(f64, f64)>)]) -> Option<AcrossSeeds> {
    if let [(v, ci)] = per_seed {
        return v.is_finite().then(|| AcrossSeeds {
            mean: *v,
            ci: *ci,
            interval: if ci.is_some() { IntervalSource::BootstrapOverExamples } else { IntervalSource::None },
            n: 1,
            values: vec![*v],
        });
    }
    let values: Vec<f64> = per_seed.iter().map(|p| p.0).collect();
    let m = seed_mean(&values)?;
    let ci = m.half_width.map(|h| (m.mean - h, m.mean + h));
    Some(AcrossSeeds {
        mean: m.mean,
        ci,
        interval: if ci.is_some() { IntervalSource::StudentTAcrossSeeds } else { IntervalSource::None },
        n: m.n,
        values: m.values,
    })
}

/// Aggregates values that carry no bootstrap interval (differences, peaks): Student-t across
/// seeds with two or more, no interval with one.
pub fn across_seeds_plain(values: &[f64]) -> Option<AcrossSeeds> {
    let pairs: Vec<(f64, Option<(f64, f64)>)> = values.iter().map(|&v| (v, None)).collect();
    across_seeds(&pairs)
}

/// Within-class (`within = true`) or between-class stiffness of `kind` at `p`, with its bootstrap interval.
pub fn pick(p: &DynPoint, kind: StiffnessKind, within: bool) -> (f64, Option<(f64, f64)>) {
    let s = p.measurement.kind(kind);
    if within {
        (s.within, within_ci(s))
    } else {
        (s.between, between_ci(s))
    }
}

/// The seed-mean curve over the measured steps of the first record (every seed shares the
/// schedule; a step is averaged over the seeds that reached it).
pub fn mean_curve(records: &[DynRunRecord]) -> Vec<CurvePoint> {
    let Some(first) = records.first() else { return vec![] };
    first
        .points
        .iter()
        .filter_map(|p0| {
            let at: Vec<&DynPoint> =
                records.iter().filter_map(|r| r.points.iter().find(|p| p.step == p0.step)).collect();
            let stiff = |kind, within| across_seeds(&at.iter().map(|p| pick(p, kind, within)).collect::<Vec<_>>());
            let val: Vec<f64> = at.iter().filter_map(|p| p.val_loss).collect();
            Some(CurvePoint {
                step: p0.step,
                images_seen: p0.images_seen,
                seeds: at.len(),
                train_loss: across_seeds_plain(&at.iter().map(|p| p.train_loss).collect::<Vec<_>>())?,
                val_loss: across_seeds_plain(&val),
                sign_within: stiff(StiffnessKind::Sign, true),
                sign_between: stiff(StiffnessKind::Sign, false),
                cosine_within: stiff(StiffnessKind::Cosine, true),
                cosine_between: stiff(StiffnessKind::Cosine, false),
            })
        })
        .collect()
}

/// Seed means of the training and validation loss at every evaluation step of the first record
/// (`(images seen, train, val)`; NaN where no seed logged a value).
pub fn mean_history(records: &[DynRunRecord]) -> Vec<(f64, f64, f64)> {
    let Some(first) = records.first() else { return vec![] };
    first
        .history
        .iter()
        .map(|m0| {
            let at: Vec<_> = records.iter().filter_map(|r| r.history.iter().find(|m| m.step == m0.step)).collect();
            let mean = |v: Vec<f64>| seed_mean(&v).map_or(f64::NAN, |m| m.mean);
            (
                m0.images_seen as f64,
                mean(at.iter().map(|m| m.train_loss).collect()),
                mean(at.iter().filter_map(|m| m.val_loss).collect()),
            )
        })
        .collect()
}

/// Cell-wise mean of class matrices (one per seed); a cell is `None` where no seed has a value.
pub fn mean_matrix(mats: &[&[Vec<Option<f64>>]]) -> Vec<Vec<Option<f64>>> {
    let Some(first) = mats.first() else { return vec![] };
    (0..first.len())
        .map(|a| {
            (0..first[a].len())
                .map(|b| {
                    let v: Vec<f64> =
                        mats.iter().filter_map(|m| m.get(a).and_then(|r| r.get(b)).copied().flatten()).collect();
                    seed_mean(&v).map(|m| m.mean)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_seeds_give_the_hand_computed_student_t_interval() {
        // values 0.10, -0.02, 0.04: mean 0.04; deviations 0.06, -0.06, 0; sample variance
        // (0.0036 + 0.0036) / 2 = 0.0036, sd 0.06, standard error 0.06 / sqrt(3) = 0.034641016.
        // t(0.975, 2 dof) = 4.302653 (standard t table), so the half-width is 0.149048 and the
        // interval [-0.109048, 0.189048].
        let a = across_seeds(&[(0.10, Some((0.09, 0.11))), (-0.02, None), (0.04, Some((0.0, 0.1)))]).unwrap();
        let tol = 1e-5; // the table quantile carries 7 significant digits
        assert_eq!(a.n, 3);
        assert_eq!(a.interval, IntervalSource::StudentTAcrossSeeds);
        assert!((a.mean - 0.04).abs() < 1e-12);
        let (lo, hi) = a.ci.unwrap();
        assert!((lo + 0.109_048).abs() < tol && (hi - 0.189_048).abs() < tol, "[{lo}, {hi}]");
        // The per-seed bootstrap intervals play no part: the seeds are the units.
        let b = across_seeds(&[(0.10, None), (-0.02, Some((-1.0, 1.0))), (0.04, None)]).unwrap();
        assert_eq!(a.ci, b.ci);

        // Two seeds 1.0 and 2.0: mean 1.5, sd 0.70710678, se 0.5, t(1 dof) = 12.706205 (table).
        let two = across_seeds_plain(&[1.0, 2.0]).unwrap();
        let (lo, hi) = two.ci.unwrap();
        assert!((lo - (1.5 - 6.353_102)).abs() < tol && (hi - (1.5 + 6.353_102)).abs() < tol);
    }

    #[test]
    fn one_seed_keeps_its_bootstrap_and_non_finite_seeds_are_left_out() {
        let one = across_seeds(&[(0.3, Some((0.2, 0.35)))]).unwrap();
        assert_eq!((one.mean, one.ci, one.interval), (0.3, Some((0.2, 0.35)), IntervalSource::BootstrapOverExamples));
        // A NaN seed is dropped: two finite values remain, t with 1 dof.
        let a = across_seeds(&[(f64::NAN, None), (1.0, None), (3.0, None)]).unwrap();
        assert_eq!((a.n, a.mean), (2, 2.0));
        // sd sqrt(2), se 1, t(1) = 12.706205.
        assert!((a.hi().unwrap() - (2.0 + 12.706_205)).abs() < 1e-5);
        // One finite value among several: a mean but no interval (not a bootstrap of another seed).
        let b = across_seeds(&[(f64::NAN, Some((0.0, 1.0))), (0.5, None)]).unwrap();
        assert_eq!((b.n, b.ci, b.interval), (1, None, IntervalSource::None));
        assert!(across_seeds(&[(f64::NAN, None)]).is_none());
        assert!(across_seeds(&[]).is_none());
    }

    #[test]
    fn mean_matrix_averages_cells_and_keeps_empty_ones_empty() {
        let a = vec![vec![Some(1.0), None], vec![Some(0.0), Some(-1.0)]];
        let b = vec![vec![Some(3.0), None], vec![None, Some(0.0)]];
        let m = mean_matrix(&[&a, &b]);
        assert_eq!(m, vec![vec![Some(2.0), None], vec![Some(0.0), Some(-0.5)]]);
    }
}
