//! Training loop: fast path vs autograd oracle, determinism, exact resume, snapshots, stop rules,
//! divergence, checkpoints.

use std::cell::RefCell;

use candle::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_models::{ArchSpec, InputShape, Model, ModelConfig};
use stiff_train::fast_mlp::FastMlp;
use stiff_train::{
    epoch_order, load_checkpoint, load_model, AutogradStep, Backend, LabelledData, NoSnapshots, OptimizerConfig,
    Progress, RunStatus, SinkError, Snapshot, SnapshotReason, StopReason, TrainConfig, TrainError, Trainer,
};

const SHAPE: InputShape = InputShape { channels: 1, height: 8, width: 8 };
const CLASSES: usize = 5;

fn mlp_config(hidden: &[usize]) -> ModelConfig {
    ModelConfig::new(ArchSpec::Mlp { hidden: hidden.to_vec() }, SHAPE, CLASSES)
}

/// Gaussian-ish clusters around a random centre per class: learnable, but not instantly.
fn clusters(n: usize, seed: u64, noise: f32) -> LabelledData {
    let mut rng = ChaCha8Rng::seed_from_u64(1000);
    let d = SHAPE.numel();
    let centres: Vec<Vec<f32>> =
        (0..CLASSES).map(|_| (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.random_range(0..CLASSES);
        y.push(c as u32);
        x.extend(centres[c].iter().map(|&m| m + noise * rng.random_range(-1.0f32..1.0)));
    }
    LabelledData::new(Tensor::from_vec(x, (n, 1, 8, 8), &Device::Cpu).unwrap(), y).unwrap()
}

fn params(model: &Model) -> Vec<Vec<f32>> {
    model.vars().iter().map(|v| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn quiet(cfg: TrainConfig) -> TrainConfig {
    cfg.with_overfit_patience(None)
}

// ---------------------------------------------------------------------------------------------
// Fast path vs the candle-autograd oracle.

/// f32 agreement of the fast step with the autograd step after a few steps. Both compute the same
/// arithmetic in a different order (gemm blocking, fused SGD update), so differences are rounding:
/// observed 1.5e-8 after 10 steps; the bound leaves about two orders of magnitude.
const FAST_VS_AUTOGRAD_ABS: f32 = 1e-6;
/// Mini-batch losses from the two paths (f32 softmax in different order).
const LOSS_ABS: f64 = 1e-5;

fn compare_fast_autograd(opt: OptimizerConfig, hidden: &[usize], steps: usize) {
    let model = Model::new(&mlp_config(hidden), 3, DType::F32, &Device::Cpu).unwrap();
    let twin = model.deep_clone().unwrap();
    let data = clusters(32 * steps, 5, 0.5);
    let mut fast = FastMlp::new(&model, opt, 32).unwrap();
    let mut auto = AutogradStep::new(&twin, opt).unwrap();
    let xs = data.x.flatten_from(1).unwrap();
    for s in 0..steps {
        let xb = xs.narrow(0, 32 * s, 32).unwrap();
        let yb = &data.labels[32 * s..32 * (s + 1)];
        let lf = fast.step(&xb.flatten_all().unwrap().to_vec1::<f32>().unwrap(), yb).unwrap();
        let la = auto.step(&twin, &xb, &Tensor::new(yb, &Device::Cpu).unwrap()).unwrap();
        assert!((lf - la).abs() < LOSS_ABS, "step {s}: loss fast {lf} vs autograd {la}");
    }
    fast.write_to(&model).unwrap();
    let d = max_abs_diff(&params(&model), &params(&twin));
    assert!(d < FAST_VS_AUTOGRAD_ABS, "{opt:?}: max |fast - autograd| = {d}");
    // The update must actually have moved the weights (the comparison is not vacuous).
    let init = Model::new(&mlp_config(hidden), 3, DType::F32, &Device::Cpu).unwrap();
    assert!(max_abs_diff(&params(&model), &params(&init)) > 100.0 * FAST_VS_AUTOGRAD_ABS);
}

#[test]
fn fast_sgd_step_matches_autograd() {
    compare_fast_autograd(OptimizerConfig::sgd(0.1), &[40, 30, 20], 10);
}

#[test]
fn fast_adam_step_matches_autograd() {
    // eps 1e-3 rather than 1e-8: Adam's update m/(sqrt(v)+eps) is ~sign(g) for |g| >> eps, so a
    // gradient of a few ulp that differs in sign between two orderings would flip a whole step of
    // size lr. With eps well above rounding noise the update is continuous in g and comparable.
    let opt = OptimizerConfig::Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-3 };
    compare_fast_autograd(opt, &[40, 30, 20], 10);
}

/// The fast step cuts batch rows and output units into blocks that the threads share: at 1, 2 and
/// 3 threads it matches autograd.
#[test]
fn fast_step_matches_autograd_at_every_thread_count() {
    let adam = OptimizerConfig::Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-3 };
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for opt in [OptimizerConfig::sgd(0.1), adam] {
                compare_fast_autograd(opt, &[40, 30, 20], 10);
            }
        });
    }
}

