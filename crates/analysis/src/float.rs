//! A minimal float trait so Gram matrices can be read as `f32` or `f64` without copying.

/// Element types accepted for Gram matrices. All arithmetic happens in `f64` after
/// `to_f64`; implemented for `f32` and `f64` only (sealed).
pub trait Float: Copy + Send + Sync + PartialOrd + std::fmt::Debug + 'static + sealed::Sealed {
    /// Widen to `f64` (exact for both implementors).
    fn to_f64(self) -> f64;
}

impl Float for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Float for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}
