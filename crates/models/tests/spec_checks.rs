//! `--spec` models get the checks preset models get: NaN or integer weights are refused when
//! loaded, sizes in a spec never wrap around, and errors do not echo huge user strings whole.

use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use stiff_models::io::save_tensors_atomic;
use stiff_models::{KeyMap, ModelError, ModelSpec, SpecModel};

fn linear_spec() -> ModelSpec {
    serde_json::from_str(r#"{"input": [3], "layers": [{"type": "Linear", "in_features": 3, "out_features": 2}]}"#)
        .unwrap()
}

fn weights(w: Tensor) -> Vec<(String, Tensor)> {
    vec![("0.weight".into(), w), ("0.bias".into(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap())]
}

#[test]
fn spec_weights_with_nan_are_refused_naming_file_key_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    let w = Tensor::new(&[[0.5f32, 1.0, 2.0], [3.0, f32::NAN, 4.0]], &Device::Cpu).unwrap();
    save_tensors_atomic(&weights(w), HashMap::new(), &path).unwrap();
    match SpecModel::load(&linear_spec(), &path, &KeyMap::default(), DType::F32, &Device::Cpu) {
        Err(ModelError::NonFinite { path: p, key, index, value }) => {
            assert_eq!((p, key.as_str(), index), (path, "0.weight", 4));
            assert!(value.is_nan());
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
}

#[test]
fn spec_weights_with_int64_dtype_are_refused_not_cast() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.safetensors");
    let w = Tensor::new(&[[1i64, 2, 3], [4, 5, 6]], &Device::Cpu).unwrap();
    save_tensors_atomic(&weights(w), HashMap::new(), &path).unwrap();
    match SpecModel::load(&linear_spec(), &path, &KeyMap::default(), DType::F32, &Device::Cpu) {
        Err(ModelError::NotFloat { path: p, key, dtype }) => {
            assert_eq!((p, key.as_str(), dtype.as_str()), (path, "0.weight", "I64"));
        }
        other => panic!("expected NotFloat, got {other:?}"),
    }
    // Infinite buffers (batch norm statistics) are refused the same way, via from_tensors.
    let spec: ModelSpec = serde_json::from_str(
        r#"{"input": [2], "layers": [{"type": "BatchNorm1d", "num_features": 2, "affine": false}]}"#,
    )
    .unwrap();
    let t = HashMap::from([
        ("0.running_mean".to_string(), Tensor::new(&[0f32, 0.0], &Device::Cpu).unwrap()),
        ("0.running_var".to_string(), Tensor::new(&[1f32, f32::INFINITY], &Device::Cpu).unwrap()),
    ]);
    let err = SpecModel::from_tensors(&spec, t, "mem".as_ref(), &KeyMap::default(), DType::F32, &Device::Cpu);
    assert!(matches!(err, Err(ModelError::NonFinite { ref key, index: 1, .. }) if key == "0.running_var"), "{err:?}");
}

#[test]
fn spec_sizes_that_overflow_are_refused_not_wrapped() {
    // 9223372036854776200 * 2 wraps to 784 in 64-bit arithmetic.
    let spec: ModelSpec = serde_json::from_str(
        r#"{"input": [9223372036854776200, 2], "layers": [{"type": "Flatten"},
            {"type": "Linear", "in_features": 784, "out_features": 10}]}"#,
    )
    .unwrap();
    let err = spec.shapes().unwrap_err().to_string();
    assert!(err.contains("more elements than memory can address"), "{err}");
    // A parameter whose element count overflows (out_features * in_features).
    let spec: ModelSpec = serde_json::from_str(
        r#"{"input": [4294967296], "layers": [{"type": "Linear", "in_features": 4294967296, "out_features": 4294967296}]}"#,
    )
    .unwrap();
    let err = spec.shapes().unwrap_err().to_string();
    assert!(err.contains("layer 0 (Linear)") && err.contains("`0.weight`"), "{err}");
    // A conv window whose span overflows.
    let spec: ModelSpec = serde_json::from_str(
        r#"{"input": [1, 8, 8], "layers": [{"type": "Conv2d", "in_channels": 1, "out_channels": 1,
            "kernel_size": 3, "dilation": 9223372036854775808}]}"#,
    )
    .unwrap();
    let err = spec.shapes().unwrap_err().to_string();
    assert!(err.contains("too large"), "{err}");
}

#[test]
fn an_unknown_layer_type_of_a_megabyte_is_not_echoed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.json");
    let name = "Q".repeat(1 << 20);
    std::fs::write(&path, format!(r#"{{"input": [3], "layers": [{{"type": "{name}"}}]}}"#)).unwrap();
    let err = ModelSpec::from_json_file(&path).unwrap_err().to_string();
    assert!(err.len() < 2000, "message of {} bytes", err.len());
    assert!(err.contains(&format!("{}… ({} bytes)", "Q".repeat(80), 1 << 20)), "{}", &err[..err.len().min(400)]);
    assert!(err.contains("expected one of"), "the rest of the message stays: {err}");
    let long_preset = "p".repeat(100_000);
    let err = long_preset.parse::<stiff_models::Preset>().unwrap_err().to_string();
    assert!(err.len() < 300 && err.contains("(100000 bytes)"), "{err}");
}
