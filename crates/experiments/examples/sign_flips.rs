//! How often does f32 accumulation flip the sign of `K[i,j]` relative to f64, on trained nets?
//!
//! ```text
//! cargo run --release -p stiff-experiments --example sign_flips -- [--data-dir DIR] [--n 500]
//!     [--cnn-steps 300] [--skip-fc6] [--skip-cnn5]
//! ```
//! * `fc6` trained with SGD (lr 0.1, batch 32) on real MNIST (standardised per example) until the
//!   measured training loss is below 0.2; Gram on a class-balanced subset of N test images.
//! * `cnn5` trained with SGD (lr 0.05) for `--cnn-steps` steps on generated CIFAR-shaped data
//!   (`testdata::write_synthetic_cifar`: class-dependent plane waves plus noise, written to a
//!   temporary folder); Gram on N generated test images.
//!
//! The f32 Gram is the default (`gram` on the f32 model); the f64 one comes from an f64 copy of
//! the same weights and inputs (forward, backward and products all in f64), the oracle. For the
//! N(N-1)/2 pairs i < j it prints the number of sign flips (`sign(0) = 0`), the flip rate, the
//! smallest and largest `|cos|` (f64) among flipped pairs, the flip rate among pairs with
//! `|cos| < 1e-3`, and the largest f32 error in cosine units.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use stiff_data::{preprocess::Preprocess, sampling::balanced_subset, DatasetName};
use stiff_gradkernel::{gram, GramOptions};
use stiff_models::{InputShape, Model, ModelConfig, Preset};
use stiff_train::{LabelledData, OptimizerConfig, SinkError, Snapshot, TrainConfig, Trainer};

/// Pairs whose f64 cosine is below this are "near zero" for the restricted flip rate.
const NEAR_ZERO_COS: f64 = 1e-3;

fn sign(v: f64) -> i8 {
    if v > 0.0 {
        1
    } else if v < 0.0 {
        -1
    } else {
        0
    }
}

/// Trains `model` with SGD until the training loss is below `below` (if given) or `steps` steps.
fn train(model: Model, data: &LabelledData, lr: f64, steps: u64, below: Option<f64>) -> Result<Model> {
    let cfg = TrainConfig::default()
        .with_optimizer(OptimizerConfig::sgd(lr))
        .with_max_steps(steps)
        .with_eval_every(250)
        .with_thresholds(below.into_iter().collect())
        .with_overfit_patience(None);
    let mut sink = |_: &Snapshot<'_>| -> Result<(), SinkError> { Ok(()) };
    let mut trainer = Trainer::new(model, cfg)?;
    let report = trainer.run(data, None, &mut sink)?;
    let last = report.history.last().context("no evaluation recorded")?;
    eprintln!(
        "trained {} steps: status {:?}, training loss {:.4}, accuracy {:.4}",
        report.step, report.status, last.train_loss, last.train_acc
    );
    if let Some(b) = below {
        if last.train_loss >= b {
            bail!("training loss {:.4} did not fall below {b} in {steps} steps", last.train_loss);
        }
    }
    Ok(trainer.model()?.clone())
}

