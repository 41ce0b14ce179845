//! The same net as a preset and as a PyTorch-style spec (`Model::to_spec_model`: an
//! `nn.Sequential` with `state_dict` keys), same weights, same inputs: time and peak RSS of
//! `gram` on one of them. Run each in its own process so peak RSS is its own:
//!
//! `target/release/examples/preset_vs_spec --preset cnn5|fc6 --which preset|spec [--n 500]
//!  [--reps 3] [--dump DIR]`
//!
//! * cnn5: CIFAR-shaped `3x32x32` inputs, the left half of every image one constant (tied
//!   max-pool windows, zero windows after ReLU); fc6: MNIST-shaped, the same flat halves.
//! * f32, no per-layer Grams, default 2 GiB budget, threads from `RAYON_NUM_THREADS`.
//! * `--dump DIR`: `spec.json`, `weights.safetensors` (the spec's `state_dict` keys),
//!   `inputs.safetensors` (`x`, `y`) and `k_<which>.safetensors` for the peers
//!   (`benches/peers/torch_spec_gram.py`) and for comparing the two Grams.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use candle::{DType, Device, Tensor};
use stiff_gradkernel::{gram, GramOptions, GramResult, LayerForm, Network};
use stiff_models::{InputShape, Model, ModelConfig, Preset};

mod bench_util;
use bench_util::{cpu_seconds, inputs, vm_hwm_mib};

fn save(path: PathBuf, t: HashMap<String, Tensor>, meta: Option<HashMap<String, String>>) -> anyhow::Result<()> {
    let bytes = safetensors::tensor::serialize(t, meta)?;
    stiff_fs::write_atomic(&path, &bytes).with_context(|| format!("writing {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let (mut preset, mut which, mut n, mut reps, mut dump) = (Preset::Cnn5, String::from("spec"), 500, 3, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--preset" => preset = val()?.parse()?,
            "--which" => which = val()?,
            "--n" => n = val()?.parse().context("--n")?,
            "--reps" => reps = val()?.parse::<usize>().context("--reps")?.max(1),
            "--dump" => dump = Some(PathBuf::from(val()?)),
            other => bail!("unknown argument {other:?} (see the doc comment of preset_vs_spec.rs)"),
        }
    }
    let shape = match preset {
        Preset::Fc6 | Preset::Fc4 => InputShape::new(1, 28, 28),
        _ => InputShape::new(3, 32, 32),
    };
    let model = Model::new(&ModelConfig::preset(preset, shape, 10), 0, DType::F32, &Device::Cpu)?;
    let spec = model.to_spec_model()?;
    let x = inputs(n, shape, 1)?;
    let y = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, &Device::Cpu)?;
    let opts = GramOptions::default().with_per_layer(false);
    let run = |net: &dyn Network| gram(&net, &x, &y, &opts);
    let net: &dyn Network = match which.as_str() {
        "preset" => &model,
        "spec" => &spec,
        other => bail!("--which must be preset or spec, got {other:?}"),
    };
    let (mut times, mut best): (Vec<f64>, Option<(GramResult, f64)>) = (Vec::new(), None);
    for _ in 0..reps {
        let cpu0 = cpu_seconds();
        let r = run(net)?;
        let cpu = cpu_seconds() - cpu0;
        if times.iter().all(|&t| r.seconds < t) {
            best = Some((r.clone(), cpu));
        }
        times.push(r.seconds);
    }
    let (r, cpu) = best.expect("reps >= 1");
    times.sort_by(f64::total_cmp);
    let routes: Vec<&str> = r
        .routes
        .iter()
        .map(|u| match u.form {
            LayerForm::DenseFactorised => "dense_factorised",
            LayerForm::ConvTiles => "conv_tiles",
            LayerForm::ConvPixelGhost => "conv_pixel_ghost",
            LayerForm::Ghost => "ghost",
            LayerForm::Materialised => "materialised",
            LayerForm::Shared => "shared",
            LayerForm::Fallback => "fallback",
        })
        .collect();
    println!(
        "preset_vs_spec preset={preset} which={which} n={n} threads={} best_s={:.4} median_s={:.4} best_rep_cpu_s={cpu:.2} \
         peak_rss_mib={:.0} routes={}",
        rayon::current_num_threads(),
        times[0],
        times[times.len() / 2],
        vm_hwm_mib(),
        routes.join(",")
    );
    if let Some(dir) = dump {
        std::fs::create_dir_all(&dir)?;
        let (spec_json, _) = model.config().to_spec()?;
        stiff_fs::write_atomic(&dir.join("spec.json"), serde_json::to_string_pretty(&spec_json)?.as_bytes())?;
        save(dir.join("weights.safetensors"), spec.named_tensors().into_iter().collect(), None)?;
        let t = HashMap::from([("x".to_string(), x.clone()), ("y".to_string(), y.to_dtype(DType::I64)?)]);
        save(dir.join("inputs.safetensors"), t, None)?;
        save(dir.join(format!("k_{which}.safetensors")), HashMap::from([("k".to_string(), r.k.clone())]), None)?;
    }
    Ok(())
}
