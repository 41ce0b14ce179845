//! The figures this crate reproduces, what each shows and roughly how long it takes.

/// One reproducible figure.
#[derive(Debug, Clone, Copy)]
pub struct FigureInfo {
    pub name: &'static str,
    pub shows: &'static str,
    pub data: &'static str,
    /// Expected wall time on 2 CPU cores: quick, full.
    pub time_quick: &'static str,
    pub time_full: &'static str,
    pub available: bool,
}

pub const FIGURES: &[FigureInfo] = &[
    FigureInfo {
        name: "fig2",
        shows: "train/validation loss and within/between-class stiffness over training (FC, MNIST subset), onset of overfitting marked",
        data: "mnist",
        time_quick: "~25 s",
        time_full: "~1 min",
        available: true,
    },
    FigureInfo {
        name: "fig3",
        shows: "class stiffness matrices (sign, cosine) at 4 stages of training, FC on MNIST (fig2's run)",
        data: "mnist",
        time_quick: "as fig2 (same run)",
        time_full: "as fig2 (same run)",
        available: true,
    },
    FigureInfo {
        name: "fig4",
        shows: "as fig3 with permuted training labels, and between-class stiffness over training",
        data: "mnist",
        time_quick: "~25 s",
        time_full: "~1 min",
        available: true,
    },
    FigureInfo {
        name: "fig5",
        shows: "class stiffness matrices at 4 stages, FC on Fashion-MNIST",
        data: "fashion-mnist",
        time_quick: "~25 s",
        time_full: "~1 min",
        available: true,
    },
    FigureInfo {
        name: "fig6",
        shows: "class stiffness matrices at 4 stages, CNN on CIFAR-10",
        data: "cifar10",
        time_quick: "~40 s (generated data)",
        time_full: "not timed (no CIFAR data here)",
        available: true,
    },
    FigureInfo {
        name: "fig7",
        shows: "CIFAR-100 class stiffness early in training, ordered by super-class, with block score and permutation p-value",
        data: "cifar100",
        time_quick: "~40 s (generated data)",
        time_full: "not timed (no CIFAR data here)",
        available: true,
    },
    FigureInfo {
        name: "fig8",
        shows: "between-class stiffness vs learning rate at three training-loss thresholds (FC net)",
        data: "mnist, fashion-mnist",
        time_quick: "~1-2 min",
        time_full: "~15 min",
        available: true,
    },
    FigureInfo {
        name: "fig9",
        shows: "stiffness vs dot-product distance in input space and every layer, zero crossings marked",
        data: "mnist",
        time_quick: "~20 s (reuses fig8's run)",
        time_full: "~1 min (reuses fig8's run)",
        available: true,
    },
    FigureInfo {
        name: "fig10",
        shows: "stiff domain size (zero crossing) vs learning rate, per space, v1 and v3 extraction",
        data: "mnist, fashion-mnist",
        time_quick: "as fig8 (same runs)",
        time_full: "as fig8 (same runs)",
        available: true,
    },
    FigureInfo {
        name: "spherical",
        shows: "stiff domain size vs the spherical-harmonic target's angular length scale pi/l, and vs learning rate",
        data: "none (generated)",
        time_quick: "~5 s",
        time_full: "~3.5 min",
        available: true,
    },
];

pub fn find(name: &str) -> Option<&'static FigureInfo> {
    FIGURES.iter().find(|f| f.name == name)
}

/// A table for `cargo xtask list`.
pub fn table() -> String {
    let mut s = format!("{:<8} {:<22} {:<28} {:<28} {}\n", "figure", "data", "quick", "full", "shows");
    for f in FIGURES {
        s.push_str(&format!("{:<8} {:<22} {:<28} {:<28} {}\n", f.name, f.data, f.time_quick, f.time_full, f.shows));
    }
    s.push_str("\n`all` runs every figure whose data is present (the others are listed in OUT/skipped.md). Figs 2 and 3 share one run; figs 8-10 share one learning-rate sweep.\n");
    s
}

/// The datasets a figure (or `all`) needs.
pub fn datasets_for(figure: &str) -> Vec<stiff_data::DatasetName> {
    use stiff_data::DatasetName::{Cifar10, Cifar100, FashionMnist, Mnist};
    match figure {
        "fig2" | "fig3" | "fig4" | "fig9" => vec![Mnist],
        "fig5" => vec![FashionMnist],
        "fig6" => vec![Cifar10],
        "fig7" => vec![Cifar100],
        "all" => vec![Mnist, FashionMnist, Cifar10, Cifar100],
        "fig8" | "fig10" => vec![Mnist, FashionMnist],
        _ => vec![],
    }
}
