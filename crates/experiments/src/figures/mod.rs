//! Figure writers.

pub mod lr;
