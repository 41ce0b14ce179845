//! Every kind of bad input gives a typed error naming the file, never a panic.

mod common;

use std::path::Path;

use common::*;
use proptest::prelude::*;
use stiff_data::{load_from_dir, DataError, DatasetName, LoadOptions};

fn good_idx() -> [Vec<u8>; 4] {
    idx_files(&idx_split(8, 1), &idx_split(4, 2))
}

fn load_idx(files: &[Vec<u8>; 4], gz: bool) -> Result<stiff_data::Dataset, DataError> {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dir(tmp.path(), files, gz, false);
    load_from_dir(DatasetName::Mnist, tmp.path(), &LoadOptions::lenient())
}

fn mentions(err: &DataError, file: &str) {
    let msg = err.to_string();
    assert!(msg.contains(file), "message should name {file}: {msg}");
}

/// A small `.gz` expanding far beyond what its IDX header promises: decompression stops one byte
/// past the promise (before the fix the whole stream was inflated and the message counted every
/// extra byte).
#[test]
fn gzip_bomb_stops_at_promised_size() {
    let mut f = good_idx();
    let promised = f[1].len();
    f[1].resize(promised + (64 << 20), 0);
    let err = load_idx(&f, true).unwrap_err();
    assert!(matches!(err, DataError::BadSize { .. }), "{err}");
    mentions(&err, "train-labels-idx1-ubyte.gz");
    assert!(err.to_string().contains(&format!("1 trailing bytes after the {promised} bytes")), "{err}");
}

/// A corrupt IDX header promising 42 TB (or more than its gzip stream can inflate to) is
/// refused as soon as the header is read: before the fix up to 1 GiB was inflated first, and
/// the message only said the file was truncated.
#[test]
fn impossible_idx_header_promises_are_refused_before_inflating() {
    let header = |n: u32, rows: u32, cols: u32| -> Vec<u8> {
        [2051u32, n, rows, cols].iter().flat_map(|v| v.to_be_bytes()).collect()
    };
    let mut f = good_idx();
    // 4e9 * 100 * 105 = 42 TB promised; 1 MB of zeros follow.
    f[0] = header(4_000_000_000, 100, 105);
    f[0].resize(16 + (1 << 20), 0);
    let err = load_idx(&f, true).unwrap_err();
    assert!(matches!(err, DataError::BadSize { .. }), "{err}");
    mentions(&err, "train-images-idx3-ubyte.gz");
    let msg = err.to_string();
    assert!(msg.contains("promises 42000000000016 bytes") && msg.contains("before decompressing"), "{msg}");

    // 500 MB promised (under the 1 GiB cap) by a gzip stream of a few hundred bytes.
    let mut f = good_idx();
    f[0] = header(5_000_000, 10, 10);
    f[0].resize(200, 7);
    let msg = load_idx(&f, true).unwrap_err().to_string();
    assert!(msg.contains("promises 500000016 bytes") && msg.contains("inflates to at most"), "{msg}");
}

#[test]
fn truncated_images() {
    let mut f = good_idx();
    f[0].truncate(f[0].len() - 10);
    let err = load_idx(&f, false).unwrap_err();
    assert!(matches!(err, DataError::BadSize { .. }), "{err}");
    mentions(&err, "train-images-idx3-ubyte");
    assert!(err.to_string().contains("truncated"));
}

#[test]
fn truncated_header() {
    let mut f = good_idx();
    f[3].truncate(6);
    let err = load_idx(&f, true).unwrap_err();
    assert!(matches!(err, DataError::BadSize { .. }), "{err}");
    mentions(&err, "t10k-labels-idx1-ubyte.gz");
}

#[test]
fn trailing_bytes() {
    let mut f = good_idx();
    f[1].push(0);
    let err = load_idx(&f, false).unwrap_err();
    assert!(err.to_string().contains("trailing"), "{err}");
}

#[test]
fn wrong_magic() {
    let mut f = good_idx();
    // Swap images and labels files: each has the other's magic.
    f.swap(0, 1);
    let err = load_idx(&f, true).unwrap_err();
    assert!(matches!(err, DataError::BadMagic { found: 2049, expected: 2051, .. }), "{err}");
    mentions(&err, "train-images-idx3-ubyte.gz");
}

