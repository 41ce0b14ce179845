//! Synthetic spherical-harmonics data: the special functions against hand-derived formulas,
//! orthonormality by Monte Carlo, label balance, determinism and argument errors.

use std::f64::consts::PI;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stiff_data::synthetic::{
    assoc_legendre, gegenbauer, generate, harmonic_dimension, legendre, profile_first_zero, quantile_labels,
    real_harmonic, real_harmonics_of_degree, sample_sphere, zonal_harmonic, zonal_profile, Labelling, SyntheticSpec,
    Target, TargetKind, MAX_DEGREE,
};
use stiff_data::DataError;

/// Closed-form polynomials evaluated in f64: agreement to a few ulps of the values involved.
const EXACT_TOL: f64 = 1e-12;
/// Monte Carlo tolerance in standard errors (a 5-sigma band; the tests are seeded, so a pass is
/// reproducible, and a wrong normalisation misses by far more than this).
const MC_SIGMAS: f64 = 5.0;

fn grid() -> Vec<f64> {
    (0..=20).map(|i| -1.0 + i as f64 / 10.0).collect()
}

#[test]
fn legendre_matches_hand_computed_polynomials() {
    // Textbook closed forms (Bonnet's recurrence unrolled by hand).
    for x in grid() {
        let s = (1.0 - x * x).sqrt();
        let cases = [
            (0, 0, 1.0),
            (1, 0, x),
            (2, 0, (3.0 * x * x - 1.0) / 2.0),
            (3, 0, (5.0 * x.powi(3) - 3.0 * x) / 2.0),
            (4, 0, (35.0 * x.powi(4) - 30.0 * x * x + 3.0) / 8.0),
            // Associated functions without the Condon-Shortley phase.
            (1, 1, s),
            (2, 1, 3.0 * x * s),
            (2, 2, 3.0 * (1.0 - x * x)),
            (3, 1, 1.5 * (5.0 * x * x - 1.0) * s),
            (3, 2, 15.0 * x * (1.0 - x * x)),
            (3, 3, 15.0 * s.powi(3)),
        ];
        for (l, m, want) in cases {
            let got = assoc_legendre(l, m, x).unwrap();
            assert!((got - want).abs() < EXACT_TOL * want.abs().max(1.0), "P_{l}^{m}({x}) = {got}, want {want}");
            if m == 0 {
                assert!((legendre(l, x) - want).abs() < EXACT_TOL, "P_{l}({x})");
            }
        }
    }
}

#[test]
fn gegenbauer_matches_hand_computed_polynomials() {
    for t in grid() {
        // C^(1) = Chebyshev U: U_2 = 4t^2 - 1, U_3 = 8t^3 - 4t.
        assert!((gegenbauer(2, 1.0, t).unwrap() - (4.0 * t * t - 1.0)).abs() < EXACT_TOL);
        assert!((gegenbauer(3, 1.0, t).unwrap() - (8.0 * t.powi(3) - 4.0 * t)).abs() < EXACT_TOL);
        // C_2^(a)(t) = 2a(1+a) t^2 - a (generating function, second-order term).
        let a = 1.5;
        assert!((gegenbauer(2, a, t).unwrap() - (2.0 * a * (1.0 + a) * t * t - a)).abs() < EXACT_TOL);
        // C^(1/2) = Legendre, and the d = 3 zonal profile is P_l (C_l^(1/2)(1) = 1).
        for l in 0..8 {
            assert!((gegenbauer(l, 0.5, t).unwrap() - legendre(l, t)).abs() < EXACT_TOL);
            assert!((zonal_profile(3, l, t).unwrap() - legendre(l, t)).abs() < EXACT_TOL);
            // d = 2: the profile is cos(l theta).
            assert!((zonal_profile(2, l, t).unwrap() - (l as f64 * t.acos()).cos()).abs() < 1e-10);
        }
    }
    for l in 0..10 {
        // dim H_l: 2l+1 on S^2, 2 on the circle (1 at l = 0), (l+1)^2 on S^3.
        assert_eq!(harmonic_dimension(3, l).unwrap(), (2 * l + 1) as f64);
        assert_eq!(harmonic_dimension(2, l).unwrap(), if l == 0 { 1.0 } else { 2.0 });
        assert!((harmonic_dimension(4, l).unwrap() - ((l + 1) * (l + 1)) as f64).abs() < 1e-9);
    }
}

