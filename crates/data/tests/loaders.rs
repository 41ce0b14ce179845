//! Loader tests on generated files in the exact official formats.

mod common;

use common::*;
use stiff_data::{load_from_dir, load_with, DataError, DatasetName, LoadOptions};

/// Pixel scaling is exact: byte b must load as the f32 nearest to b/255 (computed in f64 here).
fn expect_pixels(images: &candle::Tensor, bytes: &[u8]) {
    let got = images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got.len(), bytes.len());
    for (k, (&g, &b)) in got.iter().zip(bytes).enumerate() {
        assert_eq!(g, (f64::from(b) / 255.0) as f32, "pixel {k}");
    }
}

fn lenient() -> LoadOptions {
    LoadOptions::lenient()
}

#[test]
fn mnist_gz_loads_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = (idx_split(30, 1), idx_split(12, 2));
    write_idx_dir(&tmp.path().join("mnist"), &idx_files(&train, &test), true, false);
    // Found through the data-dir search (explicit dir first).
    let ds = load_with(DatasetName::Mnist, Some(tmp.path()), &lenient()).unwrap();
    assert_eq!(ds.train.images.dims(), &[30, 1, 28, 28]);
    assert_eq!(ds.test.images.dims(), &[12, 1, 28, 28]);
    assert_eq!(ds.input_shape(), (1, 28, 28));
    assert_eq!(ds.num_classes(), 10);
    expect_pixels(&ds.train.images, &train.pixels);
    expect_pixels(&ds.test.images, &test.pixels);
    let want: Vec<u32> = train.labels.iter().map(|&l| u32::from(l)).collect();
    assert_eq!(ds.train.labels, want);
    assert!(ds.train.coarse_labels.is_none());
    assert_eq!(stiff_data::locate(DatasetName::Mnist, Some(tmp.path())).unwrap(), tmp.path().join("mnist"));
}

#[test]
fn fashion_raw_dotted_spelling_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = (idx_split(10, 3), idx_split(10, 4));
    let dir = tmp.path().join("fashion-mnist");
    write_idx_dir(&dir, &idx_files(&train, &test), false, true);
    let ds = load_from_dir(DatasetName::FashionMnist, &dir, &lenient()).unwrap();
    expect_pixels(&ds.train.images, &train.pixels);
    assert_eq!(ds.class_names[0], "T-shirt/top");
    assert_eq!(ds.name, DatasetName::FashionMnist);
}

#[test]
fn dotted_gz_spelling_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = (idx_split(5, 3), idx_split(5, 4));
    write_idx_dir(tmp.path(), &idx_files(&train, &test), true, true);
    let ds = load_from_dir(DatasetName::Mnist, tmp.path(), &lenient()).unwrap();
    expect_pixels(&ds.test.images, &test.pixels);
}

#[test]
fn official_counts_are_enforced_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dir(tmp.path(), &idx_files(&idx_split(5, 1), &idx_split(5, 2)), true, false);
    let err = load_from_dir(DatasetName::Mnist, tmp.path(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::UnofficialCount { found: 5, expected: 60_000, .. }), "{err}");
}

fn assert_cifar10(ds: &stiff_data::Dataset, batches: &[(String, Vec<u8>, Vec<u8>)]) {
    let per = batches[0].2.len();
    assert_eq!(ds.train.images.dims(), &[5 * per, 3, 32, 32]);
    assert_eq!(ds.test.images.dims(), &[per, 3, 32, 32]);
    // Record layout: label byte then R, G, B planes; the (C,H,W) tensor is the bytes after it.
    let train_pixels: Vec<u8> =
        batches[..5].iter().flat_map(|(_, bytes, _)| bytes.chunks(3073).flat_map(|r| r[1..].to_vec())).collect();
    expect_pixels(&ds.train.images, &train_pixels);
    let train_labels: Vec<u32> = batches[..5].iter().flat_map(|(_, _, l)| l.iter().map(|&x| u32::from(x))).collect();
    assert_eq!(ds.train.labels, train_labels);
    assert_eq!(ds.class_names[9], "truck");
    // Spot check one value by coordinates: example 1 of batch 1, channel G (1), row 2, col 3.
    let v = ds.train.images.get(1).unwrap().get(1).unwrap().get(2).unwrap().get(3).unwrap();
    let want = batches[0].1[3073 + 1 + 1024 + 2 * 32 + 3];
    assert_eq!(v.to_scalar::<f32>().unwrap(), (f64::from(want) / 255.0) as f32);
}

#[test]
fn cifar10_tar_gz_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let batches = cifar10_batches(4);
    let members: Vec<(String, Vec<u8>)> =
        batches.iter().map(|(n, b, _)| (format!("cifar-10-batches-bin/{n}"), b.clone())).collect();
    let dir = tmp.path().join("cifar10");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cifar-10-binary.tar.gz"), tar_gz(&members)).unwrap();
    let ds = load_with(DatasetName::Cifar10, Some(tmp.path()), &lenient()).unwrap();
    assert_cifar10(&ds, &batches);
}

#[test]
fn cifar10_extracted_loads_from_subdir_and_flat() {
    let batches = cifar10_batches(3);
    for sub in ["cifar-10-batches-bin", ""] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        for (n, b, _) in &batches {
            std::fs::write(dir.join(n), b).unwrap();
        }
        let ds = load_from_dir(DatasetName::Cifar10, tmp.path(), &lenient()).unwrap();
        assert_cifar10(&ds, &batches);
    }
}

