//! The training settings every pipeline's configurations and runs share: the step budget, the
//! batch size, how often and on how many examples the losses are evaluated. Each pipeline adds
//! its own stopping rules (thresholds, snapshots, overfitting) on top of [`TrainSpec::train_config`].
//!
//! A [`TrainSpec`] is written flat (`#[serde(flatten)]`) into every configuration and run spec,
//! where its four fields always stood, so records and configs written before it existed read
//! back, compare equal and are written byte for byte as before. The dynamics pipeline has always
//! called the subset size `eval_subset`; [`dynamics_names`] keeps that name there.

use serde::{Deserialize, Serialize};
use stiff_train::{OptimizerConfig, TrainConfig};

/// Step budget, batch size and loss-evaluation cadence of a run (or of every run of a config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainSpec {
    /// Step budget of a run.
    pub max_steps: u64,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Steps between loss evaluations.
    pub eval_every: u64,
    /// Size of the fixed training (and validation) subsets on which losses are evaluated.
    pub train_eval_subset: usize,
}

impl TrainSpec {
    /// The trainer's configuration of a run with this `optimizer` and `seed`; the caller adds
    /// its pipeline's stopping rules.
    pub fn train_config(&self, optimizer: OptimizerConfig, seed: u64) -> TrainConfig {
        TrainConfig::default()
            .with_optimizer(optimizer)
            .with_batch_size(self.batch_size)
            .with_seed(seed)
            .with_max_steps(self.max_steps)
            .with_eval_every(self.eval_every)
            .with_train_eval_subset(self.train_eval_subset)
    }
}

/// `#[serde(flatten, with = "crate::training::dynamics_names")]`: a [`TrainSpec`] as the dynamics
/// configs and records spell it (`eval_subset` for the subset size).
pub mod dynamics_names {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::TrainSpec;

    /// The dynamics spelling, in the order the fields are written.
    #[derive(Serialize, Deserialize)]
    struct Spelled {
        max_steps: u64,
        batch_size: usize,
        eval_every: u64,
        eval_subset: usize,
    }

    /// Writes `t` with the dynamics field names.
    pub fn serialize<S: Serializer>(t: &TrainSpec, s: S) -> Result<S::Ok, S::Error> {
        Spelled {
            max_steps: t.max_steps,
            batch_size: t.batch_size,
            eval_every: t.eval_every,
            eval_subset: t.train_eval_subset,
        }
        .serialize(s)
    }

    /// Reads a [`TrainSpec`] written with the dynamics field names.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TrainSpec, D::Error> {
        let s = Spelled::deserialize(d)?;
        Ok(TrainSpec {
            max_steps: s.max_steps,
            batch_size: s.batch_size,
            eval_every: s.eval_every,
            train_eval_subset: s.eval_subset,
        })
    }
}
