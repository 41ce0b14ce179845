//! Input preprocessing: per-example standardisation (the paper's "zero mean, unit variance"),
//! optional dataset (per-channel) standardisation and optional scaling to unit length (v3).

use candle::Tensor;

use crate::error::{DataError, Result};

/// Which preprocessing steps to apply, in this order: dataset standardise, per-example
/// standardise, unit length. All keep the (N, C, H, W) shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Preprocess {
    /// Each image to zero mean and unit (population) variance over its C*H*W values. Constant
    /// images become all zeros. Default `true`.
    pub per_example_standardise: bool,
    /// Each channel to zero mean, unit variance over all images and pixels (statistics from the
    /// images given, or from [`ChannelStats`] passed to [`Preprocess::apply_with_stats`]).
    /// Default `false`.
    pub dataset_standardise: bool,
    /// Each flattened image scaled to Euclidean norm 1 (all-zero images stay zero). Default `false`.
    pub unit_length: bool,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess { per_example_standardise: true, dataset_standardise: false, unit_length: false }
    }
}

/// Per-channel mean and standard deviation of a set of images.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChannelStats {
    /// (C,) means.
    pub mean: Vec<f64>,
    /// (C,) population standard deviations (0 for a constant channel).
    pub std: Vec<f64>,
}

fn dims4(images: &Tensor) -> Result<(usize, usize, usize, usize)> {
    match images.dims() {
        &[n, c, h, w] => Ok((n, c, h, w)),
        other => Err(DataError::InvalidArgument {
            arg: "images",
            reason: format!("expected shape (N, C, H, W), got {other:?}"),
        }),
    }
}

fn host_f32(images: &Tensor) -> Result<Vec<f32>> {
    Ok(images.to_dtype(candle::DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl ChannelStats {
    /// Statistics of `images`: (N, C, H, W). Accumulates in f64.
    pub fn compute(images: &Tensor) -> Result<ChannelStats> {
        let (_, c, h, w) = dims4(images)?;
        let data = host_f32(images)?;
        let plane = h * w;
        let mut sum = vec![0f64; c];
        let mut count = vec![0usize; c];
        for (i, chunk) in data.chunks(plane.max(1)).enumerate() {
            let ch = i % c.max(1);
            sum[ch] += chunk.iter().map(|&x| f64::from(x)).sum::<f64>();
            count[ch] += chunk.len();
        }
        let mean: Vec<f64> = sum.iter().zip(&count).map(|(s, &k)| if k == 0 { 0.0 } else { s / k as f64 }).collect();
        let mut sq = vec![0f64; c];
        for (i, chunk) in data.chunks(plane.max(1)).enumerate() {
            let ch = i % c.max(1);
            sq[ch] += chunk.iter().map(|&x| (f64::from(x) - mean[ch]).powi(2)).sum::<f64>();
        }
        let std = sq.iter().zip(&count).map(|(s, &k)| if k == 0 { 0.0 } else { (s / k as f64).sqrt() }).collect();
        Ok(ChannelStats { mean, std })
    }
}

impl Preprocess {
    /// No preprocessing at all.
    pub fn none() -> Self {
        Preprocess { per_example_standardise: false, dataset_standardise: false, unit_length: false }
    }

    /// Applies the enabled steps. images: (N, C, H, W) → (N, C, H, W) f32, same device.
    /// Dataset statistics (if enabled) come from `images` itself.
    pub fn apply(&self, images: &Tensor) -> Result<Tensor> {
        self.apply_with_stats(images, None)
    }

    /// As [`apply`](Self::apply), with dataset statistics given (use the train split's for the
    /// test split). `stats` is ignored unless `dataset_standardise` is on.
    pub fn apply_with_stats(&self, images: &Tensor, stats: Option<&ChannelStats>) -> Result<Tensor> {
        let (n, c, h, w) = dims4(images)?;
        let mut data = host_f32(images)?;
        let d = c * h * w;
        if self.dataset_standardise {
            let computed;
            let stats = match stats {
                Some(s) => s,
                None => {
                    computed = ChannelStats::compute(images)?;
                    &computed
                }
            };
            if stats.mean.len() != c || stats.std.len() != c {
                return Err(DataError::InvalidArgument {
                    arg: "stats",
                    reason: format!("statistics for {} channels, images have {c}", stats.mean.len()),
                });
            }
            let plane = (h * w).max(1);
            for (i, chunk) in data.chunks_mut(plane).enumerate() {
                let ch = i % c;
                let m = stats.mean[ch];
                // A constant channel is only centred; dividing by 0 would make NaNs.
                let s = if stats.std[ch] > 0.0 { stats.std[ch] } else { 1.0 };
                for x in chunk {
                    *x = ((f64::from(*x) - m) / s) as f32;
                }
            }
        }
        if d > 0 && (self.per_example_standardise || self.unit_length) {
            par_rows(&mut data, d, |row| {
                if self.per_example_standardise {
                    standardise_row(row);
                }
                if self.unit_length {
                    unit_length_row(row);
                }
            });
        }
        Ok(Tensor::from_vec(data, (n, c, h, w), images.device())?)
    }
}

/// Applies `f` to each row of length `d`, splitting the rows over the available cores. Each row
/// is processed independently, so the result does not depend on the thread count.
fn par_rows(data: &mut [f32], d: usize, f: impl Fn(&mut [f32]) + Sync) {
    let rows = data.len() / d;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
    if threads <= 1 || rows < 2048 {
        data.chunks_mut(d).for_each(&f);
        return;
    }
    let per_thread = rows.div_ceil(threads) * d;
    let f = &f;
    std::thread::scope(|s| {
        for chunk in data.chunks_mut(per_thread) {
            s.spawn(move || chunk.chunks_mut(d).for_each(f));
        }
    });
}

/// Zero mean, unit population variance; a constant row becomes zeros.
fn standardise_row(row: &mut [f32]) {
    let first = row[0];
    if row.iter().all(|&x| x == first) {
        row.fill(0.0);
        return;
    }
    let len = row.len() as f64;
    let mean = row.iter().map(|&x| f64::from(x)).sum::<f64>() / len;
    let var = row.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / len;
    // var > 0 because the row has two distinct values.
    let inv = 1.0 / var.sqrt();
    for x in row {
        *x = ((f64::from(*x) - mean) * inv) as f32;
    }
}

/// Euclidean norm 1; an all-zero row stays zero.
fn unit_length_row(row: &mut [f32]) {
    let norm = row.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        let inv = 1.0 / norm;
        for x in row {
            *x = (f64::from(*x) * inv) as f32;
        }
    }
}
