//! Data as the experiments use it: preprocessed train and validation splits on the device, and
//! the fixed, class-balanced validation subset on which stiffness is measured.

use std::path::Path;

use candle::{Device, Tensor};
use serde::{Deserialize, Serialize};
use stiff_data::{preprocess::Preprocess, sampling::balanced_subset, DatasetName};
use stiff_models::InputShape;

use crate::Result;

/// How a dataset is turned into training and stiffness inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSettings {
    /// Input preprocessing (default: the dataset's standardisation).
    pub preprocess: Preprocess,
    /// Examples in the stiffness subset (class-balanced, from the test split). Default: 500 for
    /// 10 classes, 3,000 for 100.
    pub stiffness_subset: usize,
    /// Seed of the stiffness subset; fixed across runs so every run is measured on the same examples.
    pub subset_seed: u64,
    /// Train on the first `n` examples of a fixed-seed class-balanced draw instead of the full
    /// training split (used by the overfitting figure). `None` = all.
    pub train_subset: Option<usize>,
}

impl DataSettings {
    /// The defaults for `name`: standard preprocessing, a class-balanced stiffness subset of the default size, seed 0, the full training split.
    pub fn for_dataset(name: DatasetName) -> Self {
        Self {
            preprocess: Preprocess::default(),
            stiffness_subset: stiff_data::sampling::default_subset_size(name.num_classes()),
            subset_seed: 0,
            train_subset: None,
        }
    }
}

/// A dataset ready for training and measurement.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Dataset.
    pub name: DatasetName,
    /// Class names, by label.
    pub class_names: Vec<String>,
    /// CIFAR-100 super-class names, by coarse label.
    pub coarse_class_names: Option<Vec<String>>,
    /// Per-example input shape.
    pub input: InputShape,
    /// Preprocessed training inputs `(N, C, H, W)` and labels.
    pub train_x: Tensor,
    /// Training labels.
    pub train_y: Vec<u32>,
    /// Preprocessed validation (test split) inputs and labels.
    pub val_x: Tensor,
    /// Validation labels.
    pub val_y: Vec<u32>,
    /// The stiffness subset: indices into the validation split, inputs, labels, coarse labels.
    pub stiff_idx: Vec<usize>,
    /// Inputs of the stiffness subset `(n, C, H, W)`.
    pub stiff_x: Tensor,
    /// Labels of the stiffness subset.
    pub stiff_y: Vec<u32>,
    /// Coarse (super-class) labels of the stiffness subset (CIFAR-100).
    pub stiff_coarse: Option<Vec<u32>>,
}

impl Prepared {
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }
}

/// Loads `name` from `data_dir` (flag > `STIFF_DATA_DIR` > cache) and prepares it on `device`.
pub fn prepare(name: DatasetName, data_dir: Option<&Path>, s: &DataSettings, device: &Device) -> Result<Prepared> {
    prepare_with(name, data_dir, s, device, &stiff_data::LoadOptions::default())
}

/// [`prepare`] with load options (e.g. [`stiff_data::LoadOptions::lenient`] for small generated
/// files in the official format, as the `--quick` CIFAR figures accept).
pub fn prepare_with(
    name: DatasetName,
    data_dir: Option<&Path>,
    s: &DataSettings,
    device: &Device,
    load: &stiff_data::LoadOptions,
) -> Result<Prepared> {
    let ds = stiff_data::load_with(name, data_dir, load)?;
    let (c, h, w) = ds.input_shape();
    let k = ds.num_classes();
    let (train_x, train_y) = match s.train_subset {
        Some(n) if n < ds.train.len() => {
            let idx = balanced_subset(&ds.train.labels, k, n, s.subset_seed)?;
            let sub = ds.train.select(&idx)?;
            (sub.images, sub.labels)
        }
        _ => (ds.train.images.clone(), ds.train.labels.clone()),
    };
    let train_x = s.preprocess.apply(&train_x)?.to_device(device)?;
    let val_x = s.preprocess.apply(&ds.test.images)?.to_device(device)?;
    let stiff_idx = balanced_subset(&ds.test.labels, k, s.stiffness_subset, s.subset_seed)?;
    let idx_t = Tensor::new(stiff_idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), device)?;
    let stiff_x = val_x.index_select(&idx_t, 0)?;
    let stiff_y = stiff_idx.iter().map(|&i| ds.test.labels[i]).collect();
    let stiff_coarse = ds.test.coarse_labels.as_ref().map(|c| stiff_idx.iter().map(|&i| c[i]).collect());
    Ok(Prepared {
        name,
        class_names: ds.class_names.clone(),
        coarse_class_names: ds.coarse_class_names.clone(),
        input: InputShape::new(c, h, w),
        train_x,
        train_y,
        val_x,
        val_y: ds.test.labels.clone(),
        stiff_idx,
        stiff_x,
        stiff_y,
        stiff_coarse,
    })
}
