//! Subsets, permuted labels and batch orders.

use std::collections::BTreeSet;

use stiff_data::sampling::{balanced_subset, default_subset_size, epoch_order, permuted_labels, Batcher};
use stiff_data::DataError;

fn labels(n: usize, k: u32) -> Vec<u32> {
    // Unequal class sizes (class c has weight c+2), interleaved by a fixed multiplicative hash.
    let weights: Vec<usize> = (0..k as usize).map(|c| c + 2).collect();
    let total: usize = weights.iter().sum();
    let mut out: Vec<u32> = (0..n)
        .map(|i| {
            let mut r = (i * total) / n;
            let mut c = 0;
            while r >= weights[c] {
                r -= weights[c];
                c += 1;
            }
            c as u32
        })
        .collect();
    let key = |i: usize| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by_key(|&i| key(i));
    out = idx.iter().map(|&i| out[i]).collect();
    out
}

#[test]
fn balanced_subset_is_balanced_sorted_and_seeded() {
    let l = labels(2000, 10);
    let idx = balanced_subset(&l, 10, 500, 7).unwrap();
    assert_eq!(idx.len(), 500);
    let unique: BTreeSet<usize> = idx.iter().copied().collect();
    assert_eq!(unique.len(), 500, "no repeats");
    for c in 0..10u32 {
        let block = &idx[c as usize * 50..(c as usize + 1) * 50];
        assert!(block.iter().all(|&i| l[i] == c), "block {c} is class {c}");
        assert!(block.windows(2).all(|w| w[0] < w[1]), "sorted within class");
    }
    assert_eq!(idx, balanced_subset(&l, 10, 500, 7).unwrap(), "same seed, same subset");
    assert_ne!(idx, balanced_subset(&l, 10, 500, 8).unwrap(), "other seed, other subset");
}

#[test]
fn balanced_subset_errors() {
    let l = vec![0, 0, 0, 1, 1, 2];
    assert!(matches!(
        balanced_subset(&l, 3, 6, 0),
        Err(DataError::NotEnoughExamples { class: 2, available: 1, needed: 2 })
    ));
    assert!(matches!(balanced_subset(&l, 3, 5, 0), Err(DataError::InvalidArgument { .. })));
    assert!(matches!(balanced_subset(&l, 2, 2, 0), Err(DataError::InvalidArgument { .. })), "label 2 >= 2 classes");
    assert_eq!(balanced_subset(&l, 3, 3, 0).unwrap().len(), 3);
}

#[test]
fn default_subset_sizes_follow_the_paper() {
    assert_eq!(default_subset_size(10), 500);
    assert_eq!(default_subset_size(100), 3000);
}

#[test]
fn permuted_labels_keep_histogram() {
    let l = labels(1000, 10);
    let p = permuted_labels(&l, 3);
    let mut a = l.clone();
    let mut b = p.clone();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
    assert_ne!(p, l);
    assert_eq!(p, permuted_labels(&l, 3));
    // A random permutation keeps sum_c p_c^2 (about 0.12 here) of the labels in place by chance;
    // far more would mean it barely shuffled. 200 of 1000 is > 7 sigma above ~120.
    let same = p.iter().zip(&l).filter(|(x, y)| x == y).count();
    assert!(same < 200, "{same} labels unchanged");
}

#[test]
fn epoch_order_depends_on_seed_and_epoch_only() {
    let a = epoch_order(100, 1, 0);
    let mut s = a.clone();
    s.sort_unstable();
    assert_eq!(s, (0..100).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(100, 1, 0));
    assert_ne!(a, epoch_order(100, 1, 1));
    assert_ne!(a, epoch_order(100, 2, 0));
}

#[test]
fn batcher_covers_each_example_once_and_resumes() {
    let b = Batcher::new(103, 10, 5).unwrap();
    assert_eq!(b.batches_per_epoch(), 11);
    let batches: Vec<Vec<usize>> = b.epoch(2).collect();
    assert_eq!(batches.len(), 11);
    assert_eq!(batches.last().unwrap().len(), 3);
    let flat: Vec<usize> = batches.concat();
    assert_eq!(flat, epoch_order(103, 5, 2));
    let resumed: Vec<Vec<usize>> = b.epoch_from(2, 4).collect();
    assert_eq!(resumed, batches[4..].to_vec());
    assert_eq!(b.position(0), (0, 0));
    assert_eq!(b.position(25), (2, 3));

    let d = Batcher::new(103, 10, 5).unwrap().drop_last(true);
    assert_eq!(d.batches_per_epoch(), 10);
    assert!(d.epoch(0).all(|x| x.len() == 10));
    assert!(Batcher::new(10, 0, 0).is_err());
}

/// Sizes far above the data (from `--subset`) are refused before any allocation: 2^64 - 6 gave
/// a capacity-overflow panic, 10^10 an 80 GB allocation abort.
#[test]
fn huge_subset_sizes_are_refused_not_allocated() {
    let l = labels(100, 10);
    for total in [18_446_744_073_709_551_610usize, 10_000_000_000, 110] {
        match balanced_subset(&l, 10, total, 0) {
            Err(DataError::InvalidArgument { arg: "total", reason }) => {
                assert!(reason.contains(&format!("subset size {total} is larger than the 100 examples")), "{reason}");
            }
            other => panic!("total {total}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert_eq!(balanced_subset(&l, 10, 20, 0).unwrap().len(), 20, "a size the data holds is still fine");
}