#[test]
fn real_harmonics_match_closed_forms() {
    // Standard real harmonics times sqrt(4 pi) (uniform probability measure), derived by hand
    // from N_lm P_l^m(cos t) cos/sin(m phi).
    let s3 = 3f64.sqrt();
    let s15 = 15f64.sqrt();
    let s5 = 5f64.sqrt();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let pts = sample_sphere(3, 50, &mut rng);
    for p in pts.chunks(3) {
        let (x, y, z) = (p[0], p[1], p[2]);
        let cases = [
            (0, 0, 1.0),
            (1, -1, s3 * y),
            (1, 0, s3 * z),
            (1, 1, s3 * x),
            (2, -2, s15 * x * y),
            (2, -1, s15 * y * z),
            (2, 0, s5 * (3.0 * z * z - 1.0) / 2.0),
            (2, 1, s15 * x * z),
            (2, 2, s15 / 2.0 * (x * x - y * y)),
        ];
        for (l, m, want) in cases {
            let got = real_harmonic(l, m, [x, y, z]).unwrap();
            assert!((got - want).abs() < 1e-12, "Y_{l},{m} at {p:?}: {got} vs {want}");
        }
    }
}

#[test]
fn addition_theorem_holds_pointwise() {
    // sum_m Y_lm(x) Y_lm(y) = (2l + 1) P_l(x . y) for harmonics orthonormal under the uniform
    // probability measure: an exact identity, checked to f64 rounding at random pairs.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let pts = sample_sphere(3, 40, &mut rng);
    for l in [0, 1, 2, 3, 5, 8, 13, 20] {
        for pair in pts.chunks(6) {
            let (a, b) = ([pair[0], pair[1], pair[2]], [pair[3], pair[4], pair[5]]);
            let ya = real_harmonics_of_degree(l, a).unwrap();
            let yb = real_harmonics_of_degree(l, b).unwrap();
            let lhs: f64 = ya.iter().zip(&yb).map(|(p, q)| p * q).sum();
            let t = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
            let rhs = (2 * l + 1) as f64 * legendre(l, t);
            assert!((lhs - rhs).abs() < 1e-9 * (2 * l + 1) as f64, "l = {l}: {lhs} vs {rhs}");
        }
    }
}

#[test]
fn real_harmonics_are_orthonormal_by_monte_carlo() {
    // E[Y_a Y_b] over N uniform points; each product has variance <= E[Y_a^2 Y_b^2] <= 2 l_max + 1
    // (pointwise sum_m Y_lm^2 = 2l + 1 bounds every |Y_lm|^2), so the standard error of each
    // entry is at most sqrt((2 l_max + 1) / N).
    const L_MAX: usize = 4;
    const N: usize = 200_000;
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let pts = sample_sphere(3, N, &mut rng);
    let funcs: Vec<(usize, i64)> = (0..=L_MAX).flat_map(|l| (-(l as i64)..=l as i64).map(move |m| (l, m))).collect();
    let k = funcs.len();
    let mut gram = vec![0.0; k * k];
    let mut row = vec![0.0; k];
    for p in pts.chunks(3) {
        let q = [p[0], p[1], p[2]];
        for (i, &(l, m)) in funcs.iter().enumerate() {
            row[i] = real_harmonic(l, m, q).unwrap();
        }
        for i in 0..k {
            for j in 0..k {
                gram[i * k + j] += row[i] * row[j];
            }
        }
    }
    let tol = MC_SIGMAS * ((2 * L_MAX + 1) as f64 / N as f64).sqrt();
    for i in 0..k {
        for j in 0..k {
            let want = if i == j { 1.0 } else { 0.0 };
            let got = gram[i * k + j] / N as f64;
            assert!((got - want).abs() < tol, "E[Y{:?} Y{:?}] = {got}, want {want} (tol {tol})", funcs[i], funcs[j]);
        }
    }
}

