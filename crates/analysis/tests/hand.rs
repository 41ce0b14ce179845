//! Small cases computed by hand; the derivations are in the comments.

use ndarray::{array, Array2};
use stiff_analysis::*;

/// Hand values are exact rationals or 1/sqrt(2); f64 evaluation rounds at ~1e-16.
const HAND_TOL: f64 = 1e-12;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= HAND_TOL
}

/// g0 = (1,0), g1 = (2,0) in class 0; g2 = (0,3), g3 = (-1,1) in class 1.
/// K = [[1, 2, 0,-1],
///      [2, 4, 0,-2],
///      [0, 0, 9, 3],
///      [-1,-2,3, 2]]
fn k4() -> Array2<f64> {
    array![[1.0, 2.0, 0.0, -1.0], [2.0, 4.0, 0.0, -2.0], [0.0, 0.0, 9.0, 3.0], [-1.0, -2.0, 3.0, 2.0]]
}

#[test]
fn four_examples_two_classes() {
    let c = class_stiffness(k4().view(), &[0, 0, 1, 1], 2, &StiffnessSettings::default()).unwrap();
    let r2 = 2f64.sqrt();
    // Sign: C[0,0] = mean{sign 2, sign 2} = 1; C[1,1] = mean{sign 3, sign 3} = 1;
    // C[0,1] = mean{sign K02=0, K03=-1, K12=0, K13=-2} = (0 - 1 + 0 - 1)/4 = -1/2 = C[1,0].
    assert!(close(c.sign.values[[0, 0]], 1.0));
    assert!(close(c.sign.values[[1, 1]], 1.0));
    assert!(close(c.sign.values[[0, 1]], -0.5));
    assert!(close(c.sign.values[[1, 0]], -0.5));
    assert!(close(c.sign.within, 1.0));
    assert!(close(c.sign.between, -0.5));
    // Ordered pair counts: n_a (n_a - 1) = 2 on the diagonal, n_a n_b = 4 off it.
    assert_eq!(c.sign.counts, array![[2u64, 4], [4, 2]]);
    // Cosine: norms 1, 2, 3, sqrt2. cos01 = 2/2 = 1; cos23 = 3/(3 sqrt2) = 1/sqrt2;
    // cos02 = cos12 = 0; cos03 = -1/sqrt2; cos13 = -2/(2 sqrt2) = -1/sqrt2.
    // C[0,1] = (0 - 1/sqrt2 + 0 - 1/sqrt2)/4 = -1/(2 sqrt2).
    assert!(close(c.cosine.values[[0, 0]], 1.0));
    assert!(close(c.cosine.values[[1, 1]], 1.0 / r2));
    assert!(close(c.cosine.values[[0, 1]], -1.0 / (2.0 * r2)));
    assert!(close(c.cosine.within, (1.0 + 1.0 / r2) / 2.0));
    assert!(close(c.cosine.between, -1.0 / (2.0 * r2)));
    assert!(c.zero_norm_examples.is_empty());
    assert_eq!(c.class_sizes, vec![2, 2]);
}

#[test]
fn zero_norm_example_is_kept_for_sign_and_excluded_from_cosine() {
    // Add g4 = (0,0) to class 0: its row and column of K are 0.
    let mut k = Array2::<f64>::zeros((5, 5));
    k.slice_mut(ndarray::s![..4, ..4]).assign(&k4());
    let c = class_stiffness(k.view(), &[0, 0, 1, 1, 0], 2, &StiffnessSettings::default()).unwrap();
    // Sign, class 0 = {0,1,4}: 6 ordered pairs, only (0,1),(1,0) are +1, the rest sign(0)=0:
    // C[0,0] = 2/6. C[0,1]: 3*2 = 6 pairs summing to -2 (as before): -1/3.
    assert!(close(c.sign.values[[0, 0]], 1.0 / 3.0));
    assert!(close(c.sign.values[[0, 1]], -1.0 / 3.0));
    assert_eq!(c.sign.counts[[0, 0]], 6);
    // Cosine ignores example 4 entirely: same values and counts as the 4-example case.
    assert_eq!(c.zero_norm_examples, vec![4]);
    assert_eq!(c.cosine.counts, array![[2u64, 4], [4, 2]]);
    assert!(close(c.cosine.values[[0, 1]], -1.0 / (2.0 * 2f64.sqrt())));
}

