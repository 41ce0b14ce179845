//! Synthetic data on the unit sphere: inputs uniform on `S^{d-1}`, labels from a target function
//! built from spherical harmonics of one degree `l`, so the angular length scale on which the
//! labels vary is known (about `pi / l`).
//!
//! * `d = 3`, [`TargetKind::RealHarmonics`]: the target is a seeded random unit-norm combination
//!   `f = sum_m c_m Y_lm` of the `2l + 1` real spherical harmonics of degree `l`
//!   ([`real_harmonic`]), built from associated Legendre functions ([`assoc_legendre`]).
//! * any `d >= 2`, [`TargetKind::ZonalSum`]: a seeded random sum of zonal harmonics
//!   `Z_l(x . u_k)` around random directions `u_k`, whose profile is the Gegenbauer polynomial
//!   `C_l^{(d-2)/2}` ([`gegenbauer`]; Chebyshev `T_l` for `d = 2`).
//!
//! **Normalisation.** Harmonics are orthonormal with respect to the *uniform probability measure*
//! on the sphere: `E_x[Y_lm(x) Y_l'm'(x)] = delta_ll' delta_mm'` (the usual `dOmega`-normalised
//! harmonics times `sqrt(4 pi)` for `d = 3`). Both targets have `E_x[f(x)^2] = 1` exactly, and
//! over the random draw of the target their correlation is `E[f(x) f(y)] = Z(x . y)` with
//! [`zonal_profile`] `Z = C_l(t) / C_l(1)` (for `d = 3`, the Legendre polynomial `P_l`), whose
//! first zero [`profile_first_zero`] is the target's correlation angle (`~ 2.405 / (l + 1/2)`
//! for `d = 3`).
//!
//! **Labels** ([`Labelling`]): `Sign` gives 2 classes, `1` where `f > 0` (`0` where `f <= 0`);
//! odd degrees are balanced in expectation (`f(-x) = -f(x)`), even degrees need not be.
//! `Quantiles { classes: K }` ranks the training values: training labels are exactly balanced
//! (class sizes differ by at most one); the validation split is labelled by the training cut
//! points (balanced up to sampling noise), so both splits share one labelling function.
//!
//! Splits are [`crate::Split`]s with `images` of shape `(N, 1, 1, d)` f32 (points on the sphere,
//! coordinates in `[-1, 1]`, *not* pixels in `[0, 1]`) and no coarse labels.
//!
//! **Seeds.** One seed gives independent ChaCha8 streams for the target (stream 0), the training
//! points (stream 1) and the validation points (stream 2): changing a split's size never changes
//! the target or the other split, and the same spec is bit-identical across runs.
//!
//! ```
//! use stiff_data::synthetic::{generate, SyntheticSpec};
//! # fn main() -> Result<(), stiff_data::DataError> {
//! let spec = SyntheticSpec { degree: 4, n_train: 1_000, n_test: 200, ..Default::default() };
//! let ds = generate(&spec)?;
//! assert_eq!(ds.train.images.dims(), &[1_000, 1, 1, 3]);
//! assert_eq!(ds.num_classes(), 2);
//! # Ok(()) }
//! ```

use std::f64::consts::PI;

use candle::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{DataError, Result, Split};

/// Largest supported degree. Above it the unnormalised associated Legendre values
/// (`(2l-1)!!` for `m = l`) and the factorial ratios of the normalisation approach the f64 range.
pub const MAX_DEGREE: usize = 80;

/// Largest supported input dimension (the zonal normalisation uses binomials in `d`).
pub const MAX_DIM: usize = 1024;

fn invalid(arg: &'static str, reason: impl Into<String>) -> DataError {
    DataError::InvalidArgument { arg, reason: reason.into() }
}

fn check_degree(l: usize) -> Result<()> {
    if l > MAX_DEGREE {
        return Err(invalid("degree", format!("degree {l} exceeds the supported maximum {MAX_DEGREE}")));
    }
    Ok(())
}

fn check_unit_interval(x: f64) -> Result<()> {
    if !(-1.0..=1.0).contains(&x) {
        return Err(invalid("x", format!("{x} is outside [-1, 1]")));
    }
    Ok(())
}

