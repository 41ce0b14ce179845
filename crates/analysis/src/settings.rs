//! Settings shared by the class-matrix and distance analyses. Every result embeds the settings
//! that produced it.

use serde::{Deserialize, Serialize};

use crate::error::{AnalysisError, Result};

/// Version of the JSON layout of every result type in this crate. Bump on breaking changes.
pub const SCHEMA_VERSION: u32 = 1;

/// How pairwise stiffness is read off a Gram matrix. Build with [`StiffnessSettings::default`] and
/// the `with_*` setters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StiffnessSettings {
    /// `sign(k)` is 0 when `|k| <= zero_tol`. Default `0.0`: only an exact zero has sign 0
    /// (`sign(0) = 0`); tiny f32 values keep their sign. Must be `>= 0`.
    pub zero_tol: f64,
    /// Rounding slack for cosines: `|cos| <= 1 + cos_tol` is clamped into `[-1, 1]`, anything
    /// beyond is an error (`CosineOutOfBounds`: K is not PSD or the norms are wrong).
    /// Default `1e-3` (f32 Grams from a GPU round at ~1e-6 relative).
    pub cos_tol: f64,
    /// Symmetry check on square K: `|k[i,j] - k[j,i]| <= sym_tol * |g_i| |g_j|` (relative to the
    /// product of norms, i.e. an error in cosine units). Default `1e-4`.
    pub sym_tol: f64,
    /// `false` (default): a class in `0..num_classes` with no example is an error
    /// (`EmptyClass`). `true`: such classes are skipped (their cells have count 0, are left out
    /// of the within/between means, and are listed in the result's `empty_classes`).
    pub allow_empty_classes: bool,
}

impl Default for StiffnessSettings {
    fn default() -> Self {
        Self { zero_tol: 0.0, cos_tol: 1e-3, sym_tol: 1e-4, allow_empty_classes: false }
    }
}

/// `with_<field>(value)` setters that return the changed value, for `#[non_exhaustive]` structs.
macro_rules! setters {
    ($ty:ident { $($name:ident => $field:ident: $t:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets [`", stringify!($ty), "::", stringify!($field), "`] (its docs give the default).")]
                #[must_use]
                pub fn $name(mut self, value: $t) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}
pub(crate) use setters;

setters!(StiffnessSettings {
    with_zero_tol => zero_tol: f64,
    with_cos_tol => cos_tol: f64,
    with_sym_tol => sym_tol: f64,
    with_allow_empty_classes => allow_empty_classes: bool,
});

impl StiffnessSettings {
    pub(crate) fn validate(&self) -> Result<()> {
        let check = |what: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(AnalysisError::InvalidSetting { what, reason: format!("must be finite and >= 0, got {v}") })
            }
        };
        check("zero_tol", self.zero_tol)?;
        check("cos_tol", self.cos_tol)?;
        check("sym_tol", self.sym_tol)
    }

    /// Sign with this tolerance: `+1` if `v > zero_tol`, `-1` if `v < -zero_tol`, else `0`.
    #[inline(always)]
    pub fn sign(&self, v: f64) -> f64 {
        if v > self.zero_tol {
            1.0
        } else if v < -self.zero_tol {
            -1.0
        } else {
            0.0
        }
    }
}
