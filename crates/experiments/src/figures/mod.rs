//! Figure writers.

pub mod dynamics;
pub mod lr;
pub mod spherical;
