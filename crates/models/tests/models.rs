//! Model construction, forward passes, probes and checkpoints.

use std::collections::HashMap;

use candle::{DType, Device, Tensor, D};
use stiff_models::{loss, ArchSpec, InputShape, LayerKind, Model, ModelConfig, ModelError, Preset};

const MNIST: InputShape = InputShape { channels: 1, height: 28, width: 28 };
const CIFAR: InputShape = InputShape { channels: 3, height: 32, width: 32 };
/// f64 arithmetic on tiny nets: agreement up to rounding.
const TOL_F64: f64 = 1e-10;

fn rand_input(n: usize, shape: InputShape, seed: u64, dtype: DType) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * shape.numel()).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, (n, shape.channels, shape.height, shape.width), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn preset_parameter_counts_match_hand_count() {
    // fc6 = 784-500-300-100-100-100-10: sum of in*out + out over the six dense layers.
    let widths = [784usize, 500, 300, 100, 100, 100, 10];
    let expected: usize = widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    let m = Model::new(&ModelConfig::preset(Preset::Fc6, MNIST, 10), 0, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(m.num_params(), expected);
    assert_eq!(m.layers().len(), 6);
    assert_eq!(m.layers()[0].weight.dims(), &[500, 784]);

    // cnn5 on CIFAR: 32x32 -> 16 -> 8 -> 4 -> 2 after four pools, head sees 256*2*2 features.
    let m = Model::new(&ModelConfig::preset(Preset::Cnn5, CIFAR, 100), 0, DType::F32, &Device::Cpu).unwrap();
    let convs = [(3usize, 32usize), (32, 64), (64, 128), (128, 256)];
    let expected: usize = convs.iter().map(|(i, o)| i * o * 9 + o).sum::<usize>() + 1024 * 100 + 100;
    assert_eq!(m.num_params(), expected);
    assert_eq!(m.layers().last().unwrap().in_dims, vec![1024]);

    // cnn5 on MNIST: 28 -> 14 -> 7 -> 3 -> 1 (floor), head sees 256 features.
    let m = Model::new(&ModelConfig::preset(Preset::Cnn5, MNIST, 10), 0, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(m.layers().last().unwrap().in_dims, vec![256]);
}

#[test]
fn initialisation_is_seeded_and_bounded() {
    let cfg = ModelConfig::preset(Preset::Fc4, MNIST, 10);
    let a = Model::new(&cfg, 7, DType::F32, &Device::Cpu).unwrap();
    let b = Model::new(&cfg, 7, DType::F32, &Device::Cpu).unwrap();
    let c = Model::new(&cfg, 8, DType::F32, &Device::Cpu).unwrap();
    for ((x, y), z) in a.vars().iter().zip(b.vars()).zip(c.vars()) {
        assert_eq!(max_abs_diff(x.as_tensor(), y.as_tensor()), 0.0);
        assert!(max_abs_diff(x.as_tensor(), z.as_tensor()) > 0.0);
    }
    // PyTorch default: |w| < 1/sqrt(fan_in) = 1/28 for the first layer.
    let w0 = a.layers()[0].weight.as_tensor().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    assert!(w0.to_scalar::<f32>().unwrap() < 1.0 / 28.0);
}

#[test]
fn invalid_configs_are_rejected() {
    let bad = [
        ModelConfig::new(ArchSpec::Mlp { hidden: vec![10, 0] }, MNIST, 10),
        ModelConfig::new(ArchSpec::Mlp { hidden: vec![10] }, MNIST, 1),
        ModelConfig::new(ArchSpec::Cnn { channels: vec![4; 6], kernel: 3, pool: 2 }, MNIST, 10),
        ModelConfig::new(ArchSpec::Cnn { channels: vec![4], kernel: 2, pool: 2 }, MNIST, 10),
    ];
    // Sizes that overflow usize: reported as too large, never wrapped to "a zero dimension".
    let huge = [
        ModelConfig::new(ArchSpec::Mlp { hidden: vec![10] }, InputShape::new(1 << 32, 1 << 16, 1 << 16), 10),
        ModelConfig::new(ArchSpec::Cnn { channels: vec![1 << 32, 1 << 32], kernel: 3, pool: 2 }, MNIST, 10),
        ModelConfig::new(ArchSpec::Mlp { hidden: vec![usize::MAX / 2, 4] }, MNIST, 10),
    ];
    for cfg in huge {
        let err = cfg.validate().unwrap_err();
        assert!(err.to_string().contains("too large"), "{cfg:?}: {err}");
    }
    for cfg in bad {
        assert!(matches!(Model::new(&cfg, 0, DType::F32, &Device::Cpu), Err(ModelError::InvalidConfig(_))), "{cfg:?}");
    }
    assert!(matches!("fc7".parse::<Preset>(), Err(ModelError::UnknownPreset(_))));
    assert_eq!("CNN5".parse::<Preset>().unwrap(), Preset::Cnn5);
}

#[test]
fn taps_agree_with_forward_and_have_documented_shapes() {
    for preset in Preset::ALL {
        let cfg = ModelConfig::preset(preset, MNIST, 10);
        let m = Model::new(&cfg, 1, DType::F32, &Device::Cpu).unwrap();
        let x = rand_input(3, MNIST, 2, DType::F32);
        let taps = m.forward_taps(&x, true).unwrap();
        assert_eq!(max_abs_diff(&taps.logits, &m.forward(&x).unwrap()), 0.0, "{preset}");
        assert_eq!(taps.representations.len(), m.layers().len() - 1);
        assert_eq!(taps.probes.len(), m.layers().len());
        for (layer, (inp, z)) in m.layers().iter().zip(taps.inputs.iter().zip(&taps.pre_activations)) {
            assert_eq!(&inp.dims()[1..], layer.in_dims.as_slice());
            assert_eq!(&z.dims()[1..], layer.out_dims.as_slice());
        }
    }
    // Wrong input size is a typed error, not a panic.
    let m = Model::new(&ModelConfig::preset(Preset::Fc4, MNIST, 10), 1, DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::zeros((2, 100), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(m.forward(&x), Err(ModelError::InputShape { .. })));
}

/// The probe on the logits layer must hold, per example, softmax(logits) - onehot(label): the
/// hand-derived gradient of the summed cross-entropy with respect to the logits.
#[test]
fn logit_probe_is_softmax_minus_onehot() {
    let cfg = ModelConfig::preset(Preset::Fc4, MNIST, 10);
    let m = Model::new(&cfg, 3, DType::F64, &Device::Cpu).unwrap();
    let x = rand_input(5, MNIST, 4, DType::F64);
    let y = Tensor::new(&[3u32, 1, 4, 1, 5], &Device::Cpu).unwrap();
    let taps = m.forward_taps(&x, true).unwrap();
    let grads = loss::cross_entropy_sum(&taps.logits, &y).unwrap().backward().unwrap();
    let d = grads.get(taps.probes.last().unwrap().as_tensor()).unwrap();
    let p = candle_nn::ops::softmax(&taps.logits, D::Minus1).unwrap();
    let onehot = Tensor::new(
        &[3u32, 1, 4, 1, 5].map(|c| (0..10).map(|k| if k == c { 1.0 } else { 0.0 }).collect::<Vec<f64>>()).concat()[..],
        &Device::Cpu,
    )
    .unwrap()
    .reshape((5, 10))
    .unwrap();
    assert!(max_abs_diff(d, &(p - onehot).unwrap()) < TOL_F64);
}

/// Finite differences in f64 through a CNN whose pooled maps have odd sizes (7 -> 3): checks the
/// crop-then-reduce max pooling backward (candle's own max_pool2d backward is wrong there).
#[test]
fn cnn_gradient_matches_finite_differences() {
    let shape = InputShape::new(1, 7, 7);
    let cfg = ModelConfig::new(ArchSpec::Cnn { channels: vec![2, 3], kernel: 3, pool: 2 }, shape, 3);
    let m = Model::new(&cfg, 5, DType::F64, &Device::Cpu).unwrap();
    let x = rand_input(2, shape, 6, DType::F64);
    let y = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
    let loss_of =
        |m: &Model| -> f64 { loss::cross_entropy_sum(&m.forward(&x).unwrap(), &y).unwrap().to_scalar().unwrap() };
    let grads = loss::cross_entropy_sum(&m.forward(&x).unwrap(), &y).unwrap().backward().unwrap();
    // Central differences, step 1e-6: truncation error ~1e-12, rounding ~1e-10.
    const EPS: f64 = 1e-6;
    const FD_TOL: f64 = 1e-6;
    for var in m.vars() {
        let g: Vec<f64> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for idx in (0..base.len()).step_by(3) {
            let mut plus = base.clone();
            plus[idx] += EPS;
            var.set(&Tensor::from_vec(plus, var.shape(), &Device::Cpu).unwrap()).unwrap();
            let lp = loss_of(&m);
            let mut minus = base.clone();
            minus[idx] -= EPS;
            var.set(&Tensor::from_vec(minus, var.shape(), &Device::Cpu).unwrap()).unwrap();
            let lm = loss_of(&m);
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
            let fd = (lp - lm) / (2.0 * EPS);
            assert!((fd - g[idx]).abs() < FD_TOL, "param {idx}: fd {fd} vs autograd {}", g[idx]);
        }
    }
}

/// Conv forward against a naive f64 loop (same padding, stride 1), then ReLU and 2x2 floor pooling.
#[test]
fn conv_block_matches_naive_loops() {
    let shape = InputShape::new(2, 5, 5);
    let cfg = ModelConfig::new(ArchSpec::Cnn { channels: vec![3], kernel: 3, pool: 2 }, shape, 2);
    let m = Model::new(&cfg, 9, DType::F64, &Device::Cpu).unwrap();
    let x = rand_input(1, shape, 10, DType::F64);
    let taps = m.forward_taps(&x, false).unwrap();
    let w: Vec<f64> = m.layers()[0].weight.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f64> = m.layers()[0].bias.as_tensor().to_vec1().unwrap();
    let xv: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    let mut z = vec![0f64; 3 * 25];
    for o in 0..3 {
        for i in 0..5i64 {
            for j in 0..5i64 {
                let mut s = b[o];
                for c in 0..2 {
                    for di in 0..3i64 {
                        for dj in 0..3i64 {
                            let (ii, jj) = (i + di - 1, j + dj - 1);
                            if (0..5).contains(&ii) && (0..5).contains(&jj) {
                                s += w[((o * 2 + c) * 3 + di as usize) * 3 + dj as usize]
                                    * xv[(c * 5 + ii as usize) * 5 + jj as usize];
                            }
                        }
                    }
                }
                z[o * 25 + (i * 5 + j) as usize] = s;
            }
        }
    }
    let got: Vec<f64> = taps.pre_activations[0].flatten_all().unwrap().to_vec1().unwrap();
    for (g, e) in got.iter().zip(&z) {
        assert!((g - e).abs() < TOL_F64);
    }
    // Pooled representation: 5x5 -> 2x2, windows rows/cols {0,1},{2,3}; row/col 4 dropped.
    let rep: Vec<f64> = taps.representations[0].flatten_all().unwrap().to_vec1().unwrap();
    for o in 0..3 {
        for (pi, pj) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let mut mx = f64::MIN;
            for di in 0..2 {
                for dj in 0..2 {
                    mx = mx.max(z[o * 25 + (2 * pi + di) * 5 + 2 * pj + dj].max(0.0));
                }
            }
            assert!((rep[o * 4 + pi * 2 + pj] - mx).abs() < TOL_F64);
        }
    }
    assert!(matches!(m.layers()[0].kind, LayerKind::Conv2d { kernel: 3, padding: 1, pool: 2 }));
}

#[test]
fn checkpoints_round_trip_and_report_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let cfg = ModelConfig::preset(Preset::Cnn4, CIFAR, 10);
    let m = Model::new(&cfg, 11, DType::F32, &Device::Cpu).unwrap();
    m.save(&path).unwrap();
    let back = Model::load(&path, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(back.config(), &cfg);
    for (a, b) in m.named_tensors().iter().zip(back.named_tensors()) {
        assert_eq!(a.0, b.0);
        assert_eq!(max_abs_diff(&a.1, &b.1), 0.0);
    }
    // The file records its layout version; a newer one is refused with a message naming the file,
    // a file without one (older builds) still loads.
    let (_, meta) = stiff_models::io::load_tensors(&path, &Device::Cpu).unwrap();
    assert_eq!(meta[stiff_models::io::SCHEMA_VERSION_METADATA_KEY], "1");
    let cfg_json = serde_json::to_string(&cfg).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    for (version, ok) in [(None, true), (Some("1"), true), (Some("2"), false), (Some("one"), false)] {
        let mut meta = HashMap::from([(stiff_models::io::CONFIG_METADATA_KEY.to_string(), cfg_json.clone())]);
        if let Some(v) = version {
            meta.insert(stiff_models::io::SCHEMA_VERSION_METADATA_KEY.to_string(), v.to_string());
        }
        let p = other_dir.path().join("versioned.safetensors");
        stiff_models::io::save_tensors_atomic(&m.named_tensors(), meta, &p).unwrap();
        let r = Model::load(&p, DType::F32, &Device::Cpu);
        assert_eq!(r.is_ok(), ok, "version {version:?}");
        if let Err(e) = r {
            assert!(matches!(e, ModelError::File { .. }) && e.to_string().contains("versioned.safetensors"), "{e}");
        }
    }
    let keys: Vec<String> = m.named_tensors().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys[0], "conv.0.weight");
    assert_eq!(keys.last().unwrap(), "head.bias");

    let tensors: HashMap<String, Tensor> = m.named_tensors().into_iter().collect();
    // Missing key.
    let mut t = tensors.clone();
    t.remove("conv.1.bias");
    let err = Model::from_tensors(&cfg, t, &path, DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(&err, ModelError::MissingKey { key, .. } if key == "conv.1.bias"), "{err}");
    // Wrong shape.
    let mut t = tensors.clone();
    t.insert("head.weight".into(), Tensor::zeros((10, 7), DType::F32, &Device::Cpu).unwrap());
    let err = Model::from_tensors(&cfg, t, &path, DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(&err, ModelError::WrongShape { key, .. } if key == "head.weight"), "{err}");
    // Unexpected key.
    let mut t = tensors;
    t.insert("extra".into(), Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap());
    assert!(matches!(
        Model::from_tensors(&cfg, t, &path, DType::F32, &Device::Cpu),
        Err(ModelError::UnexpectedKey { .. })
    ));
    // Garbage file and missing file.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    assert!(matches!(Model::load(&junk, DType::F32, &Device::Cpu), Err(ModelError::File { .. })));
    assert!(matches!(Model::load(&dir.path().join("nope"), DType::F32, &Device::Cpu), Err(ModelError::Io { .. })));
    // The parser's jargon ("header too small") comes after plain words.
    let err = Model::load(&junk, DType::F32, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("not a safetensors file"), "{err}");
    // Integer weights are rejected, not cast; NaN/Inf weights are found on load, naming the
    // file and the tensor (before the fix both loaded silently).
    let mut t: HashMap<String, Tensor> = m.named_tensors().into_iter().collect();
    t.insert("head.bias".into(), Tensor::zeros(10, DType::U32, &Device::Cpu).unwrap());
    let ints = dir.path().join("ints.safetensors");
    let meta =
        HashMap::from([(stiff_models::io::CONFIG_METADATA_KEY.to_string(), serde_json::to_string(&cfg).unwrap())]);
    stiff_models::io::save_tensors_atomic(&t.into_iter().collect::<Vec<_>>(), meta.clone(), &ints).unwrap();
    let err = Model::load(&ints, DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(&err, ModelError::NotFloat { key, .. } if key == "head.bias"), "{err}");
    assert!(err.to_string().contains("ints.safetensors"), "{err}");
    for bad in [f32::NAN, f32::INFINITY] {
        let mut t: HashMap<String, Tensor> = m.named_tensors().into_iter().collect();
        let mut v = vec![0.5f32; 10];
        v[7] = bad;
        t.insert("head.bias".into(), Tensor::new(v, &Device::Cpu).unwrap());
        let nan = dir.path().join("nan.safetensors");
        stiff_models::io::save_tensors_atomic(&t.into_iter().collect::<Vec<_>>(), meta.clone(), &nan).unwrap();
        for r in
            [Model::load(&nan, DType::F32, &Device::Cpu), Model::load_with_config(&nan, &cfg, DType::F32, &Device::Cpu)]
        {
            let err = r.unwrap_err();
            assert!(matches!(&err, ModelError::NonFinite { key, index: 7, .. } if key == "head.bias"), "{err}");
            assert!(err.to_string().contains("nan.safetensors"), "{err}");
        }
        std::fs::remove_file(&nan).unwrap();
    }
    std::fs::remove_file(&ints).unwrap();
    // No temp files left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}