#[test]
fn cifar10_official_counts_checked() {
    let tmp = tempfile::tempdir().unwrap();
    for (n, b, _) in cifar10_batches(2) {
        std::fs::write(tmp.path().join(n), b).unwrap();
    }
    let err = load_from_dir(DatasetName::Cifar10, tmp.path(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::UnofficialCount { found: 2, expected: 10_000, .. }), "{err}");
}

/// Tar members (path, bytes) and the train fine labels.
fn cifar100_members(n_train: usize, n_test: usize) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let (train, train_fine) = cifar100_records(n_train, 5);
    let (test, _) = cifar100_records(n_test, 6);
    (vec![("cifar-100-binary/train.bin".into(), train), ("cifar-100-binary/test.bin".into(), test)], train_fine)
}

#[test]
fn cifar100_tar_gz_and_extracted_load_with_coarse_labels() {
    let (members, train_fine) = cifar100_members(9, 4);
    let tmp = tempfile::tempdir().unwrap();
    let tar_dir = tmp.path().join("tar");
    std::fs::create_dir_all(&tar_dir).unwrap();
    std::fs::write(tar_dir.join("cifar-100-binary.tar.gz"), tar_gz(&members)).unwrap();
    let ext_dir = tmp.path().join("extracted");
    std::fs::create_dir_all(ext_dir.join("cifar-100-binary")).unwrap();
    for (n, b) in &members {
        std::fs::write(ext_dir.join(n), b).unwrap();
    }
    for dir in [tar_dir, ext_dir] {
        let ds = load_from_dir(DatasetName::Cifar100, &dir, &lenient()).unwrap();
        assert_eq!(ds.num_classes(), 100);
        assert_eq!(ds.train.len(), 9);
        assert_eq!(ds.test.len(), 4);
        let fine: Vec<u32> = train_fine.iter().map(|&f| u32::from(f)).collect();
        assert_eq!(ds.train.labels, fine);
        let coarse = ds.train.coarse_labels.as_ref().unwrap();
        for (f, c) in fine.iter().zip(coarse) {
            assert_eq!(*c, u32::from(stiff_data::classes::CIFAR100_FINE_TO_COARSE[*f as usize]));
        }
        assert_eq!(ds.coarse_class_names.as_ref().unwrap().len(), 20);
        let pixels: Vec<u8> = members[0].1.chunks(3074).flat_map(|r| r[2..].to_vec()).collect();
        expect_pixels(&ds.train.images, &pixels);
    }
}

#[test]
fn select_and_labels_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = (idx_split(6, 1), idx_split(3, 2));
    write_idx_dir(tmp.path(), &idx_files(&train, &test), false, false);
    let ds = load_from_dir(DatasetName::Mnist, tmp.path(), &lenient()).unwrap();
    let sub = ds.train.select(&[4, 0, 4]).unwrap();
    assert_eq!(sub.images.dims(), &[3, 1, 28, 28]);
    assert_eq!(sub.labels, vec![ds.train.labels[4], ds.train.labels[0], ds.train.labels[4]]);
    let want: Vec<u8> = [4usize, 0, 4].iter().flat_map(|&i| train.pixels[i * 784..(i + 1) * 784].to_vec()).collect();
    expect_pixels(&sub.images, &want);
    let lt = sub.labels_tensor(&candle::Device::Cpu).unwrap();
    assert_eq!(lt.dtype(), candle::DType::U32);
    assert_eq!(lt.to_vec1::<u32>().unwrap(), sub.labels);
    assert!(matches!(ds.train.select(&[6]), Err(DataError::InvalidArgument { .. })));
}

#[test]
fn dataset_name_round_trips() {
    for name in DatasetName::ALL {
        assert_eq!(name.to_string().parse::<DatasetName>().unwrap(), name);
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, format!("\"{}\"", name.as_str()));
        assert_eq!(serde_json::from_str::<DatasetName>(&json).unwrap(), name);
    }
    assert_eq!("CIFAR-10".parse::<DatasetName>().unwrap(), DatasetName::Cifar10);
    assert!("svhn".parse::<DatasetName>().is_err());
}

#[test]
fn verify_dir_reports_missing_incomplete_and_broken() {
    use stiff_data::{verify_dir, VerifyStatus};
    let tmp = tempfile::tempdir().unwrap();
    let row = verify_dir(DatasetName::Mnist, tmp.path());
    assert_eq!(row.status, VerifyStatus::Missing);
    assert!(!row.is_broken());

    // Well-formed but not the official counts: present and broken.
    write_idx_dir(tmp.path(), &idx_files(&idx_split(5, 1), &idx_split(5, 2)), true, false);
    let row = verify_dir(DatasetName::Mnist, tmp.path());
    assert!(row.is_broken(), "{row}");
    assert!(row.message.contains("60000"), "{row}");
    assert!(row.to_string().starts_with("mnist"), "{row}");

    std::fs::remove_file(tmp.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let row = verify_dir(DatasetName::Mnist, tmp.path());
    assert!(row.is_broken() && row.message.contains("incomplete"), "{row}");
}