/// Legendre polynomial `P_l(x)` by Bonnet's recurrence
/// `n P_n = (2n - 1) x P_{n-1} - (n - 1) P_{n-2}`; any finite `x`.
pub fn legendre(l: usize, x: f64) -> f64 {
    let (mut p0, mut p1) = (1.0, x);
    if l == 0 {
        return p0;
    }
    for n in 2..=l {
        let nf = n as f64;
        let p2 = ((2.0 * nf - 1.0) * x * p1 - (nf - 1.0) * p0) / nf;
        p0 = p1;
        p1 = p2;
    }
    p1
}

/// Associated Legendre function `P_l^m(x)` for `0 <= m <= l <= MAX_DEGREE`, `|x| <= 1`,
/// **without** the Condon-Shortley phase: `P_m^m(x) = (2m - 1)!! (1 - x^2)^{m/2} >= 0`
/// (so `P_1^1 = sqrt(1 - x^2)`, `P_2^1 = 3 x sqrt(1 - x^2)`).
///
/// Recurrences: `P_{m+1}^m = (2m + 1) x P_m^m`, then
/// `(l - m) P_l^m = (2l - 1) x P_{l-1}^m - (l + m - 1) P_{l-2}^m`.
pub fn assoc_legendre(l: usize, m: usize, x: f64) -> Result<f64> {
    check_degree(l)?;
    if m > l {
        return Err(invalid("m", format!("order m = {m} exceeds degree l = {l}")));
    }
    check_unit_interval(x)?;
    Ok(assoc_legendre_unchecked(l, m, x))
}

fn assoc_legendre_unchecked(l: usize, m: usize, x: f64) -> f64 {
    let s = (1.0 - x * x).max(0.0).sqrt();
    let mut pmm = 1.0;
    for k in 1..=m {
        pmm *= (2 * k - 1) as f64 * s;
    }
    if l == m {
        return pmm;
    }
    let mut p_prev = pmm;
    let mut p = (2 * m + 1) as f64 * x * pmm;
    for n in (m + 2)..=l {
        let next = ((2 * n - 1) as f64 * x * p - (n + m - 1) as f64 * p_prev) / (n - m) as f64;
        p_prev = p;
        p = next;
    }
    p
}

/// Normalisation of the real harmonic of degree `l`, order `|m|`, for the uniform probability
/// measure on `S^2`: `sqrt((2l + 1) (l - m)! / (l + m)!)`, times `sqrt(2)` when `m != 0`.
fn harmonic_norm(l: usize, m: usize) -> f64 {
    // (l - m)! / (l + m)! = 1 / prod_{k = l-m+1}^{l+m} k, as a running product (no factorial overflow).
    let mut ratio = 1.0;
    for k in (l - m + 1)..=(l + m) {
        ratio /= k as f64;
    }
    let n = ((2 * l + 1) as f64 * ratio).sqrt();
    if m == 0 {
        n
    } else {
        n * std::f64::consts::SQRT_2
    }
}

/// Real spherical harmonic `Y_lm` at a point `p` of `S^2` (`|p| = 1`; it is normalised here,
/// so any non-zero vector gives the value at its direction), `-l <= m <= l`.
///
/// With `p = (sin t cos phi, sin t sin phi, cos t)` and `N_lm` as in the module docs:
/// `Y_l0 = N_l0 P_l(cos t)`, `Y_lm = N_lm P_l^m(cos t) cos(m phi)` for `m > 0`,
/// `Y_l,-m = N_lm P_l^m(cos t) sin(m phi)`. Orthonormal for the uniform probability measure,
/// e.g. `Y_00 = 1`, `Y_10 = sqrt(3) z`, `Y_11 = sqrt(3) x`, `Y_22 = sqrt(15)/2 (x^2 - y^2)`.
pub fn real_harmonic(l: usize, m: i64, p: [f64; 3]) -> Result<f64> {
    check_degree(l)?;
    if m.unsigned_abs() as usize > l {
        return Err(invalid("m", format!("order m = {m} outside -{l}..={l}")));
    }
    let q = unit3(p)?;
    Ok(real_harmonic_unchecked(l, m, q))
}

