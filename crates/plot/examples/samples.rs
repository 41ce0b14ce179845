//! Writes sample figures (synthetic data shaped like the paper's) for a person to look at.
//!
//! `cargo run -p stiff-plot --example samples [OUT_DIR]` (default `target/plot-samples/`);
//! prints each file and how long it took.

use std::path::PathBuf;
use std::time::Instant;

use stiff_plot::{heatmap_figure, line_figure, Heatmap, HeatmapFigure, LineFigure, Panel, SecondaryAxis, Series};

/// Deterministic stand-in for noise in [-1, 1] (no RNG needed for a picture).
fn wiggle(i: usize, k: f64) -> f64 {
    ((i as f64 * 12.9898 + k * 78.233).sin() * 43_758.545).fract() * 2.0 - 1.0
}

fn fig2() -> LineFigure {
    let x: Vec<f64> = (0..120).map(|i| i as f64 * 5_000.0).collect();
    let train: Vec<f64> = x.iter().map(|v| 2.3 * (-v / 80_000.0).exp() + 0.02).collect();
    let val: Vec<f64> = x.iter().map(|v| 2.3 * (-v / 80_000.0).exp() + 0.1 + (v / 600_000.0).powi(2) * 0.6).collect();
    let within: Vec<f64> =
        x.iter().map(|v| 0.35 + 0.3 * (1.0 - (-v / 50_000.0).exp()) - 0.4 * (v / 600_000.0).powi(2)).collect();
    let between: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, v)| 0.25 * (1.0 - (-v / 60_000.0).exp()) - 0.3 * (v / 600_000.0).powi(2) + 0.01 * wiggle(i, 1.0))
        .collect();
    LineFigure {
        title: "Fig 2 (sample): FC on MNIST".into(),
        columns: 1,
        panels: vec![Panel {
            title: "Loss and class stiffness during training".into(),
            x_label: "images seen".into(),
            y_label: "cross-entropy loss".into(),
            series: vec![
                Series::new("train loss", x.clone(), train),
                Series::new("val loss", x.clone(), val).with_marker(290_000.0, "onset of overfitting"),
            ],
            secondary: Some(SecondaryAxis {
                label: "sign stiffness".into(),
                series: vec![Series::new("within-class", x.clone(), within), Series::new("between-class", x, between)],
                y_range: Some((-0.2, 1.0)),
                hline: Some(0.0),
            }),
            ..Default::default()
        }],
    }
}

fn fig8() -> LineFigure {
    let lrs = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0];
    let mut panels = Vec::new();
    for ds in ["MNIST", "Fashion-MNIST"] {
        for kind in ["sign", "cosine"] {
            let mut series = Vec::new();
            for (k, loss) in [0.5, 0.2, 0.05].into_iter().enumerate() {
                let y: Vec<f64> = lrs
                    .iter()
                    .enumerate()
                    .map(|(i, lr)| {
                        if ds == "Fashion-MNIST" && i == 6 && k == 2 {
                            return f64::NAN; // diverged run: skipped, not drawn
                        }
                        0.02 + 0.05 * (lr as &f64).log10().abs() * (1.0 - loss) - 0.03 * k as f64
                            + 0.01 * wiggle(i, k as f64)
                    })
                    .collect();
                let e = vec![0.012; lrs.len()];
                series.push(Series::new(format!("train loss {loss}"), lrs.to_vec(), y).with_err(e));
            }
            series.push(Series::new("no runs yet", vec![], vec![]));
            panels.push(Panel {
                title: format!("{ds}, {kind} stiffness"),
                x_label: "learning rate".into(),
                y_label: "between-class stiffness".into(),
                log_x: true,
                series,
                hline: Some(0.0),
                ..Default::default()
            });
        }
    }
    LineFigure { title: "Fig 8 (sample): between-class stiffness vs learning rate".into(), panels, columns: 2 }
}

fn fig9() -> LineFigure {
    let d: Vec<f64> = (0..60).map(|i| i as f64 / 59.0 * 2.0).collect();
    let mut series = Vec::new();
    for (k, name) in ["input", "layer 1", "layer 2", "layer 3"].iter().enumerate() {
        let xi = 1.2 - 0.25 * k as f64;
        let y: Vec<f64> =
            d.iter().enumerate().map(|(i, x)| 0.8 * (xi - x) / (1.0 + x) + 0.02 * wiggle(i, k as f64)).collect();
        let e: Vec<f64> = d.iter().map(|x| 0.03 + 0.04 * x).collect();
        series.push(Series::new(*name, d.clone(), y).with_err(e).with_marker(xi, format!("xi = {xi:.2}")));
    }
    LineFigure {
        title: String::new(),
        columns: 1,
        panels: vec![Panel {
            title: "Fig 9 (sample): stiffness vs dot-product distance".into(),
            x_label: "dot-product distance 1 - cos".into(),
            y_label: "sign stiffness".into(),
            series,
            hline: Some(0.0),
            y_range: Some((-1.0, 1.0)),
            ..Default::default()
        }],
    }
}

fn class_matrix(n: usize, stage: f64, block: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|a| {
            (0..n)
                .map(|b| {
                    let base = if a == b {
                        0.3 + 0.5 * stage
                    } else if a / block == b / block {
                        0.35 * stage
                    } else {
                        0.12 * stage - 0.05
                    };
                    (base + 0.05 * wiggle(a * n + b, stage)).clamp(-1.0, 1.0)
                })
                .collect()
        })
        .collect()
}

fn fig3() -> HeatmapFigure {
    let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let stages = [("initialisation", 0.0), ("early", 0.5), ("late", 1.0), ("overfit", 0.3)];
    let panels = stages
        .iter()
        .map(|(name, s)| {
            let mut values = class_matrix(10, *s, 1);
            if *name == "overfit" {
                values[3][7] = f64::NAN; // a class pair with no data
            }
            Heatmap {
                title: name.to_string(),
                values,
                row_labels: names.clone(),
                col_labels: names.clone(),
                range: (-1.0, 1.0),
                group_boundaries: vec![],
            }
        })
        .collect();
    HeatmapFigure { title: "Fig 3 (sample): class stiffness, FC on MNIST".into(), panels, columns: 2 }
}

fn fig7() -> HeatmapFigure {
    let labels: Vec<String> = (0..100)
        .map(|i| match i % 5 {
            0 => format!("class_{i}_aquarium_fish"),
            _ => format!("class {i}"),
        })
        .collect();
    HeatmapFigure {
        title: String::new(),
        columns: 1,
        panels: vec![Heatmap {
            title: "Fig 7 (sample): CIFAR-100, early training".into(),
            values: class_matrix(100, 0.8, 5),
            row_labels: labels.clone(),
            col_labels: labels,
            range: (-0.5, 0.5),
            group_boundaries: (1..20).map(|k| k * 5).collect(),
        }],
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/plot-samples"));
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    let t = Instant::now();
    let lines = [("fig2", fig2()), ("fig8", fig8()), ("fig9", fig9())];
    for (name, fig) in lines {
        let t0 = Instant::now();
        let files = line_figure(&fig, &out.join(name))?;
        println!("{:>7.1} ms  {}", t0.elapsed().as_secs_f64() * 1e3, files[0].display());
    }
    for (name, fig) in [("fig3", fig3()), ("fig7", fig7())] {
        let t0 = Instant::now();
        let files = heatmap_figure(&fig, &out.join(name))?;
        println!("{:>7.1} ms  {}", t0.elapsed().as_secs_f64() * 1e3, files[0].display());
    }
    println!("total {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
