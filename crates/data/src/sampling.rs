//! Seeded sampling: class-balanced subsets, permuted labels and deterministic mini-batch orders.
//! Everything uses `ChaCha8Rng`, so the same seed gives bit-identical results on every platform.

use rand::seq::{index, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};

/// Default stiffness-subset size: 50 per class for up to 99 classes (500 for 10 classes),
/// 30 per class from 100 classes on (3,000 for CIFAR-100), as in the paper.
pub fn default_subset_size(num_classes: usize) -> usize {
    if num_classes >= 100 {
        30 * num_classes
    } else {
        50 * num_classes
    }
}

/// Class-balanced subset: `total / num_classes` indices drawn without replacement from each
/// class with a fixed seed, sorted by class then by index.
///
/// Errors when `total` is not a positive multiple of `num_classes`, when a label is
/// `>= num_classes`, or when a class has fewer examples than needed.
pub fn balanced_subset(labels: &[u32], num_classes: usize, total: usize, seed: u64) -> Result<Vec<usize>> {
    if num_classes == 0 || total == 0 || total % num_classes != 0 {
        return Err(DataError::InvalidArgument {
            arg: "total",
            reason: format!("subset size {total} is not a positive multiple of the {num_classes} classes"),
        });
    }
    // Checked against the data before anything is sized by `total` (a huge value must be an
    // error, not a capacity overflow or an allocation abort).
    if total > labels.len() {
        return Err(DataError::InvalidArgument {
            arg: "total",
            reason: format!("subset size {total} is larger than the {} examples available", labels.len()),
        });
    }
    let per_class = total / num_classes;
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        let bucket = by_class.get_mut(l as usize).ok_or_else(|| DataError::InvalidArgument {
            arg: "labels",
            reason: format!("label {l} at index {i} is out of range 0..{num_classes}"),
        })?;
        bucket.push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(total);
    for (class, members) in by_class.iter().enumerate() {
        if members.len() < per_class {
            return Err(DataError::NotEnoughExamples {
                class: class as u32,
                available: members.len(),
                needed: per_class,
            });
        }
        let mut picked: Vec<usize> =
            index::sample(&mut rng, members.len(), per_class).into_iter().map(|j| members[j]).collect();
        picked.sort_unstable();
        out.extend(picked);
    }
    Ok(out)
}

/// A seeded random permutation of `labels` (for the permuted-label experiment, Fig. 4): the
/// class histogram is kept, the label-image association destroyed.
pub fn permuted_labels(labels: &[u32], seed: u64) -> Vec<u32> {
    let mut out = labels.to_vec();
    out.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    out
}

/// The example order of `epoch`: a permutation of `0..n` that depends only on `(seed, epoch)`
/// (each epoch uses its own ChaCha stream), so a run can resume mid-training.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Deterministic shuffled mini-batches over `n` examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batcher {
    n: usize,
    batch_size: usize,
    seed: u64,
    drop_last: bool,
}

impl Batcher {
    /// `n` examples in batches of `batch_size` (> 0); the last short batch is kept unless
    /// [`drop_last`](Self::drop_last) is set.
    pub fn new(n: usize, batch_size: usize, seed: u64) -> Result<Batcher> {
        if batch_size == 0 {
            return Err(DataError::InvalidArgument { arg: "batch_size", reason: "must be positive".into() });
        }
        Ok(Batcher { n, batch_size, seed, drop_last: false })
    }

    /// Drop the last batch of an epoch when it is shorter than `batch_size`.
    pub fn drop_last(mut self, drop: bool) -> Batcher {
        self.drop_last = drop;
        self
    }

    /// Number of examples.
    pub fn num_examples(&self) -> usize {
        self.n
    }

    /// Batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last {
            self.n / self.batch_size
        } else {
            self.n.div_ceil(self.batch_size)
        }
    }

    /// The batches of `epoch`, in order.
    pub fn epoch(&self, epoch: u64) -> EpochBatches {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first_batch` on (to resume mid-epoch).
    pub fn epoch_from(&self, epoch: u64, first_batch: usize) -> EpochBatches {
        EpochBatches {
            order: epoch_order(self.n, self.seed, epoch),
            batch_size: self.batch_size,
            next: first_batch.min(self.batches_per_epoch()),
            count: self.batches_per_epoch(),
        }
    }

    /// The `(epoch, batch within epoch)` of a global step counted from 0.
    pub fn position(&self, step: u64) -> (u64, usize) {
        let per = self.batches_per_epoch().max(1) as u64;
        (step / per, (step % per) as usize)
    }
}

/// Iterator over one epoch's mini-batches (each a `Vec` of example indices).
#[derive(Debug, Clone)]
pub struct EpochBatches {
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
    count: usize,
}

impl Iterator for EpochBatches {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        if self.next >= self.count {
            return None;
        }
        let start = self.next * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        self.next += 1;
        Some(self.order[start..end].to_vec())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochBatches {}
