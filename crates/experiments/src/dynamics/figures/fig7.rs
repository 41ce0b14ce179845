//! Fig 7: the CIFAR-100 class stiffness matrix early in training, ordered by super-class, with
//! its super-class block score and permutation p-value.

use std::path::Path;

use stiff_analysis::{superclass_block_score, BlockScore, ClassMatrix, StiffnessKind};
use stiff_plot::{heatmap_figure, Heatmap, HeatmapFigure};

use super::super::config::DynConfig;
use super::super::model::Traj;
use super::super::run::DynRunRecord;
use super::super::summary;
use super::{base_row, matrix_rows, series_rows, symmetric_range, write_config, KINDS};
use crate::measure::Measurement;
use crate::store::{write_atomic, write_json};
use crate::tidy::{write_csv, Row};
use crate::{ExperimentError, Result};

/// A class matrix from stored cells (for the block score).
fn class_matrix(m: &[Vec<Option<f64>>]) -> ClassMatrix {
    let k = m.len();
    let mut values = ndarray::Array2::<f64>::zeros((k, k));
    let mut counts = ndarray::Array2::<u64>::zeros((k, k));
    let (mut ws, mut wn, mut bs, mut bn) = (0.0, 0usize, 0.0, 0usize);
    for (a, row) in m.iter().enumerate() {
        for (b, v) in row.iter().enumerate() {
            if let Some(v) = v {
                values[[a, b]] = *v;
                counts[[a, b]] = 1;
                if a == b {
                    ws += v;
                    wn += 1;
                } else {
                    bs += v;
                    bn += 1;
                }
            }
        }
    }
    ClassMatrix {
        values,
        counts,
        within: ws / wn.max(1) as f64,
        between: bs / bn.max(1) as f64,
        within_cells: wn,
        between_cells: bn,
    }
}

/// Fine classes sorted by (super-class, fine index): the order of Fig 7's axes.
pub fn superclass_order(fine_to_coarse: &[u8]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..fine_to_coarse.len()).collect();
    idx.sort_by_key(|&i| (fine_to_coarse[i], i));
    idx
}

/// Writes `DIR/fig7/`: the CIFAR-100 matrix at the focus step ordered by super-class, block scores.
pub fn write_fig7(dir: &Path, cfg: &DynConfig, records: &[DynRunRecord], command: &str) -> Result<()> {
    write_config(dir, cfg, command)?;
    let f2c = stiff_data::classes::CIFAR100_FINE_TO_COARSE;
    let coarse: Vec<u32> = f2c.iter().map(|&c| u32::from(c)).collect();
    let names = cfg.class_names();
    let coarse_names: Vec<String> =
        stiff_data::classes::CIFAR100_COARSE_CLASSES.iter().map(|s| s.to_string()).collect();
    let order = superclass_order(&f2c);
    let r = &records[0];
    let focus = cfg.focus_step.unwrap_or(cfg.train.max_steps);
    let p = r
        .nearest_point(focus)
        .ok_or_else(|| ExperimentError::InvalidArgument(format!("fig7: run {} has no measured step", r.id)))?;
    let block = |m: &Measurement, kind: StiffnessKind| -> Result<BlockScore> {
        let cells = if kind == StiffnessKind::Sign { &m.class_sign } else { &m.class_cosine };
        Ok(superclass_block_score(&class_matrix(cells), &coarse, cfg.block_permutations, cfg.block_seed)?)
    };
    let focus_scores: Vec<(String, BlockScore)> =
        KINDS.iter().map(|&(k, n)| Ok((n.to_string(), block(&p.measurement, k)?))).collect::<Result<_>>()?;
    // Scores at every measured step after init, fewer permutations (a trajectory, not the test).
    let mut traj = Vec::new();
    for q in &r.points {
        let (s, c) = (block(&q.measurement, StiffnessKind::Sign)?, block(&q.measurement, StiffnessKind::Cosine)?);
        traj.push(Traj {
            step: q.step,
            images_seen: q.images_seen,
            train_loss: q.train_loss,
            sign: s.observed,
            sign_p: s.p_value,
            cosine: c.observed,
            cosine_p: c.p_value,
        });
    }
    let mut rows: Vec<Row> = records.iter().flat_map(series_rows).collect();
    rows.extend(matrix_rows(r, p, "focus", &names));
    for (kname, b) in &focus_scores {
        let base = Row { note: format!("step={}", p.step), ..base_row(r) };
        rows.push(Row { metric: format!("superclass_block_score_{kname}"), value: Some(b.observed), ..base.clone() });
        rows.push(Row { metric: format!("superclass_block_p_value_{kname}"), value: Some(b.p_value), ..base.clone() });
        rows.push(Row {
            metric: format!("same_superclass_mean_{kname}_stiffness"),
            value: Some(b.same_super_mean),
            ..base.clone()
        });
        rows.push(Row {
            metric: format!("cross_superclass_mean_{kname}_stiffness"),
            value: Some(b.cross_super_mean),
            ..base
        });
    }
    write_csv(&dir.join("results.csv"), &rows)?;
    write_json(
        &dir.join("results.json"),
        &serde_json::json!({ "figure": "fig7", "run": r.id, "end": r.end, "focus_step": p.step,
            "train_loss": p.train_loss, "val_loss": p.val_loss, "val_acc": p.val_acc,
            "sign": p.measurement.sign, "cosine": p.measurement.cosine,
            "block_scores": focus_scores.iter().map(|(k, b)| serde_json::json!({"kind": k, "score": b})).collect::<Vec<_>>(),
            "trajectory": traj, "order": order, "class_sign": p.measurement.class_sign, "class_cosine": p.measurement.class_cosine }),
    )?;

    let reorder = |m: &[Vec<Option<f64>>]| -> Vec<Vec<f64>> {
        order.iter().map(|&a| order.iter().map(|&b| m[a][b].unwrap_or(f64::NAN)).collect()).collect()
    };
    let labels: Vec<String> = order.iter().map(|&i| names[i].clone()).collect();
    let bounds: Vec<usize> = (1..coarse_names.len()).map(|g| g * order.len() / coarse_names.len()).collect();
    let panels = KINDS
        .iter()
        .zip(&focus_scores)
        .map(|(&(kind, kname), (_, b))| {
            let values = reorder(if kind == StiffnessKind::Sign {
                &p.measurement.class_sign
            } else {
                &p.measurement.class_cosine
            });
            // Diagonal cells (self-class) dominate the scale; the range follows the off-diagonal.
            let off: Vec<Vec<f64>> = values
                .iter()
                .enumerate()
                .map(|(i, row)| row.iter().enumerate().map(|(j, v)| if i == j { f64::NAN } else { *v }).collect())
                .collect();
            Heatmap {
                title: format!("{kname}: block score {:.4}, p = {:.3}", b.observed, b.p_value),
                range: symmetric_range(&[off]),
                values,
                row_labels: labels.clone(),
                col_labels: labels.clone(),
                group_boundaries: bounds.clone(),
            }
        })
        .collect();
    heatmap_figure(
        &HeatmapFigure {
            title: format!(
                "Fig 7: CIFAR-100 class stiffness at step {} ({} , run {}), ordered by super-class{}",
                p.step,
                cfg.preset,
                r.id,
                if cfg.quick { " [quick]" } else { "" }
            ),
            panels,
            columns: 2,
        },
        &dir.join("fig7"),
    )?;

    let md = summary::fig7(cfg, records, &focus_scores, p, focus, &traj, command);
    write_atomic(&dir.join("summary.md"), md.as_bytes())
}
