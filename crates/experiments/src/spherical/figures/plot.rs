//! The spherical figure's four panels (PNG + SVG).

use std::path::Path;

use stiff_analysis::Crossing;
use stiff_plot::{line_figure, LineFigure, Panel, Series};

use super::super::config::{SphericalConfig, FIGURE};
use super::super::model::{deg, DomainCell, METHODS};
use super::super::run::{distance_to_angle, SphRunRecord};
use crate::Result;

#[allow(clippy::too_many_arguments)]
pub(crate) fn draw_figure(
    dir: &Path,
    cfg: &SphericalConfig,
    records: &[SphRunRecord],
    spaces: &[String],
    degree_cells: &[DomainCell],
    lr_cells: &[DomainCell],
) -> Result<()> {
    // Panel 1: input-space sign stiffness vs angle, one run per degree (the first seed).
    let first_seed = cfg.seeds.first().copied().unwrap_or(0);
    let mut curve_series = Vec::new();
    for &l in &cfg.degrees {
        let Some(r) = records
            .iter()
            .find(|r| r.spec.data.degree == l && r.spec.optimizer.lr() == cfg.lr && r.spec.seed == first_seed)
        else {
            continue;
        };
        let Some(c) = r.measurement.as_ref().and_then(|m| m.curves.iter().find(|c| c.space == "input")) else {
            continue;
        };
        let label = if r.fitted() { format!("l = {l}") } else { format!("l = {l} (not fitted)") };
        let x: Vec<f64> = c.curve.centres.iter().map(|&d| deg(distance_to_angle(d))).collect();
        let y: Vec<f64> = c.curve.sign_mean.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
        let mut s = Series::new(label, x, y);
        if let Crossing::Found { distance } = c.sign_first_crossing {
            s = s.with_marker(deg(distance_to_angle(distance)), format!("{:.0}°", deg(distance_to_angle(distance))));
        }
        curve_series.push(s);
    }
    // Panel 2: domain angle vs pi/l (degrees on both axes), with references.
    let mut by_scale: Vec<&DomainCell> = degree_cells.iter().filter(|c| c.space == "input").collect();
    by_scale.sort_by(|a, b| a.characteristic_angle.total_cmp(&b.characteristic_angle));
    let mut scale_series = Vec::new();
    for (mname, _) in METHODS {
        let cs: Vec<&&DomainCell> = by_scale.iter().filter(|c| c.method == mname).collect();
        scale_series.push(
            Series::new(
                format!("input, {mname}"),
                cs.iter().map(|c| deg(c.characteristic_angle)).collect(),
                cs.iter().map(|c| c.angle.as_ref().map_or(f64::NAN, |m| deg(m.mean))).collect(),
            )
            .with_err(cs.iter().map(|c| c.angle.as_ref().and_then(|m| m.half_width).map_or(f64::NAN, deg)).collect()),
        );
    }
    let refs: Vec<&&DomainCell> = by_scale.iter().filter(|c| c.method == METHODS[0].0).collect();
    scale_series.push(Series::new(
        "theta = pi/l",
        refs.iter().map(|c| deg(c.characteristic_angle)).collect(),
        refs.iter().map(|c| deg(c.characteristic_angle)).collect(),
    ));
    scale_series.push(Series::new(
        "label agreement zero (data)",
        refs.iter().map(|c| deg(c.characteristic_angle)).collect(),
        refs.iter().map(|c| c.label_zero_angle.as_ref().map_or(f64::NAN, |m| deg(m.mean))).collect(),
    ));
    scale_series.push(Series::new(
        "first zero of P_l(cos theta)",
        refs.iter().map(|c| deg(c.characteristic_angle)).collect(),
        refs.iter().map(|c| c.target_zero_angle.map_or(f64::NAN, deg)).collect(),
    ));
    // Panel 3: domain distance vs degree per space (v1).
    let space_series = |cells: &[DomainCell], x: fn(&DomainCell) -> f64| -> Vec<Series> {
        spaces
            .iter()
            .map(|s| {
                let cs: Vec<&DomainCell> = cells.iter().filter(|c| &c.space == s && c.method == METHODS[0].0).collect();
                Series::new(
                    s.clone(),
                    cs.iter().map(|c| x(c)).collect(),
                    cs.iter().map(|c| c.distance.as_ref().map_or(f64::NAN, |m| m.mean)).collect(),
                )
                .with_err(
                    cs.iter().map(|c| c.distance.as_ref().and_then(|m| m.half_width).unwrap_or(f64::NAN)).collect(),
                )
            })
            .collect()
    };
    let panels = vec![
        Panel {
            title: format!("input-space sign stiffness vs angle (lr {}, seed {first_seed})", cfg.lr),
            x_label: "angle between inputs theta (degrees)".into(),
            y_label: "sign stiffness".into(),
            series: curve_series,
            hline: Some(0.0),
            ..Default::default()
        },
        Panel {
            title: "input-space stiff domain vs the target's length scale".into(),
            x_label: "pi / l (degrees)".into(),
            y_label: "stiff domain angle (degrees)".into(),
            series: scale_series,
            ..Default::default()
        },
        Panel {
            title: format!("stiff domain (v1) per space vs degree (lr {})", cfg.lr),
            x_label: "degree l".into(),
            y_label: "stiff domain size (distance 1 - cos)".into(),
            series: space_series(degree_cells, |c| c.degree as f64),
            ..Default::default()
        },
        Panel {
            title: format!("stiff domain (v1) per space vs learning rate (l = {})", cfg.lr_sweep_degree),
            x_label: format!("learning rate ({})", cfg.optimizer.name()),
            y_label: "stiff domain size (distance 1 - cos)".into(),
            log_x: true,
            series: space_series(lr_cells, |c| c.lr),
            ..Default::default()
        },
    ];
    let seeds_note = if cfg.seeds.len() > 1 {
        format!("mean of fitted seeds of {}, 95% t-intervals", cfg.seeds.len())
    } else {
        "1 seed".into()
    };
    line_figure(
        &LineFigure {
            title: format!(
                "Stiffness on spherical harmonics of degree l: MLP {} ({seeds_note}){}",
                cfg.hidden.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("-"),
                if cfg.quick { " [quick]" } else { "" }
            ),
            panels,
            columns: 2,
        },
        &dir.join(FIGURE),
    )?;
    Ok(())
}