fn unit3(p: [f64; 3]) -> Result<[f64; 3]> {
    let r = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
    if !(r.is_finite() && r > 0.0) {
        return Err(invalid("p", format!("point {p:?} has no direction (norm {r})")));
    }
    Ok([p[0] / r, p[1] / r, p[2] / r])
}

fn real_harmonic_unchecked(l: usize, m: i64, q: [f64; 3]) -> f64 {
    let am = m.unsigned_abs() as usize;
    let z = q[2].clamp(-1.0, 1.0);
    let p = harmonic_norm(l, am) * assoc_legendre_unchecked(l, am, z);
    if m == 0 {
        return p;
    }
    // At the poles P_l^m = 0 for m > 0, so the arbitrary atan2(0, 0) = 0 does not matter.
    let phi = q[1].atan2(q[0]);
    if m > 0 {
        p * (am as f64 * phi).cos()
    } else {
        p * (am as f64 * phi).sin()
    }
}

/// All `2l + 1` real harmonics of degree `l` at `p`, ordered `m = -l, ..., l`.
pub fn real_harmonics_of_degree(l: usize, p: [f64; 3]) -> Result<Vec<f64>> {
    check_degree(l)?;
    let q = unit3(p)?;
    Ok((-(l as i64)..=l as i64).map(|m| real_harmonic_unchecked(l, m, q)).collect())
}

/// Gegenbauer polynomial `C_l^{(alpha)}(t)`, `alpha > 0`, by the recurrence
/// `n C_n = 2 t (n + alpha - 1) C_{n-1} - (n + 2 alpha - 2) C_{n-2}`, `C_0 = 1`, `C_1 = 2 alpha t`.
/// `C_l^{(1/2)} = P_l`; `C_l^{(1)}` is the Chebyshev polynomial of the second kind `U_l`.
pub fn gegenbauer(l: usize, alpha: f64, t: f64) -> Result<f64> {
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(invalid(
            "alpha",
            format!("Gegenbauer parameter must be positive and finite, got {alpha} (use zonal_profile for d = 2)"),
        ));
    }
    check_degree(l)?;
    Ok(gegenbauer_unchecked(l, alpha, t))
}

fn gegenbauer_unchecked(l: usize, alpha: f64, t: f64) -> f64 {
    let (mut c0, mut c1) = (1.0, 2.0 * alpha * t);
    if l == 0 {
        return c0;
    }
    for n in 2..=l {
        let nf = n as f64;
        let c2 = (2.0 * t * (nf + alpha - 1.0) * c1 - (nf + 2.0 * alpha - 2.0) * c0) / nf;
        c0 = c1;
        c1 = c2;
    }
    c1
}

/// Chebyshev polynomial of the first kind `T_l(t)` (`T_n = 2 t T_{n-1} - T_{n-2}`).
fn chebyshev_t(l: usize, t: f64) -> f64 {
    let (mut t0, mut t1) = (1.0, t);
    if l == 0 {
        return t0;
    }
    for _ in 2..=l {
        let t2 = 2.0 * t * t1 - t0;
        t0 = t1;
        t1 = t2;
    }
    t1
}

fn check_dim(dim: usize) -> Result<()> {
    if !(2..=MAX_DIM).contains(&dim) {
        return Err(invalid("dim", format!("sphere dimension d = {dim} must be in 2..={MAX_DIM} (S^(d-1) in R^d)")));
    }
    Ok(())
}

/// Zonal profile `C_l^{(d-2)/2}(t) / C_l^{(d-2)/2}(1)` on `S^{d-1}`, equal to 1 at `t = 1`
/// (`T_l(t)` for `d = 2`, `P_l(t)` for `d = 3`). It is the correlation `E[f(x) f(y)]` of the
/// random targets at `t = x . y`.
pub fn zonal_profile(dim: usize, l: usize, t: f64) -> Result<f64> {
    check_dim(dim)?;
    check_degree(l)?;
    Ok(zonal_profile_unchecked(dim, l, t))
}

fn zonal_profile_unchecked(dim: usize, l: usize, t: f64) -> f64 {
    if dim == 2 {
        return chebyshev_t(l, t);
    }
    let alpha = (dim as f64 - 2.0) / 2.0;
    gegenbauer_unchecked(l, alpha, t) / gegenbauer_at_one(l, alpha)
}

