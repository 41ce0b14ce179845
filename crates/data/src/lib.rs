#![doc = include_str!("../README.md")]
//!
//! # Crate overview
//!
//! ```no_run
//! use stiff_data::{load, DatasetName, preprocess::Preprocess, sampling::balanced_subset};
//! # fn main() -> Result<(), stiff_data::DataError> {
//! let ds = load(DatasetName::Mnist, None)?; // --data-dir, else $STIFF_DATA_DIR, else the cache dir
//! let x = Preprocess::default().apply(&ds.train.images)?; // (60000, 1, 28, 28), per-example standardised
//! let subset = balanced_subset(&ds.test.labels, ds.num_classes(), 500, 0)?;
//! let small = ds.test.select(&subset)?; // 50 per class
//! # let _ = (x, small); Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod checksums;
mod cifar;
pub mod classes;
#[cfg(feature = "download")]
pub mod download;
mod error;
mod idx;
#[cfg(feature = "candle-datasets")]
mod interop;
mod io;
mod load;
mod locate;
pub mod preprocess;
pub mod sampling;
pub mod synthetic;
pub mod verify;

use std::fmt;
use std::str::FromStr;

use candle::{Device, Tensor};

pub use error::{DataError, Result};
pub use io::{md5_hex, sha256_hex};
pub use load::{load, load_from_dir, load_with, source_files, LoadOptions};
pub use locate::{default_cache_dir, explicit_root, locate, search_roots, DATA_DIR_ENV};
pub use verify::{verify, verify_dir, VerifyRow, VerifyStatus};

/// The four image datasets of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// `mnist`: 28x28 grey digits, 60,000 train / 10,000 test.
    Mnist,
    /// `fashion-mnist`: 28x28 grey clothing, 60,000 / 10,000.
    FashionMnist,
    /// `cifar10`: 32x32 colour, 10 classes, 50,000 / 10,000.
    Cifar10,
    /// `cifar100`: 32x32 colour, 100 fine classes in 20 super-classes, 50,000 / 10,000.
    Cifar100,
}

impl DatasetName {
    /// All four, in the paper's order.
    pub const ALL: [DatasetName; 4] =
        [DatasetName::Mnist, DatasetName::FashionMnist, DatasetName::Cifar10, DatasetName::Cifar100];

    /// The canonical name, also the dataset's folder name inside a data dir.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
        }
    }

    /// Number of (fine) classes.
    pub fn num_classes(self) -> usize {
        match self {
            DatasetName::Cifar100 => 100,
            _ => 10,
        }
    }

    /// Image shape (C, H, W).
    pub fn input_shape(self) -> (usize, usize, usize) {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => (1, 28, 28),
            DatasetName::Cifar10 | DatasetName::Cifar100 => (3, 32, 32),
        }
    }

    /// Official (train, test) example counts.
    pub fn official_counts(self) -> (usize, usize) {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => (60_000, 10_000),
            DatasetName::Cifar10 | DatasetName::Cifar100 => (50_000, 10_000),
        }
    }

    /// Class names in label order.
    pub fn class_names(self) -> &'static [&'static str] {
        match self {
            DatasetName::Mnist => &classes::MNIST_CLASSES,
            DatasetName::FashionMnist => &classes::FASHION_MNIST_CLASSES,
            DatasetName::Cifar10 => &classes::CIFAR10_CLASSES,
            DatasetName::Cifar100 => &classes::CIFAR100_FINE_CLASSES,
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = DataError;

    /// Accepts the canonical names case-insensitively, plus `fashion_mnist`, `fashionmnist`,
    /// `cifar-10`, `cifar-100`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mnist" => Ok(DatasetName::Mnist),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Ok(DatasetName::FashionMnist),
            "cifar10" | "cifar-10" | "cifar_10" => Ok(DatasetName::Cifar10),
            "cifar100" | "cifar-100" | "cifar_100" => Ok(DatasetName::Cifar100),
            _ => Err(DataError::InvalidArgument {
                arg: "dataset",
                reason: format!("unknown dataset {s:?}; expected one of mnist, fashion-mnist, cifar10, cifar100"),
            }),
        }
    }
}

