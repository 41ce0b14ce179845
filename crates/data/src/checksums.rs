//! Known checksums of the official files.

use crate::DatasetName;

/// SHA-256 of the UNCOMPRESSED IDX files, in the order train images, train labels, test images,
/// test labels (`SHA256SUMS.uncompressed` of the shared copies; the MNIST ones agree with the
/// published MD5s 6bbc9ace898e44ae57da46a324031adb / 2646ac647ad5339dbf082846283269ea of the
/// decompressed train / test images).
pub const MNIST_SHA256_UNCOMPRESSED: [&str; 4] = [
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
];

/// As [`MNIST_SHA256_UNCOMPRESSED`], for Fashion-MNIST.
pub const FASHION_MNIST_SHA256_UNCOMPRESSED: [&str; 4] = [
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
];

/// MD5 of `cifar-10-binary.tar.gz` (the CIFAR page).
pub const CIFAR10_TAR_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// MD5 of `cifar-100-binary.tar.gz` (the CIFAR page).
pub const CIFAR100_TAR_MD5: &str = "03b5dce01913d631647c71ecec9e9cb8";

/// Uncompressed IDX SHA-256s for MNIST-like datasets, `None` for CIFAR.
pub fn idx_sha256(name: DatasetName) -> Option<&'static [&'static str; 4]> {
    match name {
        DatasetName::Mnist => Some(&MNIST_SHA256_UNCOMPRESSED),
        DatasetName::FashionMnist => Some(&FASHION_MNIST_SHA256_UNCOMPRESSED),
        _ => None,
    }
}

/// MD5 of the CIFAR tarball, `None` for the IDX datasets.
pub fn tar_md5(name: DatasetName) -> Option<&'static str> {
    match name {
        DatasetName::Cifar10 => Some(CIFAR10_TAR_MD5),
        DatasetName::Cifar100 => Some(CIFAR100_TAR_MD5),
        _ => None,
    }
}

/// Official per-class counts (train, test), where published or known exactly.
pub fn class_histograms(name: DatasetName) -> (Vec<usize>, Vec<usize>) {
    match name {
        // The shared datasets README (and the MNIST page).
        DatasetName::Mnist => (
            vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
            vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
        ),
        DatasetName::FashionMnist => (vec![6000; 10], vec![1000; 10]),
        DatasetName::Cifar10 => (vec![5000; 10], vec![1000; 10]),
        DatasetName::Cifar100 => (vec![500; 100], vec![100; 100]),
    }
}