/// `C_l^{(alpha)}(1) = binom(l + 2 alpha - 1, l) = prod_{k=1}^{l} (k + 2 alpha - 1) / k`.
fn gegenbauer_at_one(l: usize, alpha: f64) -> f64 {
    (1..=l).map(|k| (k as f64 + 2.0 * alpha - 1.0) / k as f64).product()
}

/// Dimension of the space of degree-`l` spherical harmonics on `S^{d-1}`:
/// `1` for `l = 0`, else `(2l + d - 2) / l * binom(l + d - 3, l - 1)` (`2l + 1` for `d = 3`,
/// `2` for `d = 2`).
pub fn harmonic_dimension(dim: usize, l: usize) -> Result<f64> {
    check_dim(dim)?;
    check_degree(l)?;
    Ok(harmonic_dimension_unchecked(dim, l))
}

fn harmonic_dimension_unchecked(dim: usize, l: usize) -> f64 {
    if l == 0 {
        return 1.0;
    }
    // binom(l + d - 3, l - 1) = prod_{k=1}^{l-1} (k + d - 2) / k.
    let binom: f64 = (1..l).map(|k| (k + dim - 2) as f64 / k as f64).product();
    (2 * l + dim - 2) as f64 / l as f64 * binom
}

/// The unit-variance zonal harmonic of degree `l` around the unit vector `u`:
/// `sqrt(N(d, l)) * zonal_profile(x . u)`, with `N` = [`harmonic_dimension`]. Orthonormality
/// (reproducing-kernel identity): `E_x[Z_u(x) Z_v(x)] = zonal_profile(u . v)`, and 0 between
/// different degrees. `x` and `u` must be unit vectors of length `d`.
pub fn zonal_harmonic(l: usize, u: &[f64], x: &[f64]) -> Result<f64> {
    let dim = u.len();
    check_dim(dim)?;
    check_degree(l)?;
    if x.len() != dim {
        return Err(invalid("x", format!("point has {} coordinates, direction has {dim}", x.len())));
    }
    let t = dot(u, x).clamp(-1.0, 1.0);
    Ok(harmonic_dimension_unchecked(dim, l).sqrt() * zonal_profile_unchecked(dim, l, t))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// First zero of `theta -> zonal_profile(d, l, cos theta)` in `(0, pi]` (radians), found by a
/// scan of 4,096 steps and bisection to 1e-12. `None` for `l = 0` (a constant never crosses).
/// For `d = 3` it is the first zero of `P_l(cos theta)`, about `2.405 / (l + 1/2)`.
pub fn profile_first_zero(dim: usize, l: usize) -> Result<Option<f64>> {
    check_dim(dim)?;
    check_degree(l)?;
    if l == 0 {
        return Ok(None);
    }
    let f = |th: f64| zonal_profile_unchecked(dim, l, th.cos());
    const STEPS: usize = 4_096;
    let mut prev = (0.0, f(0.0));
    for i in 1..=STEPS {
        let th = PI * i as f64 / STEPS as f64;
        let v = f(th);
        if v == 0.0 {
            return Ok(Some(th));
        }
        if v.signum() != prev.1.signum() {
            let (mut a, mut b) = (prev.0, th);
            let fa_sign = prev.1.signum();
            while b - a > 1e-12 {
                let mid = 0.5 * (a + b);
                if f(mid).signum() == fa_sign {
                    a = mid;
                } else {
                    b = mid;
                }
            }
            return Ok(Some(0.5 * (a + b)));
        }
        prev = (th, v);
    }
    Ok(None)
}

/// Which family the target is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetKind {
    /// Random unit-norm combination of the `2l + 1` real harmonics of degree `l`; `d = 3` only.
    RealHarmonics,
    /// Random Gaussian-weighted sum of `directions` zonal harmonics of degree `l` around random
    /// unit directions; any `d >= 2`.
    ZonalSum {
        /// Number of random directions.
        directions: usize,
    },
}

