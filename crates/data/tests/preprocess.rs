//! Preprocessing against hand-computed values (f64 oracles written out in the tests).

use candle::{Device, Tensor};
use stiff_data::preprocess::{ChannelStats, Preprocess};

/// f32 results vs f64 oracles: values are O(1), so an absolute tolerance of a few f32 ulps.
const ABS_TOL: f32 = 1e-6;

fn t(data: &[f32], shape: (usize, usize, usize, usize)) -> Tensor {
    Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
}

fn vals(x: &Tensor) -> Vec<f32> {
    x.flatten_all().unwrap().to_vec1().unwrap()
}

fn close(a: &[f32], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((f64::from(*x) - y).abs() <= f64::from(ABS_TOL), "[{i}] {x} vs {y}");
    }
}

#[test]
fn per_example_standardise_by_hand() {
    // Image 0 = [0,1,2,3]: mean 1.5, population variance (2.25+0.25+0.25+2.25)/4 = 1.25.
    // Image 1 is constant: must become zeros, not NaN.
    let x = t(&[0., 1., 2., 3., 0.4, 0.4, 0.4, 0.4], (2, 1, 2, 2));
    let y = Preprocess::default().apply(&x).unwrap();
    assert_eq!(y.dims(), &[2, 1, 2, 2]);
    let s = 1.25f64.sqrt();
    close(&vals(&y), &[-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s, 0., 0., 0., 0.]);
}

#[test]
fn unit_length_by_hand() {
    // [3,4] has norm 5; the zero image stays zero.
    let x = t(&[3., 4., 0., 0.], (2, 1, 1, 2));
    let p = Preprocess { per_example_standardise: false, dataset_standardise: false, unit_length: true };
    close(&vals(&p.apply(&x).unwrap()), &[0.6, 0.8, 0., 0.]);
}

#[test]
fn standardise_then_unit_length_has_norm_one() {
    let data: Vec<f32> = (0..3 * 2 * 4 * 4).map(|i| ((i * 37) % 11) as f32 / 10.0).collect();
    let x = t(&data, (3, 2, 4, 4));
    let p = Preprocess { unit_length: true, ..Preprocess::default() };
    let y = vals(&p.apply(&x).unwrap());
    for row in y.chunks(32) {
        let norm: f64 = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "norm {norm}");
        let mean: f64 = row.iter().map(|&v| f64::from(v)).sum::<f64>() / 32.0;
        assert!(mean.abs() < 1e-6, "mean {mean}");
    }
}

#[test]
fn dataset_standardise_per_channel() {
    // Channel 0 values {0,2} (mean 1, std 1), channel 1 values {5,5} (constant: centred only).
    let x = t(&[0., 5., 2., 5.], (2, 2, 1, 1));
    let stats = ChannelStats::compute(&x).unwrap();
    assert_eq!(stats.mean, vec![1.0, 5.0]);
    assert_eq!(stats.std, vec![1.0, 0.0]);
    let p = Preprocess { per_example_standardise: false, dataset_standardise: true, unit_length: false };
    close(&vals(&p.apply(&x).unwrap()), &[-1., 0., 1., 0.]);
    // Stats from another set are applied as given: (v - 1) / 1 on channel 0.
    let z = t(&[3., 5.], (1, 2, 1, 1));
    close(&vals(&p.apply_with_stats(&z, Some(&stats)).unwrap()), &[2., 0.]);
}

#[test]
fn rejects_non_4d() {
    let x = Tensor::zeros((2, 784), candle::DType::F32, &Device::Cpu).unwrap();
    assert!(Preprocess::default().apply(&x).is_err());
}
