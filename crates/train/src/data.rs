//! Training data as plain tensors, and the deterministic mini-batch order.

use candle::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Result, TrainError};

/// A labelled set of examples held as plain tensors (no dependency on how they were loaded).
#[derive(Debug, Clone)]
pub struct LabelledData {
    /// `(N, ...)`, e.g. `(N, 1, 28, 28)` or `(N, 784)`; any float dtype (cast to the model's).
    pub x: Tensor,
    /// `N` class indices.
    pub labels: Vec<u32>,
}

impl LabelledData {
    /// Checks that `x` has one row per label and at least one example.
    pub fn new(x: Tensor, labels: Vec<u32>) -> Result<Self> {
        let n = x.dims().first().copied().unwrap_or(0);
        if x.rank() < 2 {
            return Err(TrainError::Data { what: "x", msg: format!("expected (N, features...), got {:?}", x.dims()) });
        }
        if n != labels.len() {
            return Err(TrainError::Data {
                what: "labels",
                msg: format!("x has {n} rows but there are {} labels", labels.len()),
            });
        }
        if n == 0 {
            return Err(TrainError::Data { what: "x", msg: "no examples".into() });
        }
        Ok(Self { x, labels })
    }

    /// Number of examples `N`.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples (never true for a value from [`LabelledData::new`]).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The rows `idx` (in that order) as a new set on `device`.
    pub fn select(&self, idx: &[usize], device: &Device) -> Result<Self> {
        let i: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let it = Tensor::new(i.as_slice(), self.x.device())?;
        let x = self.x.index_select(&it, 0)?.to_device(device)?;
        Ok(Self { x, labels: idx.iter().map(|&i| self.labels[i]).collect() })
    }

    /// Labels as a u32 tensor `(N)` on `device`.
    pub fn labels_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::new(self.labels.as_slice(), device)?)
    }

    pub(crate) fn check_labels(&self, num_classes: usize, what: &'static str) -> Result<()> {
        if let Some(&l) = self.labels.iter().find(|&&l| l as usize >= num_classes) {
            return Err(TrainError::Data { what, msg: format!("label {l} is out of range for {num_classes} classes") });
        }
        if !matches!(self.x.dtype(), DType::F16 | DType::BF16 | DType::F32 | DType::F64) {
            return Err(TrainError::Data { what, msg: format!("x must be a float tensor, got {:?}", self.x.dtype()) });
        }
        Ok(())
    }
}

/// The order in which epoch `epoch` visits `n` examples: a Fisher–Yates shuffle driven by a
/// `ChaCha8Rng` whose seed mixes `seed` and `epoch`, so any epoch can be regenerated on resume
/// without replaying earlier ones.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(b"epochord");
    let mut rng = ChaCha8Rng::from_seed(key);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// The fixed training subset on which training loss is measured: `k` distinct indices out of
/// `n`, drawn with a seed derived from `seed`, sorted ascending. All of `0..n` when `k >= n`.
pub fn eval_subset(n: usize, k: usize, seed: u64) -> Vec<usize> {
    if k >= n {
        return (0..n).collect();
    }
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[16..24].copy_from_slice(b"evalsubs");
    let mut rng = ChaCha8Rng::from_seed(key);
    let mut idx = rand::seq::index::sample(&mut rng, n, k).into_vec();
    idx.sort_unstable();
    idx
}
