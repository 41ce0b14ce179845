//! Benchmark / check: the Gram of an ONNX graph on given inputs, f32 (or f64), best of `reps`,
//! with peak RSS, CPU seconds and the route of every layer; optionally dumps `ours_gram.safetensors`
//! for the peer comparison (`benches/peers/run-onnx-gram.sh`).
//!
//! `onnx_gram --onnx M.onnx --inputs X.safetensors [--reps R] [--dump DIR] [--budget-mb B] [--f64]
//! [--compare GRAM.safetensors]` (`--compare`: the largest difference from a reference `gram`, in
//! cosine units `|k_ij - r_ij| / sqrt(r_ii r_jj)`)

#[path = "../../gradkernel/examples/bench_util/mod.rs"]
#[allow(dead_code)]
mod bench_util;

use std::path::PathBuf;
use std::time::Instant;

use candle::{DType, Device};
use stiff_gradkernel::{gram, GramOptions};
use stiff_onnx::{OnnxNet, OnnxOptions};

fn main() -> anyhow::Result<()> {
    // candle splits large elementwise ops over its own pool of spinning threads; on a loaded
    // machine the main thread's spin-waits cost more CPU than the split saves (resnet18, N = 64:
    // 2.3 vs 1.2 CPU s). Gemms and convolutions still use RAYON_NUM_THREADS. Set before any
    // candle call (the pool starts on first use); an explicit CANDLE_NUM_THREADS wins.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    let onnx = PathBuf::from(get("--onnx").ok_or_else(|| anyhow::anyhow!("--onnx FILE"))?);
    let inputs = PathBuf::from(get("--inputs").ok_or_else(|| anyhow::anyhow!("--inputs FILE"))?);
    let reps: usize = get("--reps").map(|s| s.parse()).transpose()?.unwrap_or(1);
    let f64 = args.iter().any(|a| a == "--f64");
    let dtype = if f64 { DType::F64 } else { DType::F32 };
    let t0 = Instant::now();
    let net = OnnxNet::load(&onnx, &OnnxOptions { dtype, ..Default::default() })?;
    let load_s = t0.elapsed().as_secs_f64();
    let t = candle::safetensors::load(&inputs, &Device::Cpu)?;
    let x = t.get("x").ok_or_else(|| anyhow::anyhow!("no `x` in {}", inputs.display()))?.to_dtype(dtype)?;
    let y = t.get("y").ok_or_else(|| anyhow::anyhow!("no `y` in {}", inputs.display()))?.to_dtype(DType::U32)?;
    let mut opts = GramOptions::default();
    if let Some(b) = get("--budget-mb") {
        opts.memory_budget_bytes = b.parse::<usize>()? << 20;
    }
    let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
    let mut last = None;
    for rep in 0..reps.max(1) {
        let (w, c) = (Instant::now(), bench_util::cpu_seconds());
        let g = gram(&net, &x, &y, &opts)?;
        let (ws, cs) = (w.elapsed().as_secs_f64(), bench_util::cpu_seconds() - c);
        println!("  rep {rep}: {ws:.2} s wall, {cs:.2} CPU s");
        best = best.min(ws);
        best_cpu = best_cpu.min(cs);
        last = Some(g);
    }
    let g = last.expect("one repetition");
    println!(
        "ours: {} N={} params={} load {load_s:.2}s gram best {best:.2}s wall, {best_cpu:.2} CPU s, peak RSS {:.0} MiB \
         (RAYON_NUM_THREADS={}, CANDLE_NUM_THREADS={})",
        onnx.display(),
        x.dim(0)?,
        net.parameter_info().iter().map(|p| p.shape.iter().product::<usize>()).sum::<usize>(),
        bench_util::vm_hwm_mib(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "-".into()),
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "-".into()),
    );
    for r in &g.routes {
        println!("  route {:<28} {:?} {:?}", r.name, r.form, r.params);
    }
    if let Some(f) = get("--compare") {
        let r = candle::safetensors::load(&f, &Device::Cpu)?;
        let r =
            r.get("gram").ok_or_else(|| anyhow::anyhow!("no `gram` in {f}"))?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let k = g.k.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        anyhow::ensure!(r.len() == k.len(), "{f}: {} rows, ours {}", r.len(), k.len());
        let mut worst = 0f64;
        for i in 0..k.len() {
            for j in 0..k.len() {
                worst = worst.max((k[i][j] - r[i][j]).abs() / (r[i][i] * r[j][j]).sqrt());
            }
        }
        println!("max difference from {f}: {worst:.2e} cosine units");
    }
    if let Some(d) = get("--dump") {
        let out = PathBuf::from(d).join("ours_gram.safetensors");
        candle::safetensors::save(&std::collections::HashMap::from([("gram".to_string(), g.k.clone())]), &out)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
