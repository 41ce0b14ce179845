//! Stiff domain sizes of the spherical sweep per cell (degree or learning rate, space, method),
//! the power-law fit of domain angle against pi/l, and the learning-rate trend.

use std::f64::consts::PI;

use super::super::model::{DomainCell, LengthScaleFit, Pick};
use super::super::run::{distance_to_angle, SphEnd, SphRunRecord};
use crate::measure::crossing_distance;
use crate::stats::{seed_mean, slope, spearman};

pub(crate) fn domain_cell(
    runs: &[&SphRunRecord],
    space: &str,
    method: &str,
    pick: Pick,
    degree: usize,
    lr: f64,
    dim: usize,
) -> DomainCell {
    let size = |r: &SphRunRecord| {
        r.measurement
            .as_ref()
            .and_then(|m| m.curves.iter().find(|c| c.space == space))
            .and_then(|c| crossing_distance(pick(c)))
    };
    let fitted: Vec<&&SphRunRecord> = runs.iter().filter(|r| r.fitted()).collect();
    let found: Vec<f64> = fitted.iter().filter_map(|r| size(r)).collect();
    DomainCell {
        degree,
        lr,
        space: space.into(),
        method: method.into(),
        characteristic_angle: PI / degree as f64,
        target_zero_angle: stiff_data::synthetic::profile_first_zero(dim, degree).ok().flatten(),
        distance: seed_mean(&found),
        angle: seed_mean(&found.iter().map(|&d| distance_to_angle(d)).collect::<Vec<_>>()),
        fitted_runs: fitted.len(),
        not_fitted_runs: runs.iter().filter(|r| matches!(r.end, SphEnd::NotFitted { .. })).count(),
        diverged_runs: runs.iter().filter(|r| matches!(r.end, SphEnd::Diverged { .. })).count(),
        no_crossing: fitted.len() - found.len(),
        not_fitted_distances: runs
            .iter()
            .filter(|r| matches!(r.end, SphEnd::NotFitted { .. }))
            .filter_map(|r| size(r))
            .collect(),
        max_curve_gap: fitted
            .iter()
            .filter_map(|r| curve_gap(r))
            .fold(None, |acc: Option<f64>, g| Some(acc.map_or(g, |a| a.max(g)))),
        label_zero_angle: seed_mean(
            &fitted
                .iter()
                .filter_map(|r| crossing_distance(&r.label_crossing))
                .map(distance_to_angle)
                .collect::<Vec<_>>(),
        ),
    }
}

/// Largest per-bin gap between the input-space sign stiffness curve and the label-agreement
/// curve, over the bins up to the later of their two first crossings (the bins that decide the
/// domain size).
fn curve_gap(r: &SphRunRecord) -> Option<f64> {
    let c = r.measurement.as_ref()?.curves.iter().find(|c| c.space == "input")?;
    if c.curve.bins != r.label_curve.bins {
        return None;
    }
    let reach = crossing_distance(&c.sign_first_crossing)?.max(crossing_distance(&r.label_crossing)?);
    c.curve
        .sign_mean
        .iter()
        .zip(&r.label_curve.sign_mean)
        .zip(&c.curve.centres)
        .filter(|(_, &centre)| centre <= reach + c.curve.bins.width())
        .map(|(pair, _)| pair)
        .filter_map(|(a, b)| Some((a.as_ref()? - b.as_ref()?).abs()))
        .fold(None, |acc: Option<f64>, g| Some(acc.map_or(g, |a| a.max(g))))
}

pub(crate) fn length_scale_fit(cells: &[&DomainCell]) -> Option<LengthScaleFit> {
    let first = cells.first()?;
    let pts: Vec<&&DomainCell> = cells.iter().filter(|c| c.angle.is_some()).collect();
    let degrees: Vec<usize> = pts.iter().map(|c| c.degree).collect();
    let angles: Vec<f64> = pts.iter().map(|c| c.angle.as_ref().map_or(f64::NAN, |m| m.mean)).collect();
    let lx: Vec<f64> = pts.iter().map(|c| c.characteristic_angle.ln()).collect();
    let ly: Vec<f64> = angles.iter().map(|a| a.ln()).collect();
    let exponent = slope(&lx, &ly).filter(|b| b.is_finite());
    let (prefactor, r_squared) = match exponent {
        Some(b) => {
            let n = lx.len() as f64;
            let (mx, my) = (lx.iter().sum::<f64>() / n, ly.iter().sum::<f64>() / n);
            let a = my - b * mx;
            let ss_res: f64 = lx.iter().zip(&ly).map(|(x, y)| (y - a - b * x).powi(2)).sum();
            let ss_tot: f64 = ly.iter().map(|y| (y - my).powi(2)).sum();
            (Some(a.exp()), (ss_tot > 0.0).then(|| 1.0 - ss_res / ss_tot))
        }
        None => (None, None),
    };
    let dl: Vec<f64> = degrees.iter().map(|&l| l as f64).collect();
    let ref_pts: Vec<(f64, f64)> =
        pts.iter().filter_map(|c| c.target_zero_angle.map(|z| (c.characteristic_angle.ln(), z.ln()))).collect();
    let (rx, ry): (Vec<f64>, Vec<f64>) = ref_pts.into_iter().unzip();
    Some(LengthScaleFit {
        reference_exponent: slope(&rx, &ry),
        ratio_to_label_zero: pts
            .iter()
            .zip(&angles)
            .map(|(c, a)| c.label_zero_angle.as_ref().map_or(f64::NAN, |z| a / z.mean))
            .collect(),
        space: first.space.clone(),
        method: first.method.clone(),
        spearman_degree_angle: spearman(&dl, &angles),
        ratio_to_pi_over_l: pts.iter().zip(&angles).map(|(c, a)| a / c.characteristic_angle).collect(),
        ratio_to_target_zero: pts
            .iter()
            .zip(&angles)
            .map(|(c, a)| c.target_zero_angle.map_or(f64::NAN, |z| a / z))
            .collect(),
        degrees,
        angles,
        exponent,
        prefactor,
        r_squared,
    })
}