/// The same steps give the same bits whatever the thread count (1, 2, 3 and 4 threads, which
/// once split the batch and the units differently and so changed gemm's shapes and summation
/// order). fc6's real shapes at batch 32, where the old thread split changed the last bits.
#[test]
fn fast_step_is_bit_identical_across_thread_counts() {
    let cfg = ModelConfig::preset(stiff_models::Preset::Fc6, InputShape::new(1, 28, 28), 10);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let steps = 4;
    let x: Vec<f32> = (0..steps * 32 * 784).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let y: Vec<u32> = (0..steps * 32).map(|_| rng.random_range(0..10u32)).collect();
    let adam = OptimizerConfig::adam(1e-3);
    for opt in [OptimizerConfig::sgd(0.1), adam] {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let model = Model::new(&cfg, 3, DType::F32, &Device::Cpu).unwrap();
                let mut fast = FastMlp::new(&model, opt, 32).unwrap();
                let losses: Vec<u64> = (0..steps)
                    .map(|s| fast.step(&x[s * 32 * 784..(s + 1) * 32 * 784], &y[s * 32..(s + 1) * 32]).unwrap())
                    .map(f64::to_bits)
                    .collect();
                fast.write_to(&model).unwrap();
                let bits: Vec<Vec<u32>> =
                    params(&model).iter().map(|v| v.iter().map(|f| f.to_bits()).collect()).collect();
                (losses, bits)
            })
        };
        let one = run(1);
        for threads in [2, 3, 4] {
            let other = run(threads);
            assert!(one.0 == other.0, "{opt:?}: losses at 1 and {threads} threads differ");
            assert!(one.1 == other.1, "{opt:?}: weights at 1 and {threads} threads differ");
        }
    }
}

#[test]
fn fast_adam_default_eps_matches_autograd_on_first_step() {
    // With the default eps the comparison holds where gradients are well above rounding noise;
    // after one step |update| <= lr, so the bound is lr-scaled and checked on most entries.
    let opt = OptimizerConfig::adam(1e-3);
    let model = Model::new(&mlp_config(&[40, 30]), 4, DType::F32, &Device::Cpu).unwrap();
    let twin = model.deep_clone().unwrap();
    let data = clusters(32, 6, 0.5);
    let mut fast = FastMlp::new(&model, opt, 32).unwrap();
    let mut auto = AutogradStep::new(&twin, opt).unwrap();
    let xs = data.x.flatten_from(1).unwrap();
    fast.step(&xs.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &data.labels).unwrap();
    auto.step(&twin, &xs, &data.labels_tensor(&Device::Cpu).unwrap()).unwrap();
    fast.write_to(&model).unwrap();
    let (a, b) = (params(&model), params(&twin));
    let total = a.iter().map(Vec::len).sum::<usize>();
    let close = a.iter().flatten().zip(b.iter().flatten()).filter(|(x, y)| (*x - *y).abs() < 1e-6).count();
    // All but a handful of near-zero-gradient entries agree to 1e-6 (= lr / 1000).
    assert!(close as f64 > 0.999 * total as f64, "{close} of {total} entries agree");
}

#[test]
fn fast_path_rejects_unsupported_models() {
    let cfg = ModelConfig::new(ArchSpec::Cnn { channels: vec![4], kernel: 3, pool: 2 }, SHAPE, CLASSES);
    let cnn = Model::new(&cfg, 0, DType::F32, &Device::Cpu).unwrap();
    assert!(FastMlp::check_supported(&cnn).is_err());
    let f64_mlp = Model::new(&mlp_config(&[8]), 0, DType::F64, &Device::Cpu).unwrap();
    assert!(FastMlp::check_supported(&f64_mlp).is_err());
    let tc = TrainConfig::default().with_backend(Backend::FastMlp);
    assert!(matches!(Trainer::new(cnn, tc), Err(TrainError::FastPathUnsupported(_))));
    // Auto falls back to autograd for the f64 model.
    let t = Trainer::new(f64_mlp, TrainConfig::default()).unwrap();
    assert!(!t.uses_fast_path());
}