#[test]
fn zonal_harmonics_are_orthonormal_by_monte_carlo() {
    // On S^4 (d = 5): E[Z_u^l Z_v^l'] = delta_ll' profile(u . v) (reproducing kernel). |Z|^2 <= N(d, l)
    // pointwise, so each entry's standard error is at most sqrt(N(d, l_max) / N).
    const D: usize = 5;
    const N: usize = 200_000;
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let dirs = sample_sphere(D, 2, &mut rng);
    let (u, v) = (&dirs[..D], &dirs[D..]);
    let uv: f64 = u.iter().zip(v).map(|(a, b)| a * b).sum();
    let pts = sample_sphere(D, N, &mut rng);
    let degrees = [1usize, 2, 3];
    let mut sums = [[0.0f64; 3]; 3]; // [l index of Z_u][l' index of Z_v]
    for x in pts.chunks(D) {
        let zu: Vec<f64> = degrees.iter().map(|&l| zonal_harmonic(l, u, x).unwrap()).collect();
        let zv: Vec<f64> = degrees.iter().map(|&l| zonal_harmonic(l, v, x).unwrap()).collect();
        for a in 0..3 {
            for b in 0..3 {
                sums[a][b] += zu[a] * zv[b];
            }
        }
    }
    let tol = MC_SIGMAS * (harmonic_dimension(D, 3).unwrap() / N as f64).sqrt();
    for a in 0..3 {
        for b in 0..3 {
            let want = if a == b { zonal_profile(D, degrees[a], uv).unwrap() } else { 0.0 };
            let got = sums[a][b] / N as f64;
            assert!(
                (got - want).abs() < tol,
                "E[Z_u^{} Z_v^{}] = {got}, want {want} (tol {tol})",
                degrees[a],
                degrees[b]
            );
        }
    }
}