/// How target values become class labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Labelling {
    /// 2 classes: `1` where `f > 0`, else `0`.
    Sign,
    /// `classes` classes by quantile of the training values (class 0 = lowest values).
    Quantiles {
        /// Number of classes (at least 2).
        classes: usize,
    },
}

impl Labelling {
    /// Number of classes the labelling produces.
    pub fn num_classes(self) -> usize {
        match self {
            Labelling::Sign => 2,
            Labelling::Quantiles { classes } => classes,
        }
    }
}

/// Everything that defines a synthetic dataset. Same spec → bit-identical dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticSpec {
    /// Ambient dimension `d` (points on `S^{d-1}` in `R^d`). Default 3.
    pub dim: usize,
    /// Harmonic degree `l` of the target. Default 1.
    pub degree: usize,
    /// Default [`TargetKind::RealHarmonics`].
    pub target: TargetKind,
    /// Default [`Labelling::Sign`].
    pub labels: Labelling,
    /// Training points. Default 10,000.
    pub n_train: usize,
    /// Validation ("test") points. Default 2,000.
    pub n_test: usize,
    /// Default 0.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            dim: 3,
            degree: 1,
            target: TargetKind::RealHarmonics,
            labels: Labelling::Sign,
            n_train: 10_000,
            n_test: 2_000,
            seed: 0,
        }
    }
}

impl SyntheticSpec {
    /// Checks the spec for combinations that cannot work (names the field).
    pub fn validate(&self) -> Result<()> {
        check_dim(self.dim)?;
        check_degree(self.degree)?;
        match self.target {
            TargetKind::RealHarmonics if self.dim != 3 => {
                return Err(invalid(
                    "target",
                    format!("real spherical harmonics need d = 3, got d = {}; use the zonal_sum target", self.dim),
                ))
            }
            TargetKind::ZonalSum { directions: 0 } => {
                return Err(invalid("target", "a zonal sum needs at least one direction"))
            }
            _ => {}
        }
        if self.degree == 0 {
            return Err(invalid("degree", "degree 0 is a constant target: every label would be the same"));
        }
        match self.labels {
            Labelling::Quantiles { classes } if classes < 2 => {
                return Err(invalid("labels", format!("quantile labels need at least 2 classes, got {classes}")))
            }
            Labelling::Quantiles { classes } if self.n_train < classes => {
                return Err(invalid(
                    "n_train",
                    format!("{} training points cannot fill {classes} quantile classes", self.n_train),
                ))
            }
            _ => {}
        }
        if self.n_train == 0 {
            return Err(invalid("n_train", "the training split needs at least one point"));
        }
        Ok(())
    }

    /// A short name, e.g. `sphere-d3-l4-harmonics-sign` or `sphere-d10-l2-zonal8-q5`.
    pub fn name(&self) -> String {
        let t = match self.target {
            TargetKind::RealHarmonics => "harmonics".to_string(),
            TargetKind::ZonalSum { directions } => format!("zonal{directions}"),
        };
        let lab = match self.labels {
            Labelling::Sign => "sign".to_string(),
            Labelling::Quantiles { classes } => format!("q{classes}"),
        };
        format!("sphere-d{}-l{}-{t}-{lab}", self.dim, self.degree)
    }

    /// The target's characteristic angular length scale `pi / l` (radians).
    pub fn characteristic_angle(&self) -> f64 {
        PI / self.degree.max(1) as f64
    }
}

/// A drawn target function `f: S^{d-1} -> R` with `E_x[f^2] = 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// `f = sum_m coeffs[m + l] Y_lm`, `|coeffs| = 1`.
    RealHarmonics {
        /// Degree `l`.
        degree: usize,
        /// `2l + 1` coefficients, unit norm.
        coeffs: Vec<f64>,
    },
    /// `f = scale * sum_k weights[k] Z_{u_k}` with the unit-variance zonal harmonics of
    /// [`zonal_harmonic`]; `scale = 1 / sqrt(sum_jk w_j w_k profile(u_j . u_k))` makes the
    /// variance exactly 1.
    ZonalSum {
        /// Ambient dimension `d`.
        dim: usize,
        /// Degree `l`.
        degree: usize,
        /// Unit directions `u_k`, each of length `d`.
        directions: Vec<Vec<f64>>,
        /// Gaussian weights `w_k`.
        weights: Vec<f64>,
        /// Normalisation making the variance 1.
        scale: f64,
    },
}

