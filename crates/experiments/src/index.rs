//! `index.md`: links every figure produced so far under a results folder.

use std::fmt::Write as _;
use std::path::Path;

use crate::options::{figure_dir, OptimizerKind};
use crate::registry::figures;
use crate::store::{write_atomic, SUMMARY};
use crate::Result;

/// Rewrites `OUT/index.md` from the figure folders present (one per figure and optimizer).
pub fn write_index(out: &Path) -> Result<()> {
    let mut md = String::from("# Stiffness reproduction: results\n\n| figure | shows | files |\n|---|---|---|\n");
    let mut any = false;
    for f in figures() {
        for opt in OptimizerKind::ALL {
            let dir_name = figure_dir(f.name, opt);
            let dir = out.join(&dir_name);
            if !dir.join(SUMMARY).is_file() {
                continue;
            }
            any = true;
            let quick = std::fs::read_to_string(dir.join("config.json")).is_ok_and(|s| s.contains("\"quick\": true"));
            let _ = writeln!(
                md,
                "| [{d}]({d}/summary.md){q} | {} | [png]({d}/{name}.png) · [svg]({d}/{name}.svg) · [csv]({d}/results.csv) · [json]({d}/results.json) · [config]({d}/config.json) |",
                f.shows,
                d = dir_name,
                name = f.name,
                q = if quick { " (quick)" } else { "" }
            );
        }
    }
    if !any {
        md.push_str("| – | no figure produced yet | |\n");
    }
    let skipped = out.join("skipped.md");
    if skipped.is_file() {
        md.push_str("\nSkipped figures: see [skipped.md](skipped.md).\n");
    }
    write_atomic(&out.join("index.md"), md.as_bytes())
}
