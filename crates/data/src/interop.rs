//! Conversion into `candle_datasets::vision::Dataset` (feature `candle-datasets`).

use candle::{DType, Tensor};

use crate::error::{DataError, Result};
use crate::Dataset;

impl Dataset {
    /// The dataset in candle-datasets' layout: grey images flattened to (N, H*W) as its MNIST
    /// loader does, colour images kept (N, 3, H, W) as its CIFAR loader does; f32 in [0, 1];
    /// labels u8 (N,) (fine labels for CIFAR-100).
    pub fn to_candle_dataset(&self) -> Result<candle_datasets::vision::Dataset> {
        let images = |t: &Tensor| -> Result<Tensor> {
            let (n, c, h, w) = t.dims4()?;
            Ok(if c == 1 { t.reshape((n, h * w))? } else { t.clone() })
        };
        let labels = |l: &[u32]| -> Result<Tensor> {
            Ok(Tensor::from_slice(l, l.len(), &candle::Device::Cpu)?.to_dtype(DType::U8)?)
        };
        Ok(candle_datasets::vision::Dataset {
            train_images: images(&self.train.images)?,
            train_labels: labels(&self.train.labels)?,
            test_images: images(&self.test.images)?,
            test_labels: labels(&self.test.labels)?,
            labels: self.num_classes(),
        })
    }
}

impl TryFrom<&Dataset> for candle_datasets::vision::Dataset {
    type Error = DataError;

    fn try_from(ds: &Dataset) -> Result<Self> {
        ds.to_candle_dataset()
    }
}

impl TryFrom<Dataset> for candle_datasets::vision::Dataset {
    type Error = DataError;

    fn try_from(ds: Dataset) -> Result<Self> {
        ds.to_candle_dataset()
    }
}