#[test]
fn count_mismatch() {
    let mut f = good_idx();
    f[1] = idx_labels(&[1, 2, 3]);
    let err = load_idx(&f, false).unwrap_err();
    assert!(matches!(err, DataError::CountMismatch { images: 8, labels: 3, .. }), "{err}");
}

#[test]
fn label_out_of_range() {
    let mut f = good_idx();
    f[3] = idx_labels(&[0, 1, 10, 2]);
    let err = load_idx(&f, false).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { index: 2, label: 10, num_classes: 10, .. }), "{err}");
    mentions(&err, "t10k-labels-idx1-ubyte");
}

#[test]
fn wrong_dims() {
    let mut f = good_idx();
    f[2] = idx_images(4, 14, 56, &vec![0; 4 * 784]);
    let err = load_idx(&f, false).unwrap_err();
    assert!(matches!(err, DataError::BadDims { rows: 14, cols: 56, .. }), "{err}");
}

#[test]
fn corrupt_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dir(tmp.path(), &good_idx(), true, false);
    let p = tmp.path().join("train-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    // Also break the CRC so a lucky deflate stream cannot pass.
    let n = bytes.len();
    bytes[n - 6] ^= 0x55;
    std::fs::write(&p, bytes).unwrap();
    let err = load_from_dir(DatasetName::Mnist, tmp.path(), &LoadOptions::lenient()).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    mentions(&err, "train-labels-idx1-ubyte.gz");
}

#[test]
fn incomplete_folder() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dir(tmp.path(), &good_idx(), true, false);
    std::fs::remove_file(tmp.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let err = load_from_dir(DatasetName::Mnist, tmp.path(), &LoadOptions::lenient()).unwrap_err();
    assert!(matches!(err, DataError::Incomplete { .. }), "{err}");
    assert!(err.to_string().contains("t10k-images-idx3-ubyte"));
}

#[test]
fn not_found_says_how_to_provide_files() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_from_dir(DatasetName::Cifar10, tmp.path(), &LoadOptions::lenient()).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("cifar-10-binary.tar.gz") && msg.contains("--mirror"), "{msg}");
}

fn write_cifar10_flat(dir: &Path, edit: impl Fn(&str, &mut Vec<u8>)) {
    for (n, mut b, _) in cifar10_batches(3) {
        edit(&n, &mut b);
        std::fs::write(dir.join(n), b).unwrap();
    }
}

#[test]
fn cifar_record_of_wrong_size() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10_flat(tmp.path(), |n, b| {
        if n == "data_batch_3.bin" {
            b.pop();
        }
    });
    let err = load_from_dir(DatasetName::Cifar10, tmp.path(), &LoadOptions::lenient()).unwrap_err();
    assert!(matches!(err, DataError::BadSize { .. }), "{err}");
    mentions(&err, "data_batch_3.bin");
}

#[test]
fn cifar10_label_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10_flat(tmp.path(), |n, b| {
        if n == "test_batch.bin" {
            b[3073] = 10; // label byte of record 1
        }
    });
    let err = load_from_dir(DatasetName::Cifar10, tmp.path(), &LoadOptions::lenient()).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { index: 1, label: 10, .. }), "{err}");
    mentions(&err, "test_batch.bin");
}

#[test]
fn cifar100_coarse_mismatch_and_fine_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut train, _) = cifar100_records(3, 0);
    let (test, _) = cifar100_records(2, 1);
    std::fs::write(tmp.path().join("test.bin"), &test).unwrap();
    // Record 2: coarse byte at 2*3074; make it disagree with the mapping.
    let fine = train[2 * 3074 + 1];
    let right = stiff_data::classes::CIFAR100_FINE_TO_COARSE[fine as usize];
    train[2 * 3074] = (right + 1) % 20;
    std::fs::write(tmp.path().join("train.bin"), &train).unwrap();
    let err = load_from_dir(DatasetName::Cifar100, tmp.path(), &LoadOptions::lenient()).unwrap_err();
    assert!(matches!(err, DataError::CoarseMismatch { index: 2, .. }), "{err}");
    mentions(&err, "train.bin");

    train[2 * 3074] = right;
    train[1] = 100;
    std::fs::write(tmp.path().join("train.bin"), &train).unwrap();
    let err = load_from_dir(DatasetName::Cifar100, tmp.path(), &LoadOptions::lenient()).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { index: 0, label: 100, num_classes: 100, .. }), "{err}");
}

