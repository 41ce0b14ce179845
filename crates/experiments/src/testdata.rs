//! Small data folders in the official file formats, for running every pipeline end to end
//! without the real data (tests, `--tiny`). Deterministic for a seed.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_data::DatasetName;

use crate::store::write_atomic;
use crate::{ExperimentError, Result};

/// Writes a small data folder in the official CIFAR binary formats under `root`:
/// `cifar10/data_batch_{1..5}.bin` + `test_batch.bin` (records: 1 label byte + 3072 pixels) and
/// `cifar100/train.bin` + `test.bin` (coarse byte, fine byte, 3072 pixels).
///
/// * CIFAR-10: `train_per_class` images per class spread over the 5 train files, `test_per_class`
///   in the test file.
/// * CIFAR-100: `c100_train_per_class` and `c100_test_per_class` per fine class.
///
/// Images are class-dependent plane waves (orientation and colour set by the class; for
/// CIFAR-100 mostly by the super-class, so super-class blocks are learnable) plus seeded noise.
pub fn write_synthetic_cifar(
    root: &Path,
    train_per_class: usize,
    test_per_class: usize,
    c100_train_per_class: usize,
    c100_test_per_class: usize,
    seed: u64,
) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // pattern(key) -> (angle, frequency, channel phase offsets)
    let image = |rng: &mut ChaCha8Rng, major: usize, minor: Option<usize>| -> Vec<u8> {
        let a = major as f64 * 0.61;
        let f = 1.0 + (major % 4) as f64;
        let (b, g) = minor.map_or((0.0, 0.0), |m| (m as f64 * 1.3, 2.0 + (m % 3) as f64));
        let mut px = vec![0u8; 3 * 32 * 32];
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let (xf, yf) = (x as f64 / 32.0, y as f64 / 32.0);
                    let base = (std::f64::consts::TAU * f * (xf * a.cos() + yf * a.sin()) + c as f64 * (1.0 + a)).sin();
                    let fine = if minor.is_some() {
                        (std::f64::consts::TAU * g * (xf * b.cos() + yf * b.sin()) + c as f64).sin()
                    } else {
                        0.0
                    };
                    let v = 128.0 + 70.0 * base + 30.0 * fine + rng.random_range(-40.0..40.0);
                    px[c * 1024 + y * 32 + x] = v.clamp(0.0, 255.0) as u8;
                }
            }
        }
        px
    };
    let write = |path: &Path, bytes: &[u8]| write_atomic(path, bytes);
    // CIFAR-10: interleave classes so every train file holds every class.
    let c10 = root.join("cifar10");
    let mut batches: Vec<Vec<u8>> = vec![Vec::new(); 5];
    for i in 0..train_per_class {
        for class in 0..10usize {
            let b = &mut batches[(i * 10 + class) % 5];
            b.push(class as u8);
            b.extend(image(&mut rng, class, None));
        }
    }
    for (i, b) in batches.iter().enumerate() {
        write(&c10.join(format!("data_batch_{}.bin", i + 1)), b)?;
    }
    let mut test = Vec::new();
    for _ in 0..test_per_class {
        for class in 0..10usize {
            test.push(class as u8);
            test.extend(image(&mut rng, class, None));
        }
    }
    write(&c10.join("test_batch.bin"), &test)?;
    // CIFAR-100: the super-class sets the main pattern, the fine class a weaker one.
    let c100 = root.join("cifar100");
    for (name, per) in [("train.bin", c100_train_per_class), ("test.bin", c100_test_per_class)] {
        let mut bytes = Vec::new();
        for _ in 0..per {
            for fine in 0..100usize {
                let coarse = stiff_data::classes::CIFAR100_FINE_TO_COARSE[fine];
                bytes.push(coarse);
                bytes.push(fine as u8);
                bytes.extend(image(&mut rng, coarse as usize, Some(fine)));
            }
        }
        write(&c100.join(name), &bytes)?;
    }
    Ok(())
}

/// Writes `root/<dataset>/` (MNIST or Fashion-MNIST) as the four raw IDX files
/// (`train-images-idx3-ubyte`, ...): `train_per_class` and `test_per_class` 28x28 images per
/// class, each a class-dependent blob position plus seeded noise.
pub fn write_synthetic_idx(
    root: &Path,
    dataset: DatasetName,
    train_per_class: usize,
    test_per_class: usize,
    seed: u64,
) -> Result<()> {
    if !matches!(dataset, DatasetName::Mnist | DatasetName::FashionMnist) {
        return Err(ExperimentError::InvalidArgument(format!(
            "write_synthetic_idx: {dataset} is not an IDX dataset (mnist or fashion-mnist)"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = root.join(dataset.to_string());
    for (split, per) in [("train", train_per_class), ("t10k", test_per_class)] {
        let n = per * 10;
        let mut images = Vec::with_capacity(16 + n * 784);
        let mut labels = Vec::with_capacity(8 + n);
        images.extend(0x0803u32.to_be_bytes());
        images.extend((n as u32).to_be_bytes());
        images.extend(28u32.to_be_bytes());
        images.extend(28u32.to_be_bytes());
        labels.extend(0x0801u32.to_be_bytes());
        labels.extend((n as u32).to_be_bytes());
        for i in 0..n {
            let class = i % 10;
            // A bright 8x8 square whose position encodes the class; the rest is dark noise.
            let (cy, cx) = (4 + (class / 5) * 12, 2 + (class % 5) * 5);
            for y in 0..28 {
                for x in 0..28 {
                    let inside = (cy..cy + 8).contains(&y) && (cx..cx + 8).contains(&x);
                    let v: f64 = if inside { 200.0 } else { 20.0 } + rng.random_range(-20.0..20.0);
                    images.push(v.clamp(0.0, 255.0) as u8);
                }
            }
            labels.push(class as u8);
        }
        write_atomic(&dir.join(format!("{split}-images-idx3-ubyte")), &images)?;
        write_atomic(&dir.join(format!("{split}-labels-idx1-ubyte")), &labels)?;
    }
    Ok(())
}