impl Target {
    /// Draws the target of `spec` from its seed (stream 0).
    pub fn draw(spec: &SyntheticSpec) -> Result<Target> {
        spec.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        rng.set_stream(0);
        let l = spec.degree;
        match spec.target {
            TargetKind::RealHarmonics => {
                // A Gaussian vector normalised is uniform on the unit sphere of coefficients.
                let coeffs = sample_sphere(2 * l + 1, 1, &mut rng);
                Ok(Target::RealHarmonics { degree: l, coeffs })
            }
            TargetKind::ZonalSum { directions: k } => {
                let dirs = sample_sphere(spec.dim, k, &mut rng);
                let directions: Vec<Vec<f64>> = dirs.chunks(spec.dim).map(<[f64]>::to_vec).collect();
                let weights: Vec<f64> = (0..k).map(|_| standard_normal(&mut rng)).collect();
                let mut var = 0.0;
                for (uj, wj) in directions.iter().zip(&weights) {
                    for (uk, wk) in directions.iter().zip(&weights) {
                        var += wj * wk * zonal_profile_unchecked(spec.dim, l, dot(uj, uk).clamp(-1.0, 1.0));
                    }
                }
                // Cancellation (e.g. two opposite directions at odd degree) leaves no signal.
                if !(var.is_finite() && var > 1e-12) {
                    return Err(invalid(
                        "seed",
                        format!("seed {} draws a degenerate zonal sum (variance {var:e}); use another seed", spec.seed),
                    ));
                }
                Ok(Target::ZonalSum { dim: spec.dim, degree: l, directions, weights, scale: 1.0 / var.sqrt() })
            }
        }
    }

    /// Ambient dimension `d`.
    pub fn dim(&self) -> usize {
        match self {
            Target::RealHarmonics { .. } => 3,
            Target::ZonalSum { dim, .. } => *dim,
        }
    }

    /// `f(x)` for a unit vector `x` of length `d`.
    pub fn eval(&self, x: &[f64]) -> Result<f64> {
        if x.len() != self.dim() {
            return Err(invalid(
                "x",
                format!("point has {} coordinates, the target lives in R^{}", x.len(), self.dim()),
            ));
        }
        Ok(self.eval_unchecked(x))
    }

    fn eval_unchecked(&self, x: &[f64]) -> f64 {
        match self {
            Target::RealHarmonics { degree, coeffs } => {
                let q = [x[0], x[1], x[2]];
                (-(*degree as i64)..=*degree as i64)
                    .zip(coeffs)
                    .map(|(m, c)| c * real_harmonic_unchecked(*degree, m, q))
                    .sum()
            }
            Target::ZonalSum { dim, degree, directions, weights, scale } => {
                let amp = harmonic_dimension_unchecked(*dim, *degree).sqrt();
                let s: f64 = directions
                    .iter()
                    .zip(weights)
                    .map(|(u, w)| w * zonal_profile_unchecked(*dim, *degree, dot(u, x).clamp(-1.0, 1.0)))
                    .sum();
                scale * amp * s
            }
        }
    }
}

/// One standard normal draw (Box-Muller; the sine branch is discarded to keep the stream simple).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    // 1 - U is in (0, 1], so the log is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// `n` points uniform on `S^{dim-1}`, flattened row-major `(n, dim)`: normalised Gaussian vectors.
pub fn sample_sphere(dim: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut out = Vec::with_capacity(n * dim);
    let mut v = vec![0.0; dim];
    for _ in 0..n {
        loop {
            for c in v.iter_mut() {
                *c = standard_normal(rng);
            }
            let r = dot(&v, &v).sqrt();
            // A zero vector has no direction; its probability is 0 but the check costs nothing.
            if r > 1e-300 {
                out.extend(v.iter().map(|c| c / r));
                break;
            }
        }
    }
    out
}

