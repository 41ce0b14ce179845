//! The v3 line fit restricted to the initial decline of a curve.

use stiff_analysis::{
    BinMoments, BinSpec, Crossing, DistanceCurve, FitOver, PairFilter, StiffnessKind, StiffnessSettings,
};

/// Exact-zero tolerance for a fit of points lying exactly on a line (f64 rounding only).
const TOL: f64 = 1e-9;

#[test]
fn fit_to_minimum_ignores_the_rise_at_large_distance() {
    // 10 bins over [0, 1]; centres 0.05, 0.15, ..., 0.95. Stiffness falls on the line
    // y = 0.6 - 2 d up to the minimum at d = 0.45 (y = -0.3), then rises back to +0.5.
    // The fit over the decline is exactly that line, so its zero is d = 0.3; the fit over all
    // pairs is tilted by the rise.
    let bins = BinSpec { bins: 10, lo: 0.0, hi: 1.0 };
    let mut m = vec![BinMoments::default(); 10];
    for (i, c) in bins.centres().iter().enumerate() {
        let y = if *c <= 0.45 { 0.6 - 2.0 * c } else { -0.3 + 1.6 * (c - 0.45) };
        for _ in 0..(100 + i) {
            m[i].push(*c, y);
        }
    }
    let curve = DistanceCurve::from_moments(bins, PairFilter::All, StiffnessSettings::default(), m.clone(), m).unwrap();
    match curve.linear_fit_crossing(StiffnessKind::Sign, FitOver::PairsToMinimum) {
        Crossing::Found { distance } => assert!((distance - 0.3).abs() < TOL, "{distance}"),
        other => panic!("expected a crossing, got {other:?}"),
    }
    let fit = curve.linear_fit(StiffnessKind::Sign, FitOver::PairsToMinimum).unwrap();
    assert!((fit.slope + 2.0).abs() < TOL && (fit.intercept - 0.6).abs() < TOL);
    // A sparse tail (2 pairs far out, strongly negative) does not move the minimum: bins need
    // 0.1% of the pairs (here 10) to count.
    let mut sparse = curve.sign_moments.clone();
    sparse[9] = BinMoments::default();
    sparse[9].push(0.95, -0.9);
    sparse[9].push(0.95, -0.9);
    let c2 = DistanceCurve::from_moments(bins, PairFilter::All, StiffnessSettings::default(), sparse.clone(), sparse)
        .unwrap();
    match c2.linear_fit_crossing(StiffnessKind::Sign, FitOver::PairsToMinimum) {
        Crossing::Found { distance } => assert!((distance - 0.3).abs() < TOL, "{distance}"),
        other => panic!("expected a crossing, got {other:?}"),
    }
    let all = curve.linear_fit(StiffnessKind::Sign, FitOver::Pairs).unwrap();
    assert!((all.slope + 2.0).abs() > 0.5, "the whole-range fit is tilted: slope {}", all.slope);
}
