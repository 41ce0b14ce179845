//! candle-datasets conversion (feature `candle-datasets`).
#![cfg(feature = "candle-datasets")]

mod common;

use common::*;
use stiff_data::{load_from_dir, DatasetName, LoadOptions};

#[test]
fn mnist_converts_to_candle_layout() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dir(tmp.path(), &idx_files(&idx_split(6, 1), &idx_split(2, 2)), true, false);
    let ds = load_from_dir(DatasetName::Mnist, tmp.path(), &LoadOptions::lenient()).unwrap();
    let cd = ds.to_candle_dataset().unwrap();
    // candle-datasets' own MNIST loader gives (N, 784) f32 images and u8 labels.
    assert_eq!(cd.train_images.dims(), &[6, 784]);
    assert_eq!(cd.test_labels.dtype(), candle::DType::U8);
    assert_eq!(cd.labels, 10);
    let labels: Vec<u8> = cd.train_labels.to_vec1().unwrap();
    let want: Vec<u8> = ds.train.labels.iter().map(|&l| l as u8).collect();
    assert_eq!(labels, want);
}