/// A synthetic dataset: like [`crate::Dataset`] but described by its [`SyntheticSpec`] instead
/// of a [`crate::DatasetName`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyntheticDataset {
    /// What was drawn.
    pub spec: SyntheticSpec,
    /// The target function.
    pub target: Target,
    /// Images `(n_train, 1, 1, d)` f32 unit vectors.
    pub train: Split,
    /// Images `(n_test, 1, 1, d)`.
    pub test: Split,
    /// `["negative", "positive"]` for sign labels, `["q0", ...]` for quantiles.
    pub class_names: Vec<String>,
    /// `f(x)` of each training point (f64, before the f32 cast of the inputs).
    pub train_values: Vec<f64>,
    /// `f(x)` of each test point.
    pub test_values: Vec<f64>,
    /// Quantile labelling: the `K - 1` ascending cut points from the training split (a value
    /// above `cut_points[k-1]` and at most `cut_points[k]` is class `k`). Empty for sign labels.
    pub cut_points: Vec<f64>,
}

impl SyntheticDataset {
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// `(C, H, W) = (1, 1, d)`.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        (1, 1, self.spec.dim)
    }
}

/// Generates the dataset of `spec` (see the module docs for labels and seeds).
pub fn generate(spec: &SyntheticSpec) -> Result<SyntheticDataset> {
    let target = Target::draw(spec)?;
    let d = spec.dim;
    let points = |n: usize, stream: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        rng.set_stream(stream);
        sample_sphere(d, n, &mut rng)
    };
    let train_pts = points(spec.n_train, 1);
    let test_pts = points(spec.n_test, 2);
    let train_values: Vec<f64> = train_pts.chunks(d).map(|x| target.eval_unchecked(x)).collect();
    let test_values: Vec<f64> = test_pts.chunks(d).map(|x| target.eval_unchecked(x)).collect();
    let (train_labels, test_labels, cut_points, class_names) = match spec.labels {
        Labelling::Sign => (
            sign_labels(&train_values),
            sign_labels(&test_values),
            vec![],
            vec!["negative".to_string(), "positive".to_string()],
        ),
        Labelling::Quantiles { classes } => {
            let (labels, cuts) = quantile_labels(&train_values, classes)?;
            let test = test_values.iter().map(|&v| cuts.iter().filter(|&&c| v > c).count() as u32).collect();
            (labels, test, cuts, (0..classes).map(|k| format!("q{k}")).collect())
        }
    };
    let split = |pts: Vec<f64>, labels: Vec<u32>| -> Result<Split> {
        let n = labels.len();
        let data: Vec<f32> = pts.iter().map(|&v| v as f32).collect();
        let images = Tensor::from_vec(data, (n, 1, 1, d), &Device::Cpu)?;
        Ok(Split { images, labels, coarse_labels: None })
    };
    Ok(SyntheticDataset {
        spec: spec.clone(),
        target,
        train: split(train_pts, train_labels)?,
        test: split(test_pts, test_labels)?,
        class_names,
        train_values,
        test_values,
        cut_points,
    })
}

/// `1` where `v > 0`, else `0`.
pub fn sign_labels(values: &[f64]) -> Vec<u32> {
    values.iter().map(|&v| u32::from(v > 0.0)).collect()
}

/// Rank-based quantile labels: the point of rank `r` (ascending value, ties by index) gets class
/// `floor(r K / N)`, so class sizes differ by at most one. Returns the labels and the `K - 1` cut
/// points (midpoints between the largest value of class `k - 1` and the smallest of class `k`).
pub fn quantile_labels(values: &[f64], classes: usize) -> Result<(Vec<u32>, Vec<f64>)> {
    let n = values.len();
    if classes < 2 || n < classes {
        return Err(invalid("classes", format!("cannot split {n} values into {classes} quantile classes")));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(invalid("values", format!("value {i} is not finite ({})", values[i])));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
    let mut labels = vec![0u32; n];
    for (r, &i) in order.iter().enumerate() {
        labels[i] = (r * classes / n) as u32;
    }
    let cuts = (1..classes)
        .map(|k| {
            // First rank of class k: smallest r with r K / N >= k, i.e. ceil(k N / K).
            let r = (k * n).div_ceil(classes);
            0.5 * (values[order[r - 1]] + values[order[r]])
        })
        .collect();
    Ok((labels, cuts))
}
