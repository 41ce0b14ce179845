//! Tile reduction of `stiff_analysis::stream` on hand-computed tiles (zero-norm columns, exact
//! zeros, self-pair exclusion at an offset) and its typed errors with global indices.

use ndarray::array;
use stiff_analysis::{reduce_tile, AnalysisError, CrossAccumulator, StiffnessSettings, TilePlace};

/// Sums of a few exact binary fractions: exact in f64.
const EXACT: f64 = 0.0;

#[test]
fn hand_computed_tile_with_zero_norm_column_and_exact_zeros() {
    // Norms: rows (1, 2), cols (1, 0, 2); every |K_ij| <= |g_i||g_j|. Column 1 has a zero
    // gradient: its pairs count for sign (sign(0) = 0) and are left out of cosine.
    let k = array![[0.5f64, 0.0, -1.0], [-2.0, 0.0, 4.0]];
    let place = TilePlace { row0: 0, col0: 0, exclude_self: false };
    let s = StiffnessSettings::default();
    let t = reduce_tile(k.view(), place, &[0, 1], &[0, 1, 1], &[1.0, 2.0], &[1.0, 0.0, 2.0], 2, &s).unwrap();
    // By hand: sign cells (0,0) = +1 (1 pair), (0,1) = 0 - 1 (2 pairs), (1,0) = -1, (1,1) = 0 + 1.
    assert_eq!(t.sign_sum, array![[1.0, -1.0], [-1.0, 1.0]]);
    assert_eq!(t.sign_count, array![[1, 2], [1, 2]]);
    // Cosines: 0.5/1, -1/2, -2/2, 4/4; one pair per cell once column 1 is left out.
    assert_eq!(t.cos_sum, array![[0.5, -0.5], [-1.0, 1.0]]);
    assert_eq!(t.cos_count, array![[1, 1], [1, 1]]);
    assert_eq!(t.col_cos_count.row(1).to_vec(), vec![0, 0]);

    let mut acc = CrossAccumulator::new(3, 2);
    acc.add(&t, 0).unwrap();
    let r = acc.finish(&s).unwrap();
    assert!((r.sign.within - 0.75).abs() <= EXACT && (r.sign.between + 0.75).abs() <= EXACT);
    let c2 = r.column_summary(2, 1);
    assert_eq!((c2.own_sign, c2.own_cosine, c2.other_sign, c2.other_cosine), (1.0, 1.0, -1.0, -0.5));
    assert!(r.column_summary(1, 1).own_cosine.is_nan(), "no cosine pair for a zero-norm column");
}

#[test]
fn self_pairs_are_skipped_by_global_index() {
    // One row (global 2) against columns 0..3 of the same set: the pair (2, 2) is skipped.
    let k = array![[1.0f32, -1.0, 9.0]];
    let place = TilePlace { row0: 2, col0: 0, exclude_self: true };
    let s = StiffnessSettings::default();
    let t = reduce_tile(k.view(), place, &[0], &[0, 0, 0], &[3.0], &[1.0, 1.0, 3.0], 1, &s).unwrap();
    assert_eq!(t.sign_count[[0, 0]], 2);
    assert_eq!(t.sign_sum[[0, 0]], 0.0);
    assert_eq!(t.col_sign_count.column(0).to_vec(), vec![1, 1, 0]);
}

#[test]
fn errors_name_global_positions() {
    let s = StiffnessSettings::default();
    let place = TilePlace { row0: 10, col0: 20, exclude_self: false };
    let k = array![[1.0f64, f64::NAN]];
    let e = reduce_tile(k.view(), place, &[0], &[0, 0], &[1.0], &[1.0, 1.0], 1, &s).unwrap_err();
    assert!(matches!(e, AnalysisError::NonFinite { row: 10, col: 21, .. }), "{e}");
    // |K| = 2 > |g_i||g_j| = 1: not a Gram tile.
    let k = array![[2.0f64]];
    let e = reduce_tile(k.view(), place, &[0], &[0], &[1.0], &[1.0], 1, &s).unwrap_err();
    assert!(matches!(e, AnalysisError::CosineOutOfBounds { row: 10, col: 20, .. }), "{e}");
    let e = reduce_tile(k.view(), place, &[3], &[0], &[1.0], &[1.0], 2, &s).unwrap_err();
    assert!(matches!(e, AnalysisError::LabelOutOfRange { index: 10, label: 3, .. }), "{e}");
    let e = reduce_tile(k.view(), place, &[0], &[0], &[-1.0], &[1.0], 1, &s).unwrap_err();
    assert!(matches!(e, AnalysisError::NegativeDiagonal { index: 10, .. }), "{e}");
    let e = reduce_tile(k.view(), place, &[0, 0], &[0], &[1.0], &[1.0], 1, &s).unwrap_err();
    assert!(matches!(e, AnalysisError::LengthMismatch { what: "row_labels", .. }), "{e}");
}
