//! Helpers shared by the CLI's integration tests.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// MNIST-format IDX files under `root/mnist`, with the official split sizes (the loader checks
/// them): training images all 0 (`measure` never differentiates them), test images with the left
/// 14 columns exactly 0 and the right half seeded noise plus a class-dependent bright row band.
pub fn write_flat_mnist(root: &Path) {
    let dir = root.join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (split, n) in [("train", 60_000usize), ("t10k", 10_000)] {
        let mut images: Vec<u8> = Vec::with_capacity(16 + n * 784);
        images.extend(0x0803u32.to_be_bytes());
        images.extend((n as u32).to_be_bytes());
        images.extend(28u32.to_be_bytes());
        images.extend(28u32.to_be_bytes());
        let mut labels: Vec<u8> = Vec::with_capacity(8 + n);
        labels.extend(0x0801u32.to_be_bytes());
        labels.extend((n as u32).to_be_bytes());
        for i in 0..n {
            let class = i % 10;
            labels.push(class as u8);
            if split == "train" {
                images.extend(std::iter::repeat_n(0u8, 784));
                continue;
            }
            for y in 0..28 {
                for x in 0..28 {
                    let v: u32 = if x < 14 {
                        0
                    } else if (2 * class..2 * class + 6).contains(&y) {
                        200 + rng.random_range(0..50)
                    } else {
                        rng.random_range(0..120)
                    };
                    images.push(v as u8);
                }
            }
        }
        std::fs::write(dir.join(format!("{split}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{split}-labels-idx1-ubyte")), labels).unwrap();
    }
}

/// The measurement's examples as `stiff measure --dataset mnist --data-dir root --subset n
/// --preprocess none` draws them (seed 0), for an independent recomputation.
#[allow(dead_code)]
pub fn mnist_subset(root: &Path, n: usize) -> stiff_experiments::prepare::Prepared {
    let mut ds = stiff_experiments::prepare::DataSettings::for_dataset(stiff_data::DatasetName::Mnist);
    ds.preprocess = stiff_data::preprocess::Preprocess::none();
    ds.stiffness_subset = n;
    stiff_experiments::prepare::prepare(stiff_data::DatasetName::Mnist, Some(root), &ds, &candle::Device::Cpu).unwrap()
}

/// `stiff measure`'s `measurement.json` under `out`, after checking the command succeeded.
#[allow(dead_code)]
pub fn measurement(r: &std::process::Output, out: &Path) -> serde_json::Value {
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    serde_json::from_slice(&std::fs::read(out.join("measurement.json")).unwrap()).unwrap()
}