/// f32 Gram (default options) vs the Gram of an f64 copy of the model; prints the flip figures.
fn compare(label: &str, model: &Model, x: &Tensor, y: &Tensor) -> Result<()> {
    let opts = GramOptions::default().with_per_layer(false);
    let k32 = gram(model, x, y, &opts)?;
    let m64 = Model::new(model.config(), 0, DType::F64, &Device::Cpu)?;
    for (dst, src) in m64.vars().iter().zip(model.vars()) {
        dst.set(&src.as_tensor().to_dtype(DType::F64)?)?;
    }
    let k64 = gram(&m64, &x.to_dtype(DType::F64)?, y, &opts)?;
    let a = k32.k.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let b = k64.k.to_vec2::<f64>()?;
    let n = b.len();
    let (mut pairs, mut flips, mut near, mut near_flips) = (0u64, 0u64, 0u64, 0u64);
    let (mut min_cos, mut max_cos, mut max_err) = (f64::INFINITY, 0f64, 0f64);
    let mut zero_norm = 0;
    for i in 0..n {
        if b[i][i] <= 0.0 {
            zero_norm += 1;
        }
        for j in i + 1..n {
            let scale = (b[i][i] * b[j][j]).sqrt();
            let cos = if scale > 0.0 { b[i][j] / scale } else { 0.0 };
            if scale > 0.0 {
                max_err = max_err.max((a[i][j] - b[i][j]).abs() / scale);
            }
            let flipped = sign(a[i][j]) != sign(b[i][j]);
            pairs += 1;
            if cos.abs() < NEAR_ZERO_COS {
                near += 1;
                near_flips += u64::from(flipped);
            }
            if flipped {
                flips += 1;
                min_cos = min_cos.min(cos.abs());
                max_cos = max_cos.max(cos.abs());
            }
        }
    }
    let rate = |f: u64, p: u64| if p > 0 { f as f64 / p as f64 } else { f64::NAN };
    println!(
        "{label}: n={n} pairs={pairs} flips={flips} flip_rate={:.3e} min_abs_cos_flipped={} max_abs_cos_flipped={} \
         pairs_abs_cos_lt_1e-3={near} flips_there={near_flips} flip_rate_abs_cos_lt_1e-3={:.3e} \
         max_f32_err_cos_units={max_err:.3e} zero_norm_examples={zero_norm} f32_s={:.2} f64_s={:.2}",
        rate(flips, pairs),
        if flips > 0 { format!("{min_cos:.3e}") } else { "none".into() },
        if flips > 0 { format!("{max_cos:.3e}") } else { "none".into() },
        rate(near_flips, near),
        k32.seconds,
        k64.seconds,
    );
    Ok(())
}

/// A class-balanced subset of `n` examples of `(images, labels)` as `(x, y)` tensors.
fn subset(images: &Tensor, labels: &[u32], classes: usize, n: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let idx = balanced_subset(labels, classes, n, seed)?;
    let ids = Tensor::from_vec(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), idx.len(), &Device::Cpu)?;
    let y: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
    Ok((images.index_select(&ids, 0)?, Tensor::from_vec(y, idx.len(), &Device::Cpu)?))
}

fn main() -> Result<()> {
    let mut data_dir: Option<PathBuf> = None;
    let mut n = 500usize;
    let mut cnn_steps = 300u64;
    let (mut fc6, mut cnn5) = (true, true);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--data-dir" => data_dir = Some(PathBuf::from(val()?)),
            "--n" => n = val()?.parse()?,
            "--cnn-steps" => cnn_steps = val()?.parse()?,
            "--skip-fc6" => fc6 = false,
            "--skip-cnn5" => cnn5 = false,
            other => bail!("unknown argument `{other}`"),
        }
    }
    let pre = Preprocess::default();
    if fc6 {
        let ds = stiff_data::load(DatasetName::Mnist, data_dir.as_deref())?;
        let train_set = LabelledData::new(pre.apply(&ds.train.images)?, ds.train.labels.clone())?;
        let cfg = ModelConfig::preset(Preset::Fc6, InputShape::new(1, 28, 28), 10);
        let model = train(Model::new(&cfg, 0, DType::F32, &Device::Cpu)?, &train_set, 0.1, 20_000, Some(0.2))?;
        let (x, y) = subset(&pre.apply(&ds.test.images)?, &ds.test.labels, 10, n, 0)?;
        compare("fc6 MNIST (trained, loss < 0.2)", &model, &x, &y)?;
    }
    if cnn5 {
        let dir = tempfile::tempdir()?;
        let per_class = n.div_ceil(10);
        stiff_experiments::testdata::write_synthetic_cifar(dir.path(), 200, per_class, 1, 1, 7)?;
        let ds = stiff_data::load_with(DatasetName::Cifar10, Some(dir.path()), &stiff_data::LoadOptions::lenient())?;
        let train_set = LabelledData::new(pre.apply(&ds.train.images)?, ds.train.labels.clone())?;
        let cfg = ModelConfig::preset(Preset::Cnn5, InputShape::new(3, 32, 32), 10);
        let model = train(Model::new(&cfg, 0, DType::F32, &Device::Cpu)?, &train_set, 0.05, cnn_steps, None)?;
        let (x, y) = subset(&pre.apply(&ds.test.images)?, &ds.test.labels, 10, n, 0)?;
        compare(&format!("cnn5 generated CIFAR ({cnn_steps} SGD steps)"), &model, &x, &y)?;
    }
    Ok(())
}
