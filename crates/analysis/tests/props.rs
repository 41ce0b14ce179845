//! Property tests of the class-matrix math against a naive oracle and its invariances.
//! K = G G^T with small *integer* G, so every K entry is exact and sign(0) really occurs.

mod common;

use common::{gram, naive_class, TOL};
use ndarray::Array2;
use proptest::prelude::*;
use stiff_analysis::*;

/// (G: (n, p) integer-valued, labels with every class present, num_classes).
fn case() -> impl Strategy<Value = (Array2<f64>, Vec<u32>, usize)> {
    (2usize..5, 0usize..12, 1usize..5).prop_flat_map(|(c, extra, p)| {
        let n = c + extra.max(1);
        (proptest::collection::vec(-2i32..=2, n * p), proptest::collection::vec(0u32..c as u32, n))
            .prop_map(move |(gv, mut labels)| {
                // Every class present: the first c examples take classes 0..c.
                for (a, l) in labels.iter_mut().take(c).enumerate() {
                    *l = a as u32;
                }
                let g = Array2::from_shape_vec((n, p), gv.into_iter().map(f64::from).collect()).unwrap();
                (g, labels, c)
            })
            // All-zero G is the AllZeroGradients error, tested separately.
            .prop_filter("some non-zero gradient", |(g, _, _)| g.iter().any(|&v| v != 0.0))
    })
}

fn assert_matrix_eq(m: &ClassMatrix, mean: &[Vec<Option<f64>>], count: &[Vec<u64>]) {
    let c = m.num_classes();
    for a in 0..c {
        for b in 0..c {
            assert_eq!(m.counts[[a, b]], count[a][b], "count [{a},{b}]");
            match (m.get(a, b), mean[a][b]) {
                (Some(x), Some(y)) => assert!((x - y).abs() <= TOL, "[{a},{b}] {x} vs {y}"),
                (None, None) => {}
                other => panic!("cell [{a},{b}] definedness differs: {other:?}"),
            }
        }
    }
}

fn same_class_matrix(x: &ClassMatrix, y: &ClassMatrix) {
    assert_eq!(x.counts, y.counts);
    for (a, b) in x.values.iter().zip(y.values.iter()) {
        assert!((a - b).abs() <= TOL, "{a} vs {b}");
    }
    assert!((x.within - y.within).abs() <= TOL);
    assert!((x.between - y.between).abs() <= TOL);
}