/// One split (train or test) held whole in memory.
#[derive(Debug, Clone)]
pub struct Split {
    /// (N, C, H, W) f32 in [0, 1] (raw byte / 255), on the CPU.
    pub images: Tensor,
    /// (N,) labels in `0..num_classes` (fine labels for CIFAR-100).
    pub labels: Vec<u32>,
    /// CIFAR-100 super-class labels (N,), `None` for the other datasets.
    pub coarse_labels: Option<Vec<u32>>,
}

impl Split {
    /// Builds a split from raw u8 pixels in (N, C, H, W) order, scaling to [0, 1].
    pub fn from_u8(
        pixels: &[u8],
        shape: (usize, usize, usize),
        labels: Vec<u32>,
        coarse_labels: Option<Vec<u32>>,
    ) -> Result<Split> {
        let (c, h, w) = shape;
        let n = labels.len();
        let want = n.checked_mul(c * h * w);
        if want != Some(pixels.len()) {
            return Err(DataError::InvalidArgument {
                arg: "pixels",
                reason: format!("{} bytes do not make {n} images of shape {c}x{h}x{w}", pixels.len()),
            });
        }
        if let Some(coarse) = &coarse_labels {
            if coarse.len() != n {
                return Err(DataError::InvalidArgument {
                    arg: "coarse_labels",
                    reason: format!("{} coarse labels for {n} examples", coarse.len()),
                });
            }
        }
        // A lookup table keeps the exact value b / 255 and avoids a division per pixel.
        let mut lut = [0f32; 256];
        for (i, v) in lut.iter_mut().enumerate() {
            *v = i as f32 / 255.0;
        }
        let data: Vec<f32> = pixels.iter().map(|&b| lut[b as usize]).collect();
        let images = Tensor::from_vec(data, (n, c, h, w), &Device::Cpu)?;
        Ok(Split { images, labels, coarse_labels })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split holds no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels as a u32 tensor of shape (N,) on `dev`.
    pub fn labels_tensor(&self, dev: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.labels, self.labels.len(), dev)?)
    }

    /// The examples at `idx` (in that order, repeats allowed). Errors on an index `>= len()`.
    pub fn select(&self, idx: &[usize]) -> Result<Split> {
        let n = self.len();
        if let Some(&bad) = idx.iter().find(|&&i| i >= n) {
            return Err(DataError::InvalidArgument {
                arg: "idx",
                reason: format!("index {bad} out of range for a split of {n} examples"),
            });
        }
        let idx_u32: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let idx_t = Tensor::from_vec(idx_u32, idx.len(), self.images.device())?;
        let images = self.images.index_select(&idx_t, 0)?;
        let labels = idx.iter().map(|&i| self.labels[i]).collect();
        let coarse_labels = self.coarse_labels.as_ref().map(|c| idx.iter().map(|&i| c[i]).collect());
        Ok(Split { images, labels, coarse_labels })
    }

    /// Examples per class: `hist[c]` = number of labels equal to `c`, for `c < num_classes`.
    pub fn class_histogram(&self, num_classes: usize) -> Vec<usize> {
        let mut hist = vec![0usize; num_classes];
        for &l in &self.labels {
            if let Some(h) = hist.get_mut(l as usize) {
                *h += 1;
            }
        }
        hist
    }
}

/// A dataset: both splits and the class names.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Which dataset.
    pub name: DatasetName,
    /// The official training split.
    pub train: Split,
    /// The official test split.
    pub test: Split,
    /// Names of the (fine) classes in label order.
    pub class_names: Vec<String>,
    /// CIFAR-100 super-class names, `None` otherwise.
    pub coarse_class_names: Option<Vec<String>>,
    /// The files the dataset was read from, with their SHA-256, for results to record.
    pub files: Vec<SourceFile>,
}

/// One file a dataset was read from: results record these so a number can be traced to the
/// exact bytes behind it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SourceFile {
    /// The file as found (absolute when the data dir was).
    pub path: std::path::PathBuf,
    /// Lower-case hex SHA-256 of the file's bytes as stored (compressed, for `.gz` files).
    pub sha256: String,
    /// Size in bytes as stored.
    pub bytes: u64,
}

impl Dataset {
    /// Number of (fine) classes: 10, or 100 for CIFAR-100.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Image shape (C, H, W), read from the train images.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        match self.train.images.dims() {
            [_, c, h, w] => (*c, *h, *w),
            _ => self.name.input_shape(),
        }
    }
}
