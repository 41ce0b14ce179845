#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
//!
//! # Modules
//! * [`class`]: pairwise and class stiffness (square and rectangular K).
//! * [`bootstrap`]: stratified bootstrap CIs for within/between-class stiffness.
//! * [`identity`]: the cosine class matrix through the class-sum identity (cross-check).
//! * [`superclass`]: super-class block score with a permutation test.
//! * [`distance`]: stiffness vs dot-product distance, stiff domain size.
//! * [`trend`]: permutation trend tests over seeds (Spearman; censored Kendall).
//! * [`io`]: atomic JSON/CSV writers.

pub mod bootstrap;
pub mod class;
pub mod distance;
pub mod error;
pub mod float;
pub mod identity;
pub mod io;
pub mod settings;
pub mod stream;
pub mod superclass;
pub mod trend;
mod validate;

pub use bootstrap::{bootstrap_within_between, BootstrapCi, BootstrapOptions, Ci, WithinBetweenCi};
pub use class::{
    class_stiffness, pairwise_cosine, pairwise_sign, rectangular_class_stiffness, ClassMatrix, ClassStiffness,
    PairwiseCosine, RectangularClassStiffness, StiffnessKind,
};
pub use distance::{
    distance_curve, distance_curves, BinMoments, BinSpec, Crossing, DistanceCurve, FitOver, LinearFit, PairFilter,
    DEFAULT_MIN_PAIRS,
};
pub use error::{AnalysisError, Result};
pub use float::Float;
pub use identity::{cosine_class_matrix_from_class_sums, cosine_class_matrix_from_unit_grads, UNIT_NORM_TOL};
pub use io::{write_atomic, write_class_csv, write_curve_csv, write_json};
/// The `ndarray` this crate's API speaks (`ArrayView2` etc.), so users need not pin a matching version.
pub use ndarray;
pub use settings::{StiffnessSettings, SCHEMA_VERSION};
pub use stream::{reduce_tile, ColumnSummary, CrossAccumulator, CrossStiffness, TilePlace, TileSums};
pub use superclass::{superclass_block_score, BlockScore};
pub use trend::{censored_kendall_permutation, spearman_permutation, TrendOptions, TrendTest, Verdict};

/// The workspace README's "use one crate" example, compiled and run as a doctest so it cannot
/// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct WorkspaceReadme;
