//! Training loop: SGD/Adam, loss thresholds, snapshots, checkpoints, divergence handling
