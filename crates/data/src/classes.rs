//! Class names and the CIFAR-100 fine→coarse mapping, written out from the official meta files
//! (`batches.meta.txt`, `fine_label_names.txt`, `coarse_label_names.txt`) and dataset pages.

/// MNIST digit names, label `i` is the digit `i`.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Fashion-MNIST class names in label order (Zalando's README).
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// CIFAR-10 class names in label order (`batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// CIFAR-100 fine class names in label order (alphabetical, `fine_label_names.txt`).
pub const CIFAR100_FINE_CLASSES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// CIFAR-100 super-class (coarse) names in label order (`coarse_label_names.txt`).
pub const CIFAR100_COARSE_CLASSES: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// `CIFAR100_FINE_TO_COARSE[fine]` is the super-class of fine label `fine`.
#[rustfmt::skip]
pub const CIFAR100_FINE_TO_COARSE: [u8; 100] = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3,
    3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10,
    16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19,
    2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The super-class membership as the CIFAR web page lists it (an independent statement of
    /// the same facts as `CIFAR100_FINE_TO_COARSE`).
    const MEMBERS: [(&str, [&str; 5]); 20] = [
        ("aquatic_mammals", ["beaver", "dolphin", "otter", "seal", "whale"]),
        ("fish", ["aquarium_fish", "flatfish", "ray", "shark", "trout"]),
        ("flowers", ["orchid", "poppy", "rose", "sunflower", "tulip"]),
        ("food_containers", ["bottle", "bowl", "can", "cup", "plate"]),
        ("fruit_and_vegetables", ["apple", "mushroom", "orange", "pear", "sweet_pepper"]),
        ("household_electrical_devices", ["clock", "keyboard", "lamp", "telephone", "television"]),
        ("household_furniture", ["bed", "chair", "couch", "table", "wardrobe"]),
        ("insects", ["bee", "beetle", "butterfly", "caterpillar", "cockroach"]),
        ("large_carnivores", ["bear", "leopard", "lion", "tiger", "wolf"]),
        ("large_man-made_outdoor_things", ["bridge", "castle", "house", "road", "skyscraper"]),
        ("large_natural_outdoor_scenes", ["cloud", "forest", "mountain", "plain", "sea"]),
        ("large_omnivores_and_herbivores", ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"]),
        ("medium_mammals", ["fox", "porcupine", "possum", "raccoon", "skunk"]),
        ("non-insect_invertebrates", ["crab", "lobster", "snail", "spider", "worm"]),
        ("people", ["baby", "boy", "girl", "man", "woman"]),
        ("reptiles", ["crocodile", "dinosaur", "lizard", "snake", "turtle"]),
        ("small_mammals", ["hamster", "mouse", "rabbit", "shrew", "squirrel"]),
        ("trees", ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"]),
        ("vehicles_1", ["bicycle", "bus", "motorcycle", "pickup_truck", "train"]),
        ("vehicles_2", ["lawn_mower", "rocket", "streetcar", "tank", "tractor"]),
    ];

    #[test]
    fn fine_names_are_sorted_and_unique() {
        let mut sorted = CIFAR100_FINE_CLASSES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, CIFAR100_FINE_CLASSES.to_vec());
    }

    #[test]
    fn mapping_agrees_with_membership_lists() {
        for (coarse_idx, (coarse_name, fines)) in MEMBERS.iter().enumerate() {
            assert_eq!(CIFAR100_COARSE_CLASSES[coarse_idx], *coarse_name);
            for fine in fines {
                let fine_idx = CIFAR100_FINE_CLASSES
                    .iter()
                    .position(|n| n == fine)
                    .unwrap_or_else(|| panic!("{fine} not a fine class"));
                assert_eq!(CIFAR100_FINE_TO_COARSE[fine_idx] as usize, coarse_idx, "{fine} should be in {coarse_name}");
            }
        }
        // Every super-class has exactly five members.
        for c in 0..20u8 {
            assert_eq!(CIFAR100_FINE_TO_COARSE.iter().filter(|&&x| x == c).count(), 5);
        }
    }
}
