//! Distance curves against a naive f64 oracle, invariances, and zero-crossing readers.

mod common;

use common::{gram, TOL};
use ndarray::Array2;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_analysis::*;

/// Distances come from an f32 Gram of normalised rows: ~1e-6 from the f64 oracle.
const DIST_TOL: f64 = 1e-5;
/// A zero of an exactly linear curve is recovered up to f64 rounding of a few operations.
const LINEAR_TOL: f64 = 1e-9;

fn random(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((n, d), |_| rng.random_range(-1.0..1.0))
}

#[test]
fn matches_naive_oracle_all_filters() {
    let (n, c) = (60, 3);
    let g = random(n, 5, 1);
    let k = gram(&g);
    let x = random(n, 7, 2);
    let x32 = x.mapv(|v| v as f32);
    let labels: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
    // 7 bins: edges at multiples of 2/7 are never hit within DIST_TOL by these random pairs
    // (checked below), so the f32 and f64 distances fall into the same bins.
    let bins = BinSpec { bins: 7, lo: 0.0, hi: 2.0 };
    for filter in [PairFilter::All, PairFilter::WithinClass, PairFilter::BetweenClass] {
        let curve =
            distance_curve(k.view(), x32.view(), &labels, filter, &bins, &StiffnessSettings::default()).unwrap();
        let mut cnt = vec![0u64; 7];
        let mut ssum = [0.0; 7];
        let mut csum = [0.0; 7];
        for i in 0..n {
            for j in (i + 1)..n {
                let keep = match filter {
                    PairFilter::All => true,
                    PairFilter::WithinClass => labels[i] == labels[j],
                    PairFilter::BetweenClass => labels[i] != labels[j],
                };
                if !keep {
                    continue;
                }
                let (xi, xj) = (x.row(i), x.row(j));
                let d = 1.0 - xi.dot(&xj) / (xi.dot(&xi) * xj.dot(&xj)).sqrt();
                let pos = d / (2.0 / 7.0);
                assert!((pos - pos.round()).abs() > DIST_TOL * 4.0, "pair too close to an edge");
                let b = (pos as usize).min(6);
                cnt[b] += 1;
                ssum[b] += k[[i, j]].signum();
                csum[b] += k[[i, j]] / (k[[i, i]] * k[[j, j]]).sqrt();
            }
        }
        assert_eq!(curve.sign_counts, cnt, "{filter:?}");
        assert_eq!(curve.cos_counts, cnt, "{filter:?}");
        for b in 0..7 {
            if cnt[b] == 0 {
                assert_eq!(curve.sign_mean[b], None);
                continue;
            }
            assert!((curve.sign_mean[b].unwrap() - ssum[b] / cnt[b] as f64).abs() <= TOL);
            assert!((curve.cos_mean[b].unwrap() - csum[b] / cnt[b] as f64).abs() <= TOL);
        }
        assert_eq!(curve.bins, bins);
        assert_eq!(curve.filter, filter);
        assert_eq!(curve.out_of_range_pairs, 0);
    }
}

#[test]
fn cosine_stiffness_of_the_representation_itself_is_one_minus_distance() {
    // K = X X^T: cosine stiffness of a pair is the cosine of its representations, 1 - d.
    // So the pair-level fit is exactly y = 1 - d (zero at d = 1), up to f32 distances.
    let n = 80;
    let x = random(n, 6, 3);
    let k = gram(&x);
    let x32 = x.mapv(|v| v as f32);
    let labels = vec![0u32; n];
    let curve = distance_curve(
        k.view(),
        x32.view(),
        &labels,
        PairFilter::All,
        &BinSpec::default(),
        &StiffnessSettings::default(),
    )
    .unwrap();
    let fit = curve.linear_fit(StiffnessKind::Cosine, FitOver::Pairs).unwrap();
    assert!((fit.slope + 1.0).abs() < DIST_TOL, "{fit:?}");
    assert!((fit.intercept - 1.0).abs() < DIST_TOL, "{fit:?}");
    match curve.linear_fit_crossing(StiffnessKind::Cosine, FitOver::Pairs) {
        Crossing::Found { distance } => assert!((distance - 1.0).abs() < DIST_TOL),
        other => panic!("{other:?}"),
    }
    // v1 reader: bin means are 1 - (mean d in bin); interpolating between centres lands
    // within one bin width of 1.
    match curve.first_zero_crossing(StiffnessKind::Cosine) {
        Crossing::Found { distance } => assert!((distance - 1.0).abs() < BinSpec::default().width()),
        other => panic!("{other:?}"),
    }
    // Sign stiffness is +1 below d = 1 and -1 above.
    for (m, c) in curve.sign_mean.iter().zip(&curve.centres) {
        if let Some(m) = m {
            if *c < 0.95 {
                assert_eq!(*m, 1.0)
            } else if *c > 1.05 {
                assert_eq!(*m, -1.0)
            }
        }
    }
    assert_eq!(curve.cos_centres[0], 1.0 - curve.centres[0]);
}