// ---------------------------------------------------------------------------------------------
// Determinism and exact resume.

fn train_run(backend: Backend, opt: OptimizerConfig, steps: u64, seed: u64) -> Vec<Vec<f32>> {
    let data = clusters(500, 1, 0.8);
    let model = Model::new(&mlp_config(&[32, 24]), seed, DType::F32, &Device::Cpu).unwrap();
    let cfg = quiet(
        TrainConfig::default()
            .with_optimizer(opt)
            .with_max_steps(steps)
            .with_eval_every(100)
            .with_seed(seed)
            .with_backend(backend),
    );
    let mut t = Trainer::new(model, cfg).unwrap().with_progress(Progress::Hidden);
    let r = t.run(&data, None, &mut NoSnapshots).unwrap();
    assert_eq!(r.status, RunStatus::Completed { stop: StopReason::MaxSteps });
    params(t.model().unwrap())
}

#[test]
fn same_seed_gives_bit_identical_weights() {
    for backend in [Backend::FastMlp, Backend::Autograd] {
        for opt in [OptimizerConfig::sgd(0.05), OptimizerConfig::adam(1e-3)] {
            let a = train_run(backend, opt, 300, 7);
            let b = train_run(backend, opt, 300, 7);
            assert_eq!(a, b, "{backend:?} {opt:?}: same seed must give identical weights");
            let c = train_run(backend, opt, 300, 8);
            assert_ne!(a, c, "{backend:?} {opt:?}: a different seed must give different weights");
        }
    }
}

fn resume_matches_straight(backend: Backend, opt: OptimizerConfig, half: u64) {
    let data = clusters(500, 2, 0.8);
    let val = clusters(200, 3, 0.8);
    let cfg = |max_steps| {
        TrainConfig::default()
            .with_optimizer(opt)
            .with_max_steps(max_steps)
            .with_eval_every(250)
            .with_backend(backend)
            .with_overfit_patience(Some(3))
    };
    let model = || Model::new(&mlp_config(&[32, 24]), 11, DType::F32, &Device::Cpu).unwrap();

    let mut straight = Trainer::new(model(), cfg(2 * half)).unwrap().with_progress(Progress::Hidden);
    straight.run(&data, Some(&val), &mut NoSnapshots).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck.safetensors");
    let mut first = Trainer::new(model(), cfg(half)).unwrap().with_progress(Progress::Hidden);
    first.run(&data, Some(&val), &mut NoSnapshots).unwrap();
    first.save_checkpoint(&ck).unwrap();
    drop(first);
    let mut second = Trainer::resume(&ck, Some(cfg(2 * half)), &Device::Cpu).unwrap().with_progress(Progress::Hidden);
    assert_eq!(second.state().step, half);
    let r = second.run(&data, Some(&val), &mut NoSnapshots).unwrap();
    assert_eq!(r.step, 2 * half);
    assert_eq!(second.state().epoch, straight.state().epoch);
    assert_eq!(second.state().pos, straight.state().pos);
    // Exact equality: the resumed run repeats the uninterrupted one bit for bit.
    assert_eq!(params(second.model().unwrap()), params(straight.model().unwrap()), "{backend:?} {opt:?}");
}

#[test]
fn resume_is_bit_identical_fast_sgd() {
    resume_matches_straight(Backend::FastMlp, OptimizerConfig::sgd(0.05), 1000);
}

#[test]
fn resume_is_bit_identical_fast_adam() {
    resume_matches_straight(Backend::FastMlp, OptimizerConfig::adam(1e-3), 1000);
}

#[test]
fn resume_is_bit_identical_autograd_sgd() {
    resume_matches_straight(Backend::Autograd, OptimizerConfig::sgd(0.05), 1000);
}

#[test]
fn resume_is_bit_identical_autograd_adam() {
    resume_matches_straight(Backend::Autograd, OptimizerConfig::adam(1e-3), 1000);
}