#[test]
fn tar_missing_member_and_corrupt_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let members: Vec<(String, Vec<u8>)> = cifar10_batches(2)
        .into_iter()
        .filter(|(n, _, _)| n != "data_batch_4.bin")
        .map(|(n, b, _)| (format!("cifar-10-batches-bin/{n}"), b))
        .collect();
    let tar = tmp.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&tar, tar_gz(&members)).unwrap();
    let err = load_from_dir(DatasetName::Cifar10, tmp.path(), &LoadOptions::lenient()).unwrap_err();
    assert!(matches!(err, DataError::Tar { .. }), "{err}");
    assert!(err.to_string().contains("data_batch_4.bin"), "{err}");

    let mut bytes = std::fs::read(&tar).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&tar, bytes).unwrap();
    let err = load_from_dir(DatasetName::Cifar10, tmp.path(), &LoadOptions::lenient()).unwrap_err();
    assert!(matches!(err, DataError::Tar { .. }), "{err}");
    mentions(&err, "cifar-10-binary.tar.gz");
}

/// Small CIFAR-100 tarball for the fuzz test.
fn cifar100_tar() -> Vec<u8> {
    let (train, _) = cifar100_records(3, 0);
    let (test, _) = cifar100_records(2, 1);
    tar_gz(&[("cifar-100-binary/train.bin".into(), train), ("cifar-100-binary/test.bin".into(), test)])
}

fn no_panic_message(r: &Result<stiff_data::Dataset, DataError>) -> bool {
    match r {
        Ok(_) => true,
        Err(e) => !e.to_string().contains("panicked"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Flip and truncate random bytes of one valid IDX file (raw or gz): loading returns Ok or a
    /// typed error, never panics.
    #[test]
    fn idx_mutations_never_panic(
        which in 0usize..4,
        gz in any::<bool>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        write_idx_dir(tmp.path(), &good_idx(), gz, false);
        let name = format!("{}{}", IDX_NAMES[which], if gz { ".gz" } else { "" });
        let p = tmp.path().join(name);
        let mut bytes = std::fs::read(&p).unwrap();
        // Bias flips towards the header, where they matter most.
        for (pos, x) in &flips {
            let i = if bytes.len() > 32 && pos.index(2) == 0 { pos.index(32) } else { pos.index(bytes.len()) };
            bytes[i] ^= x;
        }
        if let Some(c) = cut {
            let at = c.index(bytes.len() + 1);
            bytes.truncate(at);
        }
        std::fs::write(&p, &bytes).unwrap();
        let r = load_from_dir(DatasetName::Mnist, tmp.path(), &LoadOptions::lenient());
        prop_assert!(no_panic_message(&r));
    }

    /// Same for a CIFAR-100 tarball (gzip, tar and record layers).
    #[test]
    fn cifar_tar_mutations_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let mut bytes = cifar100_tar();
        for (pos, x) in &flips {
            let i = pos.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Some(c) = cut {
            let at = c.index(bytes.len() + 1);
            bytes.truncate(at);
        }
        std::fs::write(tmp.path().join("cifar-100-binary.tar.gz"), &bytes).unwrap();
        let r = load_from_dir(DatasetName::Cifar100, tmp.path(), &LoadOptions::lenient());
        prop_assert!(no_panic_message(&r));
    }

    /// Raw CIFAR-10 batch bytes with flipped label bytes and arbitrary lengths.
    #[test]
    fn cifar_bin_mutations_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar10_flat(tmp.path(), |n, b| {
            if n == "data_batch_1.bin" {
                for (pos, x) in &flips {
                    let i = pos.index(b.len());
                    b[i] ^= x;
                }
                if let Some(c) = cut {
                    let at = c.index(b.len() + 1);
                    b.truncate(at);
                }
            }
        });
        let r = load_from_dir(DatasetName::Cifar10, tmp.path(), &LoadOptions::lenient());
        prop_assert!(no_panic_message(&r));
    }
}
