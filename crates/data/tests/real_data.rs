//! Checks on the real datasets; run only when `STIFF_DATA_DIR` is set, e.g.
//! `STIFF_DATA_DIR=/work/shared/datasets cargo test -p stiff-data --release --test real_data`.
//! Expected values are the sanity facts of the shared datasets README.

use std::path::PathBuf;

use stiff_data::{load, verify, DatasetName, VerifyStatus};

/// The README gives the mean train pixel to 3 decimals (of 255).
const MEAN_PIXEL_TOL: f64 = 1e-3;

fn data_dir() -> Option<PathBuf> {
    match std::env::var_os("STIFF_DATA_DIR") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => {
            eprintln!("skipping real-data test: STIFF_DATA_DIR is not set");
            None
        }
    }
}

fn mean_pixel_255(images: &candle::Tensor) -> f64 {
    // f64 accumulation: an f32 sum over 47M values would lose the 3rd decimal.
    let v = images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64 * 255.0
}

fn check(name: DatasetName, train_hist: &[usize], test_hist: &[usize], mean: f64) {
    let Some(dir) = data_dir() else { return };
    let ds = load(name, Some(&dir)).unwrap();
    assert_eq!(ds.train.images.dims(), &[60_000, 1, 28, 28]);
    assert_eq!(ds.test.images.dims(), &[10_000, 1, 28, 28]);
    assert_eq!(ds.train.class_histogram(10), train_hist);
    assert_eq!(ds.test.class_histogram(10), test_hist);
    let m = mean_pixel_255(&ds.train.images);
    assert!((m - mean).abs() < MEAN_PIXEL_TOL, "{name} mean train pixel {m}, expected {mean}");
}

#[test]
fn mnist_matches_published_facts() {
    check(
        DatasetName::Mnist,
        &[5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        &[980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
        33.318,
    );
}

#[test]
fn fashion_mnist_matches_published_facts() {
    check(DatasetName::FashionMnist, &[6000; 10], &[1000; 10], 72.940);
}

#[test]
fn verify_reports_real_datasets_complete() {
    let Some(dir) = data_dir() else { return };
    let rows = verify(Some(&dir));
    for row in &rows {
        eprintln!("{row}");
    }
    for name in [DatasetName::Mnist, DatasetName::FashionMnist] {
        let row = rows.iter().find(|r| r.dataset == name).unwrap();
        assert_eq!(row.status, VerifyStatus::Complete, "{row}");
        assert_eq!(row.checksum, "ok", "{row}");
    }
    assert!(!rows.iter().any(|r| r.is_broken()));
}
