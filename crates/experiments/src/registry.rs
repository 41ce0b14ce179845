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
    s.push_str("\n`all` runs every figure whose data is present. Figs 8-10 share one learning-rate sweep.\n");
    s
}

/// The datasets a figure (or `all`) needs.
pub fn datasets_for(figure: &str) -> Vec<stiff_data::DatasetName> {
    use stiff_data::DatasetName::{FashionMnist, Mnist};
    match figure {
        "fig9" => vec![Mnist],
        "fig8" | "fig10" | "all" => vec![Mnist, FashionMnist],
        _ => vec![],
    }
}
