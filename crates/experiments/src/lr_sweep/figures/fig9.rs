//! Fig 9: stiffness vs dot-product distance in input space and every layer, for the sweep's
//! representative run.

use std::path::Path;

use stiff_analysis::{censored_kendall_permutation, Crossing, StiffnessKind, TrendOptions, TrendTest, Verdict};
use stiff_plot::{line_figure, LineFigure, Panel, Series};

use super::super::config::LrSweepConfig;
use super::super::model::{DepthTrend, LayerCell, KINDS};
use super::super::run::LrRunRecord;
use super::super::summary;
use super::{censored_median, point_curves, tidy_rows, METHODS};
use crate::measure::SpaceCurve;
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

/// The paper's Fig 9 claim is a decrease with depth.
pub fn depth_verdict(test: Option<&TrendTest>) -> &'static str {
    match test.map(|t| t.verdict) {
        Some(Verdict::Decreasing) => "supports the paper",
        Some(Verdict::Increasing) => "contradicts the paper",
        _ => "inconclusive",
    }
}

/// Per (dataset, method, hidden layer): observations from each record's pooled curves at its
/// dataset's lowest threshold.
pub fn layer_cells(cfg: &LrSweepConfig, records: &[LrRunRecord]) -> Vec<LayerCell> {
    let mut out = Vec::new();
    for &ds in &cfg.datasets {
        let th = cfg.thresholds.get(&ds).and_then(|t| t.last().copied()).unwrap_or(f64::NAN);
        let pts: Vec<_> = records.iter().filter(|r| r.spec.dataset == ds).filter_map(|r| r.point(th)).collect();
        let spaces: Vec<String> =
            pts.first().map(|p| point_curves(p).iter().skip(1).map(|c| c.space.clone()).collect()).unwrap_or_default();
        for (method, pick) in METHODS {
            for (i, space) in spaces.iter().enumerate() {
                let obs: Vec<Option<(f64, bool)>> = pts
                    .iter()
                    .map(|p| point_curves(p).iter().find(|c| &c.space == space).and_then(|c| pick(c).as_observation()))
                    .collect();
                let observations: Vec<(f64, bool)> = obs.iter().flatten().copied().collect();
                out.push(LayerCell {
                    dataset: ds.to_string(),
                    method,
                    space: space.clone(),
                    depth: i + 1,
                    median: censored_median(&observations),
                    censored: observations.iter().filter(|o| o.1).count(),
                    no_data: obs.iter().filter(|o| o.is_none()).count(),
                    observations,
                });
            }
        }
    }
    out
}

/// Depth trends per dataset and pooled over datasets, per method.
pub fn depth_trends(cfg: &LrSweepConfig, cells: &[LayerCell]) -> Result<Vec<DepthTrend>> {
    let mut scopes: Vec<String> = cfg.datasets.iter().map(|d| d.to_string()).collect();
    if scopes.len() > 1 {
        scopes.push("all".into());
    }
    let mut out = Vec::new();
    for scope in scopes {
        for (method, _) in METHODS {
            let (mut x, mut y, mut cens) = (Vec::new(), Vec::new(), Vec::new());
            for c in cells.iter().filter(|c| c.method == method && (scope == "all" || c.dataset == scope)) {
                for &(v, cz) in &c.observations {
                    x.push(c.depth as f64);
                    y.push(v);
                    cens.push(cz);
                }
            }
            let test = censored_kendall_permutation(&x, &y, &cens, &TrendOptions::default())?;
            out.push(DepthTrend { verdict: depth_verdict(test.as_ref()), scope: scope.clone(), method, test });
        }
    }
    Ok(out)
}

/// Writes `DIR/fig9/`: the curves of the first run (MNIST, first seed) and the depth trend
/// over every run at Fig 9's learning rate (all seeds, all datasets).
pub fn write_fig9(dir: &Path, cfg: &LrSweepConfig, records: &[LrRunRecord], command: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::ExperimentError::io(dir, e))?;
    let Some(record) = records.first() else {
        return Err(crate::ExperimentError::InvalidArgument("fig9: no finished run".into()));
    };
    let cells = layer_cells(cfg, records);
    let trends = depth_trends(cfg, &cells)?;
    write_json(
        &dir.join("config.json"),
        &serde_json::json!({ "figure": "fig9", "command": command, "sweep": cfg,
            "runs": records.iter().map(|r| &r.id).collect::<Vec<_>>() }),
    )?;
    let point = record.points.last();
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({ "figure": "fig9", "run": record.id, "end": record.end, "point": point,
            "layers": cells, "depth_trends": trends, "min_pairs": cfg.measure.min_pairs }),
    )?;
    write_csv(&dir.join("results.csv"), &tidy_rows(records))?;
    let Some(point) = point else {
        let md = summary::fig9(cfg, record, None, &cells, &trends, command);
        return write_atomic(&dir.join("summary.md"), md.as_bytes());
    };
    let curves = point_curves(point);
    let panels = KINDS
        .iter()
        .map(|&(kind, kname)| Panel {
            title: format!("{kname} stiffness, all validation pairs, window pooled"),
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
                "Fig 9: stiffness vs distance, {} (run {}, train loss < {})",
                cfg.preset, record.id, point.threshold
            ),
            panels,
            columns: 2,
        },
        &dir.join("fig9"),
    )?;
    let md = summary::fig9(cfg, record, Some(point), &cells, &trends, command);
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