#[test]
fn periodic_checkpoint_resumes_exactly_and_loads_as_model() {
    let data = clusters(300, 4, 0.8);
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("run/ck.safetensors");
    let metrics = dir.path().join("run/metrics.jsonl");
    let opt = OptimizerConfig::adam(1e-3);
    let cfg = quiet(
        TrainConfig::default()
            .with_optimizer(opt)
            .with_max_steps(300)
            .with_eval_every(50)
            .with_checkpoint_path(Some(ck.clone()))
            .with_checkpoint_every(Some(100))
            .with_metrics_path(Some(metrics.clone())),
    );
    let model = Model::new(&mlp_config(&[16]), 2, DType::F32, &Device::Cpu).unwrap();
    let mut t = Trainer::new(model, cfg.clone()).unwrap().with_progress(Progress::Hidden);
    t.run(&data, None, &mut NoSnapshots).unwrap();
    // The final checkpoint loads back into an identical model, through both loaders.
    let m = load_model(&ck, &Device::Cpu).unwrap();
    assert_eq!(params(&m), params(t.model().unwrap()));
    let full = load_checkpoint(&ck, &Device::Cpu).unwrap();
    assert_eq!(params(&full.model), params(&m));
    assert_eq!(full.state.step, 300);
    assert_eq!(full.state.updates, 300);
    assert_eq!(full.m.len(), m.vars().len());
    assert_eq!(full.config, cfg);
    // Metrics: one eval line per 50 steps (0..=300), then an end line.
    let text = std::fs::read_to_string(&metrics).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let evals: Vec<u64> = lines.iter().filter(|v| v["event"] == "eval").map(|v| v["step"].as_u64().unwrap()).collect();
    assert_eq!(evals, vec![0, 50, 100, 150, 200, 250, 300]);
    assert_eq!(lines.last().unwrap()["event"], "end");
    assert!(lines.iter().any(|v| v["event"] == "snapshot" && v["reason"]["kind"] == "final"));
    assert!(
        lines.iter().all(|v| v["schema_version"] == stiff_train::SCHEMA_VERSION),
        "a log line lacks schema_version"
    );
    // The checkpoint records its layout version, and a newer one is refused with the key named.
    let (tensors, mut meta) = stiff_models::io::load_tensors(&ck, &Device::Cpu).unwrap();
    assert_eq!(meta[stiff_train::checkpoint::SCHEMA_VERSION_KEY], stiff_train::SCHEMA_VERSION.to_string());
    meta.insert(stiff_train::checkpoint::SCHEMA_VERSION_KEY.into(), "99".into());
    let newer = dir.path().join("run/newer.safetensors");
    let mut tensors: Vec<(String, candle::Tensor)> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    stiff_models::io::save_tensors_atomic(&tensors, meta, &newer).unwrap();
    let err = load_checkpoint(&newer, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("stiff.schema_version") && err.contains("99"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Snapshots and stop rules.

#[test]
fn step_and_threshold_snapshots_and_threshold_stop() {
    let data = clusters(400, 5, 0.6);
    let val = clusters(100, 6, 0.6);
    let cfg = quiet(
        TrainConfig::default()
            .with_optimizer(OptimizerConfig::sgd(0.05))
            .with_max_steps(20_000)
            .with_eval_every(20)
            .with_snapshot_steps(vec![0, 30])
            .with_thresholds(vec![0.1, 1.0]), // any order; crossed highest first
    );
    let model = Model::new(&mlp_config(&[32]), 0, DType::F32, &Device::Cpu).unwrap();
    let init = params(&model);
    let seen = RefCell::new(Vec::new());
    let mut sink = |s: &Snapshot<'_>| -> Result<(), SinkError> {
        seen.borrow_mut().push((s.reason, s.step, s.metrics.train_loss, params(s.model)));
        Ok(())
    };
    let mut t = Trainer::new(model, cfg).unwrap().with_progress(Progress::Hidden);
    let r = t.run(&data, Some(&val), &mut sink).unwrap();
    assert_eq!(r.status, RunStatus::Completed { stop: StopReason::ThresholdsReached });
    let seen = seen.into_inner();
    let reasons: Vec<SnapshotReason> = seen.iter().map(|s| s.0).collect();
    assert_eq!(reasons[0], SnapshotReason::Step { step: 0 });
    assert_eq!(reasons[1], SnapshotReason::Step { step: 30 });
    assert_eq!(reasons[2], SnapshotReason::Threshold { threshold: 1.0 });
    assert_eq!(*reasons.last().unwrap(), SnapshotReason::Final);
    assert!(reasons.contains(&SnapshotReason::Threshold { threshold: 0.1 }));
    // Step 0 is the initialisation; step 30 is not an eval step but gets measured for its snapshot.
    assert_eq!(seen[0].3, init);
    assert_eq!(seen[1].1, 30);
    assert_ne!(seen[1].3, init);
    // Threshold snapshots fire at the first evaluation below the threshold and not before.
    for (reason, step, loss, _) in &seen {
        if let SnapshotReason::Threshold { threshold } = reason {
            assert!(loss < threshold);
            let earlier = r.history.iter().filter(|m| m.step < *step);
            assert!(earlier.clone().all(|m| m.train_loss >= *threshold), "threshold {threshold} crossed earlier");
        }
    }
    // The final snapshot holds the weights the trainer ends with.
    assert_eq!(seen.last().unwrap().3, params(t.model().unwrap()));
}

#[test]
fn overfitting_onset_is_detected_on_memorised_noise() {
    // Training labels are random: the net memorises them, training loss falls and validation loss
    // (on other random labels) rises after an early minimum.
    let mut train = clusters(64, 7, 0.8);
    let mut val = clusters(256, 8, 0.8);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for l in train.labels.iter_mut().chain(val.labels.iter_mut()) {
        *l = rng.random_range(0..CLASSES as u32);
    }
    let cfg = TrainConfig::default()
        .with_optimizer(OptimizerConfig::adam(3e-3))
        .with_max_steps(3_000)
        .with_eval_every(20)
        .with_overfit_patience(Some(3))
        .with_stop_at_overfit(true);
    let model = Model::new(&mlp_config(&[64, 64]), 1, DType::F32, &Device::Cpu).unwrap();
    let mut t = Trainer::new(model, cfg).unwrap().with_progress(Progress::Hidden);
    let r = t.run(&train, Some(&val), &mut NoSnapshots).unwrap();
    assert_eq!(r.status, RunStatus::Completed { stop: StopReason::OverfittingOnset });
    let onset = r.snapshots.iter().find_map(|s| match s.reason {
        SnapshotReason::OverfittingOnset { best_step } => Some((best_step, s.step)),
        _ => None,
    });
    let (best, at) = onset.expect("onset snapshot");
    assert_eq!(at, best + 3 * 20, "declared after `patience` regular evaluations without improvement");
    let m_best = r.history.iter().find(|m| m.step == best).unwrap();
    let m_at = r.history.iter().find(|m| m.step == at).unwrap();
    assert!(m_at.val_loss.unwrap() > m_best.val_loss.unwrap());
    assert!(m_at.train_loss < m_best.train_loss);
}

#[test]
fn max_epochs_stops_the_run() {
    let data = clusters(100, 10, 0.5); // 3 full batches per epoch (the 4th would be partial)
    let cfg = quiet(TrainConfig::default().with_max_epochs(Some(2)).with_max_steps(1000));
    let model = Model::new(&mlp_config(&[8]), 0, DType::F32, &Device::Cpu).unwrap();
    let mut t = Trainer::new(model, cfg).unwrap().with_progress(Progress::Hidden);
    let r = t.run(&data, None, &mut NoSnapshots).unwrap();
    assert_eq!(r.status, RunStatus::Completed { stop: StopReason::MaxEpochs });
    assert_eq!((r.step, r.epoch, r.images_seen), (6, 2, 192));
}

#[test]
fn divergence_is_an_outcome_not_an_error() {
    let mut data = clusters(200, 11, 0.5);
    data.x = (data.x * 100.0).unwrap();
    for backend in [Backend::FastMlp, Backend::Autograd] {
        let cfg = quiet(
            TrainConfig::default()
                .with_optimizer(OptimizerConfig::sgd(10.0))
                .with_max_steps(500)
                .with_eval_every(10)
                .with_backend(backend),
        );
        let model = Model::new(&mlp_config(&[32, 32]), 0, DType::F32, &Device::Cpu).unwrap();
        let mut t = Trainer::new(model, cfg).unwrap().with_progress(Progress::Hidden);
        let r = t.run(&data, None, &mut NoSnapshots).unwrap();
        match &r.status {
            RunStatus::Diverged { step, reason } => {
                assert!(*step < 500 && !reason.is_empty(), "{backend:?}: {reason}");
                assert!(!r.snapshots.iter().any(|s| s.reason == SnapshotReason::Final));
            }
            other => panic!("{backend:?}: expected divergence, got {other:?}"),
        }
    }
}

#[test]
fn sink_errors_stop_the_run_with_a_typed_error() {
    let data = clusters(100, 12, 0.5);
    let cfg = quiet(TrainConfig::default().with_snapshot_steps(vec![0]).with_max_steps(10));
    let model = Model::new(&mlp_config(&[8]), 0, DType::F32, &Device::Cpu).unwrap();
    let mut t = Trainer::new(model, cfg).unwrap().with_progress(Progress::Hidden);
    let mut sink = |_: &Snapshot<'_>| -> Result<(), SinkError> { Err("disk full".into()) };
    let e = t.run(&data, None, &mut sink).unwrap_err();
    assert!(matches!(e, TrainError::Sink { step: 0, .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Configuration, data validation, ordering.

#[test]
fn config_roundtrips_through_json_and_rejects_bad_values() {
    let cfg = TrainConfig::default().with_optimizer(OptimizerConfig::adam(1e-4)).with_thresholds(vec![0.5]);
    let back: TrainConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    // Omitted fields take their documented defaults.
    let partial: TrainConfig = serde_json::from_str(r#"{"optimizer":{"kind":"adam","lr":0.001}}"#).unwrap();
    assert_eq!(partial.optimizer, OptimizerConfig::adam(0.001));
    assert_eq!(partial.batch_size, 32);
    for bad in [
        TrainConfig::default().with_batch_size(0),
        TrainConfig::default().with_optimizer(OptimizerConfig::sgd(-1.0)),
        TrainConfig::default().with_thresholds(vec![f64::NAN]),
        TrainConfig::default().with_checkpoint_every(Some(10)),
        TrainConfig::default().with_overfit_patience(Some(0)),
    ] {
        assert!(matches!(bad.validate(), Err(TrainError::Config(_))), "{bad:?}");
    }
}

#[test]
fn bad_data_is_rejected_with_typed_errors() {
    let x = Tensor::zeros((10, 64), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(LabelledData::new(x.clone(), vec![0; 9]), Err(TrainError::Data { .. })));
    let model = Model::new(&mlp_config(&[8]), 0, DType::F32, &Device::Cpu).unwrap();
    let mut t = Trainer::new(model, TrainConfig::default()).unwrap().with_progress(Progress::Hidden);
    let out_of_range = LabelledData::new(x.clone(), vec![7; 10]).unwrap();
    assert!(matches!(t.run(&out_of_range, None, &mut NoSnapshots), Err(TrainError::Data { .. })));
    let too_few = LabelledData::new(x, vec![0; 10]).unwrap(); // 10 < batch 32
    assert!(matches!(t.run(&too_few, None, &mut NoSnapshots), Err(TrainError::Data { .. })));
    let wrong_width =
        LabelledData::new(Tensor::zeros((40, 63), DType::F32, &Device::Cpu).unwrap(), vec![0; 40]).unwrap();
    assert!(matches!(t.run(&wrong_width, None, &mut NoSnapshots), Err(TrainError::Data { .. })));
}

#[test]
fn epoch_orders_are_seeded_permutations() {
    let a = epoch_order(1000, 3, 0);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(1000, 3, 0));
    assert_ne!(a, epoch_order(1000, 3, 1));
    assert_ne!(a, epoch_order(1000, 4, 0));
}

// ---------------------------------------------------------------------------------------------
// Cadence-independent thresholds and windows after the crossing.

#[test]
fn running_mean_crossing_matches_an_independent_replay_of_batch_losses() {
    use stiff_train::{ThresholdRule, ThresholdWindow};
    let data = clusters(400, 11, 0.9);
    let window = 25u64;
    let th = 0.8;
    // Oracle: the per-step mini-batch losses, read back from an evaluation after every step
    // (`batch_loss` is the mean since the previous evaluation, i.e. that step's loss), then the
    // first step whose trailing mean of `window` losses is below the threshold.
    let every_step =
        quiet(TrainConfig::default().with_optimizer(OptimizerConfig::sgd(0.05)).with_max_steps(400).with_eval_every(1));
    let model = Model::new(&mlp_config(&[32]), 3, DType::F32, &Device::Cpu).unwrap();
    let r = Trainer::new(model, every_step).unwrap().with_progress(Progress::Hidden).run(&data, None, &mut NoSnapshots);
    let losses: Vec<f64> = r.unwrap().history.iter().filter_map(|m| m.batch_loss).collect();
    let want = (window as usize..=losses.len())
        .find(|&s| losses[s - window as usize..s].iter().sum::<f64>() / (window as f64) < th)
        .expect("the loss falls below the threshold within the budget") as u64;

    for eval_every in [7u64, 50] {
        let cfg = quiet(
            TrainConfig::default()
                .with_optimizer(OptimizerConfig::sgd(0.05))
                .with_max_steps(400)
                .with_eval_every(eval_every)
                .with_thresholds(vec![th])
                .with_threshold_rule(ThresholdRule::RunningMean { steps: window })
                .with_threshold_window(Some(ThresholdWindow { count: 4, every: 3 })),
        );
        let model = Model::new(&mlp_config(&[32]), 3, DType::F32, &Device::Cpu).unwrap();
        let seen = RefCell::new(Vec::new());
        let mut sink = |s: &Snapshot<'_>| -> Result<(), SinkError> {
            seen.borrow_mut().push((s.reason, s.step, s.smoothed_loss));
            Ok(())
        };
        let r = Trainer::new(model, cfg).unwrap().with_progress(Progress::Hidden).run(&data, None, &mut sink).unwrap();
        let seen = seen.into_inner();
        let crossing = seen.iter().find(|s| s.0 == SnapshotReason::Threshold { threshold: th }).unwrap();
        assert_eq!(crossing.1, want, "eval_every {eval_every}: crossing step");
        assert!(crossing.2.unwrap() < th);
        // The window: three more snapshots, 3 steps apart, then the run stops.
        let win: Vec<(u32, u64)> = seen
            .iter()
            .filter_map(|s| match s.0 {
                SnapshotReason::ThresholdWindow { index, .. } => Some((index, s.1)),
                _ => None,
            })
            .collect();
        assert_eq!(win, vec![(1, want + 3), (2, want + 6), (3, want + 9)], "eval_every {eval_every}");
        assert_eq!(r.status, RunStatus::Completed { stop: StopReason::ThresholdsReached });
        assert_eq!(r.step, want + 9);
    }
}

#[test]
fn window_survives_a_checkpoint_and_resume() {
    use stiff_train::{ThresholdRule, ThresholdWindow};
    let dir = tempfile::tempdir().unwrap();
    let data = clusters(400, 12, 0.9);
    let cfg = quiet(
        TrainConfig::default()
            .with_optimizer(OptimizerConfig::sgd(0.05))
            .with_max_steps(400)
            .with_eval_every(10)
            .with_thresholds(vec![0.8])
            .with_threshold_rule(ThresholdRule::RunningMean { steps: 25 })
            .with_threshold_window(Some(ThresholdWindow { count: 5, every: 4 })),
    );
    let steps_of = |r: &stiff_train::RunReport| -> Vec<(SnapshotReason, u64)> {
        r.snapshots.iter().map(|s| (s.reason, s.step)).collect()
    };
    let model = Model::new(&mlp_config(&[32]), 4, DType::F32, &Device::Cpu).unwrap();
    let full = Trainer::new(model, cfg.clone()).unwrap().with_progress(Progress::Hidden);
    let mut full = full;
    let whole = full.run(&data, None, &mut NoSnapshots).unwrap();
    let crossing = whole.snapshots.iter().find(|s| matches!(s.reason, SnapshotReason::Threshold { .. })).unwrap().step;
    // Stop inside the window (two window snapshots taken), checkpoint, resume to the end.
    let ck = dir.path().join("ck.safetensors");
    let part_cfg = cfg.clone().with_max_steps(crossing + 9).with_checkpoint_path(Some(ck.clone()));
    let model = Model::new(&mlp_config(&[32]), 4, DType::F32, &Device::Cpu).unwrap();
    let first =
        Trainer::new(model, part_cfg).unwrap().with_progress(Progress::Hidden).run(&data, None, &mut NoSnapshots);
    let first = first.unwrap();
    let mut resumed = Trainer::resume(&ck, Some(cfg), &Device::Cpu).unwrap().with_progress(Progress::Hidden);
    let rest = resumed.run(&data, None, &mut NoSnapshots).unwrap();
    let mut got = steps_of(&first);
    got.retain(|s| s.0 != SnapshotReason::Final);
    got.extend(steps_of(&rest));
    assert_eq!(got, steps_of(&whole));
    assert_eq!(params(resumed.model().unwrap()), params(full.model().unwrap()));
}
