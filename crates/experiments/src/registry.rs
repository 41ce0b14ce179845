//! The one list of pipelines. Adding a figure family means adding it here; the runner, `report`,
//! `list`, `index.md` and the CLI find it through this list.

use crate::pipeline::{AnyPipeline, FigureInfo};

/// Every pipeline, in the order `all` runs them.
pub fn pipelines() -> [&'static dyn AnyPipeline; 3] {
    [&crate::dynamics::Dynamics, &crate::lr_sweep::LrSweep, &crate::spherical::Spherical]
}

/// Every figure of every pipeline, in order.
pub fn figures() -> Vec<&'static FigureInfo> {
    pipelines().into_iter().flat_map(|p| p.figures().iter()).collect()
}

/// The figure called `name`, if any pipeline draws it.
pub fn find(name: &str) -> Option<&'static FigureInfo> {
    figures().into_iter().find(|f| f.name == name)
}

/// A table for `cargo xtask list`.
pub fn table() -> String {
    let mut s = format!("{:<8} {:<22} {:<28} {:<28} {}\n", "figure", "data", "quick", "full", "shows");
    for f in figures() {
        s.push_str(&format!(
            "{:<8} {:<22} {:<28} {:<28} {}\n",
            f.name,
            f.data_label(),
            f.time_quick,
            f.time_full,
            f.shows
        ));
    }
    s.push_str("\n`all` runs every figure whose data is present (the others are listed in OUT/skipped.md). Figs 2 and 3 share one run; figs 8-10 share one learning-rate sweep. With --optimizer adam the figure folders are named `<figure>-adam`.\n");
    s
}

/// The datasets a figure (or `all`: every figure) needs.
pub fn datasets_for(figure: &str) -> Vec<stiff_data::DatasetName> {
    let mut out = Vec::new();
    for f in figures().into_iter().filter(|f| figure == "all" || f.name == figure) {
        for d in f.datasets {
            if !out.contains(d) {
                out.push(*d);
            }
        }
    }
    out
}
