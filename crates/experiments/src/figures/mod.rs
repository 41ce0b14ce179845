//! Figure writers.

pub mod dynamics;
pub mod lr;
