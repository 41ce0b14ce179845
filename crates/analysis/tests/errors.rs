//! Degenerate inputs give typed errors, never numbers.

use ndarray::{array, Array2};
use stiff_analysis::*;

fn s() -> StiffnessSettings {
    StiffnessSettings::default()
}

fn k3() -> Array2<f64> {
    // g = (1,0), (0,1), (1,1).
    array![[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 2.0]]
}

#[test]
fn non_square() {
    let k = Array2::<f64>::zeros((2, 3));
    assert!(matches!(class_stiffness(k.view(), &[0, 1], 2, &s()), Err(AnalysisError::NotSquare { rows: 2, cols: 3 })));
}

#[test]
fn too_few_examples() {
    let k = array![[1.0f32]];
    assert!(matches!(class_stiffness(k.view(), &[0], 2, &s()), Err(AnalysisError::TooFewExamples { n: 1, .. })));
}

#[test]
fn length_mismatch() {
    assert!(matches!(
        class_stiffness(k3().view(), &[0, 1], 2, &s()),
        Err(AnalysisError::LengthMismatch { what: "labels", expected: 3, got: 2 })
    ));
    let reps = Array2::<f32>::ones((2, 4));
    assert!(matches!(
        distance_curve(k3().view(), reps.view(), &[0, 1, 1], PairFilter::All, &BinSpec::default(), &s()),
        Err(AnalysisError::LengthMismatch { what: "rows of reps", .. })
    ));
}

#[test]
fn label_out_of_range() {
    assert!(matches!(
        class_stiffness(k3().view(), &[0, 1, 5], 2, &s()),
        Err(AnalysisError::LabelOutOfRange { index: 2, label: 5, .. })
    ));
}

#[test]
fn single_class() {
    assert!(matches!(
        class_stiffness(k3().view(), &[1, 1, 1], 2, &s()),
        Err(AnalysisError::SingleClass { class: 1, .. })
    ));
}

#[test]
fn empty_class_error_or_listed_skip() {
    assert!(matches!(
        class_stiffness(k3().view(), &[0, 0, 2], 3, &s()),
        Err(AnalysisError::EmptyClass { ref classes, .. }) if classes == &vec![1]
    ));
    let allow = s().with_allow_empty_classes(true);
    let c = class_stiffness(k3().view(), &[0, 0, 2], 3, &allow).unwrap();
    assert_eq!(c.empty_classes, vec![1]);
    // Cells of class 1 have no pairs and are left out of the means: within uses only class
    // 0 (class 2 is a singleton) = sign(K01 = 0) = 0; between uses [0,2] and [2,0].
    assert_eq!(c.sign.counts[[1, 0]], 0);
    assert_eq!(c.sign.get(1, 1), None);
    assert_eq!(c.sign.within_cells, 1);
    assert_eq!(c.sign.between_cells, 2);
    assert!(c.sign.values.iter().all(|v| v.is_finite()));
}

#[test]
fn all_zero_gradients() {
    let k = Array2::<f32>::zeros((4, 4));
    assert!(matches!(
        class_stiffness(k.view(), &[0, 0, 1, 1], 2, &s()),
        Err(AnalysisError::AllZeroGradients { n: 4, .. })
    ));
}

#[test]
fn non_finite() {
    let mut k = k3();
    k[[1, 2]] = f64::NAN;
    assert!(matches!(
        class_stiffness(k.view(), &[0, 1, 1], 2, &s()),
        Err(AnalysisError::NonFinite { row: 1, col: 2, .. })
    ));
    let mut k = k3().mapv(|v| v as f32);
    k[[0, 0]] = f32::INFINITY;
    assert!(matches!(
        class_stiffness(k.view(), &[0, 1, 1], 2, &s()),
        Err(AnalysisError::NonFinite { row: 0, col: 0, .. })
    ));
}

#[test]
fn not_a_gram_matrix() {
    let mut k = k3();
    k[[0, 0]] = -1.0;
    assert!(matches!(
        class_stiffness(k.view(), &[0, 1, 1], 2, &s()),
        Err(AnalysisError::NegativeDiagonal { index: 0, .. })
    ));
    let mut k = k3();
    k[[0, 1]] = 0.5; // k[1,0] stays 0
    assert!(matches!(
        class_stiffness(k.view(), &[0, 1, 1], 2, &s()),
        Err(AnalysisError::NotSymmetric { row: 0, col: 1, .. })
    ));
    let mut k = k3();
    k[[0, 1]] = 3.0; // cos = 3 / (1 * 1)
    k[[1, 0]] = 3.0;
    assert!(matches!(
        class_stiffness(k.view(), &[0, 1, 1], 2, &s()),
        Err(AnalysisError::CosineOutOfBounds { row: 0, col: 1, .. })
    ));
}

#[test]
fn bad_settings() {
    let bad = s().with_zero_tol(-1.0);
    assert!(matches!(
        class_stiffness(k3().view(), &[0, 1, 1], 2, &bad),
        Err(AnalysisError::InvalidSetting { what: "zero_tol", .. })
    ));
    let reps = Array2::<f32>::ones((3, 2));
    let bins = BinSpec { bins: 0, ..Default::default() };
    assert!(matches!(
        distance_curve(k3().view(), reps.view(), &[0, 1, 1], PairFilter::All, &bins, &s()),
        Err(AnalysisError::InvalidSetting { what: "bins", .. })
    ));
    assert!(matches!(
        bootstrap_within_between(k3().view(), &[0, 1, 1], 2, &s(), &stiff_analysis::BootstrapOptions::new(1, 0, 0.95)),
        Err(AnalysisError::InvalidSetting { what: "reps", .. })
    ));
    assert!(matches!(
        bootstrap_within_between(k3().view(), &[0, 1, 1], 2, &s(), &stiff_analysis::BootstrapOptions::new(10, 0, 1.5)),
        Err(AnalysisError::InvalidSetting { what: "level", .. })
    ));
}

#[test]
fn no_within_pairs() {
    // Every class a singleton: no within-class pair exists.
    assert!(matches!(class_stiffness(k3().view(), &[0, 1, 2], 3, &s()), Err(AnalysisError::NoData { .. })));
}

#[test]
fn unit_grads_must_be_unit() {
    let h = array![[1.0, 0.0], [0.5, 0.0]];
    assert!(matches!(
        cosine_class_matrix_from_unit_grads(h.view(), &[0, 1], 2),
        Err(AnalysisError::NotUnitNorm { row: 1, .. })
    ));
}

#[test]
fn superclass_mismatch_and_no_cells() {
    let c = class_stiffness(k3().view(), &[0, 0, 1], 2, &s()).unwrap();
    assert!(matches!(
        superclass_block_score(&c.sign, &[0], 10, 0),
        Err(AnalysisError::LengthMismatch { what: "fine_to_coarse", .. })
    ));
    // Each fine class its own super-class: no same-super off-diagonal cell.
    assert!(matches!(superclass_block_score(&c.sign, &[0, 1], 10, 0), Err(AnalysisError::NoData { .. })));
}

#[test]
fn rectangular_norm_lengths() {
    let k = Array2::<f64>::ones((2, 3));
    assert!(matches!(
        rectangular_class_stiffness(
            k.view(),
            array![1.0, 1.0].view(),
            array![1.0, 1.0].view(),
            &[0, 1],
            &[0, 1, 1],
            2,
            &s()
        ),
        Err(AnalysisError::LengthMismatch { what: "col_norms", expected: 3, got: 2 })
    ));
}
