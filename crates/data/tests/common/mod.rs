//! Generators for small files in the exact official formats.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

/// IDX images file: magic 2051, n, rows, cols (big-endian u32), then the pixels.
pub fn idx_images(n: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    assert_eq!(pixels.len(), n * rows * cols);
    let mut out = Vec::new();
    for v in [2051u32, n as u32, rows as u32, cols as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// IDX labels file: magic 2049, n, then the labels.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&2049u32.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Deterministic pixel bytes: example `i`, pixel `j`.
pub fn pixel(seed: usize, i: usize, j: usize) -> u8 {
    ((i * 131 + j * 7 + seed * 17 + (i * j) % 13) % 256) as u8
}

/// The content of a generated IDX split.
#[derive(Clone, Debug)]
pub struct IdxSplit {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

pub fn idx_split(n: usize, seed: usize) -> IdxSplit {
    let pixels = (0..n).flat_map(|i| (0..784).map(move |j| pixel(seed, i, j))).collect();
    let labels = (0..n).map(|i| ((i * 3 + seed) % 10) as u8).collect();
    IdxSplit { pixels, labels }
}

/// The four IDX file contents (uncompressed), in the order train images, train labels, test
/// images, test labels.
pub fn idx_files(train: &IdxSplit, test: &IdxSplit) -> [Vec<u8>; 4] {
    [
        idx_images(train.labels.len(), 28, 28, &train.pixels),
        idx_labels(&train.labels),
        idx_images(test.labels.len(), 28, 28, &test.pixels),
        idx_labels(&test.labels),
    ]
}

pub const IDX_NAMES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// Writes the four files into `dir`; `gz` adds `.gz` and compresses; `dotted` uses the
/// `train-images.idx3-ubyte` spelling.
pub fn write_idx_dir(dir: &Path, files: &[Vec<u8>; 4], gz: bool, dotted: bool) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in IDX_NAMES.iter().zip(files) {
        let mut name = if dotted { name.replacen("-idx", ".idx", 1) } else { name.to_string() };
        let data = if gz {
            name.push_str(".gz");
            gzip(bytes)
        } else {
            bytes.clone()
        };
        std::fs::write(dir.join(name), data).unwrap();
    }
}

/// CIFAR-10 records: label byte, then R, G, B planes of 32x32.
pub fn cifar10_records(n: usize, seed: usize) -> (Vec<u8>, Vec<u8>) {
    let mut bytes = Vec::with_capacity(n * 3073);
    let mut labels = Vec::new();
    for i in 0..n {
        let l = ((i + seed) % 10) as u8;
        labels.push(l);
        bytes.push(l);
        bytes.extend((0..3072).map(|j| pixel(seed, i, j)));
    }
    (bytes, labels)
}

/// CIFAR-100 records: coarse byte, fine byte, then the pixels; coarse from the official mapping.
pub fn cifar100_records(n: usize, seed: usize) -> (Vec<u8>, Vec<u8>) {
    let mut bytes = Vec::with_capacity(n * 3074);
    let mut fine = Vec::new();
    for i in 0..n {
        let f = ((i * 7 + seed) % 100) as u8;
        fine.push(f);
        bytes.push(stiff_data::classes::CIFAR100_FINE_TO_COARSE[f as usize]);
        bytes.push(f);
        bytes.extend((0..3072).map(|j| pixel(seed, i, j)));
    }
    (bytes, fine)
}

/// A `.tar.gz` holding `members` (path inside the archive, bytes), plus a readme like the real one.
pub fn tar_gz(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let enc = GzEncoder::new(Vec::new(), Compression::fast());
    let mut builder = tar::Builder::new(enc);
    let mut all: Vec<(String, Vec<u8>)> = members.to_vec();
    all.push(("readme.html".into(), b"<html>generated</html>".to_vec()));
    for (path, data) in &all {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// CIFAR-10 batch contents: 5 train batches of `per_batch` records and a test batch.
pub fn cifar10_batches(per_batch: usize) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for b in 1..=5 {
        let (bytes, labels) = cifar10_records(per_batch, b);
        out.push((format!("data_batch_{b}.bin"), bytes, labels));
    }
    let (bytes, labels) = cifar10_records(per_batch, 99);
    out.push(("test_batch.bin".into(), bytes, labels));
    out
}