fn one_pair_per_bin(bins: &BinSpec, ys: &[Option<f64>]) -> DistanceCurve {
    let m: Vec<BinMoments> = bins
        .centres()
        .iter()
        .zip(ys)
        .map(|(&c, y)| {
            let mut m = BinMoments::default();
            if let Some(y) = y {
                m.push(c, *y);
            }
            m
        })
        .collect();
    DistanceCurve::from_moments(*bins, PairFilter::All, StiffnessSettings::default(), m.clone(), m).unwrap()
}

proptest! {
    #[test]
    fn linear_curve_zero_found_exactly(
        alpha in 0.1f64..5.0,
        frac in 0.0f64..1.0,
        holes in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let bins = BinSpec::default();
        let centres = bins.centres();
        // Zero strictly inside (first centre, last centre].
        let beta = centres[0] + 1e-3 + frac * (centres[39] - centres[0] - 1e-3);
        // y = alpha (beta - d) at bin centres; random bins empty, except the first and the
        // two bins around beta so the bracket exists.
        let ys: Vec<Option<f64>> = centres
            .iter()
            .enumerate()
            .map(|(b, &c)| {
                let keep = b == 0 || (c - beta).abs() <= bins.width() || !holes[b];
                keep.then_some(alpha * (beta - c))
            })
            .collect();
        let curve = one_pair_per_bin(&bins, &ys);
        for kind in [StiffnessKind::Sign, StiffnessKind::Cosine] {
            match curve.first_zero_crossing(kind) {
                Crossing::Found { distance } => prop_assert!((distance - beta).abs() < LINEAR_TOL),
                other => prop_assert!(false, "{:?}", other),
            }
            for over in [FitOver::Pairs, FitOver::Bins] {
                match curve.linear_fit_crossing(kind, over) {
                    Crossing::Found { distance } => prop_assert!((distance - beta).abs() < LINEAR_TOL),
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }

    #[test]
    fn example_permutation_leaves_curve_unchanged(seed in any::<u64>()) {
        let n = 40;
        let g = random(n, 4, seed);
        let k = gram(&g);
        let x = random(n, 9, seed ^ 0xabc).mapv(|v| v as f32);
        let labels: Vec<u32> = (0..n).map(|i| (i % 4) as u32).collect();
        let mut perm: Vec<usize> = (0..n).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for i in (1..n).rev() { perm.swap(i, rng.random_range(0..=i)); }
        let kp = Array2::from_shape_fn((n, n), |(i, j)| k[[perm[i], perm[j]]]);
        let xp = Array2::from_shape_fn(x.dim(), |(i, d)| x[[perm[i], d]]);
        let lp: Vec<u32> = perm.iter().map(|&i| labels[i]).collect();
        // 13 bins: odd edges, so f32 rounding differences never move a random pair's bin.
        let bins = BinSpec { bins: 13, lo: 0.0, hi: 2.0 };
        let s = StiffnessSettings::default();
        let a = distance_curve(k.view(), x.view(), &labels, PairFilter::WithinClass, &bins, &s).unwrap();
        let b = distance_curve(kp.view(), xp.view(), &lp, PairFilter::WithinClass, &bins, &s).unwrap();
        prop_assert_eq!(&a.sign_counts, &b.sign_counts);
        for (x, y) in a.cos_mean.iter().zip(&b.cos_mean) {
            match (x, y) {
                (Some(x), Some(y)) => prop_assert!((x - y).abs() <= TOL),
                (None, None) => {}
                _ => prop_assert!(false),
            }
        }
    }
}

#[test]
fn crossing_edge_cases() {
    let bins = BinSpec { bins: 4, lo: 0.0, hi: 2.0 }; // centres 0.25, 0.75, 1.25, 1.75
    let c = one_pair_per_bin(&bins, &[Some(-0.2), Some(0.3), None, None]);
    assert_eq!(c.first_zero_crossing(StiffnessKind::Sign), Crossing::StartsNegative { distance: 0.25, value: -0.2 });
    let c = one_pair_per_bin(&bins, &[Some(0.5), Some(0.4), None, Some(0.1)]);
    assert!(matches!(c.first_zero_crossing(StiffnessKind::Sign), Crossing::NeverCrosses { .. }));
    // Slowly decreasing line y = 0.5 - 0.1 d: zero at d = 5, beyond hi = 2: not reported as
    // a number.
    let ys: Vec<Option<f64>> = bins.centres().iter().map(|c| Some(0.5 - 0.1 * c)).collect();
    let c = one_pair_per_bin(&bins, &ys);
    assert!(matches!(c.linear_fit_crossing(StiffnessKind::Sign, FitOver::Bins), Crossing::NeverCrosses { .. }));
    let c = one_pair_per_bin(&bins, &[None, None, None, None]);
    assert!(matches!(c.first_zero_crossing(StiffnessKind::Sign), Crossing::NoData { .. }));
    assert!(matches!(c.linear_fit_crossing(StiffnessKind::Sign, FitOver::Pairs), Crossing::NoData { .. }));
    // Single non-empty bin: no line can be fitted.
    let c = one_pair_per_bin(&bins, &[Some(0.3), None, None, None]);
    assert!(matches!(c.linear_fit_crossing(StiffnessKind::Sign, FitOver::Bins), Crossing::NoData { .. }));
}

#[test]
fn several_spaces_and_zero_representation_rows() {
    let n = 30;
    let g = random(n, 3, 5);
    let k = gram(&g);
    let mut x = random(n, 4, 6).mapv(|v| v as f32);
    x.row_mut(7).fill(0.0);
    let y = random(n, 2, 7).mapv(|v| v as f32);
    let labels = vec![0u32; n];
    let s = StiffnessSettings::default();
    let curves = distance_curves(
        k.view(),
        &[("input", x.view()), ("l1", y.view())],
        &labels,
        PairFilter::All,
        &BinSpec::default(),
        &s,
    )
    .unwrap();
    assert_eq!(curves[0].space.as_deref(), Some("input"));
    assert_eq!(curves[0].zero_norm_representations, vec![7]);
    // Row 7 drops its n - 1 pairs.
    let total: u64 = curves[0].sign_counts.iter().sum();
    assert_eq!(total, ((n - 1) * (n - 2) / 2) as u64);
    let total: u64 = curves[1].sign_counts.iter().sum();
    assert_eq!(total, (n * (n - 1) / 2) as u64);
}

/// Bins with `counts[b]` pairs, all at the bin centre with stiffness `ys[b]`.
fn counted_bins(bins: &BinSpec, ys: &[f64], counts: &[u64]) -> DistanceCurve {
    let m: Vec<BinMoments> = bins
        .centres()
        .iter()
        .zip(ys.iter().zip(counts))
        .map(|(&c, (&y, &n))| {
            let mut m = BinMoments::default();
            for _ in 0..n {
                m.push(c, y);
            }
            m
        })
        .collect();
    DistanceCurve::from_moments(*bins, PairFilter::All, StiffnessSettings::default(), m.clone(), m).unwrap()
}

#[test]
fn sparse_bins_do_not_decide_crossings() {
    let bins = BinSpec { bins: 5, lo: 0.0, hi: 2.5 }; // centres 0.25, 0.75, 1.25, 1.75, 2.25
                                                      // A 3-pair bin at the smallest distance with a negative mean, then a well-populated curve
                                                      // 0.6, 0.2, -0.2 that crosses halfway between 1.25 and 1.75 (hand interpolation: d = 1.5).
    let c = counted_bins(&bins, &[-0.5, 0.6, 0.2, -0.2, 0.1], &[3, 500, 400, 300, 2]);
    assert!(matches!(c.first_zero_crossing(StiffnessKind::Sign), Crossing::StartsNegative { .. }));
    match c.first_zero_crossing_min(StiffnessKind::Sign, 30) {
        Crossing::Found { distance } => assert!((distance - 1.5).abs() < LINEAR_TOL, "{distance}"),
        other => panic!("expected a crossing, got {other:?}"),
    }
    // Only one bin qualifies: no first crossing can be interpolated past it, and no line.
    let c = counted_bins(&bins, &[0.5, 0.4, -0.3, 0.0, 0.0], &[100, 5, 5, 0, 0]);
    match c.first_zero_crossing_min(StiffnessKind::Sign, 30) {
        Crossing::NeverCrosses { beyond, .. } => assert_eq!(beyond, Some(0.25)),
        other => panic!("expected a censored domain, got {other:?}"),
    }
    assert!(matches!(c.linear_fit_crossing_min(StiffnessKind::Sign, FitOver::Pairs, 30), Crossing::NoData { .. }));
    // With min_pairs 1 the same data do give a line (through the sparse bins).
    assert!(!matches!(c.linear_fit_crossing(StiffnessKind::Sign, FitOver::Pairs), Crossing::NoData { .. }));
    // No bin qualifies at all: says so.
    match c.first_zero_crossing_min(StiffnessKind::Sign, 1000) {
        Crossing::NoData { reason } => assert!(reason.contains("1000"), "{reason}"),
        other => panic!("expected NoData, got {other:?}"),
    }
}

#[test]
fn censored_observations_carry_the_last_distance_read() {
    let bins = BinSpec { bins: 4, lo: 0.0, hi: 2.0 };
    let c = counted_bins(&bins, &[0.5, 0.4, 0.3, 0.2], &[50, 50, 50, 1]);
    assert_eq!(c.first_zero_crossing_min(StiffnessKind::Sign, 10).as_observation(), Some((1.25, true)));
    assert_eq!(c.first_zero_crossing_min(StiffnessKind::Sign, 1).as_observation(), Some((1.75, true)));
    let c = counted_bins(&bins, &[-0.1, 0.4, 0.3, 0.2], &[50, 50, 50, 50]);
    assert_eq!(c.first_zero_crossing_min(StiffnessKind::Sign, 10).as_observation(), Some((0.0, false)));
    // Old records without `beyond` still load, and are not usable as observations.
    let old: Crossing = serde_json::from_str(r#"{"kind":"never_crosses","reason":"x"}"#).unwrap();
    assert_eq!(old.as_observation(), None);
}