fn run(k: &Array2<f64>, labels: &[u32], c: usize) -> Option<ClassStiffness> {
    match class_stiffness(k.view(), labels, c, &StiffnessSettings::default()) {
        Ok(r) => Some(r),
        // Legitimately undefined: e.g. every class a singleton (no within pair), or all
        // non-zero gradients in one class (no between cosine pair).
        Err(AnalysisError::NoData { .. }) => None,
        Err(e) => panic!("unexpected error {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn matches_naive_oracle((g, labels, c) in case()) {
        let k = gram(&g);
        let r = run(&k, &labels, c);
        prop_assume!(r.is_some(), "class stiffness undefined for this draw");
        let r = r.unwrap();
        let (sm, sn, cm, cn) = naive_class(&g, &labels, c);
        assert_matrix_eq(&r.sign, &sm, &sn);
        assert_matrix_eq(&r.cosine, &cm, &cn);
        let zero: Vec<usize> = (0..g.nrows()).filter(|&i| g.row(i).iter().all(|&v| v == 0.0)).collect();
        prop_assert_eq!(r.zero_norm_examples, zero);
    }

    #[test]
    fn pairwise_values_match_a_naive_loop((g, _labels, _c) in case()) {
        // Against dot products of the integer gradient rows themselves (not K's own entries).
        let k = gram(&g);
        let s = StiffnessSettings::default();
        let sign = pairwise_sign(k.view(), &s).unwrap();
        let cos = pairwise_cosine(k.view(), &s).unwrap();
        let n = g.nrows();
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = g.row(i).iter().zip(g.row(j)).map(|(a, b)| a * b).sum();
                let want_sign = if dot > 0.0 { 1.0 } else if dot < 0.0 { -1.0 } else { 0.0 };
                prop_assert_eq!(sign[[i, j]], want_sign, "sign [{}, {}]", i, j);
                let (ni, nj) = (g.row(i).dot(&g.row(i)).sqrt(), g.row(j).dot(&g.row(j)).sqrt());
                if ni > 0.0 && nj > 0.0 {
                    prop_assert!((cos.values[[i, j]] - dot / (ni * nj)).abs() <= TOL, "cos [{}, {}]", i, j);
                }
            }
        }
    }

    #[test]
    fn invariant_to_positive_rescaling(
        (g, labels, c) in case(),
        scales in proptest::collection::vec(0.1f64..10.0, 16),
    ) {
        let k = gram(&g);
        let r = run(&k, &labels, c);
        prop_assume!(r.is_some(), "class stiffness undefined for this draw");
        let r = r.unwrap();
        // K -> D K D, D = diag(d_i > 0): the gradients g_i -> d_i g_i.
        let n = k.nrows();
        let kd = Array2::from_shape_fn((n, n), |(i, j)| scales[i] * k[[i, j]] * scales[j]);
        let rd = run(&kd, &labels, c).unwrap();
        same_class_matrix(&r.sign, &rd.sign);
        same_class_matrix(&r.cosine, &rd.cosine);
    }

    #[test]
    fn equivariant_under_class_relabelling((g, labels, c) in case(), seed in any::<u64>()) {
        let k = gram(&g);
        let r = run(&k, &labels, c);
        prop_assume!(r.is_some(), "class stiffness undefined for this draw");
        let r = r.unwrap();
        // A permutation pi of the classes from the seed.
        let mut pi: Vec<usize> = (0..c).collect();
        let mut x = seed;
        for i in (1..c).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            pi.swap(i, (x >> 33) as usize % (i + 1));
        }
        let relabelled: Vec<u32> = labels.iter().map(|&l| pi[l as usize] as u32).collect();
        let rp = run(&k, &relabelled, c).unwrap();
        for a in 0..c {
            for b in 0..c {
                prop_assert_eq!(r.sign.counts[[a, b]], rp.sign.counts[[pi[a], pi[b]]]);
                prop_assert!((r.sign.values[[a, b]] - rp.sign.values[[pi[a], pi[b]]]).abs() <= TOL);
                prop_assert!((r.cosine.values[[a, b]] - rp.cosine.values[[pi[a], pi[b]]]).abs() <= TOL);
            }
        }
    }

    #[test]
    fn example_permutation_changes_nothing((g, labels, c) in case(), perm_seed in any::<u64>()) {
        let k = gram(&g);
        let r = run(&k, &labels, c);
        prop_assume!(r.is_some(), "class stiffness undefined for this draw");
        let r = r.unwrap();
        let n = k.nrows();
        let mut perm: Vec<usize> = (0..n).collect();
        let mut x = perm_seed;
        for i in (1..n).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            perm.swap(i, (x >> 33) as usize % (i + 1));
        }
        let kp = Array2::from_shape_fn((n, n), |(i, j)| k[[perm[i], perm[j]]]);
        let lp: Vec<u32> = perm.iter().map(|&i| labels[i]).collect();
        let rp = run(&kp, &lp, c).unwrap();
        same_class_matrix(&r.sign, &rp.sign);
        same_class_matrix(&r.cosine, &rp.cosine);
    }

    #[test]
    fn identity_matches_pairwise_cosine((g, labels, c) in case()) {
        let k = gram(&g);
        let r = run(&k, &labels, c);
        prop_assume!(r.is_some(), "class stiffness undefined for this draw");
        let r = r.unwrap();
        // Unit gradients h_i = g_i / |g_i|; zero rows stay zero (excluded by the identity).
        let mut h = g.clone();
        for mut row in h.outer_iter_mut() {
            let norm = row.dot(&row).sqrt();
            if norm > 0.0 {
                row /= norm;
            }
        }
        let m = cosine_class_matrix_from_unit_grads(h.view(), &labels, c).unwrap();
        prop_assert_eq!(&m.counts, &r.cosine.counts);
        // Different summation order (class sums first): rounding ~1e-15 times n.
        const IDENTITY_TOL: f64 = 1e-10;
        for (a, b) in m.values.iter().zip(r.cosine.values.iter()) {
            prop_assert!((a - b).abs() <= IDENTITY_TOL, "{} vs {}", a, b);
        }
    }

    #[test]
    fn rectangular_matches_square_blocks((g, labels, c) in case()) {
        // Split examples into rows (even) and columns (odd): the rectangular class matrix on
        // K[even, odd] must match the naive oracle on the cross pairs.
        let n = g.nrows();
        let rows: Vec<usize> = (0..n).step_by(2).collect();
        let cols: Vec<usize> = (1..n).step_by(2).collect();
        let k = gram(&g);
        let kr = Array2::from_shape_fn((rows.len(), cols.len()), |(a, b)| k[[rows[a], cols[b]]]);
        let rd = ndarray::Array1::from_iter(rows.iter().map(|&i| k[[i, i]].sqrt()));
        let cd = ndarray::Array1::from_iter(cols.iter().map(|&j| k[[j, j]].sqrt()));
        let rl: Vec<u32> = rows.iter().map(|&i| labels[i]).collect();
        let cl: Vec<u32> = cols.iter().map(|&j| labels[j]).collect();
        let s = StiffnessSettings::default().with_allow_empty_classes(true);
        let r = match rectangular_class_stiffness(kr.view(), rd.view(), cd.view(), &rl, &cl, c, &s) {
            Ok(r) => r,
            Err(AnalysisError::NoData { .. } | AnalysisError::AllZeroGradients { .. }) => {
                prop_assume!(false, "no cross pair for this draw");
                unreachable!()
            }
            Err(e) => panic!("{e}"),
        };
        for a in 0..c {
            for b in 0..c {
                let (mut ss, mut sn, mut cs, mut cn) = (0.0, 0u64, 0.0, 0u64);
                for &i in rows.iter().filter(|&&i| labels[i] as usize == a) {
                    for &j in cols.iter().filter(|&&j| labels[j] as usize == b) {
                        ss += k[[i, j]].signum() * f64::from(u8::from(k[[i, j]] != 0.0));
                        sn += 1;
                        if k[[i, i]] > 0.0 && k[[j, j]] > 0.0 {
                            cs += k[[i, j]] / (k[[i, i]] * k[[j, j]]).sqrt();
                            cn += 1;
                        }
                    }
                }
                prop_assert_eq!(r.sign.counts[[a, b]], sn);
                prop_assert_eq!(r.cosine.counts[[a, b]], cn);
                if sn > 0 { prop_assert!((r.sign.values[[a, b]] - ss / sn as f64).abs() <= TOL); }
                if cn > 0 { prop_assert!((r.cosine.values[[a, b]] - cs / cn as f64).abs() <= TOL); }
            }
        }
    }
}