#[test]
fn targets_have_unit_variance() {
    // E[f^2] = 1 by construction for both families; Monte Carlo with a 5-sigma band, the standard
    // error of the mean of f^2 estimated from the sample itself.
    let specs = [
        SyntheticSpec { degree: 3, ..Default::default() },
        SyntheticSpec { degree: 6, seed: 4, ..Default::default() },
        SyntheticSpec { dim: 8, degree: 2, target: TargetKind::ZonalSum { directions: 6 }, ..Default::default() },
        SyntheticSpec { dim: 3, degree: 5, target: TargetKind::ZonalSum { directions: 3 }, ..Default::default() },
    ];
    for spec in specs {
        let f = Target::draw(&spec).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 100_000;
        let pts = sample_sphere(spec.dim, n, &mut rng);
        let sq: Vec<f64> = pts.chunks(spec.dim).map(|x| f.eval(x).unwrap().powi(2)).collect();
        let mean = sq.iter().sum::<f64>() / n as f64;
        let sd = (sq.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        let se = sd / (n as f64).sqrt();
        assert!((mean - 1.0).abs() < MC_SIGMAS * se, "{}: E[f^2] = {mean} (se {se})", spec.name());
    }
}

#[test]
fn sign_labels_are_balanced_for_odd_degrees() {
    // f(-x) = -f(x) for odd l and x is symmetric, so P(f > 0) = 1/2 exactly; binomial se = 0.5/sqrt(n).
    for (degree, seed) in [(1, 0), (3, 1), (5, 2), (7, 3)] {
        let spec = SyntheticSpec { degree, seed, n_train: 20_000, n_test: 5_000, ..Default::default() };
        let ds = generate(&spec).unwrap();
        for split in [&ds.train, &ds.test] {
            let n = split.len() as f64;
            let frac = split.labels.iter().filter(|&&l| l == 1).count() as f64 / n;
            assert!((frac - 0.5).abs() < MC_SIGMAS * 0.5 / n.sqrt(), "l = {degree}: positive fraction {frac}");
        }
        // Labels are the sign of the stored values.
        for (v, l) in ds.train_values.iter().zip(&ds.train.labels) {
            assert_eq!(*l, u32::from(*v > 0.0));
        }
    }
    // Even degrees: no symmetry, but both classes occur.
    let ds = generate(&SyntheticSpec { degree: 2, ..Default::default() }).unwrap();
    let h = ds.train.class_histogram(2);
    assert!(h[0] > 0 && h[1] > 0, "{h:?}");
}

#[test]
fn quantile_labels_are_exactly_balanced() {
    for (k, n) in [(2, 1_001), (5, 10_000), (7, 999)] {
        let spec = SyntheticSpec {
            degree: 4,
            labels: Labelling::Quantiles { classes: k },
            n_train: n,
            n_test: 20_000,
            ..Default::default()
        };
        let ds = generate(&spec).unwrap();
        let h = ds.train.class_histogram(k);
        assert_eq!(h.iter().sum::<usize>(), n);
        assert!(h.iter().all(|&c| c == n / k || c == n.div_ceil(k)), "train histogram {h:?}");
        // Cut points reproduce the training labels and are ascending.
        assert_eq!(ds.cut_points.len(), k - 1);
        assert!(ds.cut_points.windows(2).all(|w| w[0] < w[1]));
        for (v, l) in ds.train_values.iter().zip(&ds.train.labels) {
            assert_eq!(*l as usize, ds.cut_points.iter().filter(|&&c| *v > c).count());
        }
        // Validation: each class has probability ~1/k; the cut points themselves are estimated
        // from n training values, adding about the same binomial noise again (hence 2 * se).
        let ht = ds.test.class_histogram(k);
        let nt = ds.test.len() as f64;
        let p = 1.0 / k as f64;
        let se = (p * (1.0 - p) / nt).sqrt() + (p * (1.0 - p) / n as f64).sqrt();
        for c in ht {
            assert!((c as f64 / nt - p).abs() < MC_SIGMAS * se, "validation histogram class share {}", c as f64 / nt);
        }
    }
    assert!(quantile_labels(&[1.0, 2.0], 3).is_err());
    assert!(quantile_labels(&[1.0, f64::NAN], 2).is_err());
}

#[test]
fn generation_is_deterministic_per_seed() {
    let spec = SyntheticSpec { degree: 3, n_train: 500, n_test: 100, seed: 42, ..Default::default() };
    let a = generate(&spec).unwrap();
    let b = generate(&spec).unwrap();
    let flat = |t: &candle::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(flat(&a.train.images), flat(&b.train.images));
    assert_eq!(flat(&a.test.images), flat(&b.test.images));
    assert_eq!(a.train.labels, b.train.labels);
    assert_eq!(a.target, b.target);
    // Another seed: another target and other points.
    let c = generate(&SyntheticSpec { seed: 43, ..spec.clone() }).unwrap();
    assert_ne!(a.target, c.target);
    assert_ne!(flat(&a.train.images), flat(&c.train.images));
    // Another training size: same target, same validation split, same leading training points.
    let d = generate(&SyntheticSpec { n_train: 800, ..spec.clone() }).unwrap();
    assert_eq!(a.target, d.target);
    assert_eq!(flat(&a.test.images), flat(&d.test.images));
    assert_eq!(flat(&a.train.images)[..1500], flat(&d.train.images)[..1500]);
    // Shapes and unit norms (f32 rounding of coordinates in [-1, 1]: |x|^2 within ~1e-6 of 1).
    assert_eq!(a.train.images.dims(), &[500, 1, 1, 3]);
    assert_eq!(a.input_shape(), (1, 1, 3));
    assert!(a.train.coarse_labels.is_none());
    for p in flat(&a.train.images).chunks(3) {
        let r2: f32 = p.iter().map(|v| v * v).sum();
        assert!((r2 - 1.0).abs() < 1e-5);
    }
    // Values are f(x) at the f64 points.
    let zs = generate(&SyntheticSpec {
        dim: 6,
        degree: 2,
        target: TargetKind::ZonalSum { directions: 4 },
        n_train: 300,
        n_test: 10,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(zs.train.images.dims(), &[300, 1, 1, 6]);
    assert_eq!(zs.class_names, vec!["negative", "positive"]);
}

#[test]
fn correlation_zero_of_the_target() {
    // P_1(cos t) = cos t vanishes at pi/2; P_2 at cos t = 1/sqrt(3); on the circle cos(l t) at pi/(2l).
    assert!((profile_first_zero(3, 1).unwrap().unwrap() - PI / 2.0).abs() < 1e-9);
    assert!((profile_first_zero(3, 2).unwrap().unwrap() - (1.0 / 3f64.sqrt()).acos()).abs() < 1e-9);
    assert!((profile_first_zero(2, 5).unwrap().unwrap() - PI / 10.0).abs() < 1e-9);
    // Large l: Mehler-Heine, first zero ~ j_0,1 / (l + 1/2) with j_0,1 = 2.404826 (within 1%).
    let z = profile_first_zero(3, 40).unwrap().unwrap();
    assert!((z * 40.5 / 2.404_825_557_7 - 1.0).abs() < 0.01, "{z}");
    assert_eq!(profile_first_zero(3, 0).unwrap(), None);
}

#[test]
fn bad_arguments_are_errors() {
    let is_invalid = |e: DataError| matches!(e, DataError::InvalidArgument { .. });
    assert!(is_invalid(generate(&SyntheticSpec { dim: 4, ..Default::default() }).unwrap_err()));
    assert!(is_invalid(generate(&SyntheticSpec { degree: 0, ..Default::default() }).unwrap_err()));
    assert!(is_invalid(generate(&SyntheticSpec { degree: MAX_DEGREE + 1, ..Default::default() }).unwrap_err()));
    assert!(is_invalid(generate(&SyntheticSpec { n_train: 0, ..Default::default() }).unwrap_err()));
    assert!(is_invalid(
        generate(&SyntheticSpec { labels: Labelling::Quantiles { classes: 1 }, ..Default::default() }).unwrap_err()
    ));
    assert!(is_invalid(
        generate(&SyntheticSpec { dim: 1, target: TargetKind::ZonalSum { directions: 2 }, ..Default::default() })
            .unwrap_err()
    ));
    assert!(is_invalid(
        generate(&SyntheticSpec { dim: 4, target: TargetKind::ZonalSum { directions: 0 }, ..Default::default() })
            .unwrap_err()
    ));
    assert!(is_invalid(assoc_legendre(2, 3, 0.1).unwrap_err()));
    assert!(is_invalid(assoc_legendre(2, 1, 1.5).unwrap_err()));
    assert!(is_invalid(real_harmonic(2, -3, [0.0, 0.0, 1.0]).unwrap_err()));
    assert!(is_invalid(real_harmonic(2, 0, [0.0, 0.0, 0.0]).unwrap_err()));
    assert!(is_invalid(gegenbauer(2, 0.0, 0.3).unwrap_err()));
    assert!(is_invalid(zonal_harmonic(1, &[1.0, 0.0, 0.0], &[1.0, 0.0]).unwrap_err()));
    let t = Target::draw(&SyntheticSpec::default()).unwrap();
    assert!(is_invalid(t.eval(&[1.0, 0.0]).unwrap_err()));
}
