//! Fig 9: stiffness vs dot-product distance in input space and every layer, for the sweep's
//! representative run.

use std::path::Path;

use stiff_analysis::{Crossing, StiffnessKind};
use stiff_plot::{line_figure, LineFigure, Panel, Series};

use super::super::config::LrSweepConfig;
use super::super::run::LrRunRecord;
use super::super::summary;
use super::{tidy_rows, KINDS};
use crate::measure::{crossing_distance, SpaceCurve};
use crate::stats::spearman;
use crate::store::{write_atomic, write_json};
use crate::tidy::write_csv;
use crate::Result;

fn curve_series(c: &SpaceCurve, kind: StiffnessKind) -> Series {
    let (mean, se, crossing) = match kind {
        StiffnessKind::Sign => (&c.curve.sign_mean, &c.curve.sign_se, &c.sign_first_crossing),
        StiffnessKind::Cosine => (&c.curve.cos_mean, &c.curve.cos_se, &c.cos_first_crossing),
    };
    let mut s =
        Series::new(c.space.clone(), c.curve.centres.clone(), mean.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
            .with_err(se.iter().map(|v| v.map_or(f64::NAN, |e| 1.96 * e)).collect());
    if let Crossing::Found { distance } = crossing {
        s = s.with_marker(*distance, format!("{} {distance:.2}", c.space));
    }
    s
}

/// Writes `DIR/fig9/` from the representative run.
pub fn write_fig9(dir: &Path, cfg: &LrSweepConfig, record: &LrRunRecord, command: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::ExperimentError::io(dir, e))?;
    write_json(
        &dir.join("config.json"),
        &serde_json::json!({ "figure": "fig9", "command": command, "sweep": cfg, "run": record.spec }),
    )?;
    let point = record.points.last();
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({ "figure": "fig9", "run": record.id, "end": record.end, "point": point }),
    )?;
    write_csv(&dir.join("results.csv"), &tidy_rows(std::slice::from_ref(record)))?;
    let Some(point) = point else {
        let md = summary::fig9(cfg, record, None, command);
        return write_atomic(&dir.join("summary.md"), md.as_bytes());
    };
    let curves = &point.measurement.curves;
    let panels = KINDS
        .iter()
        .map(|&(kind, kname)| Panel {
            title: format!("{kname} stiffness, all validation pairs"),
            x_label: "dot-product distance 1 - cos(u, v)".into(),
            y_label: format!("{kname} stiffness"),
            series: curves.iter().map(|c| curve_series(c, kind)).collect(),
            hline: Some(0.0),
            ..Default::default()
        })
        .collect();
    line_figure(
        &LineFigure {
            title: format!(
                "Fig 9: stiffness vs distance, {} on MNIST (run {}, train loss < {})",
                cfg.preset, record.id, point.threshold
            ),
            panels,
            columns: 2,
        },
        &dir.join("fig9"),
    )?;
    // Depth trend over the hidden layers that have a crossing: Spearman rho of (depth, size).
    let hidden: Vec<(f64, f64)> = curves
        .iter()
        .skip(1)
        .enumerate()
        .filter_map(|(i, c)| crossing_distance(&c.sign_first_crossing).map(|d| (i as f64 + 1.0, d)))
        .collect();
    let (depths, sizes): (Vec<f64>, Vec<f64>) = hidden.iter().copied().unzip();
    let rho = spearman(&depths, &sizes);
    let md = summary::fig9(cfg, record, Some((point, rho)), command);
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