#[test]
fn rectangular_hand_case() {
    // Rows A = {g0 (class 0), g2 (class 1)}, columns B = {g1 (class 0), g3 (class 1)}.
    // K_AB = [[g0.g1, g0.g3], [g2.g1, g2.g3]] = [[2, -1], [0, 3]];
    // |A| = (1, 3), |B| = (2, sqrt 2).
    let k = array![[2.0f64, -1.0], [0.0, 3.0]];
    let r = rectangular_class_stiffness(
        k.view(),
        array![1.0f64, 3.0].view(),
        array![2.0f64, 2f64.sqrt()].view(),
        &[0, 1],
        &[0, 1],
        2,
        &StiffnessSettings::default(),
    )
    .unwrap();
    // Sign: one pair per cell, [[+1, -1], [0, +1]]: within 1, between (-1 + 0)/2.
    assert!(close(r.sign.values[[0, 1]], -1.0));
    assert!(close(r.sign.values[[1, 0]], 0.0));
    assert!(close(r.sign.within, 1.0));
    assert!(close(r.sign.between, -0.5));
    // Cosine: cos(g0,g1) = 1, cos(g0,g3) = -1/sqrt2, cos(g2,g1) = 0, cos(g2,g3) = 1/sqrt2.
    let r2 = 2f64.sqrt();
    assert!(close(r.cosine.values[[0, 0]], 1.0));
    assert!(close(r.cosine.values[[0, 1]], -1.0 / r2));
    assert!(close(r.cosine.values[[1, 1]], 1.0 / r2));
    assert_eq!(r.sign.counts, array![[1u64, 1], [1, 1]]);
}

#[test]
fn f32_and_f64_inputs_agree() {
    // Same small integers in both precisions: exact in f32, so results are identical.
    let k64 = k4();
    let k32 = k64.mapv(|v| v as f32);
    let s = StiffnessSettings::default();
    let a = class_stiffness(k64.view(), &[0, 0, 1, 1], 2, &s).unwrap();
    let b = class_stiffness(k32.view(), &[0, 0, 1, 1], 2, &s).unwrap();
    assert_eq!(a, b);
}

#[test]
fn zero_tol_is_applied_and_recorded() {
    // With zero_tol = 1.5, |K01| = 2 keeps sign +1 but |K03| = 1 becomes 0:
    // C_sign[0,1] = (0 + 0 + 0 - 1)/4 = -1/4 (only K13 = -2 survives).
    let s = StiffnessSettings::default().with_zero_tol(1.5);
    let c = class_stiffness(k4().view(), &[0, 0, 1, 1], 2, &s).unwrap();
    assert!(close(c.sign.values[[0, 1]], -0.25));
    assert_eq!(c.settings.zero_tol, 1.5);
}

#[test]
fn identity_hand_case() {
    // Unit gradients of k4: h0 = (1,0), h1 = (1,0), h2 = (0,1), h3 = (-1,1)/sqrt2.
    // s_0 = (2, 0), s_1 = (-1/sqrt2, 1 + 1/sqrt2).
    // C[0,1] = s_0.s_1 / 4 = -2/sqrt2 / 4 = -1/(2 sqrt2);
    // C[0,0] = (|s_0|^2 - 2)/(2*1) = (4 - 2)/2 = 1, as in the pairwise computation.
    let r2 = 2f64.sqrt();
    let h = array![[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0 / r2, 1.0 / r2]];
    let m = cosine_class_matrix_from_unit_grads(h.view(), &[0, 0, 1, 1], 2).unwrap();
    assert!(close(m.values[[0, 1]], -1.0 / (2.0 * r2)));
    assert!(close(m.values[[0, 0]], 1.0));
    assert!(close(m.values[[1, 1]], 1.0 / r2));
}

#[test]
fn superclass_strong_blocks_and_null() {
    // 20 fine classes in 5 super-classes of 4. Same-super cells 0.5, others 0.1, diagonal 1:
    // observed = 0.5 - 0.1 = 0.4. A random shuffle reproduces the partition with probability
    // 5! 4!^5 / 20! ~ 1e-10, so no permutation reaches 0.4 and p = 1 / (1 + perms).
    let k = 20;
    let coarse: Vec<u32> = (0..k).map(|a| (a / 4) as u32).collect();
    let values = Array2::from_shape_fn((k, k), |(a, b)| {
        if a == b {
            1.0
        } else if coarse[a] == coarse[b] {
            0.5
        } else {
            0.1
        }
    });
    let m = ClassMatrix {
        values,
        counts: Array2::from_elem((k, k), 10),
        within: 1.0,
        between: 0.0,
        within_cells: k,
        between_cells: k * (k - 1),
    };
    let b = superclass_block_score(&m, &coarse, 999, 3).unwrap();
    assert!(close(b.observed, 0.4));
    assert_eq!(b.same_super_cells, 5 * 4 * 3);
    assert_eq!(b.cross_super_cells, k * (k - 1) - 60);
    assert!(close(b.p_value, 1.0 / 1000.0));
    // Flat matrix: every shuffle scores exactly 0 >= observed 0, so p = 1.
    let flat = ClassMatrix { values: Array2::from_elem((k, k), 0.3), ..m };
    let b = superclass_block_score(&flat, &coarse, 99, 3).unwrap();
    assert!(close(b.observed, 0.0));
    assert!(close(b.p_value, 1.0));
}
